//! The served model: its settings resolved against the backend (effective max batch,
//! priority levels), its labels and preprocessor, and how clients see it — KServe model
//! metadata and Triton's model configuration, with Triton's JSON field names.

use serde::Serialize;
use tracing::warn;

use super::backend::InferBackend;
use super::error::ServeError;
use super::preprocess::{ImageLimits, Preprocessor};
use crate::config::{Labels, ModelSettings, ServerSettings};

/// Everything the handlers need to know about the one model served.
#[derive(Debug)]
pub struct ServedModel {
    /// As configured.
    pub settings: ModelSettings,
    /// Most images per request: the configured maximum, bounded by the units'.
    pub max_batch: u32,
    /// Priority levels of the service (requests name `1..=levels`, 0 = default).
    pub priority_levels: u8,
    /// Level (0-based, 0 the most urgent) of requests that name none.
    pub default_priority: u8,
    /// Class labels, index i labelling output element i.
    pub labels: Option<Labels>,
    /// Raw-image preprocessing, when the model takes raw images.
    pub preprocessor: Option<Preprocessor>,
}

impl ServedModel {
    /// Resolves validated settings against the backend; errors name the bad key.
    pub fn new(
        model: &ModelSettings,
        server: &ServerSettings,
        backend: &dyn InferBackend,
    ) -> Result<Self, String> {
        model.validate().map_err(|e| e.to_string())?;
        server.validate().map_err(|e| e.to_string())?;
        let labels = server
            .label_file
            .as_deref()
            .map(Labels::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        if let Some(labels) = &labels {
            if labels.names.len() != model.output_len() {
                warn!(
                    labels = labels.names.len(),
                    outputs = model.output_len(),
                    "label file and output size differ"
                );
            }
        }
        let backend_max = backend.max_batch();
        if backend_max == 0 {
            return Err("the service reports no unit accepting a batch".to_string());
        }
        let priority_levels = backend.priority_levels().max(1);
        Ok(Self {
            settings: model.clone(),
            max_batch: model.max_batch.min(backend_max),
            priority_levels,
            default_priority: server.default_priority.min(priority_levels - 1),
            labels,
            preprocessor: Preprocessor::new(model, ImageLimits::of(server)),
        })
    }

    /// Checks a model name and optional version from a URL.
    pub fn resolve(&self, name: &str, version: Option<&str>) -> Result<(), ServeError> {
        if name != self.settings.name {
            return Err(ServeError::ModelNotFound(name.to_string()));
        }
        match version {
            None | Some("") => Ok(()),
            Some(v) if v == self.settings.version => Ok(()),
            Some(v) => Err(ServeError::VersionNotFound {
                model: name.to_string(),
                version: v.to_string(),
            }),
        }
    }

    /// KServe model metadata.
    pub fn metadata(&self) -> ModelMetadata<'_> {
        let s = &self.settings;
        let batched = |dims: &[usize]| -> Vec<i64> {
            std::iter::once(-1)
                .chain(dims.iter().map(|&d| d as i64))
                .collect()
        };
        let mut inputs = vec![TensorMetadata {
            name: &s.input_name,
            datatype: "FP32",
            shape: batched(&s.input_shape),
        }];
        if let Some(image_input) = &s.image_input {
            inputs.push(TensorMetadata {
                name: image_input,
                datatype: "BYTES",
                shape: batched(&[1]),
            });
        }
        ModelMetadata {
            name: &s.name,
            versions: vec![&s.version],
            platform: &s.platform,
            inputs,
            outputs: vec![TensorMetadata {
                name: &s.output_name,
                datatype: "FP32",
                shape: batched(&s.output_shape),
            }],
        }
    }

    /// Triton's model configuration.
    pub fn config(&self) -> ModelConfig<'_> {
        let s = &self.settings;
        let has_images = s.image_input.is_some();
        let mut input = vec![ConfigInput {
            name: &s.input_name,
            data_type: "TYPE_FP32",
            format: if has_images {
                s.preprocessing.layout.triton_format()
            } else {
                "FORMAT_NONE"
            },
            dims: s.input_shape.iter().map(|&d| d as i64).collect(),
            is_shape_tensor: false,
            allow_ragged_batch: false,
            optional: has_images,
        }];
        if let Some(image_input) = &s.image_input {
            input.push(ConfigInput {
                name: image_input,
                data_type: "TYPE_STRING",
                format: "FORMAT_NONE",
                dims: vec![1],
                is_shape_tensor: false,
                allow_ragged_batch: false,
                optional: true,
            });
        }
        ModelConfig {
            name: &s.name,
            platform: &s.platform,
            backend: "mica",
            version_policy: VersionPolicy {
                specific: SpecificVersions {
                    versions: vec![&s.version],
                },
            },
            max_batch_size: self.max_batch,
            input,
            output: vec![ConfigOutput {
                name: &s.output_name,
                data_type: "TYPE_FP32",
                dims: s.output_shape.iter().map(|&d| d as i64).collect(),
                label_filename: self.labels.as_ref().map_or("", |l| &l.file_name),
                is_shape_tensor: false,
            }],
            dynamic_batching: DynamicBatching {
                preferred_batch_size: Vec::new(),
                max_queue_delay_microseconds: 0,
                preserve_ordering: false,
                priority_levels: u64::from(self.priority_levels),
                default_priority_level: u64::from(self.default_priority) + 1,
            },
            parameters: s
                .units
                .iter()
                .map(|(id, runs_on)| {
                    (
                        format!("unit.{id}"),
                        serde_json::json!({ "string_value": runs_on }),
                    )
                })
                .collect(),
        }
    }
}

