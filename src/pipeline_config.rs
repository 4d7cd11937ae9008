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
//! spelled with `[model]`'s dimensions (which must hold as many elements). This module
//! also builds the actor pipeline a spec describes (`build_setup`), for `mica serve`
//! and `mica tune --backend real`.

use std::ops::Range;
use std::sync::Arc;

use mica_core::{ContentionConfig, UnitId, UnitKind};
use mica_engines::{ContentionHub, EngineContext, EngineSpec};
use mica_pipeline::run::PipelineSetup;
use mica_pipeline::stage::{StageSetup, StageUnit};
use mica_pipeline::{
    stage_unit_profile, BlockTable, CpuSide, MappingOption, PipelineSpec, PipelineUnit, RoleUnits,
    StageProfile, StageSpec,
};
use serde::{Deserialize, Serialize};

use crate::config::LoadedConfig;
use crate::serve::ModelSettings;

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
}

impl PipelineConfig {
    /// The block table of `model`.
    pub fn table(&self) -> Result<BlockTable, String> {
        match self.model.as_str() {
            "resnet50" => Ok(BlockTable::resnet50()),
            "tiny" | "tiny_resnet" => Ok(BlockTable::tiny()),
            other => Err(format!(
                "pipeline.model: unknown staged model {other:?} (resnet50, tiny)"
            )),
        }
    }

    /// Builds the pipeline over `loaded`'s units; errors name the key.
    pub fn resolve(&self, loaded: &LoadedConfig) -> Result<ResolvedPipeline, String> {
        let table = self.table()?;
        let mut units: Vec<PipelineUnit> = Vec::new();
        let mut config_units: Vec<usize> = Vec::new();
        let mut index_of = |id: &str, key: &str| -> Result<usize, String> {
            let Some(at) = loaded.config.units.iter().position(|u| u.id == id) else {
                return Err(format!("{key}: no unit {id:?} in [[units]]"));
            };
            if let Some(found) = config_units.iter().position(|&c| c == at) {
                return Ok(found);
            }
            let unit = &loaded.config.units[at];
            let profile = loaded.profiles[at]
                .clone()
                .ok_or_else(|| format!("{key}: unit {id:?} has no profile"))?;
            units.push(PipelineUnit {
                id: UnitId::new(id),
                kind: unit.kind,
                device: (unit.kind != UnitKind::Cpu).then_some(unit.device.unwrap_or(0)),
                profile: Arc::clone(&profile),
            });
            config_units.push(at);
            Ok(units.len() - 1)
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
        let roles = RoleUnits { gpu, dla0, dla1 };
        let stages = if self.stages.is_empty() {
            let cuts = if self.cuts.is_empty() && self.option.cuts() > 0 {
                mica_pipeline::profile_cuts(self.option, &roles, &units, &table, self.batch)?
            } else {
                self.cuts.clone()
            };
            roles
                .stages(self.option, &cuts, &table, self.batch, self.streams)
                .map_err(|m| format!("pipeline.cuts: {m}"))?
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
            units,
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
        spec.validate().map_err(|m| format!("pipeline: {m}"))?;
        self.tune.validate()?;
        Ok(ResolvedPipeline {
            spec,
            config_units,
            roles,
            contention: loaded.contention.clone(),
        })
    }
    /// The model `mica serve` serves: `model` under `pipeline.name`, its input and
    /// output the first stage's input and the last stage's output (`model`'s
    /// dimensions, which must hold as many elements: the error names the key).
    pub fn served_model(
        &self,
        model: &ModelSettings,
        spec: &PipelineSpec,
    ) -> Result<ModelSettings, String> {
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
                return Err(format!(
                    "{key} {shape:?} holds {elements} values but the pipeline's {side} \
                     ({}) holds {wanted}",
                    spec.table.model
                ));
            }
        }
        served
            .validate()
            .map_err(|m| m.replace("model.name", "pipeline.name"))?;
        Ok(served)
    }
}

