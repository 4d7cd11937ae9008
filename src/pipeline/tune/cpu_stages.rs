//! The CPU side of a measured pipeline (`mica tune --backend real`): a pre-processing
//! stage before the network's first stage and a post-processing stage after its last,
//! each run by the point's `threads` worker threads on the host, one image at a time
//! (Kang et al., JEDI, ACM TECS 2022: parallel pre/post-processing threads beside the
//! accelerator stages).
//!
//! - Pre-processing: a decoded RGB frame (8-bit HWC, twice the network's input side)
//!   is resized so that its shorter side is 256/224 of the crop (bilinear),
//!   center-cropped to the network's input and normalized with ImageNet's mean and
//!   std into CHW FP32: the serving path's `Preprocessor` itself, without the JPEG/PNG
//!   decoding. Each worker holds its frame (as a camera's capture buffer
//!   would); an image enters the pipeline as a one-value token, so that feeding costs
//!   nothing and the measured rate is the stages'.
//! - Post-processing: softmax over the network's output, then its top 5 as (class,
//!   probability) pairs.

use std::sync::Arc;

use image::RgbImage;
use mica_core::UnitKind;
use mica_engines::{
    check_input, BatchInput, BatchOutput, CustomEngineBuilder, Engine, EngineError, EngineInfo,
    EngineSettings, EngineSpec,
};
use mica_pipeline::stage::{StageSetup, StageUnit};

use crate::serve::{PreprocessSettings, Preprocessor};

/// Unit label of the CPU stages.
pub const HOST_UNIT: &str = "host-cpu";
/// Name of the pre-processing stage.
pub const PRE_STAGE: &str = "pre";
/// Name of the post-processing stage.
pub const POST_STAGE: &str = "post";
/// Classes the post-processing stage reports.
const TOP_K: usize = 5;

/// Values of the token that enters the pipeline for one image.
pub const TOKEN_LEN: usize = 1;

/// The side of a square 3-channel input of `input_len` values.
fn input_side(input_len: usize) -> Result<u32, String> {
    let side = ((input_len / 3) as f64).sqrt().round() as usize;
    if side == 0 || 3 * side * side != input_len {
        return Err(format!(
            "CPU pre-processing needs a square 3-channel network input; it takes {input_len} values"
        ));
    }
    u32::try_from(side).map_err(|_| "the network input is too large".to_string())
}

/// A synthetic frame of `side` x `side`: a gradient with some texture, so that
/// resizing has work to do.
fn frame(side: u32) -> RgbImage {
    RgbImage::from_fn(side, side, |x, y| {
        let value =
            |channel: u32| ((x * 255 / side + y * 7 + channel * 50 + (x ^ y) % 13) % 256) as u8;
        image::Rgb([value(0), value(1), value(2)])
    })
}

fn host_spec(stream: u32, input_len: usize, output_len: usize) -> EngineSpec {
    EngineSpec::new(
        EngineSettings::Null,
        UnitKind::Cpu,
        1,
        vec![input_len],
        output_len,
    )
    .with_unit(usize::MAX, None, None)
    .with_stream(stream)
}

fn host_stage(
    name: &str,
    threads: u32,
    io: (usize, usize),
    builder: CustomEngineBuilder,
) -> StageSetup {
    StageSetup {
        name: name.into(),
        units: vec![StageUnit {
            id: HOST_UNIT.into(),
            streams: (0..threads.max(1))
                .map(|s| host_spec(s, io.0, io.1))
                .collect(),
        }],
        batch: 1,
        device_output: false,
        builder: Some(builder),
    }
}

/// The pre-processing stage for a network input of `input_len` values: takes
/// `TOKEN_LEN` values per image.
pub fn pre_stage(input_len: usize, threads: u32) -> Result<StageSetup, String> {
    let side = input_side(input_len)?;
    let builder: CustomEngineBuilder = Arc::new(move |spec: &EngineSpec| {
        Ok(Box::new(PreEngine::new(side, spec.max_batch)) as Box<dyn Engine>)
    });
    Ok(host_stage(
        PRE_STAGE,
        threads,
        (TOKEN_LEN, input_len),
        builder,
    ))
}

