//! mica-core: what the scheduler decides with and how it decides, with no I/O.
//!
//! - The hardware model: units and their kinds (`unit`), measured profiles (`profile`),
//!   the contention model (`contention`: none, time-sharing of the GPU, PCCS memory
//!   bandwidth regions in `pccs`, fitted pairwise terms in `pairwise`) and its fit to
//!   co-run measurements (`fit`, behind `mica calibrate`).
//! - The scheduler core: the `Policy` trait (`policy`; the policies themselves are in
//!   `mica-policies`), the views a policy sees (`view`), unit state and health
//!   (`cluster`), and the synchronous `Scheduler` that the live dispatcher actor and the
//!   simulator both drive (`scheduler`), on durations since an epoch (`time`), and the
//!   `Clock` the live actors read that epoch from (`clock`: the system's, or a test's
//!   `ManualClock`).
//! - Work in flight under contention, progressing at 1 / slowdown (`progress`): the one
//!   rule the simulators and the sim engine's hub share.
//! - The discrete-event simulator (`simulator`) and the run report it and `mica bench`
//!   print (`report`).

pub mod clock;
pub mod cluster;
pub mod contention;
pub mod fit;
pub mod pairwise;
pub mod pccs;
pub mod policy;
pub mod profile;
pub mod progress;
pub mod report;
pub mod scheduler;
pub mod simulator;
pub mod time;
pub mod unit;
pub mod view;

pub use clock::{Clock, ManualClock, ManualSleep};
pub use cluster::{ClusterState, HealthRules, UnitHealth, UnitSpec};
pub use contention::{ContentionConfig, ContentionModel, Load};
pub use pccs::{Pccs, PccsParams};
pub use policy::{Completion, Decision, Policy, SearchProgress};
pub use profile::{Profile, ProfileError, ProfileOrigin, ProfilePoint};
pub use progress::{ContentionProgress, WorkId};
pub use report::{IdleReason, ReportBuilder, RunReport, Stats, UnitStats};
pub use scheduler::{
    Action, DropReason, InvalidRequest, Queued, Rejected, Scheduler, SchedulerSettings,
};
pub use simulator::{simulate, SimulationConfig, SimulationError, SimulationOutcome, Workload};
pub use unit::{Precision, UnitId, UnitKind};
pub use view::{ClusterView, QueueView, UnitView, WaitingRequest};
