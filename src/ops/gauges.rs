//! Gauges that are sampled rather than counted: readiness and broker
//! reachability, RocksDB memory
//! and write stalls (every few seconds), and customers by tier and quadrant
//! (a scan of the owned tasks' profiles, once a minute — counting them
//! incrementally would need every change to be visible as an output, and a
//! restore would start the count from nothing). Sampled on the blocking
//! pool so the scans never slow the run loop's polling.

use crate::domain::tier::Tier;
use crate::ops::metrics::Metrics;
use crate::ops::status::Status;
use crate::store::keys::{decode_profile, task_range};
use crate::store::{Cf, KvStore, TaskId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const COUNT_EVERY: Duration = Duration::from_secs(60);
const QUADRANTS: [&str; 5] = ["true_loyal", "latent", "spurious", "disloyal", "none"];

/// When the customers were last counted, and over which tasks.
type LastCount = Option<(Instant, Vec<TaskId>)>;

/// Samples until the run's shutdown signal turns true. Each sample reads
/// the store (a scan, once a minute), so it runs on the blocking pool and
/// never holds up the async workers.
pub async fn sample_until_stopped(
    status: Arc<Status>,
    store: Arc<dyn KvStore>,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_count: LastCount = None;
    loop {
        let (status, store, metrics) = (status.clone(), store.clone(), metrics.clone());
        let sampled = tokio::task::spawn_blocking(move || {
            sample(&status, store.as_ref(), &metrics, last_count)
        });
        last_count = match sampled.await {
            Ok(last) => last,
            Err(e) => {
                tracing::warn!(error = %e, "sampling the gauges failed");
                None
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One sample: readiness and RocksDB figures always, customers when due.
fn sample(status: &Status, store: &dyn KvStore, metrics: &Metrics, last: LastCount) -> LastCount {
    let view = status.view();
    metrics.ready.set(i64::from(view.ready));
    metrics
        .brokers_reachable
        .set(i64::from(view.brokers_reachable));
    let s = store.stats();
    metrics
        .rocksdb_block_cache_bytes
        .set(s.block_cache_bytes as i64);
    metrics.rocksdb_memtable_bytes.set(s.memtable_bytes as i64);
    metrics
        .rocksdb_pending_compaction_bytes
        .set(s.pending_compaction_bytes as i64);
    metrics
        .rocksdb_write_stalled
        .set(i64::from(s.write_stalled));
    let due = last
        .as_ref()
        .is_none_or(|(at, owned)| at.elapsed() >= COUNT_EVERY || *owned != view.owned);
    if view.ready && due {
        count_customers(store, &view.owned, metrics);
        Some((Instant::now(), view.owned))
    } else {
        last
    }
}

/// Sets the customer gauges from a scan of `tasks`' profiles.
pub fn count_customers(store: &dyn KvStore, tasks: &[TaskId], metrics: &Metrics) {
    let mut tiers: BTreeMap<&str, i64> = Tier::TOP_DOWN.iter().map(|t| (t.as_str(), 0)).collect();
    tiers.insert("none", 0);
    let mut quadrants: BTreeMap<&str, i64> = QUADRANTS.iter().map(|q| (*q, 0)).collect();
    for &task in tasks {
        let (from, to) = task_range(task);
        let scanned = store.scan(Cf::Profiles, &from, &to, &mut |_, v| {
            if let Ok(p) = decode_profile(v) {
                *tiers
                    .entry(p.tier.map_or("none", Tier::as_str))
                    .or_default() += 1;
                let q = p.sides.map_or("none", |s| s.quadrant().as_str());
                *quadrants.entry(q).or_default() += 1;
            }
        });
        if let Err(e) = scanned {
            tracing::warn!(error = %e, %task, "could not count customers");
            return;
        }
    }
    for (tier, n) in tiers {
        metrics.customers.with_label_values(&[tier]).set(n);
    }
    for (q, n) in quadrants {
        metrics.customers_by_quadrant.with_label_values(&[q]).set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::profile::Profile;
    use crate::store::keys::{encode_profile, profile_key};
    use crate::store::memory::MemoryStore;
    use crate::store::Write;

    #[test]
    fn customers_are_counted_per_tier_over_the_given_tasks_only() {
        let store = MemoryStore::new();
        let mut gold = Profile::new("g");
        gold.tier = Some(Tier::Gold);
        let put = |task, p: &Profile| Write {
            cf: Cf::Profiles,
            key: profile_key(task, &p.customer_id),
            value: Some(encode_profile(p)),
        };
        store
            .write(vec![
                put(TaskId::new(0), &gold),
                put(TaskId::new(0), &Profile::new("n")),
                put(TaskId::new(1), &gold),
            ])
            .unwrap();
        let m = Metrics::new();
        count_customers(&store, &[TaskId::new(0)], &m);
        assert_eq!(m.customers.with_label_values(&["gold"]).get(), 1);
        assert_eq!(m.customers.with_label_values(&["none"]).get(), 1);
        assert_eq!(m.customers.with_label_values(&["platinum"]).get(), 0);
        assert_eq!(
            m.customers_by_quadrant.with_label_values(&["none"]).get(),
            2
        );
    }
}
