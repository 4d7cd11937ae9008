//! Pipelining one network over several units: staged models, mapping options,
//! profile-based cuts and a discrete-event model of the pipeline (Kang et al., JEDI,
//! ACM TECS 2022).

pub mod blocks;
pub mod mapping;
pub mod planner;
pub mod sim;
pub mod spec;
pub mod stage_profile;
#[cfg(test)]
mod tests;

pub use blocks::{Block, BlockTable};
pub use mapping::{MappingOption, Role};
pub use planner::{bottleneck_ms, profile_cuts};
pub use sim::{simulate_pipeline, PipelineOutcome, RunLength, StageStats};
pub use spec::{CpuSide, PipelineSpec, PipelineUnit, RoleUnits, StageSpec};
pub use stage_profile::{stage_unit_profile, StageCost, StageProfile};