/// The actor pipeline for `spec` over `loaded`'s units (`config_units[i]` is the
/// config index of `spec.units[i]`).
///
/// Stages are built as the config's units would run them: a `sim` unit emulates its
/// stage's share of its profile (`stage_unit_profile`) in real time with the shared
/// contention hub; a `torch` unit runs the stage's per-block TorchScript files
/// (`<engine.model>/block_<i>.pt`, written by `scripts/export_model.py --stages`) as one
/// engine that chains them on its device. With a torch unit on a GPU, libtorch_cuda is
/// loaded first.
pub fn build_setup(
    loaded: &LoadedConfig,
    spec: &PipelineSpec,
    config_units: &[usize],
) -> anyhow::Result<PipelineSetup> {
    load_cuda_if_needed(loaded, spec, config_units);
    // Model files are per block of the model's own table; a coarsened table's block
    // is a run of them.
    let files: Vec<Range<usize>> = match loaded.config.pipeline.as_ref().map(PipelineConfig::table)
    {
        Some(Ok(fine)) => fine
            .coarse_groups(spec.table.len())
            .map_err(anyhow::Error::msg)?,
        _ => (0..spec.table.len()).map(|b| b..b + 1).collect(),
    };
    let device_handoff = loaded
        .config
        .pipeline
        .as_ref()
        .is_none_or(|p| p.device_handoff);
    // Stages whose every engine takes and keeps activations on its device.
    let keeps_on_device = |stage: &mica_pipeline::StageSpec| {
        stage.units.iter().all(|&u| {
            loaded.config.units[config_units[u]]
                .engine
                .kind()
                .keeps_activations_on_device()
        })
    };
    let mut stages = Vec::with_capacity(spec.stages.len());
    for (index, stage) in spec.stages.iter().enumerate() {
        let input_len = spec.table.boundary_elems(stage.blocks.start) as usize;
        let output_len = spec.table.boundary_elems(stage.blocks.end) as usize;
        let mut units = Vec::new();
        for &u in &stage.units {
            let unit = &spec.units[u];
            let config_index = config_units[u];
            let config = &loaded.config.units[config_index];
            let shares = StageProfile::new(&spec.table, unit.kind);
            let profile = Arc::new(stage_unit_profile(
                &unit.profile,
                &shares,
                stage.blocks.clone(),
            ));
            // The engine names the stage's model files (torch: the block files, run
            // as one engine chaining them on its device); emulating engines none.
            let first = files[stage.blocks.start].start;
            let last = files[stage.blocks.end - 1].end;
            let models = config
                .engine
                .stage_models(first..last)
                .map_err(|m| anyhow::anyhow!("unit {}: {m}", unit.id))?;
            let base = crate::wiring::unit_engine_spec(loaded, config_index, stage.batch);
            let spec_for = |stream: u32| EngineSpec {
                input_shape: vec![input_len],
                output_len,
                ..base
                    .clone()
                    .with_stream(stream)
                    .with_profile(Some(Arc::clone(&profile)))
                    .with_models(models.clone())
            };
            let streams = (0..stage.streams).map(spec_for).collect();
            units.push(StageUnit {
                id: unit.id.to_string(),
                streams,
            });
        }
        stages.push(StageSetup {
            name: format!("stage{index}"),
            units,
            batch: stage.batch,
            device_output: device_handoff
                && spec
                    .stages
                    .get(index + 1)
                    .is_some_and(|next| keeps_on_device(next) && keeps_on_device(stage)),
            builder: None,
        });
    }
    let buffer_images = spec.buffers as usize * spec.max_batch() as usize;
    Ok(PipelineSetup {
        stages,
        buffer_images,
        context: EngineContext {
            hub: Arc::new(ContentionHub::new(loaded.contention.build())),
            custom: None,
        },
    })
}

/// Loads libtorch_cuda when a torch unit of the pipeline runs on a GPU: libtorch
/// decides once per process whether it has CUDA, so before any engine is built. A
/// failure is logged; the CUDA units then fail to load with it.
#[cfg(feature = "torch")]
fn load_cuda_if_needed(loaded: &LoadedConfig, spec: &PipelineSpec, config_units: &[usize]) {
    let cuda = spec.units.iter().zip(config_units).any(|(unit, &c)| {
        unit.kind != UnitKind::Cpu
            && loaded.config.units[c].engine.kind() == mica_engines::EngineKind::Torch
    });
    if cuda {
        if let Err(error) = mica_engines::torch::load_cuda() {
            tracing::warn!(%error, "libtorch_cuda could not be loaded; CUDA torch stages will not load");
        }
    }
}

/// Without the torch engine there is nothing to load.
#[cfg(not(feature = "torch"))]
fn load_cuda_if_needed(_: &LoadedConfig, _: &PipelineSpec, _: &[usize]) {}

impl TuneSpaceConfig {
    /// Checks the space; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, values) in [
            ("pipeline.tune.batch_sizes", &self.batch_sizes),
            ("pipeline.tune.streams", &self.streams),
            ("pipeline.tune.threads", &self.threads),
        ] {
            if values.is_empty() || values.contains(&0) {
                return Err(format!("{key}: give at least one value, each at least 1"));
            }
        }
        if self.options.is_empty() {
            return Err("pipeline.tune.options: give at least one option".into());
        }
        if !(0.0..=1.0).contains(&self.gpu_utilization_threshold) {
            return Err(format!(
                "pipeline.tune.gpu_utilization_threshold must be in [0, 1], got {}",
                self.gpu_utilization_threshold
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
