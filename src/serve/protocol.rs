//! KServe v2 inference request and response bodies (JSON part), as the HTTP/REST
//! protocol and Triton's binary tensor data extension define them.
//!
//! Tensor data is flattened while it is parsed (nested or flat arrays both work), so a
//! large FP32 tensor never becomes a tree of JSON values.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ServeError;

/// `parameters` objects: free-form, read with the `param_*` helpers.
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

/// Tensor values from JSON, flattened in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Numbers, kept as FP32 (the only numeric type mica's models take).
    Numbers(Vec<f32>),
    /// Strings (BYTES tensors).
    Strings(Vec<String>),
    /// Booleans (BOOL tensors).
    Bools(Vec<bool>),
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

/// Reads an unsigned integer parameter; `what` names it in errors
/// (`parameters.priority`).
pub fn param_u64(params: &Parameters, key: &str, what: &str) -> Result<Option<u64>, ServeError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            ServeError::bad_request(format!(
                "{what} must be a non-negative integer, got {value}"
            ))
        }),
    }
}

/// Reads a boolean parameter; `what` names it in errors.
pub fn param_bool(params: &Parameters, key: &str, what: &str) -> Result<Option<bool>, ServeError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(value) => Err(ServeError::bad_request(format!(
            "{what} must be a boolean, got {value}"
        ))),
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
            param_u64(&header.parameters, "priority", "p").unwrap(),
            Some(2)
        );
        assert_eq!(header.inputs[0].shape, vec![1, 2]);
        let outputs = header.outputs.unwrap();
        assert_eq!(
            param_u64(&outputs[0].parameters, "classification", "c").unwrap(),
            Some(3)
        );
        assert!(param_bool(&outputs[0].parameters, "classification", "c").is_err());
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
