//! Fitting the churn-risk model to labelled samples: a ridge-penalised
//! logistic regression by Newton's method (iteratively reweighted least
//! squares), with the purchase-gap coefficient held at zero when the data
//! would make it negative (the engine needs it non-negative to compute
//! when the risk crosses a threshold), and the fit's figures on a split of
//! customers it did not see.
//!
//! Eleven parameters need an 11 x 11 solve per iteration: a hand-written
//! Cholesky is smaller than any linear-algebra crate and, unlike the
//! logistic-regression crates, the sign constraint fits in it.

use super::backtest::{calibration, Calibration};
use super::samples::Sample;
use crate::domain::risk::{Feature, RiskModel, FEATURES};
use serde::Serialize;

/// Parameters: the intercept, then one weight per feature.
const P: usize = FEATURES + 1;

/// How the fit runs.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// L2 penalty on the weights (not the intercept), in units of samples:
    /// keeps the fit defined when a feature never varies (a tier nobody
    /// has) and shrinks what the data cannot support.
    pub ridge: f64,
    /// Newton iterations at most.
    pub max_iterations: usize,
    /// Stop when no parameter moves more than this.
    pub tolerance: f64,
    /// Features left out (coefficient 0).
    pub excluded: Vec<Feature>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            ridge: 1.0,
            max_iterations: 100,
            tolerance: 1e-7,
            excluded: Vec::new(),
        }
    }
}

/// A fitted model and how the fit went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fitted {
    /// The model.
    pub model: RiskModel,
    /// Newton iterations used (over every refit).
    pub iterations: usize,
    /// Whether the last refit converged within the iteration limit.
    pub converged: bool,
    /// Features whose coefficient is held at zero by its sign constraint.
    pub pinned: Vec<Feature>,
    /// Features left out by the options.
    pub excluded: Vec<Feature>,
}

/// How well a model predicts a set of samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// Samples.
    pub samples: usize,
    /// Of which churned within the horizon.
    pub churned: usize,
    /// Mean negative log-likelihood.
    pub log_loss: Option<f64>,
    /// Area under the ROC curve: the chance that a churner's sample ranks
    /// above a stayer's.
    pub auc: Option<f64>,
    /// Reliability table, Brier score and calibration error.
    pub calibration: Calibration,
}

fn design(x: &[f64; FEATURES]) -> [f64; P] {
    let mut z = [1.0; P];
    z[1..].copy_from_slice(x);
    z
}

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// Penalised log-likelihood of `beta` (higher is better).
fn objective(samples: &[&Sample], beta: &[f64; P], ridge: f64) -> f64 {
    let ll: f64 = samples
        .iter()
        .map(|s| {
            let t: f64 = design(&s.x).iter().zip(beta).map(|(z, b)| z * b).sum();
            // log p = -ln(1 + e^-t), log (1 - p) = -ln(1 + e^t), stably
            let softplus = |u: f64| u.max(0.0) + (-u.abs()).exp().ln_1p();
            if s.churned {
                -softplus(-t)
            } else {
                -softplus(t)
            }
        })
        .sum();
    ll - 0.5 * ridge * beta[1..].iter().map(|b| b * b).sum::<f64>()
}

/// Solves `a x = b` for the symmetric positive-definite `a` restricted to
/// the indices `free`; `None` when it is not positive definite.
fn solve(a: &[[f64; P]; P], b: &[f64; P], free: &[usize]) -> Option<[f64; P]> {
    let n = free.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let sum = a[free[i]][free[j]] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if sum <= 0.0 || !sum.is_finite() {
                    return None;
                }
                l[i][i] = sum.sqrt();
            } else {
                l[i][j] = sum / l[j][j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i][k] * y[k]).sum();
        y[i] = (b[free[i]] - s) / l[i][i];
    }
    let mut x = [0.0; P];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * x[free[k]]).sum();
        x[free[i]] = (y[i] - s) / l[i][i];
    }
    Some(x)
}

