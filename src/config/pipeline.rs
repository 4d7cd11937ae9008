//! `[pipeline]`: one network split over units (Kang et al., JEDI, ACM TECS 2022).
//!
//! Either a mapping option with cut points (`option = "a"`, `cuts = [9]`, the GPU and
//! DLA units by id) or explicit `[[pipeline.stages]]` (units and a block range each),
//! plus the CPU side (pre/post-processing threads and their per-image cost), the
//! hand-off cost between units, and `[pipeline.tune]`, the space `mica tune` explores.
//! The units themselves are the config's `[[units]]`: their kinds, engines and
//! profiles. A DLA stage may not hold the head (it falls back to the GPU).
//!
//! `mica serve` on a config with `[pipeline]` serves the pipeline (and not the
//! scheduler over `[[units]]`) under `pipeline.name`, by default `[model] name`; the
//! model's input and output are the first stage's input and the last stage's output,
//! spelled with `[model]`'s dimensions (which must hold as many elements). Loading a
//! config resolves and checks its pipeline (`PipelineConfig::resolve`), so that `mica
//! check` rejects what `mica serve` would; `crate::pipeline::setup` builds the actor
//! pipeline a resolved spec describes.

use std::ops::Range;

use mica_core::{ContentionConfig, UnitId};
use mica_pipeline::{
    BlockTable, CpuSide, MappingOption, PipelineSpec, PipelineUnit, RoleUnits, StageSpec,
};
use serde::{Deserialize, Serialize};

use super::error::Invalid;
use super::serve::ModelSettings;
use super::units::{ResolvedUnit, UnitConfig};

/// `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Model name `mica serve` serves the pipeline under; default: `[model] name`.
    #[serde(default)]
    pub name: Option<String>,
    /// Staged model: `resnet50` (18 blocks) or `tiny` (4 blocks, tests).
    #[serde(default = "default_model")]
    pub model: String,
    /// Mapping option: gpu, a, b, c, d, dup (ignored when `stages` is given).
    #[serde(default = "default_option")]
    pub option: MappingOption,
    /// Cut points (block indices) of the option; empty = profile-based cuts.
    #[serde(default)]
    pub cuts: Vec<usize>,
    /// Images per batch of every stage of the option.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Streams per unit of every stage of the option.
    #[serde(default = "default_one")]
    pub streams: u32,
    /// The GPU unit's id.
    #[serde(default = "default_gpu")]
    pub gpu: String,
    /// The DLA units' ids (first = DLA0 role, second = DLA1 role).
    #[serde(default)]
    pub dla: Vec<String>,
    /// Explicit stages instead of an option.
    #[serde(default)]
    pub stages: Vec<StageConfig>,
    /// Pre-processing threads.
    #[serde(default = "default_one")]
    pub pre_threads: u32,
    /// Post-processing threads.
    #[serde(default = "default_one")]
    pub post_threads: u32,
    /// Pre-processing CPU time per image on one core, ms.
    #[serde(default = "default_pre_ms")]
    pub pre_ms_per_image: f64,
    /// Post-processing CPU time per image on one core, ms.
    #[serde(default = "default_post_ms")]
    pub post_ms_per_image: f64,
    /// CPU cores available to the threads.
    #[serde(default = "default_cores")]
    pub cpu_cores: u32,
    /// DRAM bandwidth one busy CPU thread draws, GB/s.
    #[serde(default = "default_cpu_bandwidth")]
    pub cpu_bandwidth_gbps_per_thread: f64,
    /// Hand-off between units: copy bandwidth, GB/s.
    #[serde(default = "default_transfer_gbps")]
    pub transfer_gbps: f64,
    /// Hand-off between units: fixed cost per batch, ms.
    #[serde(default = "default_transfer_overhead_ms")]
    pub transfer_overhead_ms: f64,
    /// Batches in flight in the whole pipeline; 0 = every stream busy plus two.
    #[serde(default)]
    pub buffers: u32,
    /// Between two stages whose engines keep activations on their device (torch
    /// units), hand them over there: a GPU stage's output goes to the next GPU stage
    /// by a device-to-device copy, never through host memory. `false`: every stage
    /// boundary goes through host memory (to compare, or to rule the hand-off out).
    #[serde(default = "default_device_handoff")]
    pub device_handoff: bool,
    /// The design space `mica tune` explores.
    #[serde(default)]
    pub tune: TuneSpaceConfig,
}