/// The post-processing stage for a network output of `output_len` values.
pub fn post_stage(output_len: usize, threads: u32) -> StageSetup {
    let builder: CustomEngineBuilder = Arc::new(move |spec: &EngineSpec| {
        Ok(Box::new(PostEngine::new(output_len, spec.max_batch)) as Box<dyn Engine>)
    });
    host_stage(POST_STAGE, threads, (output_len, 2 * TOP_K), builder)
}

/// Resize, crop, normalize.
#[derive(Debug)]
struct PreEngine {
    info: EngineInfo,
    frame: RgbImage,
    preprocessor: Preprocessor,
}

impl PreEngine {
    fn new(crop: u32, max_batch: u32) -> Self {
        let resize_shorter = (crop * 256).div_ceil(224).max(crop);
        let defaults = PreprocessSettings::default();
        let settings = PreprocessSettings {
            resize_shorter,
            max_image_side: defaults.max_image_side.max(2 * crop),
            ..defaults
        };
        Self {
            info: EngineInfo {
                engine: "cpu-pre",
                max_batch: max_batch.max(1),
                input_len: TOKEN_LEN,
                output_len: 3 * (crop * crop) as usize,
            },
            frame: frame(2 * crop),
            preprocessor: Preprocessor::from_settings(crop, crop, &settings),
        }
    }
}

impl Engine for PreEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        let per_image = self.info.output_len;
        let mut out = vec![0.0; input.images as usize * per_image];
        for image in out.chunks_exact_mut(per_image) {
            self.preprocessor.run_decoded(&self.frame, image);
        }
        Ok(BatchOutput {
            images: input.images,
            per_image: self.info.output_len,
            data: out,
        })
    }
}

/// Softmax and top 5.
#[derive(Debug)]
struct PostEngine {
    info: EngineInfo,
}

impl PostEngine {
    fn new(output_len: usize, max_batch: u32) -> Self {
        Self {
            info: EngineInfo {
                engine: "cpu-post",
                max_batch: max_batch.max(1),
                input_len: output_len,
                output_len: 2 * TOP_K,
            },
        }
    }
}

/// `(class, probability)` of the `TOP_K` largest softmax values, flattened; missing
/// classes (outputs shorter than `TOP_K`) are zeros.
fn top_k(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..exp.len()).collect();
    order.sort_unstable_by(|&a, &b| exp[b].total_cmp(&exp[a]));
    let mut out = vec![0.0; 2 * TOP_K];
    for (k, &class) in order.iter().take(TOP_K).enumerate() {
        out[2 * k] = class as f32;
        out[2 * k + 1] = exp[class] / sum;
    }
    out
}

impl Engine for PostEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        let data = input
            .data
            .ok_or_else(|| EngineError::Inference("post-processing needs outputs".into()))?;
        let out = data
            .chunks_exact(self.info.input_len)
            .flat_map(top_k)
            .collect();
        Ok(BatchOutput {
            images: input.images,
            per_image: self.info.output_len,
            data: out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_processing_turns_a_frame_into_a_normalized_input() {
        let input_len = 3 * 32 * 32;
        let mut engine = PreEngine::new(32, 1);
        assert_eq!(engine.frame.dimensions(), (64, 64));
        // A uniform mid-grey frame stays uniform: (128/255 - mean) / std per channel.
        engine.frame = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        let out = engine
            .infer(BatchInput {
                images: 1,
                data: Some(&[0.0]),
            })
            .unwrap();
        assert_eq!(out.data.len(), input_len);
        let (mean, std) = (
            PreprocessSettings::default().mean,
            PreprocessSettings::default().std,
        );
        for channel in 0..3 {
            let want = (128.0 / 255.0 - mean[channel]) / std[channel];
            for v in &out.data[channel * 1024..(channel + 1) * 1024] {
                assert!((v - want).abs() < 1e-5, "{v} vs {want}");
            }
        }
        assert!(pre_stage(10, 1).is_err());
    }

    #[test]
    fn post_processing_reports_the_top_five_classes() {
        let out = top_k(&[0.0, 3.0, 1.0, 2.0, -1.0, 0.5, 4.0]);
        let classes: Vec<f32> = out.iter().step_by(2).copied().collect();
        assert_eq!(classes, vec![6.0, 1.0, 3.0, 2.0, 5.0]);
        assert!(out[1] > out[3] && out[3] > out[5]);
        let short = top_k(&[1.0, 1.0]);
        assert_eq!(short[1] + short[3], 1.0);
        assert_eq!(&short[4..], &[0.0; 6]);
    }
}
