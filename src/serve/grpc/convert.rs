//! Between the protobuf messages of `proto/inference.proto` and the core's plain
//! types: requests into [`TensorRequest`], results, metadata, configuration and
//! statistics into responses.

use std::collections::HashMap;

use bytes::Bytes;

use super::proto::{
    self, infer_parameter::ParameterChoice, model_config::SchedulingChoice,
    model_infer_request::InferInputTensor, model_infer_response::InferOutputTensor,
    model_metadata_response::TensorMetadata, model_version_policy::PolicyChoice, InferParameter,
    InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use crate::serve::binary::{bytes_to_binary, fp32_to_le};
use crate::serve::error::ServeError;
use crate::serve::model::{self, ServedModel};
use crate::serve::params::{Param, Parameters};
use crate::serve::request::{InputData, InputTensor, OutputRequest, TensorData, TensorRequest};
use crate::serve::response::{InferResult, OutputValues};
use crate::serve::stats::{self, StatDuration};
use crate::serve::IndexEntry;

/// A parameter value; `None` when no value is set.
pub fn param_of(parameter: InferParameter) -> Option<Param> {
    Some(match parameter.parameter_choice? {
        ParameterChoice::BoolParam(b) => Param::Bool(b),
        ParameterChoice::Int64Param(i) => Param::Int(i),
        ParameterChoice::StringParam(s) => Param::String(s),
        ParameterChoice::DoubleParam(d) => Param::Double(d),
        ParameterChoice::Uint64Param(u) => Param::UInt(u),
    })
}

fn params_of(parameters: HashMap<String, InferParameter>) -> Parameters {
    parameters
        .into_iter()
        .filter_map(|(key, value)| param_of(value).map(|p| (key, p)))
        .collect()
}

fn parameter(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

/// The values of typed contents.
fn contents_data(contents: InferTensorContents) -> InputData {
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        bytes_contents,
    } = contents;
    if !fp32_contents.is_empty() {
        InputData::Values(TensorData::Numbers(fp32_contents))
    } else if !bytes_contents.is_empty() {
        InputData::Elements(bytes_contents)
    } else if !bool_contents.is_empty() {
        InputData::Values(TensorData::Bools(bool_contents))
    } else if !int_contents.is_empty() {
        InputData::Values(TensorData::OtherField("int_contents"))
    } else if !int64_contents.is_empty() {
        InputData::Values(TensorData::OtherField("int64_contents"))
    } else if !uint_contents.is_empty() {
        InputData::Values(TensorData::OtherField("uint_contents"))
    } else if !uint64_contents.is_empty() {
        InputData::Values(TensorData::OtherField("uint64_contents"))
    } else if !fp64_contents.is_empty() {
        InputData::Values(TensorData::OtherField("fp64_contents"))
    } else {
        InputData::Missing
    }
}

/// Bytes a request carries in tensor values (what decides inline or pool parsing).
pub fn request_size(request: &ModelInferRequest) -> usize {
    let raw: usize = request.raw_input_contents.iter().map(Bytes::len).sum();
    let typed: usize = request
        .inputs
        .iter()
        .filter_map(|i| i.contents.as_ref())
        .map(|c| c.fp32_contents.len() * 4 + c.bytes_contents.iter().map(Bytes::len).sum::<usize>())
        .sum();
    raw + typed
}

/// A request as the core takes it. `raw_input_contents`, when used, holds one entry
/// per input in input order, and no input then has typed contents.
pub fn request_of(request: ModelInferRequest) -> Result<TensorRequest, ServeError> {
    let ModelInferRequest {
        id,
        parameters,
        inputs,
        outputs,
        raw_input_contents,
        ..
    } = request;
    if !raw_input_contents.is_empty() && raw_input_contents.len() != inputs.len() {
        return Err(ServeError::bad_request(format!(
            "raw_input_contents has {} entries but the request has {} inputs; give one per \
             input, in input order",
            raw_input_contents.len(),
            inputs.len()
        )));
    }
    let mut raw = raw_input_contents.into_iter();
    let mut tensors = Vec::with_capacity(inputs.len());
    for input in inputs {
        let InferInputTensor {
            name,
            datatype,
            shape,
            contents,
            ..
        } = input;
        let data = match (raw.next(), contents) {
            (Some(_), Some(contents)) if contents != InferTensorContents::default() => {
                return Err(ServeError::bad_request(format!(
                    "input {name:?} has both contents and raw_input_contents"
                )))
            }
            (Some(bytes), _) => InputData::Raw(bytes),
            (None, Some(contents)) => contents_data(contents),
            (None, None) => InputData::Missing,
        };
        tensors.push(InputTensor {
            name,
            shape,
            datatype,
            data,
        });
    }
    Ok(TensorRequest {
        id: Some(id).filter(|id| !id.is_empty()),
        parameters: params_of(parameters),
        inputs: tensors,
        outputs: Some(
            outputs
                .into_iter()
                .map(|o| OutputRequest {
                    name: o.name,
                    parameters: params_of(o.parameters),
                })
                .collect(),
        ),
    })
}

/// The response to a result: the output in `raw_output_contents`.
pub fn response_of(model: &ServedModel, result: InferResult) -> ModelInferResponse {
    let mut raw = Vec::new();
    match &result.output.values {
        OutputValues::Fp32(values) => fp32_to_le(values, &mut raw),
        OutputValues::Bytes(strings) => bytes_to_binary(strings, &mut raw),
    }
    let ran_on = &result.ran_on;
    let parameters = HashMap::from([
        (
            "mica_unit".to_string(),
            parameter(ParameterChoice::StringParam(ran_on.unit.to_string())),
        ),
        (
            "mica_engine".to_string(),
            parameter(ParameterChoice::StringParam(ran_on.engine.to_string())),
        ),
        (
            "mica_queue_wait_us".to_string(),
            parameter(ParameterChoice::Uint64Param(
                u64::try_from(ran_on.queue_wait.as_micros()).unwrap_or(u64::MAX),
            )),
        ),
        (
            "mica_batch_images".to_string(),
            parameter(ParameterChoice::Uint64Param(u64::from(ran_on.batch_images))),
        ),
    ]);
    ModelInferResponse {
        model_name: model.settings.name.clone(),
        model_version: model.settings.version.clone(),
        id: result.id.unwrap_or_default(),
        parameters,
        outputs: vec![InferOutputTensor {
            name: model.settings.output_name.clone(),
            datatype: result.output.datatype.to_string(),
            shape: result.output.shape.iter().map(|&d| d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        }],
        raw_output_contents: vec![Bytes::from(raw)],
    }
}

fn tensors(tensors: &[model::TensorMetadata<'_>]) -> Vec<TensorMetadata> {
    tensors
        .iter()
        .map(|t| TensorMetadata {
            name: t.name.to_string(),
            datatype: t.datatype.to_string(),
            shape: t.shape.clone(),
        })
        .collect()
}

/// Model metadata.
pub fn metadata_of(metadata: &model::ModelMetadata<'_>) -> proto::ModelMetadataResponse {
    proto::ModelMetadataResponse {
        name: metadata.name.to_string(),
        versions: metadata.versions.iter().map(|v| v.to_string()).collect(),
        platform: metadata.platform.to_string(),
        inputs: tensors(&metadata.inputs),
        outputs: tensors(&metadata.outputs),
    }
}

fn data_type(name: &str) -> i32 {
    proto::DataType::from_str_name(name).unwrap_or(proto::DataType::TypeInvalid) as i32
}

/// Triton's model configuration. Versions that are not integers (Triton's are) are
/// left out of the version policy.
pub fn config_of(config: &model::ModelConfig<'_>) -> proto::ModelConfig {
    let batching = &config.dynamic_batching;
    proto::ModelConfig {
        name: config.name.to_string(),
        platform: config.platform.to_string(),
        backend: config.backend.to_string(),
        version_policy: Some(proto::ModelVersionPolicy {
            policy_choice: Some(PolicyChoice::Specific(
                proto::model_version_policy::Specific {
                    versions: config
                        .version_policy
                        .specific
                        .versions
                        .iter()
                        .filter_map(|v| v.parse().ok())
                        .collect(),
                },
            )),
        }),
        max_batch_size: i32::try_from(config.max_batch_size).unwrap_or(i32::MAX),
        input: config
            .input
            .iter()
            .map(|i| proto::ModelInput {
                name: i.name.to_string(),
                data_type: data_type(i.data_type),
                format: proto::model_input::Format::from_str_name(i.format)
                    .unwrap_or(proto::model_input::Format::None) as i32,
                dims: i.dims.clone(),
                is_shape_tensor: i.is_shape_tensor,
                allow_ragged_batch: i.allow_ragged_batch,
                optional: i.optional,
            })
            .collect(),
        output: config
            .output
            .iter()
            .map(|o| proto::ModelOutput {
                name: o.name.to_string(),
                data_type: data_type(o.data_type),
                dims: o.dims.clone(),
                label_filename: o.label_filename.to_string(),
                is_shape_tensor: o.is_shape_tensor,
            })
            .collect(),
        scheduling_choice: Some(SchedulingChoice::DynamicBatching(
            proto::ModelDynamicBatching {
                preferred_batch_size: batching
                    .preferred_batch_size
                    .iter()
                    .map(|&b| i32::try_from(b).unwrap_or(i32::MAX))
                    .collect(),
                max_queue_delay_microseconds: batching.max_queue_delay_microseconds,
                preserve_ordering: batching.preserve_ordering,
                priority_levels: batching.priority_levels,
                default_priority_level: batching.default_priority_level,
            },
        )),
        parameters: config
            .parameters
            .iter()
            .map(|(key, value)| {
                let string_value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Object(o) => match o.get("string_value") {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        _ => value.to_string(),
                    },
                    other => other.to_string(),
                };
                (key.clone(), proto::ModelParameter { string_value })
            })
            .collect(),
    }
}

fn duration(d: StatDuration) -> Option<proto::StatisticDuration> {
    Some(proto::StatisticDuration {
        count: d.count,
        ns: d.ns,
    })
}

/// Triton's statistics.
pub fn statistics_of(response: &stats::StatsResponse<'_>) -> proto::ModelStatisticsResponse {
    proto::ModelStatisticsResponse {
        model_stats: response
            .model_stats
            .iter()
            .map(|m| {
                let s = &m.inference_stats;
                proto::ModelStatistics {
                    name: m.name.to_string(),
                    version: m.version.to_string(),
                    last_inference: m.last_inference,
                    inference_count: m.inference_count,
                    execution_count: m.execution_count,
                    inference_stats: Some(proto::InferStatistics {
                        success: duration(s.success),
                        fail: duration(s.fail),
                        queue: duration(s.queue),
                        compute_input: duration(s.compute_input),
                        compute_infer: duration(s.compute_infer),
                        compute_output: duration(s.compute_output),
                        cache_hit: duration(s.cache_hit),
                        cache_miss: duration(s.cache_miss),
                    }),
                    batch_stats: m
                        .batch_stats
                        .iter()
                        .map(|b| proto::InferBatchStatistics {
                            batch_size: b.batch_size,
                            compute_input: duration(b.compute_input),
                            compute_infer: duration(b.compute_infer),
                            compute_output: duration(b.compute_output),
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// The repository index.
pub fn index_of(entries: &[IndexEntry<'_>], ready_only: bool) -> proto::RepositoryIndexResponse {
    proto::RepositoryIndexResponse {
        models: entries
            .iter()
            .filter(|e| !ready_only || e.state == "READY")
            .map(|e| proto::repository_index_response::ModelIndex {
                name: e.name.to_string(),
                version: e.version.to_string(),
                state: e.state.to_string(),
                reason: e.reason.to_string(),
            })
            .collect(),
    }
}