/// KServe `GET /v2/models/{m}`.
#[derive(Debug, Serialize)]
pub struct ModelMetadata<'a> {
    /// Model name.
    pub name: &'a str,
    /// Versions served.
    pub versions: Vec<&'a str>,
    /// Platform.
    pub platform: &'a str,
    /// Inputs, batch dimension `-1` first.
    pub inputs: Vec<TensorMetadata<'a>>,
    /// Outputs, batch dimension `-1` first.
    pub outputs: Vec<TensorMetadata<'a>>,
}

/// One tensor of the model metadata.
#[derive(Debug, Serialize)]
pub struct TensorMetadata<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// KServe datatype.
    pub datatype: &'static str,
    /// Shape, `-1` for the variable batch dimension.
    pub shape: Vec<i64>,
}

/// Triton `GET /v2/models/{m}/config` (the `ModelConfig` protobuf as JSON).
#[derive(Debug, Serialize)]
pub struct ModelConfig<'a> {
    /// Model name.
    pub name: &'a str,
    /// Platform.
    pub platform: &'a str,
    /// Backend (`mica`).
    pub backend: &'static str,
    /// Versions served.
    pub version_policy: VersionPolicy<'a>,
    /// Most images per request (dims exclude the batch dimension).
    pub max_batch_size: u32,
    /// Inputs.
    pub input: Vec<ConfigInput<'a>>,
    /// Outputs.
    pub output: Vec<ConfigOutput<'a>>,
    /// mica batches dynamically, with priority levels.
    pub dynamic_batching: DynamicBatching,
    /// Free-form parameters: `unit.<id>` → what runs the unit (Triton's
    /// `{"string_value": ...}` form).
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

/// `version_policy: {specific: {versions: [...]}}`.
#[derive(Debug, Serialize)]
pub struct VersionPolicy<'a> {
    /// The versions.
    pub specific: SpecificVersions<'a>,
}

/// The one version served.
#[derive(Debug, Serialize)]
pub struct SpecificVersions<'a> {
    /// Version names.
    pub versions: Vec<&'a str>,
}

/// One model input in Triton's config.
#[derive(Debug, Serialize)]
pub struct ConfigInput<'a> {
    /// Name.
    pub name: &'a str,
    /// `TYPE_FP32`, `TYPE_STRING`.
    pub data_type: &'static str,
    /// `FORMAT_NCHW`, `FORMAT_NHWC` or `FORMAT_NONE`.
    pub format: &'static str,
    /// Dimensions without the batch dimension.
    pub dims: Vec<i64>,
    /// Always false.
    pub is_shape_tensor: bool,
    /// Always false.
    pub allow_ragged_batch: bool,
    /// Whether a request may leave it out (the FP32 and raw-image inputs are
    /// alternatives when both exist).
    pub optional: bool,
}

/// One model output in Triton's config.
#[derive(Debug, Serialize)]
pub struct ConfigOutput<'a> {
    /// Name.
    pub name: &'a str,
    /// `TYPE_FP32`.
    pub data_type: &'static str,
    /// Dimensions without the batch dimension.
    pub dims: Vec<i64>,
    /// Label file used by the classification extension ("" when none).
    pub label_filename: &'a str,
    /// Always false.
    pub is_shape_tensor: bool,
}

/// Triton's `dynamic_batching` block.
#[derive(Debug, Serialize)]
pub struct DynamicBatching {
    /// Empty: the scheduler policy picks batch sizes.
    pub preferred_batch_size: Vec<u32>,
    /// 0: the policy decides when to close a batch.
    pub max_queue_delay_microseconds: u64,
    /// Always false.
    pub preserve_ordering: bool,
    /// Priority levels (requests say `priority` 1..=levels, 1 the highest).
    pub priority_levels: u64,
    /// Level of requests that name none (1-based).
    pub default_priority_level: u64,
}
