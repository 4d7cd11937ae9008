//! Policy selection: a serde enum tagged `type` and one factory function.
//!
//! `[scheduler] policy = { type = "least_loaded" }` in the config file picks a policy
//! and its parameters; `--policy NAME` on the command line picks one with default
//! parameters. Policies that predict contention carry an optional `contention` table
//! (the same table as a platform's `platform.toml`); left out, the service fills in the
//! platform's model with `resolve_contention`, and a policy built without one uses the
//! calibrated Orin model.

use serde::de::value::MapDeserializer;
use serde::{Deserialize, Serialize};

use crate::adaptive::{Adaptive, AdaptiveSettings};
use crate::contention_aware::{default_contention, ContentionAware, ContentionAwareSettings};
use crate::least_loaded::LeastLoaded;
use crate::round_robin::RoundRobin;
use crate::slo::{Slo, SloSettings};
use crate::weighted::Weighted;
use mica_core::contention::ContentionConfig;
use mica_core::policy::Policy;

/// A policy and its parameters, as written in the config. A policy with parameters
/// wraps its settings struct, which defaults every field left out and rejects unknown
/// keys.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "PolicyConfigFile"
)]
pub enum PolicyConfig {
    /// Static rotation (the baseline).
    RoundRobin,
    /// Earliest expected finish time from the profiles.
    #[default]
    LeastLoaded,
    /// Static shares proportional to isolated throughput (smooth weighted round robin).
    Weighted,
    /// Active-set selection and placement predicted with a contention model.
    ContentionAware(ContentionAwareSettings),
    /// Profile-free active-set hill climbing on measured rates.
    Adaptive(AdaptiveSettings),
    /// Earliest deadline first, least-cost unit, shedding what cannot meet its deadline.
    Slo(SloSettings),
}

/// `PolicyConfig` as the file holds it, its parameterless policies as empty struct
/// variants: serde ignores keys beside the tag of an internally tagged enum's unit
/// variant, so `{ type = "round_robin", weights = 2 }` would pass silently; an empty
/// struct variant with `deny_unknown_fields` refuses the key, naming it.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum PolicyConfigFile {
    RoundRobin {},
    LeastLoaded {},
    Weighted {},
    ContentionAware(ContentionAwareSettings),
    Adaptive(AdaptiveSettings),
    Slo(SloSettings),
}

impl From<PolicyConfigFile> for PolicyConfig {
    fn from(file: PolicyConfigFile) -> Self {
        match file {
            PolicyConfigFile::RoundRobin {} => PolicyConfig::RoundRobin,
            PolicyConfigFile::LeastLoaded {} => PolicyConfig::LeastLoaded,
            PolicyConfigFile::Weighted {} => PolicyConfig::Weighted,
            PolicyConfigFile::ContentionAware(settings) => PolicyConfig::ContentionAware(settings),
            PolicyConfigFile::Adaptive(settings) => PolicyConfig::Adaptive(settings),
            PolicyConfigFile::Slo(settings) => PolicyConfig::Slo(settings),
        }
    }
}

impl PolicyConfig {
    /// Every policy name, in the enum's order, for help texts, error messages, the
    /// policy-info metric and the shared property test. Read from the enum's derived
    /// `Deserialize`, which lists its variants when it meets an unknown `type`, so a new
    /// variant is in it without anyone keeping a list.
    pub fn names() -> &'static [&'static str] {
        let probe = MapDeserializer::<_, VariantList>::new(std::iter::once(("type", "")));
        match PolicyConfig::deserialize(probe) {
            Err(VariantList(Some(names))) => names,
            other => unreachable!(
                "an empty policy type is reported as an unknown variant, got {other:?}; this is a bug"
            ),
        }
    }

    /// The policy of that name with default parameters.
    pub fn from_name(name: &str) -> Result<Self, String> {
        let table = format!("type = {name:?}");
        toml::from_str(&table).map_err(|_| {
            format!(
                "unknown policy {name:?}; known policies: {}",
                Self::names().join(", ")
            )
        })
    }

    /// The policy's config name.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::RoundRobin => "round_robin",
            PolicyConfig::LeastLoaded => "least_loaded",
            PolicyConfig::Weighted => "weighted",
            PolicyConfig::ContentionAware(_) => "contention_aware",
            PolicyConfig::Adaptive(_) => "adaptive",
            PolicyConfig::Slo(_) => "slo",
        }
    }

    /// Gives a policy that predicts contention the platform's model, unless its config
    /// names one of its own. Call before `build_policy` with the platform's table.
    pub fn resolve_contention(&mut self, platform: &ContentionConfig) {
        if let PolicyConfig::ContentionAware(ContentionAwareSettings { contention })
        | PolicyConfig::Slo(SloSettings { contention, .. }) = self
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
            PolicyConfig::ContentionAware(settings) => settings.validate(),
            PolicyConfig::Adaptive(settings) => settings.validate(),
            PolicyConfig::Slo(settings) => settings.validate(),
        }
    }
}

