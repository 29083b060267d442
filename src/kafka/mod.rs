//! Every librdkafka adapter: client configuration (with librdkafka
//! pass-through), topic administration, the group consumer as the run
//! loop's source (with its rebalance context and doorbell), the
//! transactional producer (sink), the changelog and its restore, the
//! partitioner, group lookup, the record shapes we write, and `tail`.

pub mod admin;
pub(crate) mod changelog;
mod doorbell;
pub(crate) mod group;
pub mod partitioner;
pub mod rebalance;
pub mod records;
pub(crate) mod restore;
pub mod sink;
pub(crate) mod source;
pub(crate) mod summaries;
pub mod tail;

use crate::config::KafkaConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use std::time::Duration;

/// The base client config every client shares: the bootstrap servers, then
/// every pass-through property (so TLS/SASL settings reach all clients).
pub fn client_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.bootstrap_servers);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// Logs an error librdkafka reported for a whole client. Consumers that
/// ask for partition ends (`enable.partition.eof`) also get each end here
/// as a "global error": expected, so not logged. Most others are transient
/// (a broker unreachable) and retried by librdkafka: a warning.
pub(crate) fn log_client_error(client: &'static str, error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
        tracing::warn!(client, error = %error, reason, "librdkafka client error");
    }
}

/// Whether librdkafka's statistics show a connection up to any broker.
/// Brokers learned from metadata have a node id; the bootstrap and
/// coordinator entries (-1) are aliases of them.
pub(crate) fn any_broker_up(statistics: &Statistics) -> bool {
    statistics
        .brokers
        .values()
        .any(|b| b.nodeid >= 0 && b.state == "UP")
}

/// Enqueues one record, waiting out a full local queue (librdkafka's
/// `queue.buffering.max.messages`) in 5 ms steps; the caller awaits the
/// delivery when it needs it, so many records can be in flight at once.
pub fn enqueue<C, K, P>(
    producer: &FutureProducer<C>,
    mut record: FutureRecord<'_, K, P>,
) -> anyhow::Result<DeliveryFuture>
where
    C: ClientContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, back)) => anyhow::bail!("producing to {} failed: {e}", back.topic),
        }
    }
}

/// Sets `key` unless the user passed it through `kafka.properties`: our
/// defaults are tuned for the pipeline, but the operator has the last word.
pub fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

#[cfg(test)]
mod tests {
    /// The SASL mechanisms the README promises are compiled into the
    /// librdkafka this binary links.
    #[test]
    fn librdkafka_has_tls_kerberos_and_oidc() {
        let conf = rdkafka::ClientConfig::new().create_native_config().unwrap();
        let features = conf.get("builtin.features").unwrap();
        for f in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_gssapi",
            "sasl_oauthbearer",
            "oidc",
        ] {
            assert!(
                features.split(',').any(|x| x == f),
                "{f} missing from {features}"
            );
        }
    }
}
