//! Fitting the churn-risk model to labelled samples: a ridge-penalised
//! logistic regression by Newton's method (iteratively reweighted least
//! squares), with the purchase-gap coefficient held at zero when the data
//! would make it negative (the engine needs it non-negative to compute
//! when the risk crosses a threshold), and the fit's figures on a split of
//! customers it did not see.
//!
//! A shaped feature is fitted as hinge columns at knots (a piecewise-linear
//! contribution), so the fit stays one logistic regression of a few dozen
//! columns: a hand-written Cholesky is smaller than any linear-algebra
//! crate and, unlike the logistic-regression crates, the sign constraint
//! fits in it.

use super::backtest::{calibration, Calibration};
use super::samples::Sample;
use crate::domain::risk::{Feature, RiskModel, Shape, FEATURES};
use serde::Serialize;

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
    /// Points of each shaped feature's contribution (at quantiles of its
    /// values); below 2, every feature is linear.
    pub knots: usize,
    /// Points of the calibration map (at quantiles of the fitted logits);
    /// below 2, none.
    pub calibration_knots: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            ridge: 1.0,
            max_iterations: 100,
            tolerance: 1e-7,
            excluded: Vec::new(),
            knots: 0,
            calibration_knots: 0,
        }
    }
}

/// Whether a feature may be given a shape: not the purchase gap (its pull
/// must never fall as it grows, which one non-negative coefficient keeps
/// simply), not a 0/1 tier (a line through two points is already any
/// shape).
fn shapeable(f: Feature) -> bool {
    !matches!(
        f,
        Feature::PurchaseGap | Feature::TierPlatinum | Feature::TierGold | Feature::TierIron
    )
}

/// Evenly spaced quantiles (`n` of them, both ends included) of
/// `values`, rounded to six decimals — what a config fragment writes, so
/// the model in force is exactly the model fitted (`+ 0.0`: no `-0`) —
/// with repeats merged: mostly-0 values get fewer.
fn quantile_knots(mut values: Vec<f64>, n: usize) -> Vec<f64> {
    if n < 2 || values.is_empty() {
        return Vec::new();
    }
    values.sort_by(f64::total_cmp);
    let mut knots: Vec<f64> = (0..n)
        .map(|i| values[(i * (values.len() - 1)) / (n - 1)])
        .map(|k| (k * 1e6).round() / 1e6 + 0.0)
        .collect();
    knots.dedup();
    knots
}

/// The columns of value `v` over `knots` (at least two): `v` clamped to
/// the outer knots, then `max(0, v - knot)` per inner knot.
fn hinge_columns(knots: &[f64], v: f64, out: &mut Vec<f64>) {
    let c = v.clamp(knots[0], knots[knots.len() - 1]);
    out.push(c);
    out.extend(knots[1..knots.len() - 1].iter().map(|k| (c - k).max(0.0)));
}

/// The piecewise-linear function coefficients `b` of [`hinge_columns`]
/// make, as its values at the knots.
fn hinge_shape(knots: &[f64], b: &[f64]) -> Shape {
    let at = |x: f64| {
        b[0] * x
            + knots[1..knots.len() - 1]
                .iter()
                .zip(&b[1..])
                .map(|(k, h)| h * (x - k).max(0.0))
                .sum::<f64>()
    };
    Shape {
        points: knots.iter().map(|x| (*x, at(*x))).collect(),
    }
}

/// The columns a fit solves for: the intercept, then per feature either
/// its value (linear), or — shaped — its value clamped to its outer knots
/// and one hinge `max(0, value - knot)` per inner knot. A combination of
/// those columns is exactly a piecewise-linear contribution through the
/// knots, flat beyond them: a [`Shape`].
#[derive(Debug, Clone, PartialEq)]
struct Basis {
    /// Knots per feature, increasing; empty for a linear feature.
    knots: [Vec<f64>; FEATURES],
}

impl Basis {
    /// Every feature linear.
    fn linear() -> Basis {
        Basis {
            knots: Default::default(),
        }
    }

    /// Shapes every shapeable feature not in `excluded` through `n` knots
    /// at evenly spaced quantiles of its values in `samples` (repeated
    /// quantiles merge: a feature that is mostly 0 gets fewer); a feature
    /// with fewer than two distinct knots stays linear.
    fn quantiles(samples: &[&Sample], n: usize, excluded: &[Feature]) -> Basis {
        let mut b = Basis::linear();
        if n < 2 || samples.is_empty() {
            return b;
        }
        for f in Feature::all().filter(|f| shapeable(*f) && !excluded.contains(f)) {
            let knots = quantile_knots(samples.iter().map(|s| s.x[f as usize]).collect(), n);
            if knots.len() >= 2 {
                b.knots[f as usize] = knots;
            }
        }
        b
    }

    /// The columns of feature `f` (after the intercept's).
    fn width_of(&self, f: Feature) -> usize {
        self.knots[f as usize].len().saturating_sub(1).max(1)
    }

