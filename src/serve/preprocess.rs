//! Raw images into the model's FP32 input: decode (JPEG or PNG only), resize the
//! shorter side, center-crop, scale to [0, 1], normalize per channel, lay out as NCHW
//! or NHWC. Pure and synchronous; it runs on the preprocessing pool.
//!
//! The resize and the center crop are one step: only the part of the frame that the
//! crop keeps is filtered (bilinear convolution, SIMD through `fast_image_resize`),
//! straight into a crop-sized buffer. On one core of the dev VM this took a 448x448
//! frame to 224x224 in about a tenth of the time of `image`'s resize-then-crop
//! (`cargo run --release --example preprocess_rate`).

use std::cell::RefCell;
use std::io::Cursor;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use super::error::ServeError;
use super::settings::{Layout, ModelSettings, PreprocessSettings};

/// Turns encoded images into input tensors of one model.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    height: u32,
    width: u32,
    resize_shorter: u32,
    max_side: u32,
    layout: Layout,
    scale: [f32; 3],
    offset: [f32; 3],
}

impl Preprocessor {
    /// The preprocessor of a model that takes raw images; `None` if it takes none.
    /// Expects validated settings.
    pub fn new(model: &ModelSettings) -> Option<Self> {
        model.image_input.as_ref()?;
        let (height, width) = model.image_size()?;
        Some(Self::from_settings(height, width, &model.preprocessing))
    }

    /// The preprocessor of a `height` x `width` input with these (validated) settings.
    pub fn from_settings(height: u32, width: u32, p: &PreprocessSettings) -> Self {
        // (x / 255 - mean) / std == x * scale + offset
        let scale = [0, 1, 2].map(|c| 1.0 / (255.0 * p.std[c]));
        let offset = [0, 1, 2].map(|c| -p.mean[c] / p.std[c]);
        Self {
            height,
            width,
            resize_shorter: p.resize_shorter,
            max_side: p.max_image_side,
            layout: p.layout,
            scale,
            offset,
        }
    }

    /// Values per image.
    pub fn elements(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// Decodes one image and writes its `elements()` values to `out`; `what` names the
    /// image in errors.
    pub fn run(&self, encoded: &[u8], out: &mut [f32], what: &str) -> Result<(), ServeError> {
        debug_assert_eq!(out.len(), self.elements());
        let rgb = self.decode(encoded, what)?;
        self.run_decoded(&rgb, out);
        Ok(())
    }

    /// Writes the `elements()` values of an already decoded image to `out`.
    pub fn run_decoded(&self, rgb: &RgbImage, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.elements());
        let cropped = self.resize_and_crop(rgb);
        self.normalize(&cropped, out);
    }

