//! `tierstream replay`: JSONL in, JSONL out, the same engine as the Kafka
//! pipeline, no Kafka. For trying policies, backtests and golden tests.

use super::{open_rocks, processor, Unit};
use crate::codec::input::Rejection;
use crate::codec::output::to_bytes;
use crate::config::Config;
use crate::domain::event::Event;
use crate::domain::output::Output;
use crate::domain::ranking::{Shares, Summaries};
use crate::domain::time::Millis;
use crate::kafka::partitioner::partition_for;
use crate::ops::metrics::Metrics;
use crate::pipeline::processor::{CutPointsOf, Processed, Processor, RawRecord};
use crate::store::memory::MemoryStore;
use crate::store::session::TaskState;
use crate::store::{KvStore, TaskId};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

/// A replay writes its state to the store after this many records, or
/// once a task's profiles waiting to be written take its share of
/// `state.cache_mb`, whichever comes first: that bounds memory on large
/// replays (month-close ticks can dirty many profiles at once), and writing
/// less often lets a hot customer's many updates reach RocksDB as one.
/// (Every flush encodes and writes each profile it holds: flushing every
/// 100 000 records was an eighth of a heavy-tailed replay.)
const FLUSH_EVERY: usize = 1_000_000;
/// Bytes of keys and values a replay writes to the store at a time.
const WRITE_PART: usize = 4 << 20;

/// Counters of one replay run, printed as the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// Lines rejected to the DLQ.
    pub rejected: u64,
    /// Output events written.
    pub outputs: u64,
}

/// Where a replay reads and writes.
pub struct ReplayIo<'a> {
    /// JSONL events.
    pub input: &'a mut dyn BufRead,
    /// JSONL outputs, in the order produced.
    pub output: &'a mut dyn Write,
    /// Rejected lines, if wanted.
    pub dlq: Option<&'a mut dyn Write>,
    /// Called with the number of bytes of every line read (progress).
    pub on_bytes: &'a dyn Fn(u64),
}

/// How a replay runs: tasks, cache, threads.
#[derive(Debug, Clone, Copy)]
pub struct ReplayShape {
    /// Tasks, customers hashed to them like Kafka's default partitioner.
    pub partitions: u32,
    /// Profile cache shared by the tasks, in bytes.
    pub cache_bytes: usize,
    /// Threads running tasks (a task stays on one thread); 1 runs
    /// everything on the calling thread.
    pub threads: usize,
}

impl ReplayShape {
    /// `partitions` tasks on the calling thread.
    pub fn sequential(partitions: u32, cache_bytes: usize) -> Self {
        ReplayShape {
            partitions,
            cache_bytes,
            threads: 1,
        }
    }
}

/// Batches a worker may be handed before the reader waits for it, and lines
/// read but not yet written: together they bound a parallel replay's
/// memory whatever the speed of its threads.
const LANE_QUEUE: usize = 16;
const MAX_IN_FLIGHT: usize = 65_536;
/// Lines that cross to a worker thread, and come back encoded, as one
/// message: a message per line made the reading thread a tenth of a
/// two-thread replay's CPU time.
const BATCH_LINES: usize = 256;

/// Replays the input through `processor` over `store`. Outputs are written
/// in input order — a line's outputs where the line is — whatever the
/// threads, so the file is byte-identical for any `threads`. `now` is the
/// wall clock used for the timestamp range check.
///
/// State is written without RocksDB's write-ahead log and made durable by
/// one flush at the end: a replay that fails leaves no state worth going
/// on from (its output file stops wherever it stopped), so logging every
/// write bought nothing but its copy to disk.
pub fn replay(
    processor: &Processor,
    store: &dyn KvStore,
    shape: ReplayShape,
    io: ReplayIo<'_>,
    now: Millis,
) -> Result<ReplaySummary> {
    let summary = match processor.engine.policy().tiers.percentile {
        Some(shares) if shape.partitions > 1 => {
            replay_ranked(processor, store, shape, io, now, shares)
        }
        _ => replay_lanes(processor, store, shape, io, now),
    }?;
    store.flush().context("flushing the replayed state")?;
    Ok(summary)
}

