//! The backend's answer as an inference result, whatever the transport: the output
//! tensor as FP32 values, or the classification extension's top-k
//! `"score:index:label"` strings (BYTES), and where the request ran. Transports encode
//! it (HTTP as JSON or binary data, gRPC as `raw_output_contents`).

use std::time::Duration;

use mica_core::UnitId;

use super::backend::InferResponse;
use super::error::ServeError;
use super::model::ServedModel;
use super::request::OutputPlan;
use crate::config::Labels;

/// An answered request, ready for its transport.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResult {
    /// The request's id, if it had one.
    pub id: Option<String>,
    /// The model's output tensor.
    pub output: OutputTensor,
    /// Whether the client asked for binary output (HTTP; gRPC is always binary).
    pub binary: bool,
    /// Where it ran.
    pub ran_on: RanOn,
}

/// Where a request ran, so that no answer from a simulated unit passes for a measured
/// one (`mica_unit`, `mica_engine`, ... response parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct RanOn {
    /// Unit id (`gpu0.fp16`).
    pub unit: UnitId,
    /// Engine of that unit (`sim`, `torch`, ...).
    pub engine: &'static str,
    /// Time the request waited in the queue before its batch started.
    pub queue_wait: Duration,
    /// Images in the batch the request ran in.
    pub batch_images: u32,
}

/// One output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// `FP32`, or `BYTES` for classification results.
    pub datatype: &'static str,
    /// Shape, batch dimension first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub values: OutputValues,
}

/// Output values.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputValues {
    /// FP32 values.
    Fp32(Vec<f32>),
    /// BYTES values (classification strings).
    Bytes(Vec<String>),
}

/// Builds the result of a request of `images` images from the backend's answer.
pub fn build(
    model: &ServedModel,
    plan: OutputPlan,
    id: Option<String>,
    images: u32,
    answer: InferResponse,
) -> Result<InferResult, ServeError> {
    let per_image = model.settings.output_len();
    if answer.images != images
        || answer.per_image != per_image
        || answer.data.len() != images as usize * per_image
    {
        return Err(ServeError::Internal(format!(
            "the backend answered {} images × {} values ({} in all) to a request of {images} images × {per_image}",
            answer.images,
            answer.per_image,
            answer.data.len()
        )));
    }
    let mut shape = Vec::with_capacity(model.settings.output_shape.len() + 1);
    shape.push(images as usize);
    let output = match plan.classification {
        Some(k) => {
            let strings = top_k(
                &answer.data,
                per_image,
                k.min(per_image),
                model.labels.as_ref(),
            );
            shape.push(strings.len() / images.max(1) as usize);
            OutputTensor {
                datatype: "BYTES",
                shape,
                values: OutputValues::Bytes(strings),
            }
        }
        None => {
            shape.extend_from_slice(&model.settings.output_shape);
            OutputTensor {
                datatype: "FP32",
                shape,
                values: OutputValues::Fp32(answer.data),
            }
        }
    };
    Ok(InferResult {
        id,
        output,
        binary: plan.binary,
        ran_on: RanOn {
            unit: answer.unit,
            engine: answer.engine,
            queue_wait: answer.queue_wait,
            batch_images: answer.batch_images,
        },
    })
}

