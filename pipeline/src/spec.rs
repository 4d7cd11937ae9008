//! A pipeline as the simulator and the tuner see it: units, stages (block ranges on
//! units), the CPU side (pre/post-processing threads), and the hand-offs between them.
//!
//! The structure follows the pipelining paper (Kang et al., JEDI, ACM TECS 2022):
//! pre-processing threads feed the first stage; each stage runs on one unit (or, for
//! partial network duplication, on several units taking batches in turn) with its own
//! batch size and streams; bounded buffers join the stages; post-processing threads
//! drain the last one. `buffers` caps the batches in flight in the whole pipeline: the
//! paper ties it to the number of streams, and with one buffer the pipeline is the
//! sequential single-stream baseline (pre, infer, post, one after the other).

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::blocks::BlockTable;
use crate::mapping::{MappingOption, Role};
use mica_core::profile::Profile;
use mica_core::unit::{UnitId, UnitKind};

/// A unit a pipeline stage can run on.
#[derive(Debug, Clone)]
pub struct PipelineUnit {
    /// Its config id.
    pub id: UnitId,
    /// Its kind.
    pub kind: UnitKind,
    /// GPU it uses or falls back to.
    pub device: Option<u32>,
    /// Its whole-network profile.
    pub profile: Arc<Profile>,
}

/// One stage: a block range on one or more units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Indices into `PipelineSpec::units`; more than one = batches alternate over them.
    pub units: Vec<usize>,
    /// Blocks `start..end` of the model.
    pub blocks: Range<usize>,
    /// Images per batch.
    pub batch: u32,
    /// Concurrent batches per unit (CUDA streams / DLA contexts).
    pub streams: u32,
}

/// Pre- and post-processing on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuSide {
    /// Pre-processing threads (decode/resize/normalize), one image at a time each.
    pub pre_threads: u32,
    /// Post-processing threads (softmax/top-k, answer), one image at a time each.
    pub post_threads: u32,
    /// CPU time per image of pre-processing on one core, ms.
    pub pre_ms_per_image: f64,
    /// CPU time per image of post-processing on one core, ms.
    pub post_ms_per_image: f64,
    /// CPU cores: threads beyond it time-slice.
    pub cores: u32,
    /// DRAM bandwidth one busy thread draws, GB/s.
    pub bandwidth_gbps_per_thread: f64,
}

/// A whole pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The units stages may run on.
    pub units: Vec<PipelineUnit>,
    /// The stages, input to output; their block ranges tile the model.
    pub stages: Vec<StageSpec>,
    /// The model's blocks.
    pub table: BlockTable,
    /// The CPU side.
    pub cpu: CpuSide,
    /// Batches in flight in the whole pipeline (1 = sequential baseline).
    pub buffers: u32,
    /// Hand-off between two different units: copy bandwidth, GB/s.
    pub transfer_gbps: f64,
    /// Hand-off between two different units: fixed cost per batch, ms.
    pub transfer_overhead_ms: f64,
}

/// The units an option's roles map to (indices into `PipelineSpec::units`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleUnits {
    /// The GPU unit.
    pub gpu: usize,
    /// DLA core 0.
    pub dla0: Option<usize>,
    /// DLA core 1.
    pub dla1: Option<usize>,
}

impl RoleUnits {
    /// The units of a role, or why there are none.
    pub fn units(&self, role: Role) -> Result<Vec<usize>, String> {
        let need = |u: Option<usize>, name: &str| u.ok_or_else(|| format!("no {name} unit"));
        Ok(match role {
            Role::Gpu => vec![self.gpu],
            Role::Dla0 => vec![need(self.dla0, "first DLA")?],
            Role::Dla1 => vec![need(self.dla1, "second DLA")?],
            Role::DlaPair => vec![
                need(self.dla0, "first DLA")?,
                need(self.dla1, "second DLA")?,
            ],
        })
    }

    /// The stages of `option` with `cuts`, every stage with `batch` and `streams`.
    pub fn stages(
        &self,
        option: MappingOption,
        cuts: &[usize],
        table: &BlockTable,
        batch: u32,
        streams: u32,
    ) -> Result<Vec<StageSpec>, String> {
        let ranges = option.ranges(cuts, table)?;
        ranges
            .into_iter()
            .zip(option.roles())
            .map(|(blocks, role)| {
                Ok(StageSpec {
                    units: self.units(*role)?,
                    blocks,
                    batch,
                    streams,
                })
            })
            .collect()
    }
}

impl PipelineSpec {
    /// Checks the stages against the units and the model; the error names the stage.
    pub fn validate(&self) -> Result<(), String> {
        let mut next = 0;
        if self.stages.is_empty() {
            return Err("a pipeline needs at least one stage".into());
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let at = |m: String| format!("stage {index}: {m}");
            if stage.blocks.start != next || stage.blocks.end <= stage.blocks.start {
                return Err(at(format!(
                    "blocks {}..{} must start at {next} and hold at least one block",
                    stage.blocks.start, stage.blocks.end
                )));
            }
            next = stage.blocks.end;
            if stage.units.is_empty() {
                return Err(at("names no unit".into()));
            }
            for &unit in &stage.units {
                let Some(u) = self.units.get(unit) else {
                    return Err(at(format!("unit index {unit} out of range")));
                };
                if u.kind == UnitKind::Dla && !self.table.dla_supports(stage.blocks.clone()) {
                    return Err(at(format!(
                        "{} is a DLA and blocks {}..{} include one it cannot run",
                        u.id, stage.blocks.start, stage.blocks.end
                    )));
                }
            }
            if stage.batch == 0 || stage.streams == 0 {
                return Err(at("batch and streams must be at least 1".into()));
            }
        }
        if next != self.table.len() {
            return Err(format!(
                "the stages cover blocks 0..{next} of {} ({} blocks)",
                self.table.model,
                self.table.len()
            ));
        }
        let cpu = &self.cpu;
        if cpu.pre_threads == 0 || cpu.post_threads == 0 || cpu.cores == 0 {
            return Err("pre_threads, post_threads and cpu cores must be at least 1".into());
        }
        for (key, value) in [
            ("pre_ms_per_image", cpu.pre_ms_per_image),
            ("post_ms_per_image", cpu.post_ms_per_image),
            ("transfer_overhead_ms", self.transfer_overhead_ms),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{key} must be a finite number ≥ 0, got {value}"));
            }
        }
        if !(self.transfer_gbps.is_finite() && self.transfer_gbps > 0.0) {
            return Err(format!(
                "transfer_gbps must be positive, got {}",
                self.transfer_gbps
            ));
        }
        if self.buffers == 0 {
            return Err("buffers must be at least 1".into());
        }
        Ok(())
    }

    /// Largest batch of any stage.
    pub fn max_batch(&self) -> u32 {
        self.stages.iter().map(|s| s.batch).max().unwrap_or(1)
    }

    /// Whether stage `index` receives its input from a different unit than the one
    /// before it (and so pays a hand-off).
    pub fn hands_off_into(&self, index: usize) -> bool {
        index > 0 && self.stages[index - 1].units != self.stages[index].units
    }
}