/// `replay` for a policy without a ranking across tasks: each lane (a
/// thread) runs its tasks' lines on its own.
fn replay_lanes(
    processor: &Processor,
    store: &dyn KvStore,
    shape: ReplayShape,
    io: ReplayIo<'_>,
    now: Millis,
) -> Result<ReplaySummary> {
    let lanes = shape.threads.clamp(1, shape.partitions.max(1) as usize);
    let cache = shape.cache_bytes / shape.partitions.max(1) as usize;
    let mut tasks: Vec<Vec<TaskState>> = (0..lanes).map(|_| Vec::new()).collect();
    for t in TaskId::all(shape.partitions) {
        let lane = t.partition() as usize % lanes;
        tasks[lane].push(TaskState::open(t, store, cache)?);
    }
    let ReplayIo {
        input,
        output,
        dlq,
        on_bytes,
    } = io;
    let want_dlq = dlq.is_some();
    let mut writer = Writer { output, dlq };
    let router = Router {
        processor,
        partitions: shape.partitions,
        now,
    };
    let mut lanes: Vec<Lane<'_>> = tasks
        .into_iter()
        .map(|tasks| Lane {
            processor,
            store,
            tasks,
            lanes,
            want_dlq,
            since_flush: 0,
            outs: Vec::new(),
        })
        .collect();
    if let [lane] = lanes.as_mut_slice() {
        let summary = read_lines(&router, input, on_bytes, |summary, line| {
            writer.write(summary, lane.line(line)?)
        })?;
        lane.finish()?;
        writer.flush()?;
        return Ok(summary);
    }
    std::thread::scope(|scope| {
        let mut dispatch = Dispatch::default();
        let mut workers = Vec::new();
        for mut lane in lanes {
            let (in_tx, in_rx) = std::sync::mpsc::sync_channel::<Vec<Line<Vec<u8>>>>(LANE_QUEUE);
            let (out_tx, out_rx) = std::sync::mpsc::channel::<Result<Vec<LineOut>>>();
            dispatch.lanes.push(LaneLink {
                input: in_tx,
                results: out_rx,
                batch: Vec::new(),
                done: VecDeque::new(),
            });
            workers.push(scope.spawn(move || -> Result<()> {
                for batch in in_rx {
                    let r: Result<Vec<LineOut>> = batch.into_iter().map(|l| lane.line(l)).collect();
                    let failed = r.is_err();
                    if out_tx.send(r).is_err() || failed {
                        return Ok(());
                    }
                }
                lane.finish()
            }));
        }
        let summary = read_lines(&router, input, on_bytes, |summary, line| {
            dispatch.push(line)?;
            dispatch.write_ready(&mut writer, summary, false)
        });
        let summary = summary.and_then(|mut summary| {
            dispatch.write_ready(&mut writer, &mut summary, true)?;
            Ok(summary)
        });
        drop(dispatch);
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
        }
        writer.flush()?;
        summary
    })
}

/// The reading thread's link to one worker: the batch being filled, and
/// results received but not yet written.
struct LaneLink {
    input: std::sync::mpsc::SyncSender<Vec<Line<Vec<u8>>>>,
    results: std::sync::mpsc::Receiver<Result<Vec<LineOut>>>,
    batch: Vec<Line<Vec<u8>>>,
    done: VecDeque<LineOut>,
}

impl LaneLink {
    fn send(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_LINES));
        self.input
            .send(batch)
            .map_err(|_| anyhow::anyhow!("a replay thread stopped"))
    }

    fn receive(&mut self, wait: bool) -> Result<bool> {
        let r = if wait {
            self.results
                .recv()
                .map_err(|_| anyhow::anyhow!("a replay thread stopped"))?
        } else {
            match self.results.try_recv() {
                Ok(r) => r,
                Err(_) => return Ok(false),
            }
        };
        self.done.extend(r?);
        Ok(true)
    }
}

/// Hands lines to the workers in batches and writes their results in
/// input order.
#[derive(Default)]
struct Dispatch {
    lanes: Vec<LaneLink>,
    /// Which lane each line went to, oldest first: results are written in
    /// that order.
    order: VecDeque<usize>,
}

