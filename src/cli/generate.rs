//! `tierstream generate`: a synthetic workload to a JSONL file or straight
//! to the input topics.

use super::{progress, write_jsonl, Unit};
use crate::config::Config;
use crate::domain::time::Millis;
use crate::kafka::{client_config, enqueue};
use crate::workload::generate::{generate, Activity, GenerateSpec};
use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
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
    /// With --to-kafka: produce at most this many events per second, in
    /// event-time order (0: as fast as the broker takes them) — a steady
    /// stream to measure the pipeline's event-to-commit latency against,
    /// where a backlog measures its throughput.
    #[arg(
        long,
        default_value_t = 0,
        requires = "to_kafka",
        value_name = "EVENTS_PER_S"
    )]
    pub rate: u64,
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

fn parse_day(s: &str) -> Result<Millis> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--start {s}: expected YYYY-MM-DD"))?;
    Ok(Millis::from_ms(
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis(),
    ))
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
        return runtime.block_on(produce_generated(&cfg, &events, a.rate));
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

/// Records produced between two looks at the clock when paced: 10 ms
/// slices, fine enough that a paced stream has no bursts a commit interval
/// (100 ms by default) would notice.
const PACE_SLICES_PER_S: u64 = 100;

async fn produce_generated(
    cfg: &Config,
    events: &[crate::workload::generate::Generated],
    rate: u64,
) -> Result<()> {
    if cfg.kafka.create_topics {
        crate::kafka::admin::ensure_topics(&cfg.kafka).await?;
    }
    // A paced stream is sent as it is produced (each record's timestamp
    // is when it was sent, which the pipeline's latency is measured from);
    // a backlog lingers so librdkafka batches more.
    let linger = if rate > 0 { "1" } else { "20" };
    let producer: FutureProducer = client_config(&cfg.kafka)
        // Java's default partitioner, so keys land where `replay --partitions` expects.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the Kafka producer")?;
    let topics = &cfg.kafka.input_topics;
    let bar = progress(events.len() as u64, Unit::Events);
    let chunk_len = if rate > 0 {
        (rate / PACE_SLICES_PER_S).max(1) as usize
    } else {
        10_000
    };
    let started = tokio::time::Instant::now();
    let mut pending = Vec::new();
    // Every record of a chunk is enqueued before any acknowledgement is
    // awaited, so librdkafka can batch them; paced, the acknowledgements
    // are awaited only at the end, so waiting for them never holds the
    // pace back.
    for (i, chunk) in events.chunks(chunk_len).enumerate() {
        if rate > 0 {
            let due = Duration::from_secs_f64((i * chunk_len) as f64 / rate as f64);
            tokio::time::sleep_until(started + due).await;
        }
        for g in chunk {
            let payload = serde_json::to_vec(&g.json)?;
            let record = FutureRecord::to(&topics[g.topic_rank(topics.len())])
                .key(&g.customer_id)
                .payload(&payload);
            pending.push(enqueue(&producer, record)?);
        }
        if rate == 0 {
            await_deliveries(std::mem::take(&mut pending)).await?;
        }
        bar.inc(chunk.len() as u64);
    }
    await_deliveries(pending).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    eprintln!(
        "produced {} events in {secs:.1} s ({:.0} events/s)",
        events.len(),
        events.len() as f64 / secs
    );
    Ok(())
}

async fn await_deliveries(pending: Vec<DeliveryFuture>) -> Result<()> {
    for p in futures::future::join_all(pending).await {
        match p {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("producing failed: {e}"),
            Err(_) => bail!("producing failed: the producer went away"),
        }
    }
    Ok(())
}
