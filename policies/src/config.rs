//! Policy selection: a serde enum tagged `type` and one factory function.
//!
//! `[scheduler] policy = { type = "least_loaded" }` in the config file picks a policy
//! and its parameters; `--policy NAME` on the command line picks one with default
//! parameters.

use serde::{Deserialize, Serialize};

use crate::least_loaded::LeastLoaded;
use crate::policy::Policy;
use crate::round_robin::RoundRobin;

/// A policy and its parameters, as written in the config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Static rotation (the baseline).
    RoundRobin,
    /// Earliest expected finish time from the profiles.
    #[default]
    LeastLoaded,
}

impl PolicyConfig {
    /// Every policy name, for help texts and error messages.
    pub const NAMES: &'static [&'static str] = &["round_robin", "least_loaded"];

    /// The policy of that name with default parameters.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let table = format!("type = {name:?}");
        toml::from_str(&table).map_err(|_| {
            format!(
                "unknown policy {name:?}; known policies: {}",
                Self::NAMES.join(", ")
            )
        })
    }

    /// The policy's config name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::RoundRobin => "round_robin",
            PolicyConfig::LeastLoaded => "least_loaded",
        }
    }

    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Builds the policy a config describes. `seed` feeds policies that randomize.
pub fn build_policy(config: &PolicyConfig, seed: u64) -> Box<dyn Policy> {
    let _ = seed;
    match config {
        PolicyConfig::RoundRobin => Box::new(RoundRobin::new()),
        PolicyConfig::LeastLoaded => Box::new(LeastLoaded::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_builds() {
        for name in PolicyConfig::NAMES {
            let config = PolicyConfig::from_name(name).unwrap();
            assert_eq!(config.name(), *name);
            assert_eq!(build_policy(&config, 1).name(), *name);
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let error = PolicyConfig::from_name("fastest").unwrap_err();
        assert!(
            error.contains("fastest") && error.contains("round_robin"),
            "{error}"
        );
    }
}
