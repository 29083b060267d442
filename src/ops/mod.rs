//! What operators see: Prometheus metrics, the gauges sampled from the
//! store, the pipeline's status, and the HTTP server that serves them.

pub mod gauges;
pub mod http;
pub mod metrics;
pub mod status;
