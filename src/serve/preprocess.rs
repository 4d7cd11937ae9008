//! Raw images into the model's FP32 input: decode (JPEG or PNG only), resize the
//! shorter side, center-crop, scale to [0, 1], normalize per channel, lay out as NCHW
//! or NHWC. Pure and synchronous; it runs on the image pool.
//!
//! Decoding is bounded before any pixel is decoded: the header's dimensions are checked
//! against `model.preprocessing.max_image_side` and `server.max_image_pixels`, and the
//! bytes decoding will allocate against `server.max_image_decode_bytes` (those bytes
//! are then held on the byte budget while the image is processed), so a tiny file that
//! declares 8000 x 8000 pixels is refused with 400 instead of allocating.
//!
//! Truncated images are refused too. `image`'s JPEG decoder is lenient: it fills a
//! missing scan with gray and reports nothing, so a file cut short would be classified
//! as if it were whole; a JPEG whose data does not reach its end-of-image marker is
//! therefore refused before decoding. `image`'s PNG decoder reports a truncated image
//! itself. (A JPEG that ends properly but whose header declares more pixels than its
//! scans hold is still filled with gray, within the limits above.)
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
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::budget::{ByteBudget, BytePermit};
use super::error::ServeError;
use crate::config::{Layout, ModelSettings, PreprocessSettings, ServerSettings};

/// What decoding one image may take (`[server]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels an image may declare (`server.max_image_pixels`).
    pub max_pixels: u64,
    /// Most bytes decoding one image may allocate (`server.max_image_decode_bytes`).
    pub max_decode_bytes: u64,
}

impl ImageLimits {
    /// The limits the server settings give.
    pub fn of(server: &ServerSettings) -> Self {
        Self {
            max_pixels: server.max_image_pixels,
            max_decode_bytes: server.max_image_decode_bytes,
        }
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self::of(&ServerSettings::default())
    }
}

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
    limits: ImageLimits,
}

impl Preprocessor {
    /// The preprocessor of a model that takes raw images, decoding within `limits`;
    /// `None` if it takes none. Expects validated settings.
    pub fn new(model: &ModelSettings, limits: ImageLimits) -> Option<Self> {
        model.image_input.as_ref()?;
        let (height, width) = model.image_size()?;
        Some(Self {
            limits,
            ..Self::from_settings(height, width, &model.preprocessing)
        })
    }

