//! An inference request, whatever the transport, checked against the model and turned
//! into what the backend takes: the FP32 input of every image (preprocessed from raw
//! images where the client sent those), its priority and timeout, and what the
//! response must hold.
//!
//! Transports parse their wire format into a [`TensorRequest`] (HTTP from JSON and
//! binary data, gRPC from protobuf); [`prepare`] validates it. Large requests are
//! prepared on the preprocessing pool. Every rejection is a `BadRequest` naming the
//! field at fault, with the same text whichever transport carried the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::binary::{bytes_elements, fp32_from_le};
use super::budget::ByteBudget;
use super::error::ServeError;
use super::model::ServedModel;
use super::params::{param_bool, param_u64, Parameters};

/// An inference request as the transports hand it over.
#[derive(Debug, Clone, Default)]
pub struct TensorRequest {
    /// Client's request id, echoed back.
    pub id: Option<String>,
    /// Request parameters (`priority`, `timeout`, `binary_data_output`).
    pub parameters: Parameters,
    /// Input tensors.
    pub inputs: Vec<InputTensor>,
    /// Outputs asked for; `None` or empty: every output, in the default form.
    pub outputs: Option<Vec<OutputRequest>>,
}

/// One input tensor of a request.
#[derive(Debug, Clone)]
pub struct InputTensor {
    /// Tensor name.
    pub name: String,
    /// Shape, batch dimension first.
    pub shape: Vec<i64>,
    /// KServe datatype (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// The values.
    pub data: InputData,
}

/// An input's values, in the form the transport carried them.
#[derive(Debug, Clone, PartialEq)]
pub enum InputData {
    /// None given.
    Missing,
    /// Typed values (HTTP JSON `data`, gRPC typed contents).
    Values(TensorData),
    /// BYTES elements, one per image (gRPC `bytes_contents`).
    Elements(Vec<Bytes>),
    /// The binary wire form (HTTP binary data, gRPC `raw_input_contents`).
    Raw(Bytes),
}

/// Tensor values, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Numbers, kept as FP32 (the only numeric type mica's models take).
    Numbers(Vec<f32>),
    /// Strings (BYTES tensors in JSON).
    Strings(Vec<String>),
    /// Booleans (BOOL tensors).
    Bools(Vec<bool>),
    /// Values of another typed field than the datatype's (gRPC), named.
    OtherField(&'static str),
}

