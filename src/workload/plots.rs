//! Backtest charts as SVG files (plotters, SVG backend only): the
//! precision–recall trade-off of the rules and the reliability diagram of
//! the risk model.

use crate::workload::backtest::{Calibration, Comparison, RuleKind};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (720, 560);

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// A chart over the unit square (both axes are shares).
type UnitChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The unit-square chart both diagrams are drawn on, its axes described.
fn unit_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: String,
    (x_desc, y_desc): (String, String),
) -> Result<UnitChart<'a, 'b>> {
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// A line through `points` in the legend as `label`, each point marked
/// with a dot of `radius` and its text.
fn labelled_line(
    chart: &mut UnitChart<'_, '_>,
    points: &[((f64, f64), String)],
    colour: RGBColor,
    radius: i32,
    label: &str,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|(p, _)| *p),
            colour.stroke_width(2),
        ))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    chart
        .draw_series(points.iter().map(|(p, text)| {
            EmptyElement::at(*p)
                + Circle::new((0, 0), radius, colour.filled())
                + Text::new(text.clone(), (radius + 2, radius + 1), ("sans-serif", 11))
        }))
        .map_err(err)?;
    Ok(())
}

/// Precision–recall chart of a comparison: x is the share of churners
/// warned at least L days ahead, y the precision; the risk sweep as a line
/// (thresholds labelled), every other rule as a labelled point. Rules
/// without a figure (no churners, no warnings) are left out.
pub fn precision_recall_svg(c: &Comparison, path: &Path) -> Result<()> {
    let point = |r: &crate::workload::backtest::RuleReport| {
        Some((
            r.report.all_churners.warned_ahead_share?,
            r.report.precision?,
        ))
    };
    let mut sweep: Vec<(f64, (f64, f64))> = c
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::RiskSweep)
        .filter_map(|r| Some((r.threshold?, point(r)?)))
        .collect();
    sweep.sort_by(|a, b| a.0.total_cmp(&b.0));
    let others: Vec<(&str, (f64, f64))> = c
        .rules
        .iter()
        .filter(|r| r.kind != RuleKind::RiskSweep)
        .filter_map(|r| Some((r.name.as_str(), point(r)?)))
        .collect();

    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let mut chart = unit_chart(
        &root,
        "Churn warnings: precision vs. recall".into(),
        (
            format!(
                "share of churners warned >= {} days ahead",
                c.params.lead_days
            ),
            format!("precision (churned within {} days)", c.params.horizon_days),
        ),
    )?;
    if !sweep.is_empty() {
        let points: Vec<_> = sweep.iter().map(|(t, p)| (*p, format!("{t:.2}"))).collect();
        labelled_line(&mut chart, &points, BLUE, 3, "risk, threshold sweep")?;
    }
    for (i, (name, p)) in others.iter().enumerate() {
        let colour = Palette99::pick(i + 1).to_rgba();
        chart
            .draw_series(std::iter::once(
                EmptyElement::at(*p)
                    + Circle::new((0, 0), 5, colour.filled())
                    + Text::new(name.to_string(), (8, -8), ("sans-serif", 13)),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
    }
    let legend =
        (!sweep.is_empty() || !others.is_empty()).then_some(SeriesLabelPosition::MiddleRight);
    finish(chart, &root, legend, path)
}

/// Reliability diagram: mean predicted risk against the observed churn
/// share per non-empty decile (labelled with its count), and the diagonal
/// of perfect calibration.
pub fn reliability_svg(cal: &Calibration, path: &Path) -> Result<()> {
    let points: Vec<((f64, f64), String)> = cal
        .deciles
        .iter()
        .filter_map(|d| Some(((d.mean_predicted?, d.observed?), format!("n={}", d.n))))
        .collect();
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    let caption = match cal.brier {
        Some(b) => format!("Reliability of churn risk (Brier {b:.3})"),
        None => "Reliability of churn risk".to_string(),
    };
    let mut chart = unit_chart(
        &root,
        caption,
        (
            "mean predicted risk (per decile)".into(),
            "observed churn share".into(),
        ),
    )?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4).stroke_width(1),
        ))
        .map_err(err)?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    labelled_line(&mut chart, &points, RED, 4, "risk model")?;
    finish(chart, &root, Some(SeriesLabelPosition::UpperLeft), path)
}

/// Draws the legend (where `legend` says; none without series) and
/// writes the file.
fn finish<'a, 'b: 'a>(
    mut chart: UnitChart<'a, 'b>,
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    legend: Option<SeriesLabelPosition>,
    path: &Path,
) -> Result<()> {
    if let Some(position) = legend {
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present()
        .map_err(err)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the charts of a comparison into `dir` (created if need be):
/// `precision_recall.svg`, and `reliability.svg` when the comparison has a
/// calibration. Returns the files written.
pub fn write_plots(c: &Comparison, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let pr = dir.join("precision_recall.svg");
    precision_recall_svg(c, &pr)?;
    written.push(pr);
    if let Some(cal) = &c.calibration {
        let rel = dir.join("reliability.svg");
        reliability_svg(cal, &rel)?;
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::backtest::tests::comparison;

    #[test]
    fn writes_both_charts_with_their_series() {
        let dir = tempfile::tempdir().unwrap();
        let c = comparison();
        let files = write_plots(&c, &dir.path().join("plots")).unwrap();
        assert_eq!(files.len(), 2);

        let pr = std::fs::read_to_string(&files[0]).unwrap();
        assert!(files[0].ends_with("precision_recall.svg"));
        assert!(pr.starts_with("<svg"), "{}", &pr[..80.min(pr.len())]);
        assert!(pr.contains("<polyline"), "sweep line");
        assert!(pr.contains("<circle"), "points");
        for label in [
            "quadrant",
            "first_alarm",
            "0.20",
            "0.50",
            "risk, threshold sweep",
        ] {
            assert!(pr.contains(label), "{label}");
        }

        let rel = std::fs::read_to_string(&files[1]).unwrap();
        assert!(rel.contains("<polyline"));
        assert!(rel.contains("perfect calibration"));
        // the three non-empty deciles of the sample calibration
        assert_eq!(rel.matches("n=1").count(), 3, "{rel}");
    }

    #[test]
    fn no_calibration_no_reliability_chart() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = comparison();
        c.calibration = None;
        let files = write_plots(&c, dir.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert!(std::fs::metadata(&files[0]).unwrap().len() > 0);
    }
}
