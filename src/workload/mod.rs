//! Synthetic workloads with ground truth, scoring churn warnings against
//! that truth, and fitting the churn-risk model to it.

pub mod backtest;
pub mod generate;
pub mod plots;
pub mod samples;
pub mod stake;
pub mod train;
