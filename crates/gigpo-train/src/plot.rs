//! Learning curves as a PNG: one panel per metric, one line per run (several runs overlay).
//!
//! Text is drawn with an embedded font (DejaVu Sans Mono, see `assets/`), so no system fonts
//! are needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::error::{Result, TrainError};
use crate::metrics::{names, read_jsonl, Record};

/// The panels drawn, in order.
pub const PANELS: [&str; 12] = [
    names::EVAL_SUCCESS,
    names::EVAL_GREEDY_SUCCESS,
    names::TRAIN_SUCCESS,
    names::TRAIN_RETURN,
    names::TRAIN_INVALID,
    names::ADV_STEP_GROUP_SHARE,
    names::ADV_ZERO_VAR_SHARE,
    names::ADV_DISTINCT_ACTION_SHARE,
    names::ADV_MEAN_ABS_STEP,
    names::ADV_MEAN_ABS_EPISODE,
    names::LOSS_PG,
    names::LOSS_ENTROPY,
];

static FONT: Once = Once::new();
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn register() {
    FONT.call_once(|| {
        // The bytes are a valid TrueType font; a failure here would only mean blank text.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT_BYTES);
    });
}

/// One run's curves.
#[derive(Debug, Clone)]
pub struct RunCurves {
    /// The legend label (the run directory's name).
    pub label: String,
    /// The run's records.
    pub records: Vec<Record>,
}

impl RunCurves {
    /// Reads `run_dir/metrics.jsonl`.
    pub fn load(run_dir: &Path) -> Result<Self> {
        let records = read_jsonl(&run_dir.join("metrics.jsonl"))?;
        let label = run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| run_dir.display().to_string());
        Ok(Self { label, records })
    }

    /// (iteration, value) of every record holding `metric`, without points that cannot be
    /// drawn (see [`PLOT_LIMIT`]).
    pub fn series(&self, metric: &str) -> Vec<(f64, f64)> {
        self.points(metric).filter(|&p| drawable(p)).collect()
    }

    /// How many finite points of `metric` lie beyond [`PLOT_LIMIT`] and are left out.
    pub fn out_of_range(&self, metric: &str) -> usize {
        self.points(metric)
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && !drawable((x, y)))
            .count()
    }

    fn points<'a>(&'a self, metric: &'a str) -> impl Iterator<Item = (f64, f64)> + 'a {
        self.records
            .iter()
            .filter_map(move |r| Some((*r.get(names::ITERATION)?, *r.get(metric)?)))
    }
}

/// The largest magnitude drawn on either axis. Beyond it, the span of an axis (and the tick
/// spacing derived from it) would overflow `f64`; such points are left out and counted in the
/// panel's caption and in the warnings [`draw`] returns.
pub const PLOT_LIMIT: f64 = 1e300;

fn drawable((x, y): (f64, f64)) -> bool {
    x.abs() <= PLOT_LIMIT && y.abs() <= PLOT_LIMIT
}

/// Draws the curves of every run directory into `out` (PNG), replacing it atomically. Returns
/// a warning for each panel that left points out.
pub fn plot_runs(run_dirs: &[PathBuf], out: &Path) -> Result<Vec<String>> {
    let runs = run_dirs
        .iter()
        .map(|d| RunCurves::load(d))
        .collect::<Result<Vec<_>>>()?;
    draw(&runs, &PANELS, out)
}

/// Draws `panels` (metric names) for `runs` into `out` (PNG), three panels a row, replacing
/// `out` atomically (the rules of [`gigpo_model::atomic`]). Returns a warning for each panel
/// whose points beyond [`PLOT_LIMIT`] were left out.
pub fn draw(runs: &[RunCurves], panels: &[&str], out: &Path) -> Result<Vec<String>> {
    register();
    gigpo_model::atomic::atomic_file(out, |tmp| render(runs, panels, tmp, out))?;
    Ok(panels
        .iter()
        .filter_map(|m| {
            let n: usize = runs.iter().map(|r| r.out_of_range(m)).sum();
            (n > 0).then(|| format!("{m}: {n} point(s) beyond ±{PLOT_LIMIT:e} not drawn"))
        })
        .collect())
}

