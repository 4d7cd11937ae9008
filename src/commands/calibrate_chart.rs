//! `calibration.png`: predicted vs measured throughput of every co-run, before the fit
//! (grey) and after (blue; held-out runs as triangles), with the diagonal. Plotters'
//! bitmap backend with the embedded DejaVu font, as `tune/chart.rs`.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context as _;
use plotters::prelude::*;
use plotters::style::FontStyle;

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

/// Draws the chart; `rows` are (measured, predicted before, predicted after, held out).
pub fn draw(path: &Path, title: &str, rows: &[(f64, f64, f64, bool)]) -> anyhow::Result<()> {
    register_font()?;
    let (width, height) = (1200_u32, 1000_u32);
    let mut pixels = vec![0_u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
        let max = rows
            .iter()
            .flat_map(|r| [r.0, r.1, r.2])
            .fold(1.0, f64::max)
            * 1.08;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 26))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..max, 0.0..max)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("measured, images/s")
            .y_desc("predicted, images/s")
            .label_style((FONT, 18))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (max, max)], BLACK))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("predicted = measured")
            .legend(|(x, y)| PathElement::new(vec![(x - 8, y), (x + 8, y)], BLACK));
        let grey = RGBColor(150, 150, 150);
        let blue = RGBColor(31, 119, 180);
        chart
            .draw_series(
                rows.iter()
                    .map(|r| Circle::new((r.0, r.1), 5, grey.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("before the fit")
            .legend(move |(x, y)| Circle::new((x, y), 5, grey.filled()));
        chart
            .draw_series(
                rows.iter()
                    .filter(|r| !r.3)
                    .map(|r| Circle::new((r.0, r.2), 6, blue.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("after, fitted on")
            .legend(move |(x, y)| Circle::new((x, y), 6, blue.filled()));
        chart
            .draw_series(
                rows.iter()
                    .filter(|r| r.3)
                    .map(|r| TriangleMarker::new((r.0, r.2), 8, blue.filled())),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("after, held out")
            .legend(move |(x, y)| TriangleMarker::new((x, y), 8, blue.filled()));
        chart
            .configure_series_labels()
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    image::save_buffer(path, &pixels, width, height, image::ColorType::Rgb8)
        .with_context(|| format!("writing {}", path.display()))
}