impl Dispatch {
    fn push(&mut self, line: Line<&[u8]>) -> Result<()> {
        let lane = line.task % self.lanes.len();
        let link = &mut self.lanes[lane];
        link.batch.push(line.into_owned());
        if link.batch.len() >= BATCH_LINES {
            link.send()?;
        }
        self.order.push_back(lane);
        Ok(())
    }

    /// Writes whatever results are ready in order; waits for them when too
    /// much is in flight, or for all of them at the `end` of the input.
    fn write_ready(
        &mut self,
        writer: &mut Writer<'_>,
        summary: &mut ReplaySummary,
        end: bool,
    ) -> Result<()> {
        while let Some(&next) = self.order.front() {
            let link = &mut self.lanes[next];
            if link.done.is_empty() {
                let wait = end || self.order.len() > MAX_IN_FLIGHT;
                if wait {
                    // Its line may still be in the batch being filled.
                    link.send()?;
                }
                if !link.receive(wait)? {
                    break;
                }
            }
            let Some(out) = link.done.pop_front() else {
                continue;
            };
            self.order.pop_front();
            writer.write(summary, out)?;
        }
        Ok(())
    }
}

/// A replay of several tasks under percentile tiers. A task closes a
/// month only with every task's summary of it, so a task whose next line
/// passes a month close the others have not reached yet waits there (its
/// lines queue up) until they all have, or their input has ended (then
/// their last summary counts). Lines are still written in input order;
/// memory grows with how far apart in the input the tasks pass a month
/// close (nothing for a file in time order). One thread: the tasks move in
/// step anyway.
fn replay_ranked(
    processor: &Processor,
    store: &dyn KvStore,
    shape: ReplayShape,
    io: ReplayIo<'_>,
    now: Millis,
    shares: Shares,
) -> Result<ReplaySummary> {
    let cache = shape.cache_bytes / shape.partitions as usize;
    let mut lane = Lane {
        processor,
        store,
        tasks: TaskId::all(shape.partitions)
            .map(|t| TaskState::open(t, store, cache))
            .collect::<Result<_, _>>()?,
        lanes: 1,
        want_dlq: io.dlq.is_some(),
        since_flush: 0,
        outs: Vec::new(),
    };
    let mut writer = Writer {
        output: io.output,
        dlq: io.dlq,
    };
    let mut ranked = Ranked {
        summaries: Summaries::new(shape.partitions, shares),
        waiting: (0..shape.partitions).map(|_| VecDeque::new()).collect(),
        done: BTreeMap::new(),
        next: 0,
    };
    let mut seq = 0;
    let router = Router {
        processor,
        partitions: shape.partitions,
        now,
    };
    let mut summary = read_lines(&router, io.input, io.on_bytes, |summary, line| {
        let line = line.into_owned();
        let task = line.task;
        ranked.waiting[task].push_back((seq, line, LineOut::default()));
        seq += 1;
        ranked.run(&mut lane, task)?;
        ranked.write_ready(&mut writer, summary)
    })?;
    // End of input: a task with nothing waiting is finished; its summary
    // now stands for every later month, which lets the others go on.
    loop {
        for t in TaskId::all(shape.partitions) {
            let n = t.partition() as usize;
            if ranked.waiting[n].is_empty() {
                let last = lane.tasks[n].ranking.pending.clone();
                ranked.summaries.finish(n as u32, last);
            }
        }
        let before: usize = ranked.waiting.iter().map(VecDeque::len).sum();
        for n in 0..shape.partitions as usize {
            ranked.run(&mut lane, n)?;
        }
        ranked.write_ready(&mut writer, &mut summary)?;
        let after: usize = ranked.waiting.iter().map(VecDeque::len).sum();
        if after == 0 {
            break;
        }
        if after == before {
            bail!("percentile replay: {after} lines wait for a month close that cannot complete");
        }
    }
    lane.finish()?;
    writer.flush()?;
    Ok(summary)
}

/// A line not yet applied: its sequence number among the non-blank lines,
/// the line, and what it produced so far.
type WaitingLine = (u64, Line<Vec<u8>>, LineOut);

/// The waiting lines of a percentile replay and the results not yet
/// written.
struct Ranked {
    summaries: Summaries,
    /// Per task, its lines not yet applied (the first may be part done).
    waiting: Vec<VecDeque<WaitingLine>>,
    /// Results by line sequence number, written once contiguous.
    done: BTreeMap<u64, LineOut>,
    next: u64,
}

