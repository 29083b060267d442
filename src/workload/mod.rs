//! Synthetic workloads with ground truth, and scoring churn warnings
//! against that truth.

pub mod backtest;
pub mod generate;
pub mod plots;