    fn decode(&self, encoded: &[u8], what: &str) -> Result<RgbImage, ServeError> {
        let Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png)) = image::guess_format(encoded)
        else {
            return Err(ServeError::bad_request(format!(
                "{what} is not a JPEG or PNG image"
            )));
        };
        let mut reader = ImageReader::new(Cursor::new(encoded));
        reader.set_format(format);
        let mut limits = Limits::default();
        limits.max_image_width = Some(self.max_side);
        limits.max_image_height = Some(self.max_side);
        reader.limits(limits);
        let image = reader.decode().map_err(|error| {
            ServeError::bad_request(format!("{what} cannot be decoded: {error}"))
        })?;
        Ok(image.into_rgb8())
    }

    /// The `width` x `height` center crop (packed RGB) of the frame resized so that its
    /// shorter side is `resize_shorter` (at least the crop).
    fn resize_and_crop(&self, rgb: &RgbImage) -> Vec<u8> {
        let (w, h) = rgb.dimensions();
        let shorter = w.min(h).max(1);
        let target = self.resize_shorter.max(self.height).max(self.width);
        let scale = |side: u32| -> u32 {
            let scaled =
                (u64::from(side) * u64::from(target) + u64::from(shorter) / 2) / u64::from(shorter);
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        };
        // The resized frame's size, and where the crop sits in it.
        let (nw, nh) = if w <= h {
            (target, scale(h).max(self.height))
        } else {
            (scale(w).max(self.width), target)
        };
        let x = (nw - self.width) / 2;
        let y = (nh - self.height) / 2;
        let mut cropped = vec![0u8; 3 * self.width as usize * self.height as usize];
        if (nw, nh) == (w, h) {
            let row = 3 * self.width as usize;
            for (line, dst) in cropped.chunks_exact_mut(row).enumerate() {
                let start = 3 * ((y as usize + line) * w as usize + x as usize);
                dst.copy_from_slice(&rgb.as_raw()[start..start + row]);
            }
            return cropped;
        }
        // The same crop in the frame's own coordinates.
        let (sx, sy) = (f64::from(w) / f64::from(nw), f64::from(h) / f64::from(nh));
        let left = f64::from(x) * sx;
        let top = f64::from(y) * sy;
        let crop_width = (f64::from(self.width) * sx).min(f64::from(w) - left);
        let crop_height = (f64::from(self.height) * sy).min(f64::from(h) - top);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(left, top, crop_width, crop_height);
        let source = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3)
            .expect("an RgbImage holds width x height packed RGB pixels; this is a bug");
        let mut destination =
            Image::from_slice_u8(self.width, self.height, &mut cropped, PixelType::U8x3)
                .expect("the crop buffer holds width x height RGB pixels; this is a bug");
        // One resizer per thread keeps its filter buffers between images.
        thread_local! {
            static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
        }
        RESIZER
            .with_borrow_mut(|resizer| resizer.resize(&source, &mut destination, &options))
            .expect("same pixel types and a crop box inside the frame; this is a bug");
        cropped
    }

    fn normalize(&self, packed_rgb: &[u8], out: &mut [f32]) {
        let plane = (self.height * self.width) as usize;
        for (i, pixel) in packed_rgb.chunks_exact(3).enumerate() {
            for (c, &channel) in pixel.iter().enumerate() {
                let value = f32::from(channel) * self.scale[c] + self.offset[c];
                let index = match self.layout {
                    Layout::Nchw => c * plane + i,
                    Layout::Nhwc => i * 3 + c,
                };
                out[index] = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageEncoder, Rgb};

    use super::*;

    fn model(layout: Layout, shape: Vec<usize>) -> ModelSettings {
        let mut model = ModelSettings {
            image_input: Some("image".into()),
            input_shape: shape,
            ..ModelSettings::default()
        };
        model.preprocessing.layout = layout;
        model.preprocessing.resize_shorter = 8;
        model.validate().unwrap();
        model
    }

    /// A `w`×`h` PNG: left half red, right half blue.
    fn png(w: u32, h: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(w, h, |x, _| {
            if x < w / 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(image.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let image = RgbImage::from_pixel(w, h, Rgb([128, 128, 128]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .write_image(image.as_raw(), w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    #[test]
    fn nchw_png_is_resized_cropped_and_normalized() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4])).unwrap();
        let mut out = vec![0.0; pre.elements()];
        pre.run(&png(32, 16), &mut out, "image 0").unwrap();
        // Red channel plane: red on the left (columns 0-1), blue on the right.
        let red_left = out[0];
        let red_right = out[3];
        let expected_red = (1.0 - 0.485) / 0.229;
        let expected_none = -0.485 / 0.229;
        assert!((red_left - expected_red).abs() < 1e-3, "{red_left}");
        assert!((red_right - expected_none).abs() < 1e-3, "{red_right}");
        let blue_right = out[2 * 16 + 3];
        assert!((blue_right - (1.0 - 0.406) / 0.225).abs() < 1e-3);
    }

    #[test]
    fn nhwc_jpeg_interleaves_channels() {
        let pre = Preprocessor::new(&model(Layout::Nhwc, vec![4, 6, 3])).unwrap();
        assert_eq!(pre.elements(), 72);
        let mut out = vec![0.0; pre.elements()];
        pre.run(&jpeg(20, 30), &mut out, "image 0").unwrap();
        let gray = 128.0 / 255.0;
        for (i, value) in out.iter().enumerate() {
            let c = i % 3;
            let mean = [0.485, 0.456, 0.406][c];
            let std = [0.229, 0.224, 0.225][c];
            assert!((value - (gray - mean) / std).abs() < 0.05, "{i}: {value}");
        }
    }

    /// A frame with texture in every channel.
    fn textured(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([0, 1, 2].map(|c| ((x * 9 + y * 5 + c * 70 + (x ^ y) % 11) % 256) as u8))
        })
    }

    #[test]
    fn fused_resize_and_crop_matches_resizing_then_cropping() {
        // The reference: resize the whole frame with `image` (bilinear), then crop.
        let settings = PreprocessSettings {
            resize_shorter: 73,
            ..PreprocessSettings::default()
        };
        let pre = Preprocessor::from_settings(64, 64, &settings);
        for (w, h) in [(150, 120), (97, 203), (73, 73)] {
            let frame = textured(w, h);
            let fused = pre.resize_and_crop(&frame);
            let shorter = w.min(h);
            let (nw, nh) = if w <= h {
                (73, (h * 73 + shorter / 2) / shorter)
            } else {
                ((w * 73 + shorter / 2) / shorter, 73)
            };
            let resized =
                image::imageops::resize(&frame, nw, nh, image::imageops::FilterType::Triangle);
            let reference =
                image::imageops::crop_imm(&resized, (nw - 64) / 2, (nh - 64) / 2, 64, 64)
                    .to_image();
            let differences: Vec<i32> = fused
                .iter()
                .zip(reference.as_raw())
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let mean = differences.iter().sum::<i32>() as f64 / differences.len() as f64;
            let worst = differences.iter().max().copied().unwrap_or(0);
            // Only rounding differs: a fraction of a level on average, a level or two at
            // worst.
            assert!(mean < 0.5, "{w}x{h}: mean difference {mean}");
            assert!(worst <= 2, "{w}x{h}: worst difference {worst}");
            if (w, h) == (73, 73) {
                assert_eq!(fused, reference.into_raw(), "no resize: a plain crop");
            }
        }
    }

    #[test]
    fn small_and_odd_images_still_fill_the_crop() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4])).unwrap();
        let mut out = vec![f32::NAN; pre.elements()];
        pre.run(&png(1, 3), &mut out, "image 0").unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn non_images_are_bad_requests() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4])).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let error = pre.run(b"GIF89a....", &mut out, "image 2").unwrap_err();
        assert!(error.to_string().contains("image 2 is not a JPEG or PNG"));
        let mut broken = png(8, 8);
        broken.truncate(40);
        let error = pre.run(&broken, &mut out, "image 0").unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::InvalidArgument);
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let mut settings = model(Layout::Nchw, vec![3, 4, 4]);
        settings.preprocessing.max_image_side = 16;
        let pre = Preprocessor::new(&settings).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let error = pre.run(&png(64, 8), &mut out, "image 0").unwrap_err();
        assert_eq!(
            error.kind(),
            crate::serve::ErrorKind::InvalidArgument,
            "{error}"
        );
    }
}