/// One `[[pipeline.stages]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Unit ids; more than one = batches alternate over them (duplication).
    pub units: Vec<String>,
    /// `[start, end)` block range.
    pub blocks: [usize; 2],
    /// Images per batch.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Streams per unit.
    #[serde(default = "default_one")]
    pub streams: u32,
}

/// `[pipeline.tune]`: the values `mica tune` tries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpaceConfig {
    /// Mapping options.
    #[serde(default = "default_options")]
    pub options: Vec<MappingOption>,
    /// Batch sizes.
    #[serde(default = "default_batch_sizes")]
    pub batch_sizes: Vec<u32>,
    /// Streams per unit.
    #[serde(default = "default_streams")]
    pub streams: Vec<u32>,
    /// Pre- and post-processing threads (the same number of each).
    #[serde(default = "default_threads")]
    pub threads: Vec<u32>,
    /// GPU utilization below which the heuristic moves work toward the GPU.
    #[serde(default = "default_threshold")]
    pub gpu_utilization_threshold: f64,
}

impl Default for TuneSpaceConfig {
    fn default() -> Self {
        Self {
            options: default_options(),
            batch_sizes: default_batch_sizes(),
            streams: default_streams(),
            threads: default_threads(),
            gpu_utilization_threshold: default_threshold(),
        }
    }
}

fn default_model() -> String {
    "resnet50".into()
}
fn default_option() -> MappingOption {
    MappingOption::Gpu
}
fn default_batch() -> u32 {
    1
}
fn default_one() -> u32 {
    1
}
fn default_device_handoff() -> bool {
    true
}
fn default_gpu() -> String {
    "gpu".into()
}
fn default_pre_ms() -> f64 {
    2.0
}
fn default_post_ms() -> f64 {
    0.1
}
fn default_cores() -> u32 {
    8
}
fn default_cpu_bandwidth() -> f64 {
    1.0
}
fn default_transfer_gbps() -> f64 {
    20.0
}
fn default_transfer_overhead_ms() -> f64 {
    0.1
}
fn default_options() -> Vec<MappingOption> {
    MappingOption::ALL.to_vec()
}
fn default_batch_sizes() -> Vec<u32> {
    vec![1, 4, 8, 16, 32]
}
fn default_streams() -> Vec<u32> {
    vec![1, 2, 3]
}
fn default_threads() -> Vec<u32> {
    vec![1, 2, 4, 8]
}
fn default_threshold() -> f64 {
    0.9
}

/// A pipeline ready to simulate or to run: the spec and what built it.
#[derive(Debug, Clone)]
pub struct ResolvedPipeline {
    /// The pipeline.
    pub spec: PipelineSpec,
    /// Indices of `spec.units` in the config's `[[units]]`.
    pub config_units: Vec<usize>,
    /// The GPU/DLA roles (for mapping options).
    pub roles: RoleUnits,
    /// The platform's contention model.
    pub contention: ContentionConfig,
    /// The model `mica serve` serves: `[model]` under `pipeline.name`, its input and
    /// output the first stage's input and the last stage's output.
    pub model: ModelSettings,
}

impl PipelineConfig {
    /// The block table of `model`.
    pub fn table(&self) -> Result<BlockTable, Invalid> {
        match self.model.as_str() {
            "resnet50" => Ok(BlockTable::resnet50()),
            "tiny" | "tiny_resnet" => Ok(BlockTable::tiny()),
            other => Err(Invalid::new(
                "pipeline.model",
                format!("unknown staged model {other:?} (resnet50, tiny)"),
            )),
        }
    }

