//! The command line: one file per subcommand, each parsing its flags and
//! handing over to the modules that do the work; `run.rs` is the
//! composition root of the Kafka pipeline.

mod backtest;
mod generate;
pub mod replay;
mod run;
mod tail;
mod train;

use crate::config::Config;
use crate::domain::engine::Engine;
use crate::ops::metrics::Metrics;
use crate::pipeline::processor::Processor;
use crate::store::rocks::{RocksLimits, RocksStore};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

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
    Run(run::RunArgs),
    /// Run the engine over a JSONL file: events in, output events out.
    Replay(replay::ReplayArgs),
    /// Generate a synthetic workload (JSONL file or straight to Kafka).
    Generate(generate::GenerateArgs),
    /// Print the records of topics (read_committed), one JSON per line.
    Tail(tail::TailArgs),
    /// Score churn warnings against a generated workload's ground truth.
    Backtest(backtest::BacktestArgs),
    /// Fit the churn-risk coefficients to labelled history.
    Train(train::TrainArgs),
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

/// The engine, validation rules and a fresh registry of metrics.
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
        Command::Run(a) => run::run(a),
        Command::Replay(a) => replay::run_replay(a),
        Command::Generate(a) => generate::run_generate(a),
        Command::Tail(a) => tail::run_tail(a),
        Command::Backtest(a) => backtest::run_backtest(a),
        Command::Train(a) => train::run_train(a),
    }
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

/// A progress bar on stderr for long CLI work, of `len` units (`bytes` or
/// `events`). indicatif draws nothing when stderr is not a terminal, so
/// scripts and CI logs stay clean.
fn progress(len: u64, unit: Unit) -> ProgressBar {
    let template = match unit {
        Unit::Bytes => "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        Unit::Events => "{bar:40} {human_pos}/{human_len} events {per_sec} eta {eta}",
        Unit::Restored => {
            "restoring {bar:40} {human_pos}/{human_len} changelog records {per_sec} eta {eta}"
        }
    };
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(ProgressStyle::with_template(template).expect("valid template"))
}

/// What a progress bar counts.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Events,
    Restored,
}
