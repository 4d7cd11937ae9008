//! `multi_instance.png`: the seed paper's Fig. 1 layout. Combinations on the outer
//! axis, batch sizes inside each, one throughput bar per policy (top panel) and each
//! run's p50 and p99 latency (bottom panel, log scale) at the same positions.
//!
//! Drawn with plotters' bitmap backend and encoded with the `image` crate; text is
//! rendered with ab_glyph from an embedded DejaVu Sans, so no system font library is
//! needed.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::experiment::combination::ALL;
use crate::experiment::multi_instance::ResultRow;
use crate::experiment::summary;

const WIDTH: u32 = 2400;
const HEIGHT: u32 = 1400;
const FONT: &str = "sans-serif";
/// Share of a batch-size slot the bars fill.
const GROUP_WIDTH: f64 = 0.84;

/// A policy's colour; the baseline is grey.
fn colour(policy: &str, index: usize) -> RGBColor {
    match policy {
        "round_robin" => RGBColor(128, 128, 128),
        "least_loaded" => RGBColor(31, 119, 180),
        "weighted" => RGBColor(255, 127, 14),
        "contention_aware" => RGBColor(44, 160, 44),
        "adaptive" => RGBColor(214, 39, 40),
        "slo" => RGBColor(148, 103, 189),
        _ => {
            let (r, g, b) = Palette99::pick(index).to_rgba().rgb();
            RGBColor(r, g, b)
        }
    }
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    anyhow::ensure!(ok, "the embedded chart font does not load; this is a bug");
    Ok(())
}

/// The chart's layout: groups of (combination, batch size) along x.
struct Layout {
    /// (label, units, first x, last x) per combination.
    combinations: Vec<(String, String, f64, f64)>,
    /// (combination label, batch size, centre x) per group.
    groups: Vec<(String, u32, f64)>,
    policies: Vec<String>,
    x_max: f64,
}

impl Layout {
    fn new(rows: &[ResultRow]) -> Self {
        let mut combinations: Vec<(String, String, f64, f64)> = Vec::new();
        let mut groups: Vec<(String, u32, f64)> = Vec::new();
        let mut policies: Vec<String> = Vec::new();
        let mut x = 0.0;
        for row in rows {
            if !policies.contains(&row.policy) {
                policies.push(row.policy.clone());
            }
            if groups
                .iter()
                .any(|(c, b, _)| *c == row.combination && *b == row.batch_size)
            {
                continue;
            }
            match combinations.last_mut() {
                Some(last) if last.0 == row.combination => {
                    x += 1.0;
                    last.3 = x + 0.5;
                }
                _ => {
                    if !combinations.is_empty() {
                        x += 1.6; // a gap between combinations
                    }
                    combinations.push((row.combination.clone(), row.units.clone(), x, x + 1.0));
                }
            }
            groups.push((row.combination.clone(), row.batch_size, x + 0.5));
        }
        for c in &mut combinations {
            c.3 = c.3.max(c.2 + 1.0);
        }
        Self {
            combinations,
            groups,
            policies,
            x_max: x + 1.0,
        }
    }

    /// Centre x of a policy's bar in a group.
    fn bar_x(&self, centre: f64, policy: usize) -> (f64, f64) {
        let width = GROUP_WIDTH / self.policies.len().max(1) as f64;
        let left = centre - GROUP_WIDTH / 2.0 + width * policy as f64;
        (left, left + width)
    }

    fn centre(&self, row: &ResultRow) -> Option<f64> {
        self.groups
            .iter()
            .find(|(c, b, _)| *c == row.combination && *b == row.batch_size)
            .map(|(_, _, x)| *x)
    }
}

/// Draws the chart for `rows` into `path` (PNG).
pub fn write(path: &Path, rows: &[ResultRow], title: &str, subtitle: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "no results to chart");
    register_font()?;
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, rows, title, subtitle)
            .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
        root.present()
            .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    }
    image::save_buffer(path, &pixels, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}

type DrawResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    rows: &[ResultRow],
    title: &str,
    subtitle: &str,
) -> DrawResult {
    root.fill(&WHITE)?;
    let layout = Layout::new(rows);
    let text = |size: f64| (FONT, size).into_font().color(&BLACK);
    let centred = Pos::new(HPos::Center, VPos::Top);

    let (header, rest) = root.split_vertically(90);
    header.draw(&Text::new(
        title,
        (WIDTH as i32 / 2, 14),
        text(30.0).pos(centred),
    ))?;
    header.draw(&Text::new(
        subtitle,
        (WIDTH as i32 / 2, 54),
        text(20.0).pos(centred),
    ))?;
    let (top, bottom) = rest.split_vertically(((HEIGHT - 90) as f64 * 0.56) as u32);

    // Throughput bars.
    let max_throughput = rows.iter().map(|r| r.throughput_img_s).fold(1.0, f64::max);
    let mut bars = ChartBuilder::on(&top)
        .margin_left(20)
        .margin_right(30)
        .margin_top(10)
        .x_label_area_size(34)
        .y_label_area_size(100)
        .build_cartesian_2d(0.0..layout.x_max, 0.0..max_throughput * 1.08)?;
    bars.configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("throughput (images/s)")
        .y_label_style(text(20.0))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style(text(22.0))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (index, policy) in layout.policies.iter().enumerate() {
        let fill = colour(policy, index).filled();
        let series = rows.iter().filter(|r| &r.policy == policy).filter_map(|r| {
            let (left, right) = layout.bar_x(layout.centre(r)?, index);
            Some(Rectangle::new(
                [(left, 0.0), (right, r.throughput_img_s)],
                fill,
            ))
        });
        bars.draw_series(series)?
            .label(policy.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 8), (x + 22, y + 8)], fill));
    }
    // The best subset under the static baseline, across the all-units groups: the
    // level the policies with every unit must reach.
    let best: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.combination_key == ALL && r.policy == summary::BASELINE)
        .filter_map(|r| {
            Some((
                layout.centre(r)?,
                summary::best_subset(rows, r.batch_size)?.1,
            ))
        })
        .collect();
    if !best.is_empty() {
        let line = BLACK.stroke_width(3);
        let half = GROUP_WIDTH / 2.0 + 0.04;
        bars.draw_series(
            best.iter()
                .map(|(x, t)| PathElement::new(vec![(x - half, *t), (x + half, *t)], line)),
        )?
        .label("best subset under round_robin")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], line));
    }
    bars.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(text(20.0))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .margin(12)
        .draw()?;
    for (_, batch, x) in &layout.groups {
        let (px, py) = bars.backend_coord(&(*x, 0.0));
        root.draw(&Text::new(
            format!("{batch}"),
            (px, py + 6),
            text(17.0).pos(centred),
        ))?;
    }

    // Latency points: p50 filled, p99 hollow, joined by a line.
    let min_latency = rows
        .iter()
        .map(|r| r.p50_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let max_latency = rows.iter().map(|r| r.p99_ms).fold(1.0, f64::max);
    let low = if min_latency.is_finite() {
        min_latency / 1.6
    } else {
        0.1
    };
    let mut latency = ChartBuilder::on(&bottom)
        .margin_left(20)
        .margin_right(30)
        .margin_top(16)
        .x_label_area_size(110)
        .y_label_area_size(100)
        .build_cartesian_2d(0.0..layout.x_max, (low..max_latency * 1.6).log_scale())?;
    latency
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("latency (log scale): ● p50  ○ p99")
        .y_label_style(text(20.0))
        .axis_desc_style(text(22.0))
        .y_label_formatter(&|v| format_ms(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (index, policy) in layout.policies.iter().enumerate() {
        let c = colour(policy, index);
        let points: Vec<(f64, f64, f64)> = rows
            .iter()
            .filter(|r| &r.policy == policy && r.p50_ms > 0.0)
            .filter_map(|r| {
                let (left, right) = layout.bar_x(layout.centre(r)?, index);
                Some(((left + right) / 2.0, r.p50_ms, r.p99_ms.max(r.p50_ms)))
            })
            .collect();
        latency.draw_series(points.iter().map(|(x, p50, p99)| {
            PathElement::new(vec![(*x, *p50), (*x, *p99)], c.stroke_width(2))
        }))?;
        latency.draw_series(
            points
                .iter()
                .map(|(x, p50, _)| Circle::new((*x, *p50), 4, c.filled())),
        )?;
        latency.draw_series(
            points
                .iter()
                .map(|(x, _, p99)| Circle::new((*x, *p99), 4, c.stroke_width(2))),
        )?;
    }
    for (_, batch, x) in &layout.groups {
        let (px, py) = latency.backend_coord(&(*x, low));
        root.draw(&Text::new(
            format!("{batch}"),
            (px, py + 6),
            text(17.0).pos(centred),
        ))?;
    }
    let right_aligned = Pos::new(HPos::Right, VPos::Top);
    for (px, py) in [
        bars.backend_coord(&(0.0, 0.0)),
        latency.backend_coord(&(0.0, low)),
    ] {
        root.draw(&Text::new(
            "batch",
            (px - 8, py + 6),
            text(17.0).pos(right_aligned),
        ))?;
    }
    for (label, units, first, last) in &layout.combinations {
        let (left, py) = latency.backend_coord(&(*first + 0.05, low));
        let (right, _) = latency.backend_coord(&(*last - 0.05, low));
        let y = py + 34;
        root.draw(&PathElement::new(
            vec![(left, y), (right, y)],
            BLACK.stroke_width(1),
        ))?;
        let middle = (left + right) / 2;
        root.draw(&Text::new(
            label.as_str(),
            (middle, y + 8),
            ("sans-serif", 22.0, FontStyle::Bold)
                .into_font()
                .color(&BLACK)
                .pos(centred),
        ))?;
        root.draw(&Text::new(
            format!("({units})"),
            (middle, y + 38),
            text(17.0).pos(centred),
        ))?;
    }
    Ok(())
}

fn format_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0} s", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}