    /// Columns in all, the intercept's included.
    fn width(&self) -> usize {
        1 + Feature::all().map(|f| self.width_of(f)).sum::<usize>()
    }

    /// The first column of each feature, in [`Feature`] order.
    fn offsets(&self) -> [usize; FEATURES] {
        let mut at = 1;
        let mut out = [0; FEATURES];
        for f in Feature::all() {
            out[f as usize] = at;
            at += self.width_of(f);
        }
        out
    }

    /// Appends the columns of feature values `x` to `out`.
    fn row(&self, x: &[f64; FEATURES], out: &mut Vec<f64>) {
        out.push(1.0);
        for f in Feature::all() {
            let v = x[f as usize];
            match self.knots[f as usize].as_slice() {
                [] => out.push(v),
                k => hinge_columns(k, v, out),
            }
        }
    }

    /// The model of parameters `beta`. A shape is moved so that a value
    /// of 0 contributes 0 (its level there goes to the intercept): no
    /// evidence, no pull, so a warning's factors name only what is there.
    fn model(&self, beta: &[f64]) -> RiskModel {
        let offsets = self.offsets();
        let mut m = RiskModel::linear(beta[0], [0.0; FEATURES]);
        for f in Feature::all() {
            let b = &beta[offsets[f as usize]..offsets[f as usize] + self.width_of(f)];
            let k = &self.knots[f as usize];
            if k.is_empty() {
                m.weights[f as usize] = b[0];
                continue;
            }
            let shape = hinge_shape(k, b);
            let level = shape.at(0.0);
            m.intercept += level;
            m.shapes[f as usize] = Some(Shape {
                points: shape.points.iter().map(|(x, y)| (*x, y - level)).collect(),
            });
        }
        m
    }
}

/// A fitted model and how the fit went./// A fitted model and how the fit went.
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

fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// The samples' columns, row after row, and their labels.
struct Design {
    width: usize,
    rows: Vec<f64>,
    churned: Vec<bool>,
}

impl Design {
    /// `width` columns per sample, appended by `row`.
    fn new(
        samples: &[&Sample],
        width: usize,
        mut row: impl FnMut(&Sample, &mut Vec<f64>),
    ) -> Design {
        let mut rows = Vec::with_capacity(width * samples.len());
        for s in samples {
            row(s, &mut rows);
        }
        Design {
            width,
            rows,
            churned: samples.iter().map(|s| s.churned).collect(),
        }
    }

    fn rows(&self) -> impl Iterator<Item = (&[f64], bool)> {
        self.rows
            .chunks_exact(self.width)
            .zip(self.churned.iter().copied())
    }
}

