//! `tierstream generate`: a synthetic workload to a JSONL file or straight
//! to the input topics.

use super::{progress, write_jsonl, Unit};
use crate::config::Config;
use crate::kafka::client_config;
use crate::workload::generate::{generate, Activity, GenerateSpec};
use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

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
    /// How events are spread over the customers: `standard`, or
    /// `heavy-tailed` (Zipf: a few customers with tens of thousands of
    /// events each — the benchmark workload).
    #[arg(long, value_enum, default_value_t = Activity::Standard)]
    pub profile: Activity,
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
    /// Also write the ground truth (archetype, churn date, deterioration
    /// start per customer).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Multiplier of every noise rate (complaints of customers who do not
    /// churn, stayers' steady signals, random low answers): 2 doubles the
    /// evidence a churn warning must not be fooled by.
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub noise: f64,
}

fn parse_day(s: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--start {s}: expected YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_millis())
}

pub(super) fn run_generate(a: GenerateArgs) -> Result<()> {
    let spec = GenerateSpec {
        customers: a.customers,
        events: a.events,
        seed: a.seed,
        start: parse_day(&a.start)?,
        days: a.days,
        activity: a.profile,
        noise: a.noise,
    };
    if a.customers == 0 {
        bail!("--customers must be >= 1");
    }
    if !a.noise.is_finite() || a.noise < 0.0 {
        bail!(
            "--noise must be a finite number >= 0 (1 is the standard mix), got {}",
            a.noise
        );
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
        Some(p) => {
            let bar = progress(events.len() as u64, Unit::Events);
            write_jsonl(
                p,
                events.iter().map(|g| {
                    bar.inc(1);
                    &g.json
                }),
            )?;
            bar.finish_and_clear();
        }
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

async fn produce_generated(
    cfg: &Config,
    events: &[crate::workload::generate::Generated],
) -> Result<()> {
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
    let bar = progress(events.len() as u64, Unit::Events);
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
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    eprintln!("produced {} events", events.len());
    Ok(())
}