/// The error `PolicyConfig::names` deserializes into: it keeps the variant list that
/// serde's derived code passes to `unknown_variant` and nothing else.
#[derive(Debug)]
struct VariantList(Option<&'static [&'static str]>);

impl serde::de::Error for VariantList {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        VariantList(None)
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        VariantList(Some(expected))
    }
}

impl std::fmt::Display for VariantList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "policy variants: {:?}", self.0)
    }
}

impl std::error::Error for VariantList {}

/// Builds the policy a config describes. No policy randomizes (their tie-breaks are
/// deterministic by unit index), so a policy is a function of its config alone.
pub fn build_policy(config: &PolicyConfig) -> Box<dyn Policy> {
    match config {
        PolicyConfig::RoundRobin => Box::new(RoundRobin::new()),
        PolicyConfig::LeastLoaded => Box::new(LeastLoaded::new()),
        PolicyConfig::Weighted => Box::new(Weighted::new()),
        PolicyConfig::ContentionAware(settings) => Box::new(ContentionAware::new(
            settings
                .contention
                .as_ref()
                .unwrap_or(&default_contention()),
        )),
        PolicyConfig::Adaptive(settings) => Box::new(Adaptive::new(*settings)),
        PolicyConfig::Slo(settings) => Box::new(Slo::new(settings.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mica_core::pccs::PccsParams;

    #[test]
    fn every_listed_name_builds() {
        assert_eq!(
            PolicyConfig::names(),
            [
                "round_robin",
                "least_loaded",
                "weighted",
                "contention_aware",
                "adaptive",
                "slo"
            ]
        );
        for name in PolicyConfig::names() {
            let config = PolicyConfig::from_name(name).unwrap();
            assert_eq!(config.name(), *name);
            config.validate().unwrap();
            assert_eq!(build_policy(&config).name(), *name);
        }
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let error = PolicyConfig::from_name("fastest").unwrap_err();
        assert!(
            error.contains("fastest") && error.contains("round_robin") && error.contains("slo"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        for (table, key) in [
            ("type = \"slo\"\nmargin = 2", "margin"),
            ("type = \"adaptive\"\nepoch_second = 2.0", "epoch_second"),
            ("type = \"contention_aware\"\nmodel = \"pccs\"", "model"),
            ("type = \"round_robin\"\nweights = 2", "weights"),
            (
                "type = \"least_loaded\"\nepoch_seconds = 1.0",
                "epoch_seconds",
            ),
            ("type = \"weighted\"\nshares = 3", "shares"),
        ] {
            let error = toml::from_str::<PolicyConfig>(table)
                .unwrap_err()
                .to_string();
            assert!(error.contains(key), "{table:?}: {error}");
        }
    }

    #[test]
    fn parameters_round_trip_through_toml() {
        let config = PolicyConfig::Adaptive(AdaptiveSettings {
            hysteresis: 0.05,
            epoch_seconds: 1.5,
            ..AdaptiveSettings::default()
        });
        let written = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<PolicyConfig>(&written).unwrap(), config);
        let slo = PolicyConfig::Slo(SloSettings {
            max_scan: 8,
            ..SloSettings::default()
        });
        let written = toml::to_string(&slo).unwrap();
        assert!(!written.contains("contention"), "{written}");
        assert_eq!(toml::from_str::<PolicyConfig>(&written).unwrap(), slo);
    }

    #[test]
    fn parameters_parse_and_the_platform_model_fills_a_gap() {
        let config: PolicyConfig =
            toml::from_str("type = \"adaptive\"\nhysteresis = 0.05").unwrap();
        assert!(
            matches!(config, PolicyConfig::Adaptive(AdaptiveSettings { hysteresis, epoch_batches: 30, .. }) if hysteresis == 0.05)
        );
        let bad: PolicyConfig = toml::from_str("type = \"slo\"\nlatency_margin = 0.5").unwrap();
        assert!(bad.validate().unwrap_err().contains("latency_margin"));
        let bad: PolicyConfig = toml::from_str("type = \"adaptive\"\nepoch_seconds = 0").unwrap();
        assert!(bad.validate().unwrap_err().contains("epoch_seconds"));
        let xavier = ContentionConfig::Pccs(PccsParams::xavier_agx());
        for name in ["contention_aware", "slo"] {
            let mut config = PolicyConfig::from_name(name).unwrap();
            config.resolve_contention(&xavier);
            let resolved = match &config {
                PolicyConfig::ContentionAware(settings) => &settings.contention,
                PolicyConfig::Slo(settings) => &settings.contention,
                other => panic!("{other:?}"),
            };
            assert_eq!(resolved.as_ref(), Some(&xavier), "{name}");
        }
        let own = ContentionConfig::None;
        let mut config = PolicyConfig::ContentionAware(ContentionAwareSettings {
            contention: Some(own.clone()),
        });
        config.resolve_contention(&xavier);
        assert_eq!(
            config,
            PolicyConfig::ContentionAware(ContentionAwareSettings {
                contention: Some(own)
            })
        );
    }
}
