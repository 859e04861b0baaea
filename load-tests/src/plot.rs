//! The report as a picture (SVG): transfers committed per second over the run (the warm-up
//! shaded), p50 and p99 latency per second, and the latency distribution by percentile.

use plotters::prelude::*;

use crate::report::Report;

fn no_font_warning() {
    eprintln!(
        "no sans-serif font found (looked for DejaVu Sans or Liberation Sans): the report's picture has no labels"
    );
}

/// Where a sans-serif font is looked for: plotters measures text with it (the SVG names the
/// family and the viewer draws it). Without one, the pictures have no labels.
const FONT_FILES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the first font found for "sans-serif", once; whether one was.
fn font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        FONT_FILES.iter().any(|path| {
            std::fs::read(path).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

/// Registers the labels' font, warning once if there is none.
pub fn ensure_font() {
    if !font() {
        no_font_warning();
    }
}

/// The report drawn as one SVG document.
pub fn svg(report: &Report) -> Result<String, String> {
    if !font() {
        no_font_warning();
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 1000)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                &format!(
                    "cbdc load: {}, {} wallets, {:.0} transfers/s, p99 {:.1} ms",
                    report.mode, report.wallets, report.transfers_per_s, report.latency.p99_ms
                ),
                ("sans-serif", 20),
            )
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        let seconds = report.timeline.last().map_or(1, |s| s.second + 1) as f64;
        let warmup = report.warmup_s as f64;

        // 1. Throughput over time.
        let top = report
            .timeline
            .iter()
            .map(|s| s.committed)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("transfers committed per second", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..seconds, 0f64..top * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("transfers/s")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (warmup, top * 1.1)],
                RGBColor(230, 230, 230).filled(),
            )))
            .map_err(|e| e.to_string())?
            .label("warm-up (left out)")
            .legend(|(x, y)| {
                Rectangle::new(
                    [(x, y - 5), (x + 15, y + 5)],
                    RGBColor(230, 230, 230).filled(),
                )
            });
        chart
            .draw_series(LineSeries::new(
                report
                    .timeline
                    .iter()
                    .map(|s| (s.second as f64 + 0.5, s.committed as f64)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("committed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;

        // 2. Latency over time.
        let top = report.timeline.iter().map(|s| s.p99_ms).fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("latency per second (ms)", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..seconds, 0f64..top * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("ms")
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, color, pick) in [
            (
                "p50",
                GREEN,
                (|s: &crate::drive::Second| s.p50_ms) as fn(&crate::drive::Second) -> f64,
            ),
            ("p99", RED, |s: &crate::drive::Second| s.p99_ms),
        ] {
            chart
                .draw_series(LineSeries::new(
                    report
                        .timeline
                        .iter()
                        .map(|s| (s.second as f64 + 0.5, pick(s))),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()
            .map_err(|e| e.to_string())?;

        // 3. The distribution: latency at each percentile, x in "nines" (90% = 1, 99% = 2).
        let nines = |q: f64| -(1.0 - q).max(1e-5).log10();
        let top = report
            .latency_distribution
            .iter()
            .map(|(_, ms)| *ms)
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(&panels[2])
            .caption("latency distribution in the window", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..5f64, 0f64..top * 1.1)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .x_labels(6)
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 10f64.powf(-x.round()));
                format!("{}", (p * 1000.0).round() / 1000.0)
            })
            .y_desc("ms")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                report
                    .latency_distribution
                    .iter()
                    .map(|(q, ms)| (nines(*q), *ms)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                report
                    .latency_distribution
                    .iter()
                    .map(|(q, ms)| Circle::new((nines(*q), *ms), 3, BLUE.filled())),
            )
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A scaling run drawn as one SVG document: transfers/s and bank 1's RSS against the number
/// of wallets (logarithmic).
pub fn scaling_svg(scaling: &crate::report::Scaling) -> Result<String, String> {
    if !font() {
        no_font_warning();
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1000, 700)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(
                &format!(
                    "cbdc load, scaling: {}; largest/smallest {:.2}× the transfers/s",
                    scaling.mode, scaling.throughput_ratio
                ),
                ("sans-serif", 20),
            )
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((2, 1));
        let lo = scaling.points.first().map_or(1, |p| p.wallets) as f64;
        let hi = scaling.points.last().map_or(10, |p| p.wallets) as f64;
        let (lo, hi) = (lo / 2.0, hi * 2.0);
        let panel = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                     caption: &str,
                     y_desc: &str,
                     color: RGBColor,
                     points: Vec<(f64, f64)>|
         -> Result<(), String> {
            let top = points.iter().map(|p| p.1).fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d((lo..hi).log_scale(), 0f64..top * 1.15)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("wallets")
                // Only powers of ten are named: a log axis ticks every multiple of each, and
                // their labels ran into each other near the top of a decade.
                .x_label_formatter(&|x| {
                    let decade = x.log10();
                    if (decade - decade.round()).abs() < 1e-9 {
                        format!("10^{}", decade.round() as i32)
                    } else {
                        String::new()
                    }
                })
                .y_desc(y_desc)
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )
                .map_err(|e| e.to_string())?;
            Ok(())
        };
        panel(
            &panels[0],
            "transfers committed per second",
            "transfers/s",
            BLUE,
            scaling
                .points
                .iter()
                .map(|p| (p.wallets as f64, p.transfers_per_s))
                .collect(),
        )?;
        panel(
            &panels[1],
            "bank 1's server RSS at the end of the window (MiB)",
            "MiB",
            RED,
            scaling
                .points
                .iter()
                .filter_map(|p| Some((p.wallets as f64, p.bank_rss_bytes? as f64 / 1048576.0)))
                .collect(),
        )?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}