/// The `k` largest values of each image, best first, as Triton formats them:
/// `"{value:.6}:{index}"` with `":{label}"` appended when a label is known.
pub fn top_k(data: &[f32], per_image: usize, k: usize, labels: Option<&Labels>) -> Vec<String> {
    let mut out = Vec::with_capacity(k * data.len() / per_image.max(1));
    let mut order: Vec<usize> = Vec::with_capacity(per_image);
    for image in data.chunks_exact(per_image.max(1)) {
        order.clear();
        order.extend(0..image.len());
        let by_value_desc = |a: &usize, b: &usize| image[*b].total_cmp(&image[*a]).then(a.cmp(b));
        if k < order.len() {
            order.select_nth_unstable_by(k, by_value_desc);
            order.truncate(k);
        }
        order.sort_unstable_by(by_value_desc);
        for &index in order.iter().take(k) {
            let label = labels
                .and_then(|l| l.names.get(index))
                .filter(|l| !l.is_empty());
            out.push(match label {
                Some(label) => format!("{:.6}:{index}:{label}", image[index]),
                None => format!("{:.6}:{index}", image[index]),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            file_name: "labels.txt".into(),
            names: vec!["cat".into(), "dog".into(), "".into()],
        }
    }

    #[test]
    fn top_k_orders_and_labels() {
        let data = [0.1, 0.7, 0.2, 0.0, 0.5, 0.9];
        let strings = top_k(&data, 3, 2, Some(&labels()));
        assert_eq!(
            strings,
            vec![
                "0.700000:1:dog",
                "0.200000:2",
                "0.900000:2",
                "0.500000:1:dog"
            ]
        );
        assert_eq!(top_k(&data, 3, 3, None).len(), 6);
        let ties = top_k(&[1.0, 1.0, 1.0], 3, 2, None);
        assert_eq!(ties, vec!["1.000000:0", "1.000000:1"]);
    }

    /// An answer of `images` × `per_image` values counting up from 0.
    pub fn answer(images: u32, per_image: usize) -> InferResponse {
        InferResponse {
            images,
            batch_images: images,
            per_image,
            data: (0..images as usize * per_image).map(|i| i as f32).collect(),
            unit: UnitId::new("cpu"),
            unit_index: 0,
            engine: "sim",
            queue_wait: Duration::from_micros(12),
            latency: Duration::ZERO,
        }
    }

    /// A model of 4 outputs per image.
    pub fn model() -> ServedModel {
        ServedModel {
            settings: crate::serve::ModelSettings {
                output_shape: vec![4],
                ..Default::default()
            },
            max_batch: 8,
            priority_levels: 1,
            default_priority: 0,
            labels: None,
            preprocessor: None,
        }
    }

    #[test]
    fn fp32_output_has_the_batch_first_shape() {
        let plan = OutputPlan {
            binary: true,
            classification: None,
        };
        let result = build(&model(), plan, Some("7".into()), 2, answer(2, 4)).unwrap();
        assert_eq!(result.id.as_deref(), Some("7"));
        assert!(result.binary);
        assert_eq!(result.output.datatype, "FP32");
        assert_eq!(result.output.shape, vec![2, 4]);
        assert_eq!(
            result.output.values,
            OutputValues::Fp32((0..8).map(|i| i as f32).collect())
        );
        assert_eq!(result.ran_on.engine, "sim");
        assert_eq!(result.ran_on.queue_wait, Duration::from_micros(12));
    }

    #[test]
    fn classification_is_bytes_of_shape_batch_by_k() {
        let plan = OutputPlan {
            binary: false,
            classification: Some(2),
        };
        let result = build(&model(), plan, None, 2, answer(2, 4)).unwrap();
        assert_eq!(result.output.datatype, "BYTES");
        assert_eq!(result.output.shape, vec![2, 2]);
        let OutputValues::Bytes(strings) = &result.output.values else {
            panic!("classification is BYTES");
        };
        assert_eq!(strings[0], "3.000000:3");
        assert_eq!(strings[2], "7.000000:3");
        // k past the output size is clamped to it.
        let plan = OutputPlan {
            binary: false,
            classification: Some(99),
        };
        let result = build(&model(), plan, None, 1, answer(1, 4)).unwrap();
        assert_eq!(result.output.shape, vec![1, 4]);
    }

    #[test]
    fn a_wrong_sized_answer_is_an_internal_error() {
        let plan = OutputPlan {
            binary: false,
            classification: None,
        };
        let error = build(&model(), plan, None, 2, answer(1, 4)).unwrap_err();
        assert_eq!(error.kind(), crate::serve::ErrorKind::Internal);
    }
}
