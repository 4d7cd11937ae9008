//! mica-pipeline: one network pipelined over several units (Kang et al., JEDI, ACM TECS
//! 2022).
//!
//! The plan: staged models and their blocks (`blocks`), the mapping options of the
//! paper (`mapping`, `spec`), per-stage costs from unit profiles (`stage_profile`),
//! profile-based cuts (`planner`) and a discrete-event model of a running pipeline
//! (`sim`). The run: one thread per stage instance, each owning one engine, with bounded
//! hand-off queues between stages (`stage`, `run`). The serving backend and `mica tune`
//! (the search for cut points by measurement) are in the `mica` crate, under
//! `src/pipeline/`, because they need its server and its config.

pub mod blocks;
pub mod mapping;
pub mod planner;
pub mod run;
pub mod sim;
pub mod spec;
pub mod stage;
pub mod stage_profile;
#[cfg(test)]
mod tests;

pub use blocks::{Block, BlockTable};
pub use mapping::{MappingOption, Role};
pub use planner::{bottleneck_ms, profile_cuts};
pub use sim::{simulate_pipeline, PipelineOutcome, RunLength, StageStats};
pub use spec::{CpuSide, PipelineSpec, PipelineUnit, RoleUnits, StageSpec};
pub use stage_profile::{stage_unit_profile, StageCost, StageProfile};
