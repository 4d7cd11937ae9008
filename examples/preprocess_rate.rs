//! How fast one core runs mica's image pre-processing, the serving path's
//! `Preprocessor`: resize the shorter side to 256/224 of the crop (bilinear), center
//! crop, normalize into CHW FP32. Two inputs: an already decoded RGB frame (what the
//! CPU stage of `mica tune --backend real` feeds) and the same frame as a JPEG (what a
//! client posts to `mica serve`, decoding included).
//!
//! `cargo run --release --example preprocess_rate -- [FRAME_SIDE] [CROP] [SECONDS]`
//! (defaults 448 224 2): prints milliseconds per image and images per second for one
//! thread.

use std::time::{Duration, Instant};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageEncoder, Rgb, RgbImage};
use mica::serve::{PreprocessSettings, Preprocessor};

fn argument(index: usize, default: u32) -> u32 {
    match std::env::args().nth(index) {
        None => default,
        Some(text) => text.parse().unwrap_or_else(|_| {
            eprintln!("error: argument {index} must be a positive whole number, got {text:?}");
            std::process::exit(2)
        }),
    }
}

/// A frame with texture in every channel, so that the filter has work to do.
fn frame(side: u32) -> RgbImage {
    RgbImage::from_fn(side, side, |x, y| {
        let value = |c: u32| ((x * 255 / side + y * 7 + c * 50 + (x ^ y) % 13) % 256) as u8;
        Rgb([value(0), value(1), value(2)])
    })
}

/// Runs `once` repeatedly for `seconds` and returns milliseconds per call.
fn time_per_call(seconds: u32, mut once: impl FnMut()) -> (f64, u64) {
    once(); // first call outside the window: allocations, caches
    let window = Duration::from_secs(u64::from(seconds.max(1)));
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < window {
        once();
        calls += 1;
    }
    (start.elapsed().as_secs_f64() * 1e3 / calls as f64, calls)
}

fn main() {
    let side = argument(1, 448).max(1);
    let crop = argument(2, 224).max(1);
    let seconds = argument(3, 2);
    let defaults = PreprocessSettings::default();
    let settings = PreprocessSettings {
        resize_shorter: (crop * 256).div_ceil(224).max(crop),
        max_image_side: defaults.max_image_side.max(side),
        ..defaults
    };
    let preprocessor = Preprocessor::from_settings(crop, crop, &settings);
    let rgb = frame(side);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .write_image(rgb.as_raw(), side, side, image::ExtendedColorType::Rgb8)
        .expect("encoding a JPEG into memory");
    let mut out = vec![0.0f32; preprocessor.elements()];

    println!("pre-processing {side}x{side} -> {crop}x{crop} on one thread ({seconds} s per row)");
    let (ms, calls) = time_per_call(seconds, || preprocessor.run_decoded(&rgb, &mut out));
    println!(
        "  decoded frame        {ms:8.3} ms/image  {:9.1} img/s  ({calls} images)",
        1e3 / ms
    );
    let (ms, calls) = time_per_call(seconds, || {
        preprocessor
            .run(&jpeg, &mut out, "frame", None)
            .expect("the JPEG decodes")
    });
    println!(
        "  JPEG ({:>6} bytes)  {ms:8.3} ms/image  {:9.1} img/s  ({calls} images)",
        jpeg.len(),
        1e3 / ms
    );
}
