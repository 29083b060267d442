//! The command line: `run`, `replay` and `generate`. Each subcommand parses
//! its flags here and hands over to the module that does the work.

use crate::config::Config;
use crate::domain::engine::Engine;
use crate::gauges;
use crate::generate::{generate, GenerateSpec};
use crate::http::{self, HttpState};
use crate::kafka::client_config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::processor::Processor;
use crate::replay::{render_summary, replay, timed, ReplayIo};
use crate::status::Status;
use crate::store::memory::MemoryStore;
use crate::store::rocks::{RocksLimits, RocksStore};
use crate::store::KvStore;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// tierstream: customer pyramid tiers and spurious-loyalty churn warnings
/// from a Kafka event stream.
#[derive(Debug, Parser)]
#[command(name = "tierstream", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr: `text` for people, `json` (one object per
    /// line) for log collectors. The level comes from `RUST_LOG`
    /// (default `info`; e.g. `RUST_LOG=tierstream=debug,librdkafka=warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal without `NO_COLOR`.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Installs the global logger: level from `RUST_LOG` (default `info`),
    /// to stderr, so stdout stays clean for `replay`, `generate` and `tail`.
    pub fn init(self) {
        use std::io::IsTerminal;
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self {
            LogFormat::Json => builder.json().init(),
            LogFormat::Text => {
                let colour =
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                builder.with_ansi(colour).init()
            }
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Kafka pipeline until SIGTERM or Ctrl-C.
    Run(RunArgs),
    /// Run the engine over a JSONL file: events in, output events out.
    Replay(ReplayArgs),
    /// Generate a synthetic workload (JSONL file or straight to Kafka).
    Generate(GenerateArgs),
    /// Print the records of topics (read_committed), one JSON per line.
    Tail(TailArgs),
    /// Score churn warnings against a generated workload's ground truth.
    Backtest(BacktestArgs),
}

/// `tail` flags.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// TOML config file (for the broker and client properties).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Topics to read (default: the tier-change and churn-warning topics).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<usize>,
    /// Stop when no record arrived for this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub idle_ms: u64,
    /// Print only a count per topic and schema, not the records.
    #[arg(long)]
    pub count_only: bool,
}

/// `run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file (defaults and TIERSTREAM_* variables apply without one).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop by itself once no input arrived for this many milliseconds
    /// (catch-up jobs and benchmarks); by default run until signalled.
    #[arg(long)]
    pub stop_when_idle_ms: Option<u64>,
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

/// `generate` flags.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of customers.
    #[arg(long)]
    pub customers: u64,
    /// Number of events.
    #[arg(long)]
    pub events: u64,
    /// Random seed; the same seed gives the same workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// First day of event time (YYYY-MM-DD).
    #[arg(long, default_value = "2025-01-01")]
    pub start: String,
    /// Days of event time the workload spans.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Produce to the input topics (purchases to the first, complaints to
    /// the second, service events to the third) instead of a file.
    #[arg(long, conflicts_with = "output")]
    pub to_kafka: bool,
    /// TOML config file, for --to-kafka.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSONL output file (default: stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Also write the ground truth (archetype, churn date per customer).
    #[arg(long)]
    pub truth: Option<PathBuf>,
}

/// `backtest` flags.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Ground truth from `generate --truth`.
    #[arg(long)]
    pub truth: PathBuf,
    /// Events to replay with the config's policy.
    #[arg(long, conflicts_with = "outputs")]
    pub input: Option<PathBuf>,
    /// Or: outputs of an earlier replay.
    #[arg(long)]
    pub outputs: Option<PathBuf>,
    /// TOML config file (the policy to test).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Opens the RocksDB store the config describes, at `dir`.
pub fn open_rocks(cfg: &Config, dir: &std::path::Path) -> Result<RocksStore> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let limits = RocksLimits {
        block_cache_bytes: cfg.state.block_cache_mb << 20,
        write_buffer_bytes: cfg.state.write_buffer_mb << 20,
    };
    RocksStore::open(dir, limits).with_context(|| format!("opening RocksDB at {}", dir.display()))
}

fn processor(cfg: &Config) -> Processor {
    Processor::new(
        Engine::new(cfg.policy()),
        cfg.decode_rules(),
        Metrics::new(),
    )
}

/// Runs the parsed command.
pub fn execute(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(a) => run(a),
        Command::Replay(a) => run_replay(a),
        Command::Generate(a) => run_generate(a),
        Command::Tail(a) => run_tail(a),
        Command::Backtest(a) => run_backtest(a),
    }
}

fn run(a: RunArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let store: Arc<dyn KvStore> = Arc::new(open_rocks(&cfg, &cfg.state.dir)?);
    let processor = Arc::new(processor(&cfg));
    let status = Arc::new(Status::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = gauges::spawn(
        status.clone(),
        store.clone(),
        processor.metrics.clone(),
        sampler_stop.clone(),
    );
    let result = runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        if let Some(addr) = cfg.http.addr() {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.listen: cannot listen on {addr}"))?;
            let state = Arc::new(HttpState {
                registry: processor.metrics.registry.clone(),
                status: status.clone(),
                store: store.clone(),
                engine: Arc::new(Engine::new(cfg.policy())),
                kafka: cfg.kafka.clone(),
            });
            let mut stop = rx.clone();
            tokio::spawn(async move {
                let app = http::router(state);
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the HTTP server failed");
                }
            });
            tracing::info!(%addr, "serving /metrics, /health/live, /health/ready, /customers/{{id}}");
        }
        tokio::spawn(async move {
            wait_for_shutdown_signal().await;
            let _ = tx.send(true);
        });
        Pipeline::new(cfg.clone(), processor.clone(), store.clone(), status)
            .stop_when_idle(a.stop_when_idle_ms.map(Duration::from_millis))
            .run(rx)
            .await
    });
    sampler_stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    result
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn run_replay(a: ReplayArgs) -> Result<()> {
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
    let progress = ProgressBar::hidden();
    let mut input: Box<dyn BufRead> = if a.input == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let f = File::open(&a.input).with_context(|| format!("opening input {}", a.input))?;
        progress.set_length(f.metadata().map(|m| m.len()).unwrap_or(0));
        progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        progress.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
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
        replay(&processor, store.as_ref(), a.partitions, io, now)
    });
    progress.finish_and_clear();
    let summary = summary?;
    eprint!("{}", render_summary(&summary, &processor.metrics, elapsed));
    Ok(())
}