    /// Builds the pipeline over the config's units (`resolved[i]` is what loading
    /// made of `units[i]`) and checks everything `mica serve` needs of it: the units
    /// it names exist and have profiles, the stages and cut points cover the model,
    /// each stage's engines can name their model files, and `model` spells the
    /// pipeline's input and output. Errors name the key.
    pub fn resolve(
        &self,
        units: &[UnitConfig],
        resolved: &[ResolvedUnit],
        contention: &ContentionConfig,
        model: &ModelSettings,
    ) -> Result<ResolvedPipeline, Invalid> {
        let table = self.table()?;
        let mut pipeline_units: Vec<PipelineUnit> = Vec::new();
        let mut config_units: Vec<usize> = Vec::new();
        let mut index_of = |id: &str, key: &str| -> Result<usize, Invalid> {
            let Some(at) = units.iter().position(|u| u.id == id) else {
                return Err(Invalid::new(key, format!("no unit {id:?} in [[units]]")));
            };
            if let Some(found) = config_units.iter().position(|&c| c == at) {
                return Ok(found);
            }
            let unit = &units[at];
            let profile = resolved[at]
                .profile
                .clone()
                .ok_or_else(|| Invalid::new(key, format!("unit {id:?} has no profile")))?;
            pipeline_units.push(PipelineUnit {
                id: UnitId::new(id),
                kind: unit.kind,
                device: unit.gpu_device(),
                profile,
            });
            config_units.push(at);
            Ok(pipeline_units.len() - 1)
        };
        let gpu = index_of(&self.gpu, "pipeline.gpu")?;
        let dla0 = match self.dla.first() {
            Some(id) => Some(index_of(id, "pipeline.dla[0]")?),
            None => None,
        };
        let dla1 = match self.dla.get(1) {
            Some(id) => Some(index_of(id, "pipeline.dla[1]")?),
            None => None,
        };
        if self.dla.len() > 2 {
            return Err(Invalid::new(
                "pipeline.dla",
                format!(
                    "at most two DLA units (the DLA0 and DLA1 roles), got {}",
                    self.dla.len()
                ),
            ));
        }
        let roles = RoleUnits { gpu, dla0, dla1 };
        let stages = if self.stages.is_empty() {
            let cuts = if self.cuts.is_empty() && self.option.cuts() > 0 {
                mica_pipeline::profile_cuts(
                    self.option,
                    &roles,
                    &pipeline_units,
                    &table,
                    self.batch,
                )
                .map_err(|m| Invalid::under("pipeline.option", &m))?
            } else {
                self.cuts.clone()
            };
            roles
                .stages(self.option, &cuts, &table, self.batch, self.streams)
                .map_err(|m| Invalid::new("pipeline.cuts", m))?
        } else {
            let mut stages = Vec::with_capacity(self.stages.len());
            for (i, stage) in self.stages.iter().enumerate() {
                let key = format!("pipeline.stages[{i}].units");
                let units = stage
                    .units
                    .iter()
                    .map(|id| index_of(id, &key))
                    .collect::<Result<Vec<_>, _>>()?;
                let blocks: Range<usize> = stage.blocks[0]..stage.blocks[1];
                stages.push(StageSpec {
                    units,
                    blocks,
                    batch: stage.batch,
                    streams: stage.streams,
                });
            }
            stages
        };
        let buffers = if self.buffers == 0 {
            auto_buffers(&stages)
        } else {
            self.buffers
        };
        let spec = PipelineSpec {
            units: pipeline_units,
            stages,
            table,
            cpu: CpuSide {
                pre_threads: self.pre_threads,
                post_threads: self.post_threads,
                pre_ms_per_image: self.pre_ms_per_image,
                post_ms_per_image: self.post_ms_per_image,
                cores: self.cpu_cores,
                bandwidth_gbps_per_thread: self.cpu_bandwidth_gbps_per_thread,
            },
            buffers,
            transfer_gbps: self.transfer_gbps,
            transfer_overhead_ms: self.transfer_overhead_ms,
        };
        spec.validate()
            .map_err(|m| Invalid::under(self.stages_key(), &m))?;
        self.tune.validate()?;
        for (i, stage) in spec.stages.iter().enumerate() {
            for &u in &stage.units {
                let at = config_units[u];
                units[at]
                    .engine
                    .stage_models(stage.blocks.clone())
                    .map_err(|m| {
                        Invalid::new(format!("units[{at}] ({}).engine.model", units[at].id), {
                            format!("{m} (it runs pipeline stage {i})")
                        })
                    })?;
            }
        }
        let model = self.served_model(model, &spec)?;
        Ok(ResolvedPipeline {
            spec,
            config_units,
            roles,
            contention: contention.clone(),
            model,
        })
    }

