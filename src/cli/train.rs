//! `tierstream train`: fit the churn-risk coefficients to a labelled
//! history — a user's own events and churn labels, or a generated
//! workload — and write them as a config fragment, with the fit's figures
//! on customers it did not see beside those of the coefficients in force.

use crate::config::{Config, INTERCEPT};
use crate::domain::engine::Engine;
use crate::domain::risk::{Feature, RiskModel, Shape};
use crate::domain::time::DAY_MS;
use crate::workload::generate::Truth;
use crate::workload::samples::{collect, Sample, Samples};
use crate::workload::train::{figures, fit, is_held_out, Figures, FitOptions, Fitted};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

/// `train` flags.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Events (JSONL, the input formats), replayed as one task.
    #[arg(long)]
    pub input: PathBuf,
    /// Churn labels, one JSON object per line: `customer_id` and
    /// `churn_date` (RFC 3339, null for a customer who stayed), as
    /// `generate --truth` writes them. Customers not named are left out.
    #[arg(long)]
    pub truth: PathBuf,
    /// TOML config file: the policy the features are computed under, and
    /// the risk horizon the labels are taken over.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the fitted coefficients as a `[warnings.risk_coefficients]`
    /// config fragment to this file.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Share of customers held out of the fit to measure it on.
    #[arg(long, default_value_t = 0.2)]
    pub held_out: f64,
    /// L2 penalty on the coefficients, in samples.
    #[arg(long, default_value_t = FitOptions::default().ridge)]
    pub ridge: f64,
    /// Write the fit and its figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every labelled sample (customer, month start, quadrant, label, feature
    /// values by name) as JSONL to this file, to study the features in
    /// other tools.
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Features to leave out of the model (their coefficient held at 0),
    /// comma-separated: e.g. `tenure` when every customer of the history
    /// joined at its start, so tenure would only measure the calendar.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Points of each shaped feature's contribution, at evenly spaced
    /// quantiles of its values (a piecewise-linear shape instead of one
    /// coefficient; the purchase gap and the tiers stay linear); 0 fits
    /// every feature linear.
    #[arg(long, default_value_t = 4)]
    pub knots: usize,
    /// Points of the calibration map of the fitted logit (a monotone,
    /// piecewise-linear recalibration, at evenly spaced quantiles of the
    /// logits); 0 for none.
    #[arg(long, default_value_t = 6)]
    pub calibration_knots: usize,
    /// Which customers' samples to fit on: `spurious` (in the spurious
    /// quadrant at the month start: the customers a warning can open for,
    /// so the coefficients rank them best) or `all` with an attitude.
    #[arg(long, value_enum, default_value_t = Population::Spurious)]
    pub population: Population,
}

/// The samples a fit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Population {
    /// Customers in the spurious quadrant.
    Spurious,
    /// Every customer with an attitude.
    All,
}

/// The fit and its figures, as `--json` writes them.
#[derive(Debug, Serialize)]
struct TrainReport {
    population: Population,
    horizon_days: f64,
    held_out_share: f64,
    fitted: Fitted,
    train: Figures,
    held_out: Figures,
    /// The coefficients of the config on the same held-out customers.
    in_force_held_out: Figures,
    rejected_lines: u64,
    unlabelled_samples: usize,
    censored_samples: usize,
}

