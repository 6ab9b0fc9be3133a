//! The `--report FILE.svg` plots, drawn with plotters' SVG backend.
//!
//! A run's report has two charts: latency over time (p50, p99 and max of the requests started
//! in each time bucket, with the request rate) and the latency distribution (latency against
//! percentile, on a scale where each "nine" — 90 %, 99 %, 99.9 % — gets the same width, the
//! way HdrHistogram plots are read). A sweep's report plots throughput and latency against the
//! number of concurrent clients. Latency axes are logarithmic: a failover's seconds-long stall
//! and a millisecond median stay readable on one chart.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::stats::{DistributionPoint, TimelinePoint};
use super::{LoadError, LoadReport, SweepReport};

/// Width and height of a report, in pixels.
const SIZE_PX: (u32, u32) = (960, 900);

/// Caption of the latency-over-time chart (tests look for it).
pub const TIMELINE_CAPTION: &str = "Latency over time";
/// Caption of the distribution chart.
pub const DISTRIBUTION_CAPTION: &str = "Latency distribution";
/// Caption of the sweep's throughput chart.
pub const SWEEP_THROUGHPUT_CAPTION: &str = "Throughput against concurrency";
/// Caption of the sweep's latency chart.
pub const SWEEP_LATENCY_CAPTION: &str = "Latency against concurrency";

/// One line of a chart: its legend label, its colour, and how to read its value from a point.
type Series<T> = (&'static str, RGBColor, fn(&T) -> f64);

fn err(e: impl std::fmt::Display) -> LoadError {
    LoadError::Report(e.to_string())
}

/// Lowest latency shown, in milliseconds (the log axis needs a positive floor).
const LATENCY_MS_FLOOR: f64 = 0.01;

/// A log axis range covering `values` (in ms), with some room above.
fn latency_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::MAX, LATENCY_MS_FLOOR);
    for v in values {
        lo = lo.min(v.max(LATENCY_MS_FLOOR));
        hi = hi.max(v);
    }
    if lo > hi {
        lo = LATENCY_MS_FLOOR;
    }
    // Headroom above for the legend.
    (lo / 1.5).max(LATENCY_MS_FLOOR)..(hi * 4.0).max(lo * 10.0)
}

/// The run's report: latency over time above, the latency distribution below.
pub fn report_svg(report: &LoadReport) -> Result<String, LoadError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE_PX).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(SIZE_PX.1 / 2);
        let title = format!(
            "{} mode, {} clients: {:.0} requests/s",
            report.mode, report.clients, report.requests_per_s
        );
        timeline_chart(&top, &report.timeline, &title)?;
        distribution_chart(&bottom, &report.distribution)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn timeline_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &[TimelinePoint],
    title: &str,
) -> Result<(), LoadError> {
    let t_max = points.last().map_or(1.0, |p| p.t_s).max(0.001) * 1.02;
    let y = latency_range(points.iter().flat_map(|p| [p.p50_ms, p.max_ms]));
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{TIMELINE_CAPTION} ({title})"), ("sans-serif", 18))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms)")
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    // Drawn from the top line down, so the median is never hidden under a tail line.
    let series: [Series<TimelinePoint>; 3] = [
        ("max", RGBColor(220, 60, 60), |p| p.max_ms),
        ("p99", RGBColor(230, 140, 0), |p| p.p99_ms),
        ("p50", BLUE, |p| p.p50_ms),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .map(|p| (p.t_s, value(p).max(LATENCY_MS_FLOOR))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Position of percentile `p` on the "nines" axis: 0 % → 0, 90 % → 1, 99 % → 2, …
fn nines(percentile: f64) -> f64 {
    let tail = (1.0 - percentile / 100.0).max(1e-9);
    -tail.log10()
}

fn nines_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn distribution_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &[DistributionPoint],
) -> Result<(), LoadError> {
    // The maximum (percentile 100) sits one step past the last finite percentile.
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.percentile < 100.0)
        .map(|p| (nines(p.percentile), p.latency_ms.max(LATENCY_MS_FLOOR)))
        .collect();
    let x_last = finite.last().map_or(0.0, |p| p.0);
    let x_max = (x_last + 0.5).ceil().max(1.0);
    let mut line = finite.clone();
    if let Some(max) = points.iter().find(|p| p.percentile >= 100.0) {
        line.push((x_last + 0.3, max.latency_ms.max(LATENCY_MS_FLOOR)));
    }
    let y = latency_range(line.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(DISTRIBUTION_CAPTION, ("sans-serif", 18))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, y.log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .light_line_style(TRANSPARENT)
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&nines_label)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(line, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("latency at percentile")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// A sweep's report: throughput above, p50 and p99 latency below, against client count.
pub fn sweep_svg(sweep: &SweepReport) -> Result<String, LoadError> {
    let runs = &sweep.runs;
    let c_max = runs.iter().map(|r| r.clients).max().unwrap_or(1).max(2) as f64;
    let x = || (1f64..c_max * 1.2).log_scale();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE_PX).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(SIZE_PX.1 / 2);

        let rps_max = runs.iter().map(|r| r.requests_per_s).fold(1.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("{SWEEP_THROUGHPUT_CAPTION} ({} mode)", sweep.mode),
                ("sans-serif", 18),
            )
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x(), 0f64..rps_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("requests/s")
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .map(|r| (r.clients as f64, r.requests_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), BLUE.stroke_width(2)))
            .map_err(err)?
            .label("requests/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        let y = latency_range(
            runs.iter()
                .flat_map(|r| [r.latency.p50_ms, r.latency.p99_ms]),
        );
        let mut chart = ChartBuilder::on(&bottom)
            .caption(SWEEP_LATENCY_CAPTION, ("sans-serif", 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(x(), y.log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("concurrent clients")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("latency (ms)")
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;
        let series: [Series<LoadReport>; 2] = [
            ("p50", BLUE, |r| r.latency.p50_ms),
            ("p99", RGBColor(230, 120, 0), |r| r.latency.p99_ms),
        ];
        for (name, color, value) in series {
            let pts: Vec<(f64, f64)> = runs
                .iter()
                .map(|r| (r.clients as f64, value(r).max(LATENCY_MS_FLOOR)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&3.0), "99.9%");
    }
}
