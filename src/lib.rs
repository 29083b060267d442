//! tierstream: a Kafka stream processor that keeps a rolling profile of
//! every customer, places it in the customer pyramid, and emits tier
//! changes and churn warnings (see `docs/spec.md`).
//!
//! `domain` is the pure core; everything else adapts it: `codec` (JSON in
//! and out), `store` (state), `pipeline` (the run loop and the step it
//! shares with replay), `kafka` (every librdkafka adapter), `ops`
//! (metrics, gauges, status, HTTP), `workload` (generator, backtest) and
//! `cli` (one file per subcommand).

#![warn(missing_docs)]

pub mod cli;
pub mod codec;
pub mod config;
pub mod domain;
pub mod kafka;
pub mod ops;
pub mod pipeline;
pub mod store;
pub mod workload;
