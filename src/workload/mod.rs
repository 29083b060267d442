//! Synthetic workloads with ground truth, and scoring churn warnings
//! against that truth.

pub(crate) mod backtest;
pub mod generate;
