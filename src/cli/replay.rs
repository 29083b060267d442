//! `tierstream replay`: JSONL in, JSONL out, the same engine as the Kafka
//! pipeline, no Kafka. For trying policies, backtests and golden tests.

use super::{open_rocks, processor, Unit};
use crate::codec::output::to_bytes;
use crate::config::Config;
use crate::domain::time::Millis;
use crate::kafka::partitioner::partition_for;
use crate::ops::metrics::Metrics;
use crate::pipeline::processor::{Processed, Processor};
use crate::store::memory::MemoryStore;
use crate::store::session::TaskState;
use crate::store::{KvStore, TaskId};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

/// A replay writes its state to the store after this many records, or
/// once this many profiles are waiting to be written, whichever comes
/// first: that bounds memory on large replays (month-close ticks can dirty
/// many profiles at once), and writing less often lets a hot customer's
/// many updates reach RocksDB as one.
const FLUSH_EVERY: usize = 100_000;
const FLUSH_DIRTY_PROFILES: usize = 50_000;

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

/// Replays the input through `processor` with `partitions` tasks over
/// `store`, caching up to `cache_bytes` of profiles across them. `now` is
/// the wall clock used for the timestamp range check.
pub fn replay(
    processor: &Processor,
    store: &dyn KvStore,
    partitions: u32,
    cache_bytes: usize,
    io: ReplayIo<'_>,
    now: Millis,
) -> Result<ReplaySummary> {
    let ReplayIo {
        input,
        output,
        mut dlq,
        on_bytes,
    } = io;
    let mut tasks = TaskId::all(partitions)
        .map(|t| TaskState::open(t, store, cache_bytes / partitions.max(1) as usize))
        .collect::<Result<Vec<_>, _>>()?;
    let mut summary = ReplaySummary::default();
    let mut outs = Vec::new();
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let mut since_flush = 0usize;
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .context("reading input")?;
        if n == 0 {
            break;
        }
        on_bytes(n as u64);
        line_no += 1;
        let record = trim_line_end(&line);
        if record.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        summary.lines += 1;
        let task = &mut tasks[task_of(record, partitions)];
        outs.clear();
        match processor.process(task, store, record, now, &mut outs)? {
            Processed::Event(_) => {}
            Processed::Rejected(r) => {
                summary.rejected += 1;
                if let Some(d) = dlq.as_deref_mut() {
                    let raw = String::from_utf8_lossy(record);
                    let rec = json!({"code": r.code.as_str(), "message": r.message, "line": line_no, "raw": raw});
                    serde_json::to_writer(&mut *d, &rec)?;
                    d.write_all(b"\n")?;
                }
            }
        }
        for o in &outs {
            let line = to_bytes(o)
                .unwrap_or_else(|| serde_json::to_vec(&tombstone(o)).expect("serializes"));
            output.write_all(&line)?;
            output.write_all(b"\n")?;
        }
        summary.outputs += outs.len() as u64;
        since_flush += 1;
        if since_flush >= FLUSH_EVERY
            || tasks.iter().map(TaskState::dirty_profiles).sum::<usize>() >= FLUSH_DIRTY_PROFILES
        {
            flush(&mut tasks, store)?;
            since_flush = 0;
        }
    }
    flush(&mut tasks, store)?;
    output.flush()?;
    if let Some(d) = dlq {
        d.flush()?;
    }
    Ok(summary)
}

/// How a profile tombstone appears in a JSONL file (Kafka gets a null value).
fn tombstone(o: &crate::domain::output::Output) -> serde_json::Value {
    json!({"schema": o.schema(), "customer_id": o.customer_id, "tombstone": true})
}

fn flush(tasks: &mut [TaskState], store: &dyn KvStore) -> Result<()> {
    let writes: Vec<_> = tasks.iter_mut().flat_map(TaskState::drain).collect();
    store.write(writes)?;
    Ok(())
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// The task a line belongs to: its customer's partition, hashed like Kafka.
/// Lines whose customer cannot be read go to task 0, where they are rejected.
fn task_of(record: &[u8], partitions: u32) -> usize {
    if partitions <= 1 {
        return 0;
    }
    #[derive(serde::Deserialize)]
    struct Key<'a> {
        #[serde(borrow)]
        customer_id: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Key>(record) {
        Ok(Key {
            customer_id: Some(id),
        }) => partition_for(id.as_bytes(), partitions) as usize,
        _ => 0,
    }
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
}

pub(super) fn run_replay(a: ReplayArgs) -> Result<()> {
    if a.partitions == 0 {
        bail!("--partitions must be >= 1");
    }
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
    let now = chrono::Utc::now().timestamp_millis();
    let (summary, elapsed) = timed(|| {
        let io = ReplayIo {
            input: &mut input,
            output: &mut output,
            dlq: dlq.as_mut().map(|d| d as &mut dyn Write),
            on_bytes: &|n| progress.inc(n),
        };
        let cache = cfg.state.cache_bytes_per_task(1);
        replay(&processor, store.as_ref(), a.partitions, cache, io, now)
    });
    progress.finish_and_clear();
    let summary = summary?;
    eprint!("{}", render_summary(&summary, &processor.metrics, elapsed));
    Ok(())
}
