//! Policy selection: a serde enum tagged `type` and one factory function.
//!
//! `[scheduler] policy = { type = "least_loaded" }` in the config file picks a policy
//! and its parameters; `--policy NAME` on the command line picks one with default
//! parameters. Policies that predict contention carry an optional `contention` table
//! (the same table as a platform's `platform.toml`); left out, the service fills in the
//! platform's model with `resolve_contention`, and a policy built without one uses the
//! calibrated Orin model.

use serde::{Deserialize, Serialize};

use crate::adaptive::{Adaptive, AdaptiveSettings};
use crate::contention::ContentionConfig;
use crate::contention_aware::{default_contention, ContentionAware};
use crate::least_loaded::LeastLoaded;
use crate::policy::Policy;
use crate::round_robin::RoundRobin;
use crate::slo::{Slo, SloSettings};
use crate::weighted::Weighted;

fn default_epoch_batches() -> u32 {
    AdaptiveSettings::default().epoch_batches
}
fn default_min_unit_batches() -> u32 {
    AdaptiveSettings::default().min_unit_batches
}
fn default_hysteresis() -> f64 {
    AdaptiveSettings::default().hysteresis
}
fn default_reexplore_batches() -> u64 {
    AdaptiveSettings::default().reexplore_batches
}
fn default_ewma_weight() -> f64 {
    AdaptiveSettings::default().ewma_weight
}
fn default_reject_margin() -> f64 {
    AdaptiveSettings::default().reject_margin
}
fn default_reject_after_batches() -> u32 {
    AdaptiveSettings::default().reject_after_batches
}
fn default_epoch_seconds() -> f64 {
    AdaptiveSettings::default().epoch_seconds
}
fn default_search_seconds() -> f64 {
    AdaptiveSettings::default().search_seconds
}
fn default_latency_margin() -> f64 {
    SloSettings::default().latency_margin
}
fn default_max_scan() -> usize {
    SloSettings::default().max_scan
}

/// A policy and its parameters, as written in the config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Static rotation (the baseline).
    RoundRobin,
    /// Earliest expected finish time from the profiles.
    #[default]
    LeastLoaded,
    /// Static shares proportional to isolated throughput (smooth weighted round robin).
    Weighted,
    /// Active-set selection and placement predicted with a contention model.
    ContentionAware {
        /// Contention model to predict with; absent: the platform's (see
        /// `resolve_contention`), else the calibrated Orin PCCS model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contention: Option<ContentionConfig>,
    },
    /// Profile-free active-set hill climbing on measured rates.
    Adaptive {
        /// Counted completions per measurement epoch.
        #[serde(default = "default_epoch_batches")]
        epoch_batches: u32,
        /// Counted completions every measured unit must reach before an epoch ends.
        #[serde(default = "default_min_unit_batches")]
        min_unit_batches: u32,
        /// Relative gain a neighbouring set must show to be adopted (0.02 = 2 %).
        #[serde(default = "default_hysteresis")]
        hysteresis: f64,
        /// Completions after convergence before the search runs again.
        #[serde(default = "default_reexplore_batches")]
        reexplore_batches: u64,
        /// Weight of the newest batch in each unit's measured-rate EWMA.
        #[serde(default = "default_ewma_weight")]
        ewma_weight: f64,
        /// A trial set this far below the incumbent (0.1 = 10 %) is rejected early.
        #[serde(default = "default_reject_margin")]
        reject_margin: f64,
        /// Counted completions at which `reject_margin` applies (fewer need a wider margin).
        #[serde(default = "default_reject_after_batches")]
        reject_after_batches: u32,
        /// Longest measurement epoch, seconds (a unit slower than that is judged on the
        /// batches it finished); also the longest wait for excluded units to drain.
        #[serde(default = "default_epoch_seconds")]
        epoch_seconds: f64,
        /// Longest search, seconds: then the best set measured so far stays.
        #[serde(default = "default_search_seconds")]
        search_seconds: f64,
    },
    /// Earliest deadline first, least-cost unit, shedding what cannot meet its deadline.
    Slo {
        /// Factor applied to predicted service times to cover contention and jitter.
        #[serde(default = "default_latency_margin")]
        latency_margin: f64,
        /// Requests at the head of the queue examined per decision.
        #[serde(default = "default_max_scan")]
        max_scan: usize,
        /// Contention model for the active set and for slowdowns of co-running batches;
        /// absent: the platform's (see `resolve_contention`), else the calibrated Orin
        /// PCCS model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contention: Option<ContentionConfig>,
    },
}