impl Ranked {
    /// Runs `task`'s waiting lines until one must wait; a task that starts
    /// to wait hands in its summary, which may let others go on, so they
    /// are run again until nobody moves.
    fn run(&mut self, lane: &mut Lane<'_>, task: usize) -> Result<()> {
        let mut queue = vec![task];
        while let Some(t) = queue.pop() {
            while let Some((seq, line, mut out)) = self.waiting[t].pop_front() {
                let summaries = &self.summaries;
                let cuts = |m| summaries.month_close(m);
                match lane.run(&line, &mut out, Some(&cuts))? {
                    None => {
                        self.done.insert(seq, out);
                    }
                    Some(month) => {
                        self.waiting[t].push_front((seq, line, out));
                        let ranking = &mut lane.tasks[t].ranking;
                        if ranking.published != Some(month) {
                            ranking.published = Some(month);
                            let mine = ranking.pending.clone();
                            self.summaries.hand_in(t as u32, month, mine);
                            // Every task waiting for this month, this one
                            // too, may go on now.
                            queue.extend(
                                (0..self.waiting.len()).filter(|&o| !self.waiting[o].is_empty()),
                            );
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the results that follow the last one written.
    fn write_ready(&mut self, writer: &mut Writer<'_>, summary: &mut ReplaySummary) -> Result<()> {
        while let Some(out) = self.done.remove(&self.next) {
            writer.write(summary, out)?;
            self.next += 1;
        }
        Ok(())
    }
}

/// One non-blank input line, decoded, and its task. A rejected line keeps
/// its bytes for the dead-letter file (borrowed from the reader's buffer,
/// or owned to cross to a worker thread or wait for a month close).
struct Line<R> {
    task: usize,
    no: u64,
    item: Item<R>,
}

enum Item<R> {
    Event(Event),
    Rejected(Rejection, R),
}

impl Line<&[u8]> {
    /// The line with its bytes copied, if it still has them (only a
    /// rejected line does).
    fn into_owned(self) -> Line<Vec<u8>> {
        Line {
            task: self.task,
            no: self.no,
            item: match self.item {
                Item::Event(e) => Item::Event(e),
                Item::Rejected(r, record) => Item::Rejected(r, record.to_vec()),
            },
        }
    }
}

/// Decodes lines and puts each in its task: the partition of its decoded
/// `customer_id`, hashed like Kafka's default partitioner (so a record
/// whose JSON names the customer twice goes where the event it decodes to
/// belongs). A rejected line changes no state; it goes to task 0.
struct Router<'a> {
    processor: &'a Processor,
    partitions: u32,
    now: Millis,
}

impl Router<'_> {
    fn line<'r>(&self, no: u64, record: &'r [u8]) -> Line<&'r [u8]> {
        let raw = RawRecord {
            bytes: record,
            key: None,
        };
        let (task, item) = match self.processor.decode(raw, self.now) {
            Ok(e) => (self.task_of(&e), Item::Event(e)),
            Err(r) => (0, Item::Rejected(r, record)),
        };
        Line { task, no, item }
    }

    fn task_of(&self, event: &Event) -> usize {
        if self.partitions <= 1 {
            return 0;
        }
        partition_for(event.customer_id.as_bytes(), self.partitions) as usize
    }
}

/// What one line produced, encoded for the output and DLQ files.
#[derive(Default)]
struct LineOut {
    output: Vec<u8>,
    outputs: u64,
    dead_letter: Option<Vec<u8>>,
}

/// Where a replay's encoded results go; kept apart from the threads so the
/// files are written in input order by one writer.
struct Writer<'w> {
    output: &'w mut dyn Write,
    dlq: Option<&'w mut dyn Write>,
}

impl Writer<'_> {
    fn write(&mut self, summary: &mut ReplaySummary, r: LineOut) -> Result<()> {
        summary.outputs += r.outputs;
        self.output.write_all(&r.output)?;
        if let Some(d) = r.dead_letter {
            summary.rejected += 1;
            if let Some(w) = self.dlq.as_deref_mut() {
                w.write_all(&d)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.output.flush()?;
        if let Some(d) = self.dlq.as_deref_mut() {
            d.flush()?;
        }
        Ok(())
    }
}

/// Bytes read are reported to `on_bytes` in steps of about this size: a
/// progress bar's `inc` per line read the clock each time, 1% of a
/// replay's instructions.
const PROGRESS_STEP: u64 = 1 << 20;

/// Reads every line, counts blanks, and hands the others to `each` with
/// their task.
fn read_lines(
    router: &Router<'_>,
    input: &mut dyn BufRead,
    on_bytes: &dyn Fn(u64),
    mut each: impl FnMut(&mut ReplaySummary, Line<&[u8]>) -> Result<()>,
) -> Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut line = Vec::new();
    let mut no = 0u64;
    let mut unreported = 0;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("reading input")?;
        if n == 0 {
            break;
        }
        unreported += n as u64;
        if unreported >= PROGRESS_STEP {
            on_bytes(std::mem::take(&mut unreported));
        }
        no += 1;
        let record = trim_line_end(&line);
        if record.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        summary.lines += 1;
        each(&mut summary, router.line(no, record))?;
    }
    on_bytes(unreported);
    Ok(summary)
}