    /// The preprocessor of a `height` x `width` input with these (validated) settings
    /// and the default decoding limits.
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
            limits: ImageLimits::default(),
        }
    }

    /// Values per image.
    pub fn elements(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// Decodes one image and writes its `elements()` values to `out`; `what` names the
    /// image in errors. The bytes decoding allocates are held on `budget` (when given)
    /// until the values are written.
    pub fn run(
        &self,
        encoded: &[u8],
        out: &mut [f32],
        what: &str,
        budget: Option<&std::sync::Arc<ByteBudget>>,
    ) -> Result<(), ServeError> {
        debug_assert_eq!(out.len(), self.elements());
        let mut permit = budget.map(ByteBudget::permit);
        let rgb = self.decode(encoded, what, permit.as_mut())?;
        self.run_decoded(&rgb, out);
        Ok(())
    }

    /// Writes the `elements()` values of an already decoded image to `out`.
    pub fn run_decoded(&self, rgb: &RgbImage, out: &mut [f32]) {
        debug_assert_eq!(out.len(), self.elements());
        let cropped = self.resize_and_crop(rgb);
        self.normalize(&cropped, out);
    }

    fn decode(
        &self,
        encoded: &[u8],
        what: &str,
        permit: Option<&mut BytePermit>,
    ) -> Result<RgbImage, ServeError> {
        let format = match image::guess_format(encoded) {
            Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png)) => format,
            _ => {
                return Err(ServeError::bad_request(format!(
                    "{what} is not a JPEG or PNG image"
                )))
            }
        };
        let mut progressive = false;
        if format == ImageFormat::Jpeg {
            let segments = jpeg_segments(encoded);
            if !segments.complete {
                return Err(ServeError::bad_request(format!(
                    "{what} is truncated: its JPEG data ends before the end-of-image marker"
                )));
            }
            progressive = segments.progressive;
        }
        let undecodable =
            |error| ServeError::bad_request(format!("{what} cannot be decoded: {error}"));
        let mut reader = ImageReader::with_format(Cursor::new(encoded), format);
        let mut limits = Limits::default();
        limits.max_alloc = Some(self.limits.max_decode_bytes);
        reader.limits(limits);
        // Reads the header only: nothing the size of the image is allocated yet.
        let decoder = reader.into_decoder().map_err(undecodable)?;
        let (w, h) = decoder.dimensions();
        let color = decoder.color_type();
        let pixels = u64::from(w) * u64::from(h);
        // The decoded pixels; their RGB copy when they are not RGB already; for a
        // progressive JPEG the coefficients (16 bits a sample) held until its last scan.
        let rgb_copy = if color == ColorType::Rgb8 {
            0
        } else {
            3 * pixels
        };
        let coefficients = if progressive {
            2 * u64::from(color.channel_count()) * pixels
        } else {
            0
        };
        let bytes = decoder.total_bytes() + rgb_copy + coefficients;
        let kind = match (format, progressive) {
            (ImageFormat::Jpeg, true) => format!("progressive JPEG {color:?}"),
            (ImageFormat::Jpeg, false) => format!("JPEG {color:?}"),
            _ => format!("PNG {color:?}"),
        };
        self.check_size(w, h, bytes, &kind, what, permit)?;
        let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
        Ok(image.into_rgb8())
    }

    /// Refuses a `w` x `h` image (described as `kind`) whose decoding needs `bytes`
    /// beyond the limits; else holds those bytes on `permit`.
    fn check_size(
        &self,
        w: u32,
        h: u32,
        bytes: u64,
        kind: &str,
        what: &str,
        permit: Option<&mut BytePermit>,
    ) -> Result<(), ServeError> {
        if w.max(h) > self.max_side {
            return Err(ServeError::bad_request(format!(
                "{what} is {w}x{h} pixels; model.preprocessing.max_image_side allows at most {} a side",
                self.max_side
            )));
        }
        let pixels = u64::from(w) * u64::from(h);
        if pixels > self.limits.max_pixels {
            return Err(ServeError::bad_request(format!(
                "{what} is {w}x{h} = {pixels} pixels, more than server.max_image_pixels ({})",
                self.limits.max_pixels
            )));
        }
        if bytes > self.limits.max_decode_bytes {
            return Err(ServeError::bad_request(format!(
                "{what} ({w}x{h} {kind}) needs {bytes} bytes to decode, more than server.max_image_decode_bytes ({})",
                self.limits.max_decode_bytes
            )));
        }
        if let Some(permit) = permit {
            permit.hold(usize::try_from(bytes).unwrap_or(usize::MAX))?;
        }
        Ok(())
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

/// What walking a JPEG's segments found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct JpegSegments {
    /// The data runs on to the end-of-image marker (`FF D9`).
    complete: bool,
    /// A progressive frame (`SOF2`, `SOF6`, `SOF10`, `SOF14`).
    progressive: bool,
}

