//! Pictures: a migration's timeline (`migrate --timeline`) and the downtime
//! benchmark's table (`bench --plot`), as SVG files drawn with `plotters`.

use std::path::Path;

use plotters::prelude::*;

use crate::timeline::{Lane, Mark, Snapshot};

/// Width of a picture, in pixels.
const WIDTH: u32 = 1400;

/// Bar colours per lane: two shades, alternating per image, so adjacent
/// images stay apart.
const LANE_COLOURS: [[RGBColor; 2]; 4] = [
    [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0x6b, 0xae, 0xd6)],
    [RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0x8c, 0xd1, 0x7d)],
    [RGBColor(0xff, 0x7f, 0x0e), RGBColor(0xfd, 0xbe, 0x85)],
    [RGBColor(0x94, 0x67, 0xbd), RGBColor(0xc5, 0xb0, 0xd5)],
];

fn plot_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("drawing the SVG: {e}"))
}

/// The row of `lane`, counted from the bottom (SAVE on top).
fn row(lane: Lane) -> f64 {
    (Lane::ALL.len() - 1 - lane.index()) as f64
}

/// Draws `timeline` into `path`: one row per lane, a bar per image and
/// lane, time in milliseconds, the marks as vertical lines.
///
/// # Errors
/// The file cannot be written.
pub fn timeline_svg(path: &Path, title: &str, timeline: &Snapshot) -> std::io::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let end_ms = (timeline.end() * 1e3).max(1e-3) * 1.02;
    let lanes = Lane::ALL.len() as f64;
    // A free row above the lanes holds the legend; with whole rows, the
    // labels fall on the half-steps at the middle of each.
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..end_ms, 0f64..lanes + 1.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels((Lane::ALL.len() + 1) * 2 + 1)
        .y_label_formatter(&|y| {
            // Labels sit at the middle of each row.
            let r = y - y.floor();
            let lane = Lane::ALL
                .iter()
                .find(|l| (row(**l) - y.floor()).abs() < 1e-9 && (r - 0.5).abs() < 1e-9);
            lane.map_or_else(String::new, |l| l.name().to_owned())
        })
        .x_desc("milliseconds since the migration started")
        .draw()
        .map_err(plot_error)?;
    for (image, bars) in timeline.images.iter().enumerate() {
        for (lane, bar) in Lane::ALL.iter().zip(bars) {
            let Some(bar) = bar else { continue };
            let y = row(*lane);
            let shades = LANE_COLOURS
                .get(lane.index())
                .copied()
                .unwrap_or([BLACK, BLACK]);
            let colour = shades.get(image % 2).copied().unwrap_or(BLACK);
            // A bar too short to see is widened to a hairline.
            let (x0, x1) = (
                bar.start * 1e3,
                (bar.end * 1e3).max(bar.start * 1e3 + end_ms * 1e-4),
            );
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, y + 0.15), (x1, y + 0.85)],
                    colour.filled(),
                )))
                .map_err(plot_error)?;
        }
    }
    for (mark, at) in &timeline.marks {
        let x = at * 1e3;
        let colour = match mark {
            Mark::Stopped => RED,
            Mark::Running => BLACK,
        };
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, lanes)],
                colour.stroke_width(2),
            )))
            .map_err(plot_error)?
            .label(mark.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    if !timeline.marks.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_error)?;
    }
    root.present().map_err(plot_error)
}

/// One case of the downtime benchmark, for [`downtime_svg`].
#[derive(Clone, Debug, PartialEq)]
pub struct DowntimeCase {
    /// Its label (state size and dirty rate).
    pub label: String,
    /// The Linux-faithful driver's downtime, seconds.
    pub linux: f64,
    /// Ours, seconds.
    pub ours: f64,
    /// The model's lower bound, seconds.
    pub limit: f64,
}