/// The tasks one thread runs (task `t` is `tasks[t / lanes]`), with the
/// flush schedule of their state.
struct Lane<'a> {
    processor: &'a Processor,
    store: &'a dyn KvStore,
    tasks: Vec<TaskState>,
    lanes: usize,
    want_dlq: bool,
    since_flush: usize,
    outs: Vec<Output>,
}

impl Lane<'_> {
    /// Runs one line through its task and encodes what it produced.
    fn line(&mut self, line: Line<impl AsRef<[u8]>>) -> Result<LineOut> {
        let mut out = LineOut::default();
        self.run(&line, &mut out, None)?;
        Ok(out)
    }

    /// Runs one line through its task, adding what it produced to `out`;
    /// under percentile tiers the line may have to wait for a month's cut
    /// points (it then produced the ticks before that month close).
    fn run(
        &mut self,
        line: &Line<impl AsRef<[u8]>>,
        out: &mut LineOut,
        cuts: Option<CutPointsOf<'_>>,
    ) -> Result<Option<Millis>> {
        let event = match &line.item {
            Item::Event(e) => e,
            Item::Rejected(r, record) => {
                let mut d = Vec::new();
                if self.want_dlq {
                    let raw = String::from_utf8_lossy(record.as_ref());
                    let rec = json!({"code": r.code.as_str(), "message": r.message, "line": line.no, "raw": raw});
                    serde_json::to_writer(&mut d, &rec)?;
                    d.push(b'\n');
                }
                out.dead_letter = Some(d);
                return Ok(None);
            }
        };
        let task = &mut self.tasks[line.task / self.lanes];
        self.outs.clear();
        let processed =
            self.processor
                .apply_ranked(task, self.store, event, &mut self.outs, cuts)?;
        for o in &self.outs {
            let bytes = to_bytes(o)
                .unwrap_or_else(|| serde_json::to_vec(&tombstone(o)).expect("serializes"));
            out.output.extend_from_slice(&bytes);
            out.output.push(b'\n');
        }
        out.outputs += self.outs.len() as u64;
        if let Processed::Waiting(month) = processed {
            return Ok(Some(month));
        }
        self.since_flush += 1;
        if self.since_flush >= FLUSH_EVERY || self.tasks.iter().any(TaskState::dirty_over_budget) {
            self.finish()?;
        }
        Ok(None)
    }

    /// Writes the pending state of every task of the lane, a task's in
    /// parts of `WRITE_PART` bytes as they are encoded. A replay needs no
    /// atomicity (a failed one leaves no state worth going on from):
    /// concatenating every task's writes first cost a growing copy of the
    /// whole batch (an eighth of the run on a heavy-tailed workload), and
    /// a task's flush written at once held all its encoded profiles, and
    /// a RocksDB write batch as large, at the peak of memory.
    fn finish(&mut self) -> Result<()> {
        for task in &mut self.tasks {
            task.drain_in_parts(WRITE_PART, &mut |part| self.store.write_unlogged(part))?;
        }
        self.since_flush = 0;
        Ok(())
    }
}

