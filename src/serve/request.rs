//! An inference request body, checked against the model and turned into what the
//! backend takes: the FP32 input of every image (preprocessed from raw images where
//! the client sent those), its priority and timeout, and what the response must hold.
//!
//! Runs on the preprocessing pool. Every rejection is a 400 naming the field at fault.

use std::time::Duration;

use actix_web::web::Bytes;

use super::binary::{bytes_elements, fp32_from_le, split_body, BinaryCursor};
use super::error::ServeError;
use super::model::ServedModel;
use super::protocol::{
    param_bool, param_u64, InferRequestHeader, Parameters, RequestInput, RequestOutput, TensorData,
};

/// A request ready for the backend.
#[derive(Debug)]
pub struct Prepared {
    /// The client's request id.
    pub id: Option<String>,
    /// Images carried.
    pub images: u32,
    /// `images` × the model's input elements, row-major.
    pub data: Vec<f32>,
    /// Backend priority level, 0 the most urgent.
    pub priority: u8,
    /// Longest the request may take before it runs.
    pub timeout: Option<Duration>,
    /// How to answer.
    pub output: OutputPlan,
}

/// What the response carries for the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPlan {
    /// Values as binary data rather than JSON.
    pub binary: bool,
    /// Top-k classification strings instead of the raw values.
    pub classification: Option<usize>,
}