/// Newton's method over the free parameters (the others stay 0); returns
/// the parameters, the iterations and whether it converged.
fn newton(samples: &[&Sample], free: &[usize], o: &FitOptions) -> ([f64; P], usize, bool) {
    let mut beta = [0.0; P];
    // Start at the base rate, so the first step is a small one.
    let churned = samples.iter().filter(|s| s.churned).count() as f64;
    let n = samples.len() as f64;
    beta[0] = ((churned + 0.5) / (n - churned + 0.5)).ln();
    let mut current = objective(samples, &beta, o.ridge);
    for iteration in 1..=o.max_iterations {
        let mut grad = [0.0; P];
        let mut hess = [[0.0; P]; P];
        for s in samples {
            let z = design(&s.x);
            let t: f64 = z.iter().zip(&beta).map(|(z, b)| z * b).sum();
            let p = sigmoid(t);
            let r = f64::from(u8::from(s.churned)) - p;
            let w = (p * (1.0 - p)).max(1e-12);
            for ((g, row), zi) in grad.iter_mut().zip(hess.iter_mut()).zip(&z) {
                *g += r * zi;
                for (h, zj) in row.iter_mut().zip(&z) {
                    *h += w * zi * zj;
                }
            }
        }
        // the ridge, on the weights only
        for (i, (g, row)) in grad.iter_mut().zip(hess.iter_mut()).enumerate().skip(1) {
            *g -= o.ridge * beta[i];
            row[i] += o.ridge;
        }
        let Some(step) = solve(&hess, &grad, free) else {
            return (beta, iteration, false);
        };
        // Halve the step until the objective does not fall: Newton's
        // full step can overshoot far from the optimum.
        let mut scale = 1.0;
        let mut next = beta;
        loop {
            for i in free {
                next[*i] = beta[*i] + scale * step[*i];
            }
            let value = objective(samples, &next, o.ridge);
            if value >= current || scale < 1e-6 {
                current = value;
                break;
            }
            scale /= 2.0;
        }
        let moved = free
            .iter()
            .map(|i| (next[*i] - beta[*i]).abs())
            .fold(0.0, f64::max);
        beta = next;
        if moved < o.tolerance {
            return (beta, iteration, true);
        }
    }
    (beta, o.max_iterations, false)
}

/// Fits the model to `samples`. Features whose coefficient must not be
/// negative (the purchase gap) and come out negative are held at zero and
/// the rest refitted.
pub fn fit(samples: &[&Sample], o: &FitOptions) -> Fitted {
    let gap = 1 + Feature::PurchaseGap as usize;
    let mut free: Vec<usize> = (0..P)
        .filter(|i| *i == 0 || !o.excluded.iter().any(|f| 1 + *f as usize == *i))
        .collect();
    let mut pinned = Vec::new();
    let mut iterations = 0;
    loop {
        let (beta, used, converged) = newton(samples, &free, o);
        iterations += used;
        if beta[gap] < 0.0 && free.contains(&gap) {
            free.retain(|i| *i != gap);
            pinned.push(Feature::PurchaseGap);
            continue;
        }
        let mut weights = [0.0; FEATURES];
        weights.copy_from_slice(&beta[1..]);
        return Fitted {
            model: RiskModel {
                intercept: beta[0],
                weights,
            },
            iterations,
            converged,
            pinned,
            excluded: o.excluded.clone(),
        };
    }
}

/// The chance that a positive ranks above a negative (ties count half);
/// `None` without both.
fn auc(scored: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|s| s.1).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann–Whitney: the sum of the positives' ranks, ties given their mean
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let j = i + sorted[i..]
            .iter()
            .take_while(|s| s.0 == sorted[i].0)
            .count();
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// How well `model` predicts `samples`.
pub fn figures(model: &RiskModel, samples: &[&Sample]) -> Figures {
    let scored: Vec<(f64, bool)> = samples
        .iter()
        .map(|s| (model.probability(&s.x), s.churned))
        .collect();
    let n = scored.len();
    let log_loss = (n > 0).then(|| {
        scored
            .iter()
            .map(|&(p, y)| {
                let p = p.clamp(1e-15, 1.0 - 1e-15);
                -(if y { p.ln() } else { (1.0 - p).ln() })
            })
            .sum::<f64>()
            / n as f64
    });
    Figures {
        samples: n,
        churned: scored.iter().filter(|s| s.1).count(),
        log_loss,
        auc: auc(&scored),
        calibration: calibration(&scored),
    }
}