/// Draws into the file `tmp`; errors name `target`, the file it becomes.
fn render(runs: &[RunCurves], panels: &[&str], tmp: &Path, target: &Path) -> Result<()> {
    let cols = 3usize;
    let rows = panels.len().div_ceil(cols).max(1);
    let (w, h) = (1500u32, 380 * rows as u32 + 40);
    let mut pixels = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (legend, body) = root.split_vertically(40);
        draw_legend(&legend, runs)?;
        let areas = body.split_evenly((rows, cols));
        for (area, metric) in areas.iter().zip(panels) {
            draw_panel(area, runs, metric)?;
        }
        root.present().map_err(plot_err)?;
    }
    // Encoded here rather than by the backend, whose errors do not say what failed.
    image::save_buffer_with_format(
        tmp,
        &pixels,
        w,
        h,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| TrainError::Plot(format!("cannot write {}: {e}", target.display())))
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[RunCurves],
) -> Result<()> {
    let font = ("sans-serif", 18).into_font();
    let mut x = 20i32;
    for (i, r) in runs.iter().enumerate() {
        area.draw(&Rectangle::new([(x, 14), (x + 24, 26)], color(i).filled()))
            .map_err(plot_err)?;
        area.draw(&Text::new(r.label.clone(), (x + 30, 10), font.clone()))
            .map_err(plot_err)?;
        x += 40 + 11 * r.label.chars().count() as i32;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[RunCurves],
    metric: &str,
) -> Result<()> {
    let series: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| r.series(metric)).collect();
    let all: Vec<&(f64, f64)> = series.iter().flatten().collect();
    let (mut x0, mut x1) = (0.0f64, 1.0f64);
    let (mut y0, mut y1) = (0.0f64, 1.0f64);
    if !all.is_empty() {
        x0 = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        x1 = all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        y0 = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        y1 = all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    }
    if metric.ends_with("rate") || metric.ends_with("share") {
        y0 = y0.min(0.0);
        y1 = y1.max(1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.05;
    let skipped: usize = runs.iter().map(|r| r.out_of_range(metric)).sum();
    let caption = match (all.is_empty(), skipped) {
        (true, 0) => format!("{metric} (no data)"),
        (_, 0) => metric.to_string(),
        (_, n) => format!("{metric} ({n} beyond ±{PLOT_LIMIT:e} not drawn)"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(s.iter().copied(), c.stroke_width(2)))
            .map_err(plot_err)?;
        if s.len() <= 30 {
            chart
                .draw_series(s.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(plot_err)?;
        }
    }
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> TrainError {
    TrainError::Plot(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |label: &str, k: f64| RunCurves {
            label: label.into(),
            records: (0..5)
                .map(|i| {
                    [
                        (names::ITERATION.to_string(), i as f64),
                        (names::EVAL_SUCCESS.to_string(), k * i as f64 / 5.0),
                    ]
                    .into_iter()
                    .collect()
                })
                .collect(),
        };
        let out = dir.path().join("c.png");
        let warnings = draw(&[mk("a", 1.0), mk("b", 0.5)], &PANELS, &out).unwrap();
        assert!(warnings.is_empty());
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Draws in a thread and fails instead of hanging when drawing does not finish.
    fn draws_within_seconds(points: &[(f64, f64)]) -> Vec<String> {
        let records = points
            .iter()
            .map(|&(x, y)| {
                [
                    (names::ITERATION.to_string(), x),
                    (names::LOSS_PG.to_string(), y),
                ]
                .into_iter()
                .collect()
            })
            .collect();
        let run = RunCurves {
            label: "r".into(),
            records,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("c.png");
            let _ = tx.send(draw(&[run], &[names::LOSS_PG], &out).map_err(|e| e.to_string()));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(60));
        got.expect("drawing did not finish within 60 s").unwrap()
    }

    #[test]
    fn a_series_spanning_the_whole_range_finishes() {
        let warnings = draws_within_seconds(&[(0.0, 1e308), (1.0, -1e308), (2.0, 1.0)]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("2 point(s)"), "{warnings:?}");
        draws_within_seconds(&[(0.0, f64::MAX), (1.0, -f64::MAX)]);
        draws_within_seconds(&[(0.0, 1e300), (1.0, -1e300)]);
        draws_within_seconds(&[(-1e300, 0.0), (1e300, 1.0)]);
        draws_within_seconds(&[(0.0, 1e20), (1.0, 1e20 + 16384.0), (2.0, 1e20 + 32768.0)]);
        draws_within_seconds(&[(0.0, 5e-324), (1.0, 1e-323)]);
    }
}