impl PolicyConfig {
    /// Every policy name, for help texts and error messages.
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "least_loaded",
        "weighted",
        "contention_aware",
        "adaptive",
        "slo",
    ];

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
            PolicyConfig::Weighted => "weighted",
            PolicyConfig::ContentionAware { .. } => "contention_aware",
            PolicyConfig::Adaptive { .. } => "adaptive",
            PolicyConfig::Slo { .. } => "slo",
        }
    }

    /// Gives a policy that predicts contention the platform's model, unless its config
    /// names one of its own. Call before `build_policy` with the platform's table.
    pub fn resolve_contention(&mut self, platform: &ContentionConfig) {
        if let PolicyConfig::ContentionAware { contention } | PolicyConfig::Slo { contention, .. } =
            self
        {
            if contention.is_none() {
                *contention = Some(platform.clone());
            }
        }
    }

    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            PolicyConfig::RoundRobin | PolicyConfig::LeastLoaded | PolicyConfig::Weighted => Ok(()),
            PolicyConfig::ContentionAware { contention } => match contention {
                Some(c) => c.validate().map_err(|e| format!("contention: {e}")),
                None => Ok(()),
            },
            PolicyConfig::Adaptive {
                epoch_batches,
                hysteresis,
                ewma_weight,
                reject_margin,
                epoch_seconds,
                search_seconds,
                ..
            } => {
                if !(epoch_seconds.is_finite() && *epoch_seconds > 0.0) {
                    return Err(format!(
                        "epoch_seconds must be a positive number, got {epoch_seconds}"
                    ));
                }
                if !(search_seconds.is_finite() && *search_seconds >= *epoch_seconds) {
                    return Err(format!(
                        "search_seconds must be at least epoch_seconds ({epoch_seconds}), got {search_seconds}"
                    ));
                }
                if *epoch_batches == 0 {
                    return Err("epoch_batches must be at least 1".into());
                }
                if !(hysteresis.is_finite() && *hysteresis >= 0.0) {
                    return Err(format!("hysteresis must be >= 0, got {hysteresis}"));
                }
                if !(*ewma_weight > 0.0 && *ewma_weight <= 1.0) {
                    return Err(format!("ewma_weight must be in (0, 1], got {ewma_weight}"));
                }
                if !(*reject_margin > 0.0 && *reject_margin < 1.0) {
                    return Err(format!(
                        "reject_margin must be in (0, 1), got {reject_margin}"
                    ));
                }
                Ok(())
            }
            PolicyConfig::Slo {
                latency_margin,
                max_scan,
                contention,
            } => {
                if let Some(c) = contention {
                    c.validate().map_err(|e| format!("contention: {e}"))?;
                }
                if !(latency_margin.is_finite() && *latency_margin >= 1.0) {
                    return Err(format!(
                        "latency_margin must be at least 1, got {latency_margin}"
                    ));
                }
                if *max_scan == 0 {
                    return Err("max_scan must be at least 1".into());
                }
                Ok(())
            }
        }
    }
}

/// Builds the policy a config describes. `seed` feeds policies that randomize (none of
/// the current ones does: their tie-breaks are deterministic by unit index).
pub fn build_policy(config: &PolicyConfig, seed: u64) -> Box<dyn Policy> {
    let _ = seed;
    match config {
        PolicyConfig::RoundRobin => Box::new(RoundRobin::new()),
        PolicyConfig::LeastLoaded => Box::new(LeastLoaded::new()),
        PolicyConfig::Weighted => Box::new(Weighted::new()),
        PolicyConfig::ContentionAware { contention } => Box::new(ContentionAware::new(
            contention.as_ref().unwrap_or(&default_contention()),
        )),
        PolicyConfig::Adaptive {
            epoch_batches,
            min_unit_batches,
            hysteresis,
            reexplore_batches,
            ewma_weight,
            reject_margin,
            reject_after_batches,
            epoch_seconds,
            search_seconds,
        } => Box::new(Adaptive::new(AdaptiveSettings {
            epoch_batches: *epoch_batches,
            min_unit_batches: *min_unit_batches,
            hysteresis: *hysteresis,
            reexplore_batches: *reexplore_batches,
            ewma_weight: *ewma_weight,
            reject_margin: *reject_margin,
            reject_after_batches: *reject_after_batches,
            epoch_seconds: *epoch_seconds,
            search_seconds: *search_seconds,
        })),
        PolicyConfig::Slo {
            latency_margin,
            max_scan,
            contention,
        } => Box::new(Slo::new(
            SloSettings {
                latency_margin: *latency_margin,
                max_scan: *max_scan,
            },
            contention.as_ref().unwrap_or(&default_contention()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pccs::PccsParams;

    #[test]
    fn every_listed_name_builds() {
        for name in PolicyConfig::NAMES {
            let config = PolicyConfig::from_name(name).unwrap();
            assert_eq!(config.name(), *name);
            config.validate().unwrap();
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

    #[test]
    fn parameters_parse_and_the_platform_model_fills_a_gap() {
        let config: PolicyConfig =
            toml::from_str("type = \"adaptive\"\nhysteresis = 0.05").unwrap();
        assert!(
            matches!(config, PolicyConfig::Adaptive { hysteresis, epoch_batches: 30, .. } if hysteresis == 0.05)
        );
        assert!(toml::from_str::<PolicyConfig>("type = \"slo\"\nmargin = 2").is_err());
        let bad: PolicyConfig = toml::from_str("type = \"slo\"\nlatency_margin = 0.5").unwrap();
        assert!(bad.validate().unwrap_err().contains("latency_margin"));
        let xavier = ContentionConfig::Pccs(PccsParams::xavier_agx());
        let mut config = PolicyConfig::from_name("contention_aware").unwrap();
        config.resolve_contention(&xavier);
        assert_eq!(
            config,
            PolicyConfig::ContentionAware {
                contention: Some(xavier.clone())
            }
        );
        let own = ContentionConfig::None;
        let mut config = PolicyConfig::ContentionAware {
            contention: Some(own.clone()),
        };
        config.resolve_contention(&xavier);
        assert_eq!(
            config,
            PolicyConfig::ContentionAware {
                contention: Some(own)
            }
        );
    }
}
