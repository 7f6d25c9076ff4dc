//! Minimal SVG charts (line charts and stacked bar charts) written by hand: no font files, no
//! system libraries, readable in any browser. Text uses the generic `sans-serif` family.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A named list of (x, y) points; non-finite points are skipped when drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart. The y axis starts at zero (or below, for negative data); values above `y_max`
/// are drawn at `y_max` and the y label says so. The x axis starts at zero too, unless it is
/// logarithmic (base 2; then only positive x values are drawn, ticks at powers of two).
#[derive(Clone, Debug)]
pub struct LineChart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// The lines.
    pub series: &'a [Series],
    /// Upper limit of the y axis; `None` fits the data.
    pub y_max: Option<f64>,
    /// Whether the x axis is logarithmic, base 2.
    pub log2_x: bool,
}

/// A bar chart with one bar per category, each bar a stack of `layers` (one layer gives a
/// plain bar chart). Invariant: every layer has one value per category (missing values count
/// as zero, negative and non-finite values as zero).
#[derive(Clone, Debug)]
pub struct BarChart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// Bar labels, left to right.
    pub categories: &'a [String],
    /// Stacked layers from the bottom up: (legend entry, one value per category).
    pub layers: &'a [(String, Vec<f64>)],
}

/// Linear map of a data interval onto a pixel interval.
#[derive(Clone, Copy, Debug)]
struct Axis {
    min: f64,
    max: f64,
    step: f64,
}

impl Axis {
    /// An axis covering `0` and `values`, with round tick steps.
    fn fit(values: impl Iterator<Item = f64>) -> Self {
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let step = nice_step((hi - lo) / 5.0);
        // The tolerance keeps sums that round a hair above a tick (1.0000000002) on it.
        Self {
            min: (lo / step + 1e-9).floor() * step,
            max: (hi / step - 1e-9).ceil() * step,
            step,
        }
    }