/// Penalised log-likelihood of `beta` (higher is better).
fn objective(d: &Design, beta: &[f64], ridge: f64) -> f64 {
    let ll: f64 = d
        .rows()
        .map(|(z, churned)| {
            let t: f64 = z.iter().zip(beta).map(|(z, b)| z * b).sum();
            // log p = -ln(1 + e^-t), log (1 - p) = -ln(1 + e^t), stably
            let softplus = |u: f64| u.max(0.0) + (-u.abs()).exp().ln_1p();
            if churned {
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
fn solve(a: &[Vec<f64>], b: &[f64], free: &[usize]) -> Option<Vec<f64>> {
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
    let mut x = vec![0.0; b.len()];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k][i] * x[free[k]]).sum();
        x[free[i]] = (y[i] - s) / l[i][i];
    }
    Some(x)
}

/// Newton's method over the free parameters (the others stay 0); returns
/// the parameters, the iterations and whether it converged.
fn newton(d: &Design, free: &[usize], o: &FitOptions) -> (Vec<f64>, usize, bool) {
    let p = d.width;
    let mut beta = vec![0.0; p];
    // Start at the base rate, so the first step is a small one.
    let churned = d.churned.iter().filter(|c| **c).count() as f64;
    let n = d.churned.len() as f64;
    beta[0] = ((churned + 0.5) / (n - churned + 0.5)).ln();
    let mut current = objective(d, &beta, o.ridge);
    for iteration in 1..=o.max_iterations {
        let mut grad = vec![0.0; p];
        let mut hess = vec![vec![0.0; p]; p];
        for (z, churned) in d.rows() {
            let t: f64 = z.iter().zip(&beta).map(|(z, b)| z * b).sum();
            let prob = sigmoid(t);
            let r = f64::from(u8::from(churned)) - prob;
            let w = (prob * (1.0 - prob)).max(1e-12);
            for ((g, row), zi) in grad.iter_mut().zip(hess.iter_mut()).zip(z) {
                *g += r * zi;
                if *zi != 0.0 {
                    for (h, zj) in row.iter_mut().zip(z) {
                        *h += w * zi * zj;
                    }
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
        let mut next = beta.clone();
        loop {
            for i in free {
                next[*i] = beta[*i] + scale * step[*i];
            }
            let value = objective(d, &next, o.ridge);
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

/// Fits the model to `samples`: shaped features through knots at
/// quantiles of their values (`o.knots`), the others linear. A purchase
/// gap coefficient that comes out negative is held at zero and the rest
/// refitted.
pub fn fit(samples: &[&Sample], o: &FitOptions) -> Fitted {
    let basis = Basis::quantiles(samples, o.knots, &o.excluded);
    let design = Design::new(samples, basis.width(), |s, out| basis.row(&s.x, out));
    let offsets = basis.offsets();
    let gap = offsets[Feature::PurchaseGap as usize];
    let mut free: Vec<usize> = std::iter::once(0)
        .chain(
            Feature::all()
                .filter(|f| !o.excluded.contains(f))
                .flat_map(|f| offsets[f as usize]..offsets[f as usize] + basis.width_of(f)),
        )
        .collect();
    let mut pinned = Vec::new();
    let mut iterations = 0;
    loop {
        let (beta, used, converged) = newton(&design, &free, o);
        iterations += used;
        if beta[gap] < 0.0 && free.contains(&gap) {
            free.retain(|i| *i != gap);
            pinned.push(Feature::PurchaseGap);
            continue;
        }
        let mut model = basis.model(&beta);
        model.calibration = calibration_map(&model, samples, o);
        return Fitted {
            model,
            iterations,
            converged,
            pinned,
            excluded: o.excluded.clone(),
        };
    }
}

/// A map of `model`'s logit to a calibrated one, through
/// `o.calibration_knots` knots at quantiles of the samples' logits: a
/// logistic regression of the labels on the hinge columns of the logit.
/// Where the fitted map would fall between two knots, the later one is
/// raised to the earlier (a calibration that fell would reorder
/// customers). `None` with fewer than two knots.
fn calibration_map(model: &RiskModel, samples: &[&Sample], o: &FitOptions) -> Option<Shape> {
    let logits: Vec<f64> = samples.iter().map(|s| model.logit(&s.x)).collect();
    let knots = quantile_knots(logits.clone(), o.calibration_knots);
    if knots.len() < 2 {
        return None;
    }
    let mut at = logits.iter();
    let design = Design::new(samples, knots.len(), |_, out| {
        out.push(1.0);
        hinge_columns(&knots, *at.next().expect("one logit per sample"), out);
    });
    let free: Vec<usize> = (0..design.width).collect();
    let (beta, _, _) = newton(&design, &free, o);
    let mut shape = hinge_shape(&knots, &beta[1..]);
    let mut floor = f64::NEG_INFINITY;
    for (_, y) in &mut shape.points {
        *y += beta[0];
        floor = floor.max(*y);
        *y = floor;
    }
    Some(shape)
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
    use crate::domain::time::Millis;

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
                    at: Millis::from_ms(0),
                    x,
                    spurious: true,
                    churned,
                    customer_id: format!("c{i}"),
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
        RiskModel::linear(-1.5, weights)
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
    fn recovers_a_bent_contribution_through_its_knots() {
        // complaint_surge pulls hard on its first step and little after it
        let mut truth = model(&[(Feature::SignalSurge, 0.8)]);
        truth.shapes[Feature::ComplaintSurge as usize] = Some(Shape {
            points: vec![(-0.5, 0.0), (0.0, 0.0), (0.5, 2.0), (1.5, 2.5)],
        });
        let samples = drawn(&truth, 60_000);
        let refs: Vec<&Sample> = samples.iter().collect();
        let linear = fit(&refs, &FitOptions::default());
        let shaped = fit(
            &refs,
            &FitOptions {
                knots: 5,
                ..FitOptions::default()
            },
        );
        assert!(shaped.converged);
        let m = &shaped.model;
        let got = m.shapes[Feature::ComplaintSurge as usize]
            .as_ref()
            .expect("a shape");
        assert!(got.at(0.0).abs() < 1e-9, "no evidence, no pull");
        for x in [-0.4, 0.25, 0.5, 1.0, 1.4] {
            let want = truth.contribution(Feature::ComplaintSurge, x);
            assert!(
                (got.at(x) - want).abs() < 0.35,
                "at {x}: {} vs {want}",
                got.at(x)
            );
        }
        assert!((m.contribution(Feature::SignalSurge, 1.0) - 0.8).abs() < 0.15);
        assert!(
            m.shapes[Feature::PurchaseGap as usize].is_none(),
            "never shaped"
        );
        assert!(
            m.shapes[Feature::TierGold as usize].is_none(),
            "0/1 stays linear"
        );
        let loss = |f: &Fitted| figures(&f.model, &refs).log_loss.expect("samples");
        assert!(loss(&shaped) < loss(&linear), "the bend is worth its knots");
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
            at: Millis::from_ms(0),
            x: [0.0; FEATURES],
            spurious: false,
            churned: false,
            customer_id: format!("c{h}"),
            customer_hash: h,
        };
        let held = (0..10_000u64).filter(|h| is_held_out(&s(*h), 0.2)).count();
        assert_eq!(held, 2_000);
        assert!(!is_held_out(&s(9_999), 0.2) && is_held_out(&s(0), 0.2));
    }
}
