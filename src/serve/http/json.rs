//! KServe v2 inference request and response bodies over HTTP (the JSON part), as the
//! HTTP/REST protocol and Triton's binary tensor data extension define them: parsed
//! into the core's [`TensorRequest`], and the core's [`InferResult`] written back.
//!
//! Tensor data is flattened while it is parsed (nested or flat arrays both work), so a
//! large FP32 tensor never becomes a tree of JSON values.

use std::fmt;

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::HttpResponse;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::binary::{split_body, BinaryCursor, HEADER_LENGTH};
use crate::serve::binary::{bytes_to_binary, fp32_to_le};
use crate::serve::error::ServeError;
use crate::serve::model::ServedModel;
use crate::serve::params::{param_u64, Param};
use crate::serve::request::{InputData, InputTensor, OutputRequest, TensorData, TensorRequest};
use crate::serve::response::{InferResult, OutputValues};

/// `parameters` objects as JSON.
pub type Parameters = Map<String, Value>;

/// The JSON part of an inference request.
#[derive(Debug, Deserialize)]
pub struct InferRequestHeader {
    /// Client's request id, echoed back.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`priority`, `timeout`, `binary_data_output`, ...).
    #[serde(default)]
    pub parameters: Parameters,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Outputs asked for; absent: every output, in the default form.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    /// Tensor name.
    pub name: String,
    /// Shape, batch dimension first.
    pub shape: Vec<i64>,
    /// KServe datatype (`FP32`, `BYTES`, ...).
    pub datatype: String,
    /// Tensor parameters (`binary_data_size`).
    #[serde(default)]
    pub parameters: Parameters,
    /// The values, when not sent as binary data.
    #[serde(default)]
    pub data: Option<TensorData>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data`, `classification`).
    #[serde(default)]
    pub parameters: Parameters,
}

/// Deepest nesting of `data` arrays accepted.
const MAX_DATA_DEPTH: usize = 16;

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut flat = Flat::Empty;
        deserializer.deserialize_seq(FlattenSeed {
            flat: &mut flat,
            depth: 0,
        })?;
        Ok(match flat {
            Flat::Empty => TensorData::Numbers(Vec::new()),
            Flat::Numbers(v) => TensorData::Numbers(v),
            Flat::Strings(v) => TensorData::Strings(v),
            Flat::Bools(v) => TensorData::Bools(v),
        })
    }
}

enum Flat {
    Empty,
    Numbers(Vec<f32>),
    Strings(Vec<String>),
    Bools(Vec<bool>),
}

impl Flat {
    fn kind(&self) -> &'static str {
        match self {
            Flat::Empty => "nothing",
            Flat::Numbers(_) => "numbers",
            Flat::Strings(_) => "strings",
            Flat::Bools(_) => "booleans",
        }
    }

    fn push_number<E: de::Error>(&mut self, value: f64) -> Result<(), E> {
        let single = value as f32;
        if single.is_infinite() {
            return Err(E::custom(format!("value {value} is out of FP32 range")));
        }
        match self {
            Flat::Empty => *self = Flat::Numbers(vec![single]),
            Flat::Numbers(v) => v.push(single),
            other => return Err(mixed(other.kind(), "numbers")),
        }
        Ok(())
    }

    fn push_string<E: de::Error>(&mut self, value: String) -> Result<(), E> {
        match self {
            Flat::Empty => *self = Flat::Strings(vec![value]),
            Flat::Strings(v) => v.push(value),
            other => return Err(mixed(other.kind(), "strings")),
        }
        Ok(())
    }

    fn push_bool<E: de::Error>(&mut self, value: bool) -> Result<(), E> {
        match self {
            Flat::Empty => *self = Flat::Bools(vec![value]),
            Flat::Bools(v) => v.push(value),
            other => return Err(mixed(other.kind(), "booleans")),
        }
        Ok(())
    }
}

fn mixed<E: de::Error>(had: &str, got: &str) -> E {
    E::custom(format!("tensor data mixes {had} and {got}"))
}

/// Visits one `data` element (an array at depth 0) and appends what it holds.
struct FlattenSeed<'a> {
    flat: &'a mut Flat,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for FlattenSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FlattenSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers, strings or booleans (possibly nested)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DATA_DEPTH {
            return Err(de::Error::custom("tensor data is nested too deeply"));
        }
        while seq
            .next_element_seed(FlattenSeed {
                flat: &mut *self.flat,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_number(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_number(value as f64)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_number(value as f64)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_string(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_string(value)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.scalar()?;
        self.flat.push_bool(value)
    }
}

impl FlattenSeed<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.depth == 0 {
            Err(E::custom("tensor data must be an array"))
        } else {
            Ok(())
        }
    }
}

/// The JSON part of an inference response.
#[derive(Debug, Serialize)]
pub struct InferResponseHeader<'a> {
    /// Model that answered.
    pub model_name: &'a str,
    /// Its version.
    pub model_version: &'a str,
    /// The request's id, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where the request ran (`mica_unit`, `mica_engine`).
    pub parameters: ResponseParameters<'a>,
    /// Output tensors.
    pub outputs: Vec<ResponseOutput<'a>>,
}

/// Response parameters: where the request ran, so that no answer from a simulated unit
/// passes for a measured one.
#[derive(Debug, Serialize)]
pub struct ResponseParameters<'a> {
    /// Unit id (`gpu0.fp16`).
    pub mica_unit: &'a str,
    /// Engine of that unit (`sim`, `torch`, ...).
    pub mica_engine: &'a str,
    /// Time the request waited in the queue before its batch started, µs.
    pub mica_queue_wait_us: u64,
    /// Images in the batch the request ran in.
    pub mica_batch_images: u32,
}

/// One output tensor of a response.
#[derive(Debug, Serialize)]
pub struct ResponseOutput<'a> {
    /// Output name.
    pub name: &'a str,
    /// `FP32`, or `BYTES` for classification results.
    pub datatype: &'static str,
    /// Shape, batch dimension first.
    pub shape: Vec<usize>,
    /// `binary_data_size` when the values follow the JSON as binary data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BinaryDataSize>,
    /// The values, when sent as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<OutputData<'a>>,
}

/// `{"binary_data_size": n}`.
#[derive(Debug, Serialize)]
pub struct BinaryDataSize {
    /// Bytes of this tensor in the binary part.
    pub binary_data_size: usize,
}

/// Output values as JSON (flat, row-major).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OutputData<'a> {
    /// FP32 values.
    Fp32(&'a [f32]),
    /// BYTES values (classification strings).
    Bytes(&'a [String]),
}

/// The parameters of a JSON object, `null`s dropped.
fn params(json: Parameters) -> crate::serve::params::Parameters {
    json.into_iter()
        .filter_map(|(key, value)| Param::from_json(value).map(|p| (key, p)))
        .collect()
}

/// Parses a request body into the core's request; `header_length` is the value of
/// `Inference-Header-Content-Length`, if the client sent one. Binary tensors are
/// taken from the part after the JSON in input order, by their `binary_data_size`.
pub fn parse(
    _model: &ServedModel,
    body: Bytes,
    header_length: Option<usize>,
) -> Result<TensorRequest, ServeError> {
    let (json, binary) = split_body(body, header_length)?;
    let header: InferRequestHeader = serde_json::from_slice(&json)
        .map_err(|error| ServeError::bad_request(format!("malformed request JSON: {error}")))?;
    let mut cursor = BinaryCursor::new(binary);
    let mut inputs = Vec::with_capacity(header.inputs.len());
    for input in header.inputs {
        let parameters = params(input.parameters);
        let binary_size = param_u64(
            &parameters,
            "binary_data_size",
            &format!("input {:?}: parameters.binary_data_size", input.name),
        )?;
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ServeError::bad_request(format!(
                    "input {:?} has both data and binary_data_size",
                    input.name
                )))
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                InputData::Raw(cursor.take(size, &input.name)?)
            }
            (None, Some(values)) => InputData::Values(values),
            (None, None) => InputData::Missing,
        };
        inputs.push(InputTensor {
            name: input.name,
            shape: input.shape,
            datatype: input.datatype,
            data,
        });
    }
    cursor.finish()?;
    Ok(TensorRequest {
        id: header.id,
        parameters: params(header.parameters),
        inputs,
        outputs: header.outputs.map(|outputs| {
            outputs
                .into_iter()
                .map(|o| OutputRequest {
                    name: o.name,
                    parameters: params(o.parameters),
                })
                .collect()
        }),
    })
}

/// Writes a result as the HTTP response: JSON, or the JSON header followed by the
/// binary output when the client asked for binary data.
pub fn encode(model: &ServedModel, result: InferResult) -> Result<HttpResponse, ServeError> {
    let output = &result.output;
    let values = match &output.values {
        OutputValues::Fp32(v) => OutputData::Fp32(v),
        OutputValues::Bytes(v) => OutputData::Bytes(v),
    };
    let mut binary = Vec::new();
    let (parameters, data) = if result.binary {
        match &output.values {
            OutputValues::Fp32(v) => fp32_to_le(v, &mut binary),
            OutputValues::Bytes(v) => bytes_to_binary(v, &mut binary),
        }
        let size = BinaryDataSize {
            binary_data_size: binary.len(),
        };
        (Some(size), None)
    } else {
        (None, Some(values))
    };
    let ran_on = &result.ran_on;
    let header = InferResponseHeader {
        model_name: &model.settings.name,
        model_version: &model.settings.version,
        id: result.id.clone(),
        parameters: ResponseParameters {
            mica_unit: ran_on.unit.as_str(),
            mica_engine: ran_on.engine,
            mica_queue_wait_us: ran_on.queue_wait.as_micros() as u64,
            mica_batch_images: ran_on.batch_images,
        },
        outputs: vec![ResponseOutput {
            name: &model.settings.output_name,
            datatype: output.datatype,
            shape: output.shape.clone(),
            parameters,
            data,
        }],
    };
    let mut body = serde_json::to_vec(&header)
        .map_err(|error| ServeError::Internal(format!("cannot encode the response: {error}")))?;
    if !result.binary {
        return Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
            .body(body));
    }
    let json_length = body.len();
    body.extend_from_slice(&binary);
    Ok(HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ))
        .insert_header((HEADER_LENGTH, json_length))
        .body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_flatten_alike() {
        let flat: TensorData = serde_json::from_str("[1, 2.5, -3, 4]").unwrap();
        let nested: TensorData = serde_json::from_str("[[1, 2.5], [-3, 4]]").unwrap();
        assert_eq!(flat, TensorData::Numbers(vec![1.0, 2.5, -3.0, 4.0]));
        assert_eq!(flat, nested);
        let strings: TensorData = serde_json::from_str(r#"[["a"], ["b"]]"#).unwrap();
        assert_eq!(strings, TensorData::Strings(vec!["a".into(), "b".into()]));
        let empty: TensorData = serde_json::from_str("[[], []]").unwrap();
        assert_eq!(empty, TensorData::Numbers(Vec::new()));
    }

    #[test]
    fn bad_data_is_an_error() {
        for (text, needle) in [
            (r#"[1, "a"]"#, "mixes"),
            ("[1e300]", "FP32 range"),
            ("3", "array"),
            ("[{\"a\": 1}]", "array of numbers"),
            ("[null]", "array of numbers"),
        ] {
            let error = serde_json::from_str::<TensorData>(text).unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
        let deep = format!("{}1{}", "[".repeat(20), "]".repeat(20));
        let error = serde_json::from_str::<TensorData>(&deep).unwrap_err();
        assert!(error.to_string().contains("deeply"), "{error}");
    }

    #[test]
    fn request_header_parses() {
        let text = r#"{"id": "r1", "parameters": {"priority": 2},
            "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [[1, 2]]}],
            "outputs": [{"name": "output", "parameters": {"classification": 3}}]}"#;
        let header: InferRequestHeader = serde_json::from_str(text).unwrap();
        assert_eq!(header.id.as_deref(), Some("r1"));
        assert_eq!(
            param_u64(&params(header.parameters), "priority", "p").unwrap(),
            Some(2)
        );
        assert_eq!(header.inputs[0].shape, vec![1, 2]);
        let outputs = header.outputs.unwrap();
        let output_params = params(outputs[0].parameters.clone());
        assert_eq!(
            param_u64(&output_params, "classification", "c").unwrap(),
            Some(3)
        );
        assert!(crate::serve::params::param_bool(&output_params, "classification", "c").is_err());
    }

    #[test]
    fn response_serializes_like_kserve() {
        let data = [1.0f32, 2.0];
        let header = InferResponseHeader {
            model_name: "m",
            model_version: "1",
            id: None,
            parameters: ResponseParameters {
                mica_unit: "cpu",
                mica_engine: "sim",
                mica_queue_wait_us: 12,
                mica_batch_images: 1,
            },
            outputs: vec![ResponseOutput {
                name: "output",
                datatype: "FP32",
                shape: vec![1, 2],
                parameters: None,
                data: Some(OutputData::Fp32(&data)),
            }],
        };
        let text = serde_json::to_string(&header).unwrap();
        assert_eq!(
            text,
            r#"{"model_name":"m","model_version":"1","parameters":{"mica_unit":"cpu","mica_engine":"sim","mica_queue_wait_us":12,"mica_batch_images":1},"outputs":[{"name":"output","datatype":"FP32","shape":[1,2],"data":[1.0,2.0]}]}"#
        );
    }
}

/// The HTTP body parser and the core's checks together, as a request meets them.
#[cfg(test)]
mod request_tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::serve::request::{prepare, OutputPlan, Prepared};
    use crate::serve::ModelSettings;

    fn decode(
        model: &ServedModel,
        body: Bytes,
        header_length: Option<usize>,
    ) -> Result<Prepared, ServeError> {
        prepare(model, parse(model, body, header_length)?)
    }

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

#[cfg(test)]
mod response_tests {
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use mica_core::UnitId;

    use super::*;
    use crate::serve::response::{OutputTensor, RanOn};

    fn model() -> ServedModel {
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

    fn result(binary: bool, values: OutputValues, shape: Vec<usize>) -> InferResult {
        InferResult {
            id: Some("7".into()),
            output: OutputTensor {
                datatype: match values {
                    OutputValues::Fp32(_) => "FP32",
                    OutputValues::Bytes(_) => "BYTES",
                },
                shape,
                values,
            },
            binary,
            ran_on: RanOn {
                unit: UnitId::new("cpu"),
                engine: "sim",
                queue_wait: Duration::from_micros(3),
                batch_images: 2,
            },
        }
    }

    #[test]
    fn binary_output_follows_the_json_header() {
        let values = OutputValues::Fp32((0..8).map(|i| i as f32).collect());
        let response = encode(&model(), result(true, values, vec![2, 4])).unwrap();
        let length: usize = response
            .headers()
            .get(HEADER_LENGTH)
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = response.into_body().try_into_bytes().unwrap();
        let header: serde_json::Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(header["id"], "7");
        assert_eq!(header["parameters"]["mica_engine"], "sim");
        assert_eq!(header["outputs"][0]["shape"], serde_json::json!([2, 4]));
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 32);
        assert_eq!(body.len() - length, 32);
        assert_eq!(&body[length + 4..length + 8], &1.0f32.to_le_bytes());
    }

    #[test]
    fn classification_strings_are_json_bytes() {
        let values = OutputValues::Bytes(vec!["3.000000:3".into(), "2.000000:2".into()]);
        let response = encode(&model(), result(false, values, vec![1, 2])).unwrap();
        let body = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let output = &json["outputs"][0];
        assert_eq!(output["datatype"], "BYTES");
        assert_eq!(output["shape"], serde_json::json!([1, 2]));
        assert_eq!(output["data"][0], "3.000000:3");
    }
}