/// How a profile tombstone appears in a JSONL file (Kafka gets a null value).
fn tombstone(o: &Output) -> serde_json::Value {
    json!({"schema": o.schema(), "customer_id": o.customer_id.as_str(), "tombstone": true})
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// Renders the summary for stderr.
pub fn render_summary(
    s: &ReplaySummary,
    metrics: &Metrics,
    elapsed: std::time::Duration,
) -> String {
    let mut text = format!(
        "replay: {} records ({} blank skipped), {} rejected, {} outputs in {:.2}s ({:.0} records/s)\n",
        s.lines,
        s.blank,
        s.rejected,
        s.outputs,
        elapsed.as_secs_f64(),
        s.lines as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    for (labels, n) in Metrics::series(&metrics.events) {
        text.push_str(&format!(
            "  events {:<10} {:<10} {n}\n",
            labels[0], labels[1]
        ));
    }
    for (labels, n) in Metrics::series(&metrics.rejected) {
        text.push_str(&format!("  rejected {:<24} {n}\n", labels[0]));
    }
    for (labels, n) in Metrics::series(&metrics.outputs) {
        text.push_str(&format!("  outputs {:<32} {n}\n", labels[0]));
    }
    text
}

/// Times a closure, for the summary.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// `replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSONL input, `-` for stdin.
    #[arg(long)]
    pub input: String,
    /// JSONL output, `-` for stdout.
    #[arg(long)]
    pub output: String,
    /// Where rejected lines go, as JSON {"code","message","line","raw"}.
    #[arg(long)]
    pub dlq: Option<PathBuf>,
    /// Number of tasks, customers hashed like Kafka's default partitioner.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// RocksDB directory for the state (default: a temporary one).
    #[arg(long, conflicts_with = "memory")]
    pub state_dir: Option<PathBuf>,
    /// Keep the state in memory instead of RocksDB.
    #[arg(long)]
    pub memory: bool,
    /// Threads running the tasks in parallel (a task stays on one thread;
    /// the output is the same for any number). Default: the cores there are.
    #[arg(long)]
    pub threads: Option<usize>,
}

pub(super) fn run_replay(a: ReplayArgs) -> Result<()> {
    if a.partitions == 0 {
        bail!("--partitions must be >= 1");
    }
    if a.threads == Some(0) {
        bail!("--threads must be >= 1");
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let cfg = Config::load(a.config.as_deref())?;
    let processor = processor(&cfg);
    let temp;
    let store: Box<dyn KvStore> = if a.memory {
        Box::new(MemoryStore::new())
    } else {
        let dir = match &a.state_dir {
            Some(d) => d.clone(),
            None => {
                temp = tempfile::tempdir().context("creating a temporary state directory")?;
                temp.path().to_path_buf()
            }
        };
        Box::new(open_rocks(&cfg, &dir)?)
    };
    let mut progress = ProgressBar::hidden();
    let mut input: Box<dyn BufRead> = if a.input == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = File::open(&a.input).with_context(|| format!("opening input {}", a.input))?;
        progress = super::progress(f.metadata().map(|m| m.len()).unwrap_or(0), Unit::Bytes);
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let mut output: Box<dyn Write> = if a.output == "-" {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            File::create(&a.output).with_context(|| format!("creating output {}", a.output))?,
        ))
    };
    let mut dlq = match &a.dlq {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating dlq {}", p.display()))?,
        )),
        None => None,
    };
    let now = crate::pipeline::wall_clock();
    let (summary, elapsed) = timed(|| {
        let io = ReplayIo {
            input: &mut input,
            output: &mut output,
            dlq: dlq.as_mut().map(|d| d as &mut dyn Write),
            on_bytes: &|n| progress.inc(n),
        };
        let shape = ReplayShape {
            partitions: a.partitions,
            cache_bytes: cfg.state.cache_bytes_per_task(1),
            threads,
        };
        replay(&processor, store.as_ref(), shape, io, now)
    });
    progress.finish_and_clear();
    let summary = summary?;
    eprint!("{}", render_summary(&summary, &processor.metrics, elapsed));
    Ok(())
}
