//! The pure domain core: customers, events, value, tiers,
//! loyalty, churn warnings and time.
//!
//! Nothing in here does I/O or knows about Kafka, RocksDB, tokio or
//! Prometheus (ARCHITECTURE.md): the engine is `apply(state, event) ->
//! (state', outputs)` and `tick(state, now) -> (state', outputs)` behind the
//! `Profiles` port. That is what makes replay, property tests and
//! benchmarks cheap, and lets a reader learn the product from one folder.

pub mod engine;
pub mod event;
pub mod loyalty;
pub mod output;
pub mod profile;
pub mod tier;
pub mod time;
pub mod value;
pub mod warning;

#[cfg(test)]
mod tests;