/// One requested output.
#[derive(Debug, Clone)]
pub struct OutputRequest {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data`, `classification`).
    pub parameters: Parameters,
}

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

/// What decoding a request's raw images may spend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoding<'a> {
    /// When the request's `timeout` passes: no image starts decoding after it.
    pub deadline: Option<Instant>,
    /// Where the bytes an image decodes into are held while it is processed.
    pub budget: Option<&'a Arc<ByteBudget>>,
}

/// Whether the request carries the model's raw-image input (decoded on the image
/// pool).
pub fn carries_images(model: &ServedModel, request: &TensorRequest) -> bool {
    model
        .settings
        .image_input
        .as_deref()
        .is_some_and(|name| request.inputs.iter().any(|input| input.name == name))
}

/// The request's `timeout` parameter (microseconds; absent or 0: none).
pub fn timeout_of(parameters: &Parameters) -> Result<Option<Duration>, ServeError> {
    Ok(param_u64(parameters, "timeout", "parameters.timeout")?
        .filter(|&us| us > 0)
        .map(Duration::from_micros))
}

/// Checks a request against the model; raw images are decoded without a deadline or
/// budget.
pub fn prepare(model: &ServedModel, request: TensorRequest) -> Result<Prepared, ServeError> {
    prepare_with(model, request, Decoding::default())
}

/// Checks a request against the model, decoding its raw images within `decoding`.
pub fn prepare_with(
    model: &ServedModel,
    request: TensorRequest,
    decoding: Decoding<'_>,
) -> Result<Prepared, ServeError> {
    let TensorRequest {
        id,
        parameters,
        inputs,
        outputs,
    } = request;
    let priority = priority(model, &parameters)?;
    let timeout = timeout_of(&parameters)?;
    let binary_default = param_bool(
        &parameters,
        "binary_data_output",
        "parameters.binary_data_output",
    )?
    .unwrap_or(false);
    let output = output_plan(model, outputs.as_deref(), binary_default)?;

    let mut found: Option<(u32, Vec<f32>)> = None;
    let mut seen: Vec<&str> = Vec::new();
    for input in &inputs {
        if seen.contains(&input.name.as_str()) {
            return Err(ServeError::bad_request(format!(
                "input {:?} is given twice",
                input.name
            )));
        }
        seen.push(&input.name);
    }
    for input in inputs {
        let decoded = if input.name == model.settings.input_name {
            tensor_input(model, input)?
        } else if model.settings.image_input.as_deref() == Some(input.name.as_str()) {
            image_input(model, input, decoding)?
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
    outputs: Option<&[OutputRequest]>,
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
    input: &InputTensor,
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

fn check_datatype(input: &InputTensor, want: &str) -> Result<(), ServeError> {
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
fn tensor_input(model: &ServedModel, input: InputTensor) -> Result<(u32, Vec<f32>), ServeError> {
    check_datatype(&input, "FP32")?;
    let images = batch_of(model, &input, &model.settings.input_shape)?;
    let data = match input.data {
        InputData::Raw(raw) => fp32_from_le(&raw, &input.name)?,
        InputData::Values(TensorData::Numbers(values)) => values,
        InputData::Values(TensorData::Strings(_) | TensorData::Bools(_))
        | InputData::Elements(_) => {
            return Err(ServeError::bad_request(format!(
                "input {:?}: data must be numbers for FP32",
                input.name
            )))
        }
        InputData::Values(TensorData::OtherField(field)) => {
            return Err(ServeError::bad_request(format!(
                "input {:?}: FP32 values belong in fp32_contents, not {field}",
                input.name
            )))
        }
        InputData::Missing => {
            return Err(ServeError::bad_request(format!(
                "input {:?} has neither data nor binary_data_size (gRPC: neither contents \
                 nor raw_input_contents)",
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
    // NaN and infinities (binary data, gRPC contents, or JSON numbers beyond FP32)
    // would come back as JSON `null`s inside the output: refused here instead.
    if let Some(index) = data.iter().position(|value| !value.is_finite()) {
        return Err(ServeError::bad_request(format!(
            "input {:?}: value {index} is {}; FP32 inputs must be finite",
            input.name, data[index]
        )));
    }
    Ok((images, data))
}

/// The raw-image input: one encoded JPEG/PNG per image.
fn image_input(
    model: &ServedModel,
    input: InputTensor,
    decoding: Decoding<'_>,
) -> Result<(u32, Vec<f32>), ServeError> {
    let preprocessor = model.preprocessor.as_ref().ok_or_else(|| {
        ServeError::Internal("raw-image input without a preprocessor".to_string())
    })?;
    check_datatype(&input, "BYTES")?;
    let per_image: &[usize] = if input.shape.len() == 1 { &[] } else { &[1] };
    let images = batch_of(model, &input, per_image)?;
    let encoded = match &input.data {
        InputData::Raw(raw) => bytes_elements(raw, &input.name)?,
        InputData::Elements(elements) => elements.clone(),
        InputData::Missing | InputData::Values(_) => {
            return Err(ServeError::bad_request(format!(
                "input {:?}: images must be sent as binary data (binary tensor data extension)",
                input.name
            )))
        }
    };
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
        if decoding
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(ServeError::TimedOut);
        }
        preprocessor.run(
            image,
            out,
            &format!("input {:?}: image {index}", input.name),
            decoding.budget,
        )?;
    }
    Ok((images, data))
}