/// Writes one JSON document per line.
fn write_jsonl<T: serde::Serialize>(
    path: &std::path::Path,
    items: impl Iterator<Item = T>,
) -> Result<()> {
    let mut out =
        BufWriter::new(File::create(path).with_context(|| format!("creating {}", path.display()))?);
    for item in items {
        serde_json::to_writer(&mut out, &item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads one JSON document per line (blank lines skipped).
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Vec<T>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(n, l)| {
            let l = l?;
            serde_json::from_str(&l).with_context(|| format!("{} line {}", path.display(), n + 1))
        })
        .collect()
}

fn run_backtest(a: BacktestArgs) -> Result<()> {
    let truth: Vec<crate::generate::Truth> = read_jsonl(&a.truth)?;
    let outputs: Vec<serde_json::Value> = match (&a.outputs, &a.input) {
        (Some(path), _) => read_jsonl(path)?,
        (None, Some(input)) => {
            let cfg = Config::load(a.config.as_deref())?;
            let processor = processor(&cfg);
            let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let mut reader = BufReader::with_capacity(1 << 20, f);
            let mut buffer = Vec::new();
            let io = ReplayIo {
                input: &mut reader,
                output: &mut buffer,
                dlq: None,
                on_bytes: &|_| {},
            };
            let now = chrono::Utc::now().timestamp_millis();
            replay(&processor, &MemoryStore::new(), 1, io, now)?;
            buffer
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(serde_json::from_slice)
                .collect::<Result<_, _>>()?
        }
        (None, None) => {
            bail!("backtest needs --input (events to replay) or --outputs (a replay's output)")
        }
    };
    let report = crate::backtest::backtest(&truth, &outputs)?;
    print!("{}", report.render());
    Ok(())
}

fn parse_day(s: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--start {s}: expected YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis())
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let spec = GenerateSpec {
        customers: a.customers,
        events: a.events,
        seed: a.seed,
        start: parse_day(&a.start)?,
        days: a.days,
    };
    if a.customers == 0 {
        bail!("--customers must be >= 1");
    }
    let workload = generate(&spec);
    if let Some(path) = &a.truth {
        write_jsonl(path, workload.truth.iter())?;
    }
    let events = workload.events;
    if a.to_kafka {
        let cfg = Config::load(a.config.as_deref())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        return runtime.block_on(produce_generated(&cfg, &events));
    }
    match &a.output {
        Some(p) => write_jsonl(p, events.iter().map(|g| &g.json))?,
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            for g in &events {
                serde_json::to_writer(&mut out, &g.json)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
    }
    eprintln!(
        "generated {} events for {} customers",
        events.len(),
        a.customers
    );
    Ok(())
}

async fn produce_generated(cfg: &Config, events: &[crate::generate::Generated]) -> Result<()> {
    if cfg.kafka.create_topics {
        crate::kafka::admin::ensure_topics(&cfg.kafka).await?;
    }
    let producer: FutureProducer = client_config(&cfg.kafka)
        // Java's default partitioner, so keys land where `replay --partitions` expects.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the Kafka producer")?;
    let topics = &cfg.kafka.input_topics;
    // Produce in chunks: every record of a chunk is enqueued before any
    // acknowledgement is awaited, so librdkafka can batch them.
    for chunk in events.chunks(10_000) {
        let payloads: Vec<Vec<u8>> = chunk
            .iter()
            .map(|g| serde_json::to_vec(&g.json))
            .collect::<Result<_, _>>()?;
        let mut pending = Vec::with_capacity(chunk.len());
        for (g, payload) in chunk.iter().zip(&payloads) {
            let record = FutureRecord::to(&topics[g.topic_rank(topics.len())])
                .key(&g.customer_id)
                .payload(payload);
            pending.push(producer.send(record, Duration::from_secs(30)));
        }
        for p in futures::future::join_all(pending).await {
            p.map_err(|(e, _)| anyhow::anyhow!("producing failed: {e}"))?;
        }
    }
    eprintln!("produced {} events", events.len());
    Ok(())
}

fn run_tail(a: TailArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let topics = if a.topics.is_empty() {
        vec![
            cfg.kafka.tier_topic.clone(),
            cfg.kafka.warning_topic.clone(),
        ]
    } else {
        a.topics
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let records = runtime.block_on(crate::kafka::tail::tail(
        &cfg.kafka,
        &topics,
        a.max,
        Duration::from_millis(a.idle_ms),
    ))?;
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for r in &records {
        let schema = r
            .headers
            .iter()
            .find(|(k, _)| {
                k == crate::kafka::records::SCHEMA_HEADER || k == "tierstream.error.code"
            })
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        *counts.entry((r.topic.clone(), schema)).or_default() += 1;
        if !a.count_only {
            serde_json::to_writer(&mut out, &r.to_json())?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    for ((topic, schema), n) in counts {
        eprintln!("{topic:<28} {schema:<32} {n}");
    }
    Ok(())
}