/// Parses and checks a request body; `header_length` is the value of
/// `Inference-Header-Content-Length`, if the client sent one.
pub fn decode(
    model: &ServedModel,
    body: Bytes,
    header_length: Option<usize>,
) -> Result<Prepared, ServeError> {
    let (json, binary) = split_body(body, header_length)?;
    let header: InferRequestHeader = serde_json::from_slice(&json)
        .map_err(|error| ServeError::bad_request(format!("malformed request JSON: {error}")))?;
    let InferRequestHeader {
        id,
        parameters,
        inputs,
        outputs,
    } = header;
    let priority = priority(model, &parameters)?;
    let timeout = param_u64(&parameters, "timeout", "parameters.timeout")?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    let binary_default = param_bool(
        &parameters,
        "binary_data_output",
        "parameters.binary_data_output",
    )?
    .unwrap_or(false);
    let output = output_plan(model, outputs.as_deref(), binary_default)?;

    let mut cursor = BinaryCursor::new(binary);
    let mut found: Option<(u32, Vec<f32>)> = None;
    let mut seen: Vec<String> = Vec::new();
    for input in inputs {
        if seen.contains(&input.name) {
            return Err(ServeError::bad_request(format!(
                "input {:?} is given twice",
                input.name
            )));
        }
        seen.push(input.name.clone());
        let binary_size = param_u64(
            &input.parameters,
            "binary_data_size",
            &format!("input {:?}: parameters.binary_data_size", input.name),
        )?;
        let raw = match binary_size {
            Some(size) => {
                if input.data.is_some() {
                    return Err(ServeError::bad_request(format!(
                        "input {:?} has both data and binary_data_size",
                        input.name
                    )));
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                Some(cursor.take(size, &input.name)?)
            }
            None => None,
        };
        let decoded = if input.name == model.settings.input_name {
            tensor_input(model, input, raw)?
        } else if model.settings.image_input.as_deref() == Some(input.name.as_str()) {
            image_input(model, &input, raw)?
        } else {
            return Err(ServeError::bad_request(format!(
                "unknown input {:?}; model {:?} takes {}",
                input.name,
                model.settings.name,
                expected_inputs(model)
            )));
        };
        if found.is_some() {
            return Err(ServeError::bad_request(format!(
                "give exactly one of {}",
                expected_inputs(model)
            )));
        }
        found = Some(decoded);
    }
    cursor.finish()?;
    let (images, data) = found.ok_or_else(|| {
        ServeError::bad_request(format!(
            "no input given; model takes {}",
            expected_inputs(model)
        ))
    })?;
    Ok(Prepared {
        id,
        images,
        data,
        priority,
        timeout,
        output,
    })
}

fn expected_inputs(model: &ServedModel) -> String {
    let s = &model.settings;
    match &s.image_input {
        Some(image) => format!("{:?} (FP32) or {image:?} (BYTES)", s.input_name),
        None => format!("{:?} (FP32)", s.input_name),
    }
}

/// Triton's `priority`: 0 = default, 1..=levels with 1 the highest.
fn priority(model: &ServedModel, parameters: &Parameters) -> Result<u8, ServeError> {
    let levels = model.priority_levels;
    match param_u64(parameters, "priority", "parameters.priority")? {
        None | Some(0) => Ok(model.default_priority),
        Some(p) if p <= u64::from(levels) => Ok((p - 1) as u8),
        Some(p) => Err(ServeError::bad_request(format!(
            "parameters.priority must be between 0 and {levels}, got {p}"
        ))),
    }
}

fn output_plan(
    model: &ServedModel,
    outputs: Option<&[RequestOutput]>,
    binary_default: bool,
) -> Result<OutputPlan, ServeError> {
    let all = OutputPlan {
        binary: binary_default,
        classification: None,
    };
    let Some(outputs) = outputs.filter(|o| !o.is_empty()) else {
        return Ok(all);
    };
    let name = &model.settings.output_name;
    let mut plan = None;
    for output in outputs {
        if &output.name != name {
            return Err(ServeError::bad_request(format!(
                "unknown output {:?}; model {:?} has output {name:?}",
                output.name, model.settings.name
            )));
        }
        if plan.is_some() {
            return Err(ServeError::bad_request(format!(
                "output {name:?} is requested twice"
            )));
        }
        let what = |key: &str| format!("output {name:?}: parameters.{key}");
        let binary = param_bool(&output.parameters, "binary_data", &what("binary_data"))?
            .unwrap_or(binary_default);
        let classification = param_u64(
            &output.parameters,
            "classification",
            &what("classification"),
        )?
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
        plan = Some(OutputPlan {
            binary,
            classification,
        });
    }
    Ok(plan.unwrap_or(all))
}

/// The batch size of `input`'s shape, checked against `per_image` dims.
fn batch_of(
    model: &ServedModel,
    input: &RequestInput,
    per_image: &[usize],
) -> Result<u32, ServeError> {
    let expected = || {
        let dims: Vec<String> = per_image.iter().map(ToString::to_string).collect();
        format!("[-1, {}]", dims.join(", "))
    };
    let shape = &input.shape;
    let matches = shape.len() == per_image.len() + 1
        && shape[1..]
            .iter()
            .zip(per_image)
            .all(|(&got, &want)| usize::try_from(got) == Ok(want));
    if !matches {
        return Err(ServeError::bad_request(format!(
            "input {:?}: shape {shape:?} does not match the model's {}",
            input.name,
            expected()
        )));
    }
    let batch = shape[0];
    if batch < 1 || batch > i64::from(model.max_batch) {
        return Err(ServeError::bad_request(format!(
            "input {:?}: batch size {batch} must be between 1 and max_batch_size {}",
            input.name, model.max_batch
        )));
    }
    Ok(batch as u32)
}

fn check_datatype(input: &RequestInput, want: &str) -> Result<(), ServeError> {
    if input.datatype == want {
        Ok(())
    } else {
        Err(ServeError::bad_request(format!(
            "input {:?}: datatype {:?} does not match the model's {want}",
            input.name, input.datatype
        )))
    }
}

/// The FP32 input tensor.
fn tensor_input(
    model: &ServedModel,
    input: RequestInput,
    raw: Option<Bytes>,
) -> Result<(u32, Vec<f32>), ServeError> {
    check_datatype(&input, "FP32")?;
    let images = batch_of(model, &input, &model.settings.input_shape)?;
    let data = match (raw, input.data) {
        (Some(raw), _) => fp32_from_le(&raw, &input.name)?,
        (None, Some(TensorData::Numbers(values))) => values,
        (None, Some(TensorData::Strings(_) | TensorData::Bools(_))) => {
            return Err(ServeError::bad_request(format!(
                "input {:?}: data must be numbers for FP32",
                input.name
            )))
        }
        (None, None) => {
            return Err(ServeError::bad_request(format!(
                "input {:?} has neither data nor binary_data_size",
                input.name
            )))
        }
    };
    let expected = images as usize * model.settings.input_len();
    if data.len() != expected {
        return Err(ServeError::bad_request(format!(
            "input {:?}: {} values given, shape {:?} needs {expected}",
            input.name,
            data.len(),
            input.shape
        )));
    }
    Ok((images, data))
}

/// The raw-image input: one encoded JPEG/PNG per image.
fn image_input(
    model: &ServedModel,
    input: &RequestInput,
    raw: Option<Bytes>,
) -> Result<(u32, Vec<f32>), ServeError> {
    let preprocessor = model.preprocessor.as_ref().ok_or_else(|| {
        ServeError::Internal("raw-image input without a preprocessor".to_string())
    })?;
    check_datatype(input, "BYTES")?;
    let per_image: &[usize] = if input.shape.len() == 1 { &[] } else { &[1] };
    let images = batch_of(model, input, per_image)?;
    let Some(raw) = raw else {
        return Err(ServeError::bad_request(format!(
            "input {:?}: images must be sent as binary data (binary tensor data extension)",
            input.name
        )));
    };
    let encoded = bytes_elements(&raw, &input.name)?;
    if encoded.len() != images as usize {
        return Err(ServeError::bad_request(format!(
            "input {:?}: {} images given, shape {:?} needs {images}",
            input.name,
            encoded.len(),
            input.shape
        )));
    }
    let per = preprocessor.elements();
    if per != model.settings.input_len() {
        return Err(ServeError::Internal(format!(
            "preprocessor makes {per} values per image, the model takes {}",
            model.settings.input_len()
        )));
    }
    let mut data = vec![0.0f32; per * encoded.len()];
    for (index, (image, out)) in encoded.iter().zip(data.chunks_exact_mut(per)).enumerate() {
        preprocessor.run(
            image,
            out,
            &format!("input {:?}: image {index}", input.name),
        )?;
    }
    Ok((images, data))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::serve::ModelSettings;

    fn model() -> ServedModel {
        ServedModel {
            settings: ModelSettings {
                input_shape: vec![2],
                output_shape: vec![3],
                ..ModelSettings::default()
            },
            max_batch: 4,
            priority_levels: 3,
            default_priority: 2,
            labels: None,
            preprocessor: None,
        }
    }

    fn decode_json(body: serde_json::Value) -> Result<Prepared, ServeError> {
        decode(&model(), Bytes::from(body.to_string()), None)
    }

    fn input(shape: serde_json::Value, data: serde_json::Value) -> serde_json::Value {
        json!({"name": "input", "shape": shape, "datatype": "FP32", "data": data})
    }

    #[test]
    fn a_good_request_becomes_backend_input() {
        let prepared = decode_json(json!({
            "id": "a",
            "inputs": [input(json!([2, 2]), json!([[1, 2], [3, 4]]))],
            "parameters": {"priority": 1, "timeout": 1500}
        }))
        .unwrap();
        assert_eq!(prepared.id.as_deref(), Some("a"));
        assert_eq!(prepared.images, 2);
        assert_eq!(prepared.data, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(prepared.priority, 0);
        assert_eq!(prepared.timeout, Some(Duration::from_micros(1500)));
        assert_eq!(
            prepared.output,
            OutputPlan {
                binary: false,
                classification: None
            }
        );
    }

    #[test]
    fn priority_zero_or_absent_is_the_default_and_levels_are_bounded() {
        let base = || json!({"inputs": [input(json!([1, 2]), json!([1, 2]))]});
        assert_eq!(decode_json(base()).unwrap().priority, 2);
        let mut body = base();
        body["parameters"] = json!({"priority": 0, "timeout": 0});
        let prepared = decode_json(body).unwrap();
        assert_eq!((prepared.priority, prepared.timeout), (2, None));
        let mut body = base();
        body["parameters"] = json!({"priority": 3});
        assert_eq!(decode_json(body).unwrap().priority, 2);
        let mut body = base();
        body["parameters"] = json!({"priority": 4});
        let error = decode_json(body).unwrap_err().to_string();
        assert!(error.contains("between 0 and 3"), "{error}");
    }

    #[test]
    fn output_plan_follows_request_and_output_parameters() {
        let mut body = json!({"inputs": [input(json!([1, 2]), json!([1, 2]))],
            "parameters": {"binary_data_output": true}});
        assert!(decode_json(body.clone()).unwrap().output.binary);
        body["outputs"] =
            json!([{"name": "output", "parameters": {"binary_data": false, "classification": 2}}]);
        let plan = decode_json(body.clone()).unwrap().output;
        assert_eq!(
            plan,
            OutputPlan {
                binary: false,
                classification: Some(2)
            }
        );
        body["outputs"] = json!([{"name": "output"}, {"name": "output"}]);
        assert!(decode_json(body).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn inputs_are_checked_by_name_count_and_binary_size() {
        let twice = json!({"inputs": [input(json!([1, 2]), json!([1, 2])), input(json!([1, 2]), json!([1, 2]))]});
        assert!(decode_json(twice)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let none = json!({"inputs": []});
        assert!(decode_json(none)
            .unwrap_err()
            .to_string()
            .contains("no input"));
        let header = json!({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
            "data": [1, 2], "parameters": {"binary_data_size": 8}}]})
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(&[0; 8]);
        let error = decode(&model(), Bytes::from(body), Some(header.len())).unwrap_err();
        assert!(
            error.to_string().contains("both data and binary_data_size"),
            "{error}"
        );
    }
}
