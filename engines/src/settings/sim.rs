//! `engine = { type = "sim", jitter = ... }`: the simulated engine's settings.

use serde::{Deserialize, Serialize};

use super::engine_settings::{SettingsError, UnitFacts};

/// Settings of a simulated unit. It emulates the unit's `profile` (a key of the unit,
/// because policies, `mica simulate` and `mica tune` read it for every engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimEngineConfig {
    /// Relative jitter of service times: each batch is scaled by a seeded uniform
    /// factor in `1 ± jitter` (0.02 = ±2 %).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Test tooling, never for service: faults to inject (fail, panic or hang every
    /// n-th batch or with a seeded probability; `crate::faults`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<crate::faults::FaultPlan>,
}

impl Default for SimEngineConfig {
    fn default() -> Self {
        Self {
            jitter: default_jitter(),
            faults: None,
        }
    }
}

fn default_jitter() -> f64 {
    0.02
}

impl SimEngineConfig {
    /// Checks the settings against the unit; the error names the key.
    pub fn validate(&self, unit: &UnitFacts) -> Result<(), SettingsError> {
        if !(0.0..0.5).contains(&self.jitter) {
            return Err(SettingsError::new(
                "engine.jitter",
                format!("must be in [0, 0.5), got {}", self.jitter),
            ));
        }
        if let Some(faults) = &self.faults {
            faults
                .validate("engine.faults")
                .map_err(|(key, message)| SettingsError::new(key, message))?;
        }
        if !unit.has_profile {
            return Err(SettingsError::new(
                "profile",
                "a sim unit needs a profile to emulate",
            ));
        }
        Ok(())
    }
}
