//! mica-policies: the load-allocation policies, one file each, and their config.
//!
//! Each policy implements `mica_core::Policy`: it sees a `ClusterView` (queues, units,
//! their profiles and the contention model) and decides which unit takes how many
//! images. `config` reads `[scheduler] policy = { type = ..., ... }` into a
//! `PolicyConfig` and `build_policy` makes the policy. The scheduler that calls them,
//! the hardware model they decide with and the simulator are in `mica-core`.

pub mod adaptive;
pub mod config;
pub mod contention_aware;
pub mod least_loaded;
pub mod round_robin;
pub mod slo;
#[cfg(test)]
mod test_support;
pub mod weighted;

pub use adaptive::AdaptiveSettings;
pub use config::{build_policy, PolicyConfig};
pub use contention_aware::ContentionAwareSettings;
pub use slo::SloSettings;
