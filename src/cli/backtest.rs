//! `tierstream backtest`: score churn warnings against a generated
//! workload's ground truth.

use super::replay::{replay, ReplayIo, ReplayShape};
use super::{processor, progress, read_jsonl, Unit};
use crate::config::Config;
use crate::store::memory::MemoryStore;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

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

pub(super) fn run_backtest(a: BacktestArgs) -> Result<()> {
    let truth: Vec<crate::workload::generate::Truth> = read_jsonl(&a.truth)?;
    let outputs: Vec<serde_json::Value> = match (&a.outputs, &a.input) {
        (Some(path), _) => read_jsonl(path)?,
        (None, Some(input)) => {
            let cfg = Config::load(a.config.as_deref())?;
            let processor = processor(&cfg);
            let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
            let bar = progress(f.metadata().map(|m| m.len()).unwrap_or(0), Unit::Bytes);
            let mut reader = BufReader::with_capacity(1 << 20, f);
            let mut buffer = Vec::new();
            let io = ReplayIo {
                input: &mut reader,
                output: &mut buffer,
                dlq: None,
                on_bytes: &|n| bar.inc(n),
            };
            let now = chrono::Utc::now().timestamp_millis();
            replay(
                &processor,
                &MemoryStore::new(),
                ReplayShape::sequential(1, 0),
                io,
                now,
            )?;
            bar.finish_and_clear();
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
    let report = crate::workload::backtest::backtest(&truth, &outputs)?;
    print!("{}", report.render());
    Ok(())
}