    /// A base-2 logarithmic axis over positive `values` (given as log2 of the data), with a
    /// tick at every power of two in range.
    fn fit_log2(values: impl Iterator<Item = f64>) -> Self {
        let (lo, hi) = values
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let (lo, hi) = if lo <= hi {
            (lo.floor(), hi.ceil())
        } else {
            (0.0, 1.0)
        };
        Self {
            min: lo,
            max: if hi > lo { hi } else { lo + 1.0 },
            step: 1.0,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let count = ((self.max - self.min) / self.step).round() as usize;
        (0..=count).map(move |i| self.min + i as f64 * self.step)
    }

    /// Position of `value` between `from` (at `min`) and `to` (at `max`).
    fn map(&self, value: f64, from: f64, to: f64) -> f64 {
        from + (value - self.min) / (self.max - self.min) * (to - from)
    }

    fn label(&self, value: f64) -> String {
        let decimals = (-self.step.log10()).ceil().max(0.0) as usize;
        format!("{value:.decimals$}")
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw` (for a positive finite `raw`).
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&n| normalized <= n + 1e-9)
        .unwrap_or(10.0);
    nice * magnitude
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The frame shared by both chart kinds: header, title, y axis with grid lines and labels.
fn open(out: &mut String, title: &str, y_label: &str, y: &Axis) {
    let (plot_bottom, plot_right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        (LEFT + plot_right) / 2.0,
        escape(title)
    );
    for tick in y.ticks() {
        let py = y.map(tick, plot_bottom, TOP);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{plot_right}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 6.0,
            py + 4.0,
            y.label(tick)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{plot_bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{plot_bottom}\" x2=\"{plot_right}\" y2=\"{plot_bottom}\" stroke=\"black\"/>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        (TOP + plot_bottom) / 2.0,
        escape(y_label)
    );
}

/// Legend entries at the right of the plot, one colour each.
fn legend<'a>(out: &mut String, names: impl Iterator<Item = &'a str>) {
    for (i, name) in names.enumerate() {
        let y = TOP + 10.0 + i as f64 * 20.0;
        let x = WIDTH - RIGHT + 15.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{:.1}\">{}</text>",
            y - 9.0,
            PALETTE[i % PALETTE.len()],
            x + 20.0,
            y,
            escape(name)
        );
    }
}

impl LineChart<'_> {
    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let finite = || {
            self.series
                .iter()
                .flat_map(|s| &s.points)
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let clip = self.y_max.filter(|m| m.is_finite() && *m > 0.0);
        let clipped = clip.is_some_and(|m| finite().any(|&(_, y)| y > m));
        let y = Axis::fit(finite().map(|&(_, y)| clip.map_or(y, |m| y.min(m))));
        // Data x as drawn: log2 of positive values on a logarithmic axis.
        let x_of = |x: f64| if self.log2_x { x.log2() } else { x };
        let x = if self.log2_x {
            Axis::fit_log2(finite().map(|&(x, _)| x_of(x)))
        } else {
            Axis::fit(finite().map(|&(x, _)| x))
        };
        let y_label = if clipped {
            format!("{} (clipped at {})", self.y_label, y.label(y.max))
        } else {
            self.y_label.to_string()
        };
        let mut out = String::new();
        open(&mut out, self.title, &y_label, &y);
        let (plot_bottom, plot_right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
        for tick in x.ticks() {
            let px = x.map(tick, LEFT, plot_right);
            let label = if self.log2_x {
                format!("{}", tick.exp2())
            } else {
                x.label(tick)
            };
            let _ = writeln!(
                out,
                "<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
                plot_bottom + 18.0,
            );
        }
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            (LEFT + plot_right) / 2.0,
            HEIGHT - 15.0,
            escape(self.x_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let points: Vec<String> = series
                .points
                .iter()
                .map(|&(px, py)| (x_of(px), py))
                .filter(|(px, py)| px.is_finite() && py.is_finite())
                .map(|(px, py)| {
                    let py = y.max.min(py);
                    format!(
                        "{:.1},{:.1}",
                        x.map(px, LEFT, plot_right),
                        y.map(py, plot_bottom, TOP)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
            for point in &points {
                let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    out,
                    "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3\" fill=\"{colour}\"/>"
                );
            }
        }
        legend(&mut out, self.series.iter().map(|s| s.name.as_str()));
        out.push_str("</svg>\n");
        out
    }
}

impl BarChart<'_> {
    fn value(&self, layer: usize, category: usize) -> f64 {
        self.layers[layer]
            .1
            .get(category)
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .unwrap_or(0.0)
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let totals: Vec<f64> = (0..self.categories.len())
            .map(|c| (0..self.layers.len()).map(|l| self.value(l, c)).sum())
            .collect();
        let y = Axis::fit(totals.iter().copied());
        let mut out = String::new();
        open(&mut out, self.title, self.y_label, &y);
        let (plot_bottom, plot_right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
        let slot = (plot_right - LEFT) / self.categories.len().max(1) as f64;
        for (c, category) in self.categories.iter().enumerate() {
            let left = LEFT + c as f64 * slot + slot * 0.15;
            let mut base = 0.0;
            for l in 0..self.layers.len() {
                let value = self.value(l, c);
                let top = y.map(base + value, plot_bottom, TOP);
                let bottom = y.map(base, plot_bottom, TOP);
                let _ = writeln!(
                    out,
                    "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>",
                    slot * 0.7,
                    bottom - top,
                    PALETTE[l % PALETTE.len()]
                );
                base += value;
            }
            let _ = writeln!(
                out,
                "<text transform=\"translate({:.1} {}) rotate(20)\" font-size=\"11\">{}</text>",
                left,
                plot_bottom + 14.0,
                escape(category)
            );
        }
        legend(&mut out, self.layers.iter().map(|(name, _)| name.as_str()));
        out.push_str("</svg>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_five_times_a_power_of_ten() {
        for (raw, nice) in [
            (0.7, 1.0),
            (1.3, 2.0),
            (3.0, 5.0),
            (0.021, 0.05),
            (70.0, 100.0),
        ] {
            assert!((nice_step(raw) - nice).abs() < 1e-12, "{raw}");
        }
    }

    #[test]
    fn line_chart_draws_each_series_clips_and_escapes() {
        let series = [
            Series {
                name: "vellum <paged>".into(),
                points: vec![(0.5, 0.1), (1.0, 0.2), (2.0, f64::NAN), (3.0, 9.0)],
            },
            Series {
                name: "Orca (Max)".into(),
                points: vec![(0.5, 0.3)],
            },
        ];
        let svg = LineChart {
            title: "rate vs latency",
            x_label: "rate",
            y_label: "s/token",
            series: &series,
            y_max: Some(1.0),
            log2_x: false,
        }
        .to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            4,
            "the NaN point is skipped"
        );
        assert!(svg.contains("vellum &lt;paged&gt;"));
        assert!(svg.contains("clipped at 1.0"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn log2_axis_ticks_at_powers_of_two_and_skips_non_positive_x() {
        let series = [Series {
            name: "swap".into(),
            points: vec![(8.0, 1.0), (0.0, 1.0), (256.0, 2.0)],
        }];
        let svg = LineChart {
            title: "t",
            x_label: "block size",
            y_label: "s",
            series: &series,
            y_max: None,
            log2_x: true,
        }
        .to_svg();
        assert_eq!(svg.matches("<circle").count(), 2);
        for tick in ["8", "16", "32", "64", "128", "256"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "{tick}");
        }
        assert!(!svg.contains(">512</text>") && !svg.contains(">4</text>"));
    }

    #[test]
    fn an_axis_fitted_to_a_rounded_one_ends_at_one() {
        let axis = Axis::fit([0.2, 1.0 + 1e-12].into_iter());
        assert_eq!((axis.min, axis.max), (0.0, 1.0));
    }

    #[test]
    fn stacked_bars_grow_with_their_layers() {
        let categories = ["a".to_string(), "b".to_string()];
        let layers = [
            ("tokens".to_string(), vec![0.9, 0.2]),
            ("waste".to_string(), vec![0.1]),
        ];
        let svg = BarChart {
            title: "utilisation",
            y_label: "fraction",
            categories: &categories,
            layers: &layers,
        }
        .to_svg();
        // Two categories × two layers, plus the background and two legend swatches.
        assert_eq!(svg.matches("<rect").count(), 4 + 1 + 2);
        assert!(
            svg.contains("height=\"0.0\""),
            "a missing value is an empty layer"
        );
    }
}
