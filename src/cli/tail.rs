//! `tierstream tail`: print committed records of topics, or count them.

use crate::config::Config;
use crate::kafka::records::{ERROR_CODE_HEADER, SCHEMA_HEADER};
use crate::kafka::tail::{tail_each, TailFrom, TailUntil};
use anyhow::{Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

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
    #[arg(long, default_value_t = 5000, conflicts_with = "follow")]
    pub idle_ms: u64,
    /// Keep printing new records as they are committed, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start at the first record at or after this time (RFC 3339, e.g.
    /// 2026-01-05T00:00:00Z) instead of the beginning.
    #[arg(long)]
    pub from_time: Option<String>,
    /// Print only a count per topic and schema, not the records.
    #[arg(long, conflicts_with = "follow")]
    pub count_only: bool,
}

pub(super) fn run_tail(a: TailArgs) -> Result<()> {
    let cfg = Config::load(a.config.as_deref())?;
    let topics = if a.topics.is_empty() {
        vec![
            cfg.kafka.tier_topic.clone(),
            cfg.kafka.warning_topic.clone(),
        ]
    } else {
        a.topics
    };
    let from = match &a.from_time {
        None => TailFrom::Beginning,
        Some(t) => TailFrom::Time(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| {
                    format!("--from-time {t}: expected RFC 3339, e.g. 2026-01-05T00:00:00Z")
                })?
                .timestamp_millis(),
        ),
    };
    let until = TailUntil {
        max: a.max,
        idle: (!a.follow).then(|| Duration::from_millis(a.idle_ms)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut out = BufWriter::new(std::io::stdout().lock());
    runtime.block_on(tail_each(&cfg.kafka, &topics, from, until, |r| {
        let schema = r
            .headers
            .iter()
            .find(|(k, _)| k == SCHEMA_HEADER || k == ERROR_CODE_HEADER)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        *counts.entry((r.topic.clone(), schema)).or_default() += 1;
        if !a.count_only {
            serde_json::to_writer(&mut out, &r.to_json())?;
            out.write_all(b"\n")?;
            // Streaming: each record is visible as soon as it is read.
            out.flush()?;
        }
        Ok(())
    }))?;
    out.flush()?;
    for ((topic, schema), n) in counts {
        eprintln!("{topic:<28} {schema:<32} {n}");
    }
    Ok(())
}