/// Whether a sample's customer is in the held-out share `held_out` (0..1)
/// of customers: by the customer's hash, so the split is the same on
/// every run and a customer's months stay on one side.
pub fn is_held_out(s: &Sample, held_out: f64) -> bool {
    (s.customer_hash % 10_000) < (held_out * 10_000.0).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples drawn from a known model, with a deterministic generator.
    fn drawn(model: &RiskModel, n: usize) -> Vec<Sample> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|i| {
                let mut x = [0.0; FEATURES];
                let tiers = [Feature::TierPlatinum, Feature::TierGold, Feature::TierIron];
                for f in Feature::all().filter(|f| !tiers.contains(f)) {
                    x[f as usize] = uniform() * 2.0 - 0.5;
                }
                x[tiers[i % 3] as usize] = 1.0;
                let churned = uniform() < model.probability(&x);
                Sample {
                    at: 0,
                    x,
                    spurious: true,
                    churned,
                    customer_hash: i as u64,
                }
            })
            .collect()
    }

    /// A model with the named weights, 0 for the others.
    fn model(named: &[(Feature, f64)]) -> RiskModel {
        let mut weights = [0.0; FEATURES];
        for (f, w) in named {
            weights[*f as usize] = *w;
        }
        RiskModel {
            intercept: -1.5,
            weights,
        }
    }

    #[test]
    fn recovers_the_coefficients_it_was_drawn_from() {
        let truth = model(&[
            (Feature::ComplaintSurge, 1.2),
            (Feature::SignalSurge, 0.8),
            (Feature::LowAttitude, 1.5),
            (Feature::PurchaseGap, 0.7),
            (Feature::PurchaseSlowdown, 0.9),
            (Feature::SpendDecline, 0.4),
            (Feature::Tenure, -0.6),
            (Feature::TierPlatinum, 0.3),
            (Feature::TierGold, -0.2),
        ]);
        let samples = drawn(&truth, 60_000);
        let refs: Vec<&Sample> = samples.iter().collect();
        let f = fit(&refs, &FitOptions::default());
        assert!(f.converged);
        assert!(f.pinned.is_empty());
        assert!((f.model.intercept - truth.intercept).abs() < 0.25, "{f:?}");
        for (got, want) in f.model.weights.iter().zip(&truth.weights) {
            assert!((got - want).abs() < 0.12, "{got} vs {want}: {f:?}");
        }
        let fig = figures(&f.model, &refs);
        assert!(fig.calibration.calibration_error.expect("deciles") < 0.03);
        assert!(fig.auc.expect("both classes") > 0.7);
    }

    #[test]
    fn a_negative_gap_coefficient_is_held_at_zero() {
        let truth = model(&[(Feature::ComplaintSurge, 1.0), (Feature::PurchaseGap, -1.5)]);
        let samples = drawn(&truth, 20_000);
        let refs: Vec<&Sample> = samples.iter().collect();
        let f = fit(&refs, &FitOptions::default());
        assert_eq!(f.pinned, [Feature::PurchaseGap]);
        assert_eq!(f.model.weights[Feature::PurchaseGap as usize], 0.0);
        let surge = f.model.weights[Feature::ComplaintSurge as usize];
        assert!((surge - 1.0).abs() < 0.15, "{f:?}");
    }

    #[test]
    fn auc_by_hand() {
        assert_eq!(auc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auc(&[(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(
            auc(&[(0.2, false), (0.4, true), (0.6, false), (0.8, true)]),
            Some(0.75)
        );
        assert_eq!(auc(&[(0.2, true)]), None);
    }

    #[test]
    fn the_split_is_by_customer_and_stable() {
        let s = |h| Sample {
            at: 0,
            x: [0.0; FEATURES],
            spurious: false,
            churned: false,
            customer_hash: h,
        };
        let held = (0..10_000u64).filter(|h| is_held_out(&s(*h), 0.2)).count();
        assert_eq!(held, 2_000);
        assert!(!is_held_out(&s(9_999), 0.2) && is_held_out(&s(0), 0.2));
    }
}
