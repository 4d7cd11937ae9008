//! `tune.png`: throughput of every evaluated configuration in the order the search
//! measured it (one colour per mapping option, the best-so-far as a line), and the best
//! throughput per option. Plotters' bitmap backend with the embedded DejaVu font, as
//! `experiment/chart.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context as _;
use mica_pipeline::MappingOption;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::pipeline::tune::cache::Entry;

const FONT: &str = "sans-serif";

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    anyhow::ensure!(ok, "the embedded chart font does not load; this is a bug");
    Ok(())
}

fn colour(option: MappingOption) -> RGBColor {
    match option {
        MappingOption::Gpu => RGBColor(128, 128, 128),
        MappingOption::A => RGBColor(31, 119, 180),
        MappingOption::B => RGBColor(255, 127, 14),
        MappingOption::C => RGBColor(44, 160, 44),
        MappingOption::D => RGBColor(214, 39, 40),
        MappingOption::Dup => RGBColor(148, 103, 189),
    }
}

/// Draws the chart into `path`.
pub fn draw(path: &Path, title: &str, entries: &[Entry]) -> anyhow::Result<()> {
    register_font()?;
    let (width, height) = (1800_u32, 1000_u32);
    let mut pixels = vec![0_u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (left, right) = root.split_horizontally(1250);
        let max_y = entries
            .iter()
            .map(|e| e.measured.throughput_img_s)
            .fold(1.0, f64::max)
            * 1.08;
        let n = entries.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&left)
            .caption(title, (FONT, 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..n, 0.0..max_y)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("evaluated configuration (search order)")
            .y_desc("throughput, images/s")
            .label_style((FONT, 18))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let size = if entries.len() > 5000 { 1 } else { 3 };
        for option in MappingOption::ALL {
            let points: Vec<(f64, f64)> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.point.option == option)
                .map(|(i, e)| (i as f64, e.measured.throughput_img_s))
                .collect();
            if points.is_empty() {
                continue;
            }
            let c = colour(option);
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, size, c.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(format!("option {option}"))
                .legend(move |(x, y)| Circle::new((x, y), 5, c.filled()));
        }
        let mut best = 0.0_f64;
        let best_line: Vec<(f64, f64)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                best = best.max(e.measured.throughput_img_s);
                (i as f64, best)
            })
            .collect();
        chart
            .draw_series(LineSeries::new(best_line, BLACK.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("best so far")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK));
        chart
            .configure_series_labels()
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let mut per_option: BTreeMap<MappingOption, f64> = BTreeMap::new();
        for e in entries {
            let slot = per_option.entry(e.point.option).or_insert(0.0);
            *slot = slot.max(e.measured.throughput_img_s);
        }
        let options: Vec<(MappingOption, f64)> = per_option.into_iter().collect();
        let mut bars = ChartBuilder::on(&right)
            .caption("best per option", (FONT, 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..options.len().max(1) as f64, 0.0..max_y)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let labels: Vec<String> = options.iter().map(|(o, _)| o.to_string()).collect();
        bars.configure_mesh()
            .disable_x_mesh()
            .x_labels(options.len().max(1))
            .x_label_formatter(&|x| {
                let i = (*x - 0.5).round();
                if i >= 0.0 && (i as usize) < labels.len() && (*x - 0.5 - i).abs() < 1e-6 {
                    labels[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("images/s")
            .label_style((FONT, 18))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bars.draw_series(options.iter().enumerate().map(|(i, (o, v))| {
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                colour(*o).filled(),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        bars.draw_series(options.iter().enumerate().map(|(i, (o, v))| {
            Text::new(
                format!("{o} {v:.0}"),
                (i as f64 + 0.2, *v * 1.01),
                (FONT, 16),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    image::save_buffer(path, &pixels, width, height, image::ColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}