/// A bar series of the downtime picture: its name, colour and value.
type Series = (&'static str, RGBColor, fn(&DowntimeCase) -> f64);

/// Draws the downtime table into `path`: per case, three bars (Linux,
/// ours, the lower bound) in milliseconds.
///
/// # Errors
/// The file cannot be written.
pub fn downtime_svg(path: &Path, cases: &[DowntimeCase]) -> std::io::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let top = cases
        .iter()
        .map(|c| c.linux.max(c.ours).max(c.limit) * 1e3)
        .fold(1.0, f64::max)
        * 1.1;
    let n = cases.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "mlx5vf bench: downtime, Linux-faithful driver vs ours vs the model's lower bound",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(cases.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let r = x - x.floor();
            if (r - 0.5).abs() < 1e-9 {
                cases
                    .get(x.floor() as usize)
                    .map_or_else(String::new, |c| c.label.clone())
            } else {
                String::new()
            }
        })
        .y_desc("downtime, ms")
        .draw()
        .map_err(plot_error)?;
    let series: [Series; 3] = [
        (
            "Linux-faithful (2 x 8 MiB, Linux PRE_COPY, sync LOAD)",
            RGBColor(0xd6, 0x27, 0x28),
            |c| c.linux,
        ),
        ("mlx5vf", RGBColor(0x1f, 0x77, 0xb4), |c| c.ours),
        (
            "lower bound of the model",
            RGBColor(0x7f, 0x7f, 0x7f),
            |c| c.limit,
        ),
    ];
    for (k, (name, colour, value)) in series.into_iter().enumerate() {
        let x_off = 0.15 + 0.24 * k as f64;
        chart
            .draw_series(cases.iter().enumerate().map(|(i, c)| {
                let x = i as f64 + x_off;
                Rectangle::new([(x, 0.0), (x + 0.22, value(c) * 1e3)], colour.filled())
            }))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Bar;

    /// The SVG has a bar per recorded image and lane, and the marks.
    #[test]
    fn timeline_draws_every_bar_and_mark() {
        let bar = |start, end| Some(Bar { start, end });
        let snapshot = Snapshot {
            images: vec![
                [
                    bar(0.0, 0.01),
                    bar(0.01, 0.02),
                    bar(0.012, 0.022),
                    bar(0.022, 0.03),
                ],
                [bar(0.01, 0.02), bar(0.02, 0.03), None, None],
            ],
            marks: vec![(Mark::Stopped, 0.0), (Mark::Running, 0.031)],
            dropped: 0,
        };
        let dir = std::env::temp_dir().join(format!("mlx5vf-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        timeline_svg(&path, "test", &snapshot).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        for lane in Lane::ALL {
            assert!(svg.contains(lane.name()), "{}", lane.name());
        }
        assert!(svg.contains("source stopped") && svg.contains("destination running"));
        // Six bars in the lane colours (plus none elsewhere in those colours).
        let filled = LANE_COLOURS
            .iter()
            .flatten()
            .map(|c| {
                svg.matches(&format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2))
                    .count()
            })
            .sum::<usize>();
        assert_eq!(filled, 6, "{svg}");
    }

    /// Three bars per case, in three colours, and every label.
    #[test]
    fn downtime_draws_three_bars_per_case() {
        let cases = [
            DowntimeCase {
                label: "1G, dirty 256K".into(),
                linux: 0.6,
                ours: 0.06,
                limit: 0.02,
            },
            DowntimeCase {
                label: "8G, dirty 2M".into(),
                linux: 3.0,
                ours: 0.2,
                limit: 0.15,
            },
        ];
        let dir = std::env::temp_dir().join(format!("mlx5vf-plot-d-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.svg");
        downtime_svg(&path, &cases).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.contains("1G, dirty 256K") && svg.contains("8G, dirty 2M"));
        for colour in ["#D62728", "#1F77B4", "#7F7F7F"] {
            // Two bars and the legend's swatch.
            assert_eq!(
                svg.matches(&format!("fill=\"{colour}\"")).count(),
                3,
                "{colour}"
            );
        }
    }
}
