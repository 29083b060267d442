//! Kafka adapters: client configuration (with librdkafka pass-through),
//! topic administration, and the record shapes we write.

pub mod admin;
pub mod records;
pub mod tail;

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

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