/// Walks a JPEG's marker segments by their lengths (so a thumbnail inside an `APP1`
/// segment, with its own end marker, is skipped) and each scan's entropy-coded data up
/// to the next marker (inside it an `FF` byte is stuffed as `FF 00`, and `FF D0`-`FF
/// D7` are restart markers). Bytes after the end marker are allowed (some cameras
/// append data).
fn jpeg_segments(data: &[u8]) -> JpegSegments {
    let mut found = JpegSegments::default();
    // After the start-of-image marker (`FF D8`, checked by the format guess).
    let mut at = 2;
    loop {
        let (Some(&0xFF), Some(&marker)) = (data.get(at), data.get(at + 1)) else {
            return found;
        };
        match marker {
            // A fill byte before a marker.
            0xFF => at += 1,
            0xD9 => {
                found.complete = true;
                return found;
            }
            // Markers without a segment.
            0x01 | 0xD0..=0xD8 => at += 2,
            _ => {
                let (Some(&high), Some(&low)) = (data.get(at + 2), data.get(at + 3)) else {
                    return found;
                };
                let length = usize::from(u16::from_be_bytes([high, low]));
                if length < 2 {
                    return found;
                }
                found.progressive |= matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE);
                at += 2 + length;
                if marker == 0xDA {
                    // The scan's entropy-coded data, up to the next real marker.
                    loop {
                        let Some(offset) = data
                            .get(at..)
                            .and_then(|rest| rest.iter().position(|&byte| byte == 0xFF))
                        else {
                            return found;
                        };
                        at += offset;
                        match data.get(at + 1) {
                            Some(0x00 | 0xD0..=0xD7) => at += 2,
                            Some(0xFF) => at += 1,
                            Some(_) => break,
                            None => return found,
                        }
                    }
                }
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

    fn limits() -> ImageLimits {
        ImageLimits::default()
    }

    /// CRC-32 (ISO-HDLC), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A small PNG whose header declares `w`×`h` (its pixel data is the small one's).
    fn png_declaring(w: u32, h: u32) -> Vec<u8> {
        let mut out = png(8, 8);
        // Signature (8), IHDR length (4), "IHDR" (4), width, height, ..., CRC at 29.
        out[16..20].copy_from_slice(&w.to_be_bytes());
        out[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&out[12..29]);
        out[29..33].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// A small JPEG whose frame header declares `w`×`h`.
    fn jpeg_declaring(w: u16, h: u16) -> Vec<u8> {
        let mut out = jpeg(8, 8);
        let sof = out
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("a baseline JPEG");
        // FF C0, length (2), precision (1), height (2), width (2).
        out[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        out[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        out
    }

    #[test]
    fn bombs_are_refused_by_their_header() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        for bomb in [png_declaring(8000, 8000), jpeg_declaring(8000, 8000)] {
            let error = pre.run(&bomb, &mut out, "image 0", None).unwrap_err();
            assert_eq!(error.kind(), crate::serve::ErrorKind::InvalidArgument);
            let message = error.to_string();
            assert!(
                message.contains("8000x8000 = 64000000 pixels")
                    && message.contains("server.max_image_pixels (16777216)"),
                "{message}"
            );
        }
        // Within the pixel limit, the allocation limit still applies.
        let tight = ImageLimits {
            max_pixels: 1 << 24,
            max_decode_bytes: 1 << 20,
        };
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), tight).unwrap();
        let error = pre
            .run(&png_declaring(1024, 1024), &mut out, "image 1", None)
            .unwrap_err();
        assert!(
            error.to_string().contains(
                "needs 3145728 bytes to decode, more than server.max_image_decode_bytes (1048576)"
            ),
            "{error}"
        );
    }

    #[test]
    fn truncated_images_are_bad_requests() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let whole = jpeg(64, 64);
        for cut in [whole.len() / 2, whole.len() - 2] {
            let error = pre
                .run(&whole[..cut], &mut out, "image 0", None)
                .unwrap_err();
            assert!(
                error.to_string().contains("image 0 is truncated"),
                "{error}"
            );
        }
        // Bytes after the end marker are allowed.
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"appended by a camera");
        pre.run(&trailing, &mut out, "image 0", None).unwrap();
        let mut textured_png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut textured_png)
            .write_image(
                textured(64, 64).as_raw(),
                64,
                64,
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        for cut in [textured_png.len() / 2, textured_png.len() - 12] {
            let error = pre
                .run(&textured_png[..cut], &mut out, "image 0", None)
                .unwrap_err();
            assert_eq!(
                error.kind(),
                crate::serve::ErrorKind::InvalidArgument,
                "{error}"
            );
        }
        let error = pre
            .run(&png_declaring(64, 4000), &mut out, "image 0", None)
            .unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::InvalidArgument);
    }

    #[test]
    fn decoding_holds_its_bytes_on_the_budget() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let budget = ByteBudget::new(64 * 64 * 3 - 1);
        let error = pre
            .run(&png(64, 64), &mut out, "image 0", Some(&budget))
            .unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::OverBudget, "{error}");
        let budget = ByteBudget::new(64 * 64 * 3);
        pre.run(&png(64, 64), &mut out, "image 0", Some(&budget))
            .unwrap();
        assert_eq!(budget.used(), 0, "released once the values are written");
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
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        pre.run(&png(32, 16), &mut out, "image 0", None).unwrap();
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
        let pre = Preprocessor::new(&model(Layout::Nhwc, vec![4, 6, 3]), limits()).unwrap();
        assert_eq!(pre.elements(), 72);
        let mut out = vec![0.0; pre.elements()];
        pre.run(&jpeg(20, 30), &mut out, "image 0", None).unwrap();
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
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![f32::NAN; pre.elements()];
        pre.run(&png(1, 3), &mut out, "image 0", None).unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn non_images_are_bad_requests() {
        let pre = Preprocessor::new(&model(Layout::Nchw, vec![3, 4, 4]), limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let error = pre
            .run(b"GIF89a....", &mut out, "image 2", None)
            .unwrap_err();
        assert!(error.to_string().contains("image 2 is not a JPEG or PNG"));
        let mut broken = png(8, 8);
        broken.truncate(40);
        let error = pre.run(&broken, &mut out, "image 0", None).unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::InvalidArgument);
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let mut settings = model(Layout::Nchw, vec![3, 4, 4]);
        settings.preprocessing.max_image_side = 16;
        let pre = Preprocessor::new(&settings, limits()).unwrap();
        let mut out = vec![0.0; pre.elements()];
        let error = pre.run(&png(64, 8), &mut out, "image 0", None).unwrap_err();
        assert_eq!(
            error.kind(),
            crate::serve::ErrorKind::InvalidArgument,
            "{error}"
        );
    }
}
