//! tierstream: a Kafka stream processor that keeps a rolling profile of
//! every customer, places it in the customer pyramid, and emits tier
//! changes (see `docs/spec.md`).
//!
//! `domain` is the pure core; everything else adapts it to files, Kafka,
//! RocksDB and Prometheus.

#![warn(missing_docs)]

pub mod backtest;
pub mod cli;
pub mod codec;
pub mod config;
pub mod domain;
pub mod gauges;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod partition;
pub mod pipeline;
pub mod processor;
pub mod replay;
pub mod status;
pub mod store;
