//! mica-policies: everything that decides where a batch runs, with no I/O.
//!
//! Core types (units, profiles, the views a policy sees), the `Policy` trait and its
//! implementations (one file each), the contention model, and the bookkeeping shared by
//! the live dispatcher and the discrete-event simulator.

pub mod adaptive;
pub mod cluster;
pub mod config;
pub mod contention;
pub mod contention_aware;
pub mod fit;
pub mod least_loaded;
pub mod pairwise;
pub mod pccs;
pub mod pipeline;
pub mod policy;
pub mod profile;
pub mod report;
pub mod round_robin;
pub mod scheduler;
pub mod simulator;
pub mod slo;
#[cfg(test)]
mod test_support;
pub mod time;
pub mod unit;
pub mod view;
pub mod weighted;

pub use adaptive::AdaptiveSettings;
pub use cluster::{ClusterState, HealthRules, UnitHealth, UnitSpec};
pub use config::{build_policy, PolicyConfig};
pub use contention::{ContentionConfig, ContentionModel, Load};
pub use contention_aware::ContentionAwareSettings;
pub use pccs::{Pccs, PccsParams};
pub use policy::{Completion, Decision, Policy, SearchProgress};
pub use profile::{Profile, ProfileError, ProfileOrigin, ProfilePoint};
pub use report::{IdleReason, ReportBuilder, RunReport, Stats, UnitStats};
pub use scheduler::{
    Action, DropReason, InvalidRequest, Queued, Rejected, Scheduler, SchedulerSettings,
};
pub use simulator::{simulate, SimulationConfig, SimulationError, SimulationOutcome, Workload};
pub use slo::SloSettings;
pub use unit::{Precision, UnitId, UnitKind};
pub use view::{ClusterView, QueueView, UnitView, WaitingRequest};