/// `prefix` and the names of `features`, or nothing for none.
fn names(prefix: &str, features: &[Feature]) -> String {
    if features.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = features.iter().map(|f| f.as_str()).collect();
    format!("{prefix}{}", names.join(", "))
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

fn render_figures(name: &str, f: &Figures) -> String {
    format!(
        "{name:<28} {:>9} {:>8} {:>9} {:>7} {:>7} {:>8}\n",
        f.samples,
        f.churned,
        opt(f.log_loss, 4),
        opt(f.auc, 3),
        opt(f.calibration.brier, 4),
        opt(f.calibration.calibration_error, 4),
    )
}

impl TrainReport {
    fn render(&self) -> String {
        let mut s = format!(
            "train: {:?} customers; label = no purchase within {} days of a month start; {:.0}% of customers held out\n",
            self.population,
            self.horizon_days,
            self.held_out_share * 100.0
        );
        s.push_str(&format!(
            "left out: {} rejected lines, {} unlabelled samples, {} samples whose horizon runs past the history\n",
            self.rejected_lines, self.unlabelled_samples, self.censored_samples
        ));
        s.push_str(&format!(
            "fit: {} Newton iterations{}{}{}\n",
            self.fitted.iterations,
            if self.fitted.converged {
                ""
            } else {
                " (NOT converged: raise --ridge)"
            },
            names("; held at 0 by the sign constraint: ", &self.fitted.pinned),
            names("; left out (--exclude): ", &self.fitted.excluded),
        ));
        s.push_str(&format!(
            "{:<28} {:>9} {:>8} {:>9} {:>7} {:>7} {:>8}\n",
            "", "samples", "churned", "log loss", "AUC", "Brier", "cal.err"
        ));
        s.push_str(&render_figures("fitted, train", &self.train));
        s.push_str(&render_figures("fitted, held out", &self.held_out));
        s.push_str(&render_figures(
            "config in force, held out",
            &self.in_force_held_out,
        ));
        s.push_str("held-out reliability of the fitted model:\n");
        s.push_str(&self.held_out.calibration.render());
        s.push_str("model:\n");
        s.push_str(&fragment_body(&self.fitted.model));
        s
    }
}

/// A model as config: `warnings.risk_calibration`,
/// `[warnings.risk_coefficients]` (intercept first) and
/// `[warnings.risk_shapes]` naming every feature, `[]` for a linear one,
/// so the fragment replaces whatever model a config had before.
fn fragment_body(m: &RiskModel) -> String {
    let points = |shape: Option<&Shape>| {
        let p: Vec<String> = shape
            .iter()
            .flat_map(|s| &s.points)
            .map(|(x, y)| format!("[{x}, {y:.4}]"))
            .collect();
        format!("[{}]", p.join(", "))
    };
    let mut s = format!(
        "[warnings]\nrisk_calibration = {}\n\n[warnings.risk_coefficients]\n{INTERCEPT} = {:.4}\n",
        points(m.calibration.as_ref()),
        m.intercept
    );
    for f in Feature::all() {
        s.push_str(&format!("{} = {:.4}\n", f.as_str(), m.weights[f as usize]));
    }
    s.push_str("\n[warnings.risk_shapes]\n");
    for f in Feature::all() {
        s.push_str(&format!(
            "{} = {}\n",
            f.as_str(),
            points(m.shapes[f as usize].as_ref())
        ));
    }
    s
}

fn write_fragment(path: &Path, input: &Path, r: &TrainReport) -> Result<()> {
    let mut out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    write!(
        out,
        "# Fitted by `tierstream train` on {}: {} samples, churn within {} days;\n\
         # held out {}: log loss {}, AUC {}, Brier {}, calibration error {}.\n{}",
        input.display(),
        r.train.samples + r.held_out.samples,
        r.horizon_days,
        r.held_out.samples,
        opt(r.held_out.log_loss, 4),
        opt(r.held_out.auc, 3),
        opt(r.held_out.calibration.brier, 4),
        opt(r.held_out.calibration.calibration_error, 4),
        fragment_body(&r.fitted.model)
    )?;
    Ok(())
}

pub(super) fn run_train(a: TrainArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.held_out) {
        bail!("--held-out: {} is not a share in [0, 1)", a.held_out);
    }
    if !(a.ridge.is_finite() && a.ridge > 0.0) {
        bail!("--ridge: {} must be a positive number", a.ridge);
    }
    let cfg = Config::load(a.config.as_deref())?;
    let truth: Vec<Truth> = super::read_jsonl(&a.truth)?;
    let horizon_days = cfg.warnings.risk_horizon_days;
    let Samples {
        samples,
        rejected,
        unlabelled,
        censored,
        ..
    } = samples_of(&cfg, &a.input, &truth)?;
    let (held, kept): (Vec<&Sample>, Vec<&Sample>) = samples
        .iter()
        .filter(|s| a.population == Population::All || s.spurious)
        .partition(|s| is_held_out(s, a.held_out));
    if kept.iter().filter(|s| s.churned).count() == 0 || kept.iter().all(|s| s.churned) {
        bail!(
            "{} training samples, but a fit needs churners and stayers among them: \
             is the history longer than the horizon ({horizon_days} days), and do the \
             labels name its customers?",
            kept.len()
        );
    }
    eprintln!(
        "train: fitting {} samples ({} held out)",
        kept.len(),
        held.len()
    );
    let excluded = a
        .exclude
        .iter()
        .map(|name| {
            name.trim().parse::<Feature>().map_err(|_| {
                let known: Vec<&str> = Feature::all().map(Feature::as_str).collect();
                anyhow::anyhow!(
                    "--exclude: unknown feature {name:?} (known: {})",
                    known.join(", ")
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(path) = &a.samples {
        write_samples(path, &samples)?;
    }
    let options = FitOptions {
        ridge: a.ridge,
        excluded,
        knots: a.knots,
        calibration_knots: a.calibration_knots,
        ..FitOptions::default()
    };
    let fitted = fit(&kept, &options);
    let report = TrainReport {
        population: a.population,
        horizon_days,
        held_out_share: a.held_out,
        train: figures(&fitted.model, &kept),
        held_out: figures(&fitted.model, &held),
        in_force_held_out: figures(&cfg.policy().loyalty.risk.model, &held),
        fitted,
        rejected_lines: rejected,
        unlabelled_samples: unlabelled,
        censored_samples: censored,
    };
    print!("{}", report.render());
    if let Some(path) = &a.output {
        write_fragment(path, &a.input, &report)?;
        eprintln!("train: wrote {}", path.display());
    }
    if let Some(path) = &a.json {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        serde_json::to_writer_pretty(f, &report)?;
    }
    Ok(())
}

/// One line of `--samples`.
#[derive(Serialize)]
struct SampleLine<'a> {
    customer_id: &'a str,
    at: String,
    spurious: bool,
    churned: bool,
    features: std::collections::BTreeMap<&'a str, f64>,
}

fn write_samples(path: &Path, samples: &[Sample]) -> Result<()> {
    super::write_jsonl(
        path,
        samples.iter().map(|s| SampleLine {
            customer_id: &s.customer_id,
            at: chrono::DateTime::from_timestamp_millis(s.at.ms())
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            spurious: s.spurious,
            churned: s.churned,
            features: Feature::all()
                .map(|f| (f.as_str(), s.x[f as usize]))
                .collect(),
        }),
    )
}

/// The labelled risk samples of `input` under the config's policy.
pub(super) fn samples_of(cfg: &Config, input: &Path, truth: &[Truth]) -> Result<Samples> {
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let engine = Engine::new(cfg.policy());
    let horizon = (cfg.warnings.risk_horizon_days * DAY_MS as f64) as i64;
    collect(
        &engine,
        &cfg.decode_rules(),
        &mut BufReader::with_capacity(1 << 20, f),
        truth,
        horizon,
        crate::pipeline::wall_clock(),
    )
}
