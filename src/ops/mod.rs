//! What operators see: Prometheus metrics, the gauges sampled from the
//! store, the pipeline's status, and the HTTP server that serves them.

pub(crate) mod gauges;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod status;

/// The Kafka clients report broker reachability through it (public for
/// the fault-injection tests that build a sink by hand).
pub use status::BrokerLink;