    /// The key the stages came from: `pipeline.stages` or the option's cuts.
    fn stages_key(&self) -> &'static str {
        if self.stages.is_empty() {
            "pipeline.cuts"
        } else {
            "pipeline.stages"
        }
    }

    /// The model `mica serve` serves: `model` under `pipeline.name`, its input and
    /// output the first stage's input and the last stage's output (`model`'s
    /// dimensions, which must hold as many elements: the error names the key).
    fn served_model(
        &self,
        model: &ModelSettings,
        spec: &PipelineSpec,
    ) -> Result<ModelSettings, Invalid> {
        let mut served = model.clone();
        if let Some(name) = &self.name {
            served.name.clone_from(name);
        }
        let input = spec.table.boundary_elems(0) as usize;
        let output = spec.table.boundary_elems(spec.table.len()) as usize;
        for (key, shape, wanted, side) in [
            (
                "model.input_shape",
                &served.input_shape,
                input,
                "first stage's input",
            ),
            (
                "model.output_shape",
                &served.output_shape,
                output,
                "last stage's output",
            ),
        ] {
            let elements: usize = shape.iter().product();
            if elements != wanted {
                return Err(Invalid::new(
                    key,
                    format!(
                        "{shape:?} holds {elements} values but the pipeline's {side} \
                         ({}) holds {wanted}",
                        spec.table.model
                    ),
                ));
            }
        }
        served.validate().map_err(|e| {
            let key = if e.key == "model.name" {
                "pipeline.name".to_string()
            } else {
                e.key
            };
            Invalid::new(key, e.problem)
        })?;
        Ok(served)
    }
}

impl TuneSpaceConfig {
    /// Checks the space; the error names the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        for (key, values) in [
            ("pipeline.tune.batch_sizes", &self.batch_sizes),
            ("pipeline.tune.streams", &self.streams),
            ("pipeline.tune.threads", &self.threads),
        ] {
            if values.is_empty() || values.contains(&0) {
                return Err(Invalid::new(
                    key,
                    "give at least one value, each at least 1",
                ));
            }
        }
        if self.options.is_empty() {
            return Err(Invalid::new(
                "pipeline.tune.options",
                "give at least one option",
            ));
        }
        if !(0.0..=1.0).contains(&self.gpu_utilization_threshold) {
            return Err(Invalid::new(
                "pipeline.tune.gpu_utilization_threshold",
                format!("must be in [0, 1], got {}", self.gpu_utilization_threshold),
            ));
        }
        Ok(())
    }
}

/// Batches in flight that keep every stream of every stage busy, plus two queued.
pub fn auto_buffers(stages: &[StageSpec]) -> u32 {
    stages
        .iter()
        .map(|s| s.streams * s.units.len() as u32)
        .sum::<u32>()
        + 2
}
