//! The hardware combinations of the multi-instance paper (Tayal & Simmhan, Fig. 1),
//! mapped to the unit ids of a config by unit kind.
//!
//! As in the paper, "CUDA + Tensor" is one autocast instance (the `amp` unit), not two
//! units. "DLA" is the first DLA core of the config (the paper ran one DLA process), or
//! both cores with `DlaChoice::Both`. A last combination, "All units", is every enabled
//! unit of the config: what a policy gets when it may use the whole device.

use mica_core::UnitKind;

use crate::config::{ResolvedConfig, UnitConfig};

/// Which DLA cores a combination with "DLA" uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DlaChoice {
    /// The first DLA unit of the config (the paper's setup: one DLA process).
    First,
    /// Every DLA unit of the config (both cores on an Orin).
    Both,
}

/// A combination of the experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    /// Name on the command line (`cuda+dla`).
    pub key: &'static str,
    /// Name in tables and charts (`CUDA+DLA`).
    pub label: &'static str,
    /// Unit ids of the config, in config order.
    pub units: Vec<String>,
}

impl Combination {
    /// The unit ids joined by `+` (`cuda+dla0`).
    pub fn units_label(&self) -> String {
        self.units.join("+")
    }
}

/// What a combination is made of.
#[derive(Debug, Clone, Copy)]
enum Part {
    Cpu,
    Cuda,
    Amp,
    Dla,
    Everything,
}

/// Every known combination: key, label, parts.
const KNOWN: &[(&str, &str, &[Part])] = &[
    ("cpu", "CPU", &[Part::Cpu]),
    ("cuda", "CUDA", &[Part::Cuda]),
    ("cuda+tensor", "CUDA+Tensor", &[Part::Amp]),
    ("cuda+dla", "CUDA+DLA", &[Part::Cuda, Part::Dla]),
    (
        "cuda+tensor+dla",
        "CUDA+Tensor+DLA",
        &[Part::Amp, Part::Dla],
    ),
    ("all", "All units", &[Part::Everything]),
];

/// The key of the combination that holds every enabled unit.
pub const ALL: &str = "all";

/// Keys of every known combination, in the paper's order.
pub fn known_keys() -> Vec<&'static str> {
    KNOWN.iter().map(|(key, _, _)| *key).collect()
}

/// Whether `key` names one of the paper's subsets (every combination but "all").
pub fn is_subset(key: &str) -> bool {
    key != ALL
}

/// Resolves combinations against a config. With `wanted` = `None`, every known
/// combination whose unit kinds the config has (the others are returned as skipped,
/// with the reason); with names, exactly those, and a missing kind is an error.
pub fn resolve(
    loaded: &ResolvedConfig,
    wanted: Option<&[String]>,
    dla: DlaChoice,
) -> anyhow::Result<(Vec<Combination>, Vec<String>)> {
    let keys: Vec<&str> = match wanted {
        None => known_keys(),
        Some(names) => {
            let mut keys = Vec::new();
            for name in names {
                let name = name.trim().to_ascii_lowercase();
                let Some((key, _, _)) = KNOWN.iter().find(|(key, _, _)| *key == name) else {
                    anyhow::bail!(
                        "--combinations: unknown combination {name:?}; known: {}",
                        known_keys().join(", ")
                    );
                };
                if keys.contains(key) {
                    anyhow::bail!("--combinations: {key:?} is named twice");
                }
                keys.push(*key);
            }
            if keys.is_empty() {
                anyhow::bail!("--combinations: name at least one combination");
            }
            keys
        }
    };
    let units = &loaded.config.units;
    let mut combinations = Vec::new();
    let mut skipped = Vec::new();
    for key in keys {
        let (key, label, parts) = KNOWN
            .iter()
            .find(|(k, _, _)| *k == key)
            .copied()
            .expect("keys come from KNOWN; this is a bug");
        match members(units, parts, dla) {
            Ok(ids) => combinations.push(Combination {
                key,
                label,
                units: ids,
            }),
            Err(missing) if wanted.is_some() => anyhow::bail!(
                "--combinations: {key:?} needs a unit of kind {missing}, and {} has none",
                loaded.path.display()
            ),
            Err(missing) => skipped.push(format!("{label}: no unit of kind {missing}")),
        }
    }
    if combinations.is_empty() {
        anyhow::bail!(
            "{}: none of the combinations can be formed ({})",
            loaded.path.display(),
            skipped.join("; ")
        );
    }
    Ok((combinations, skipped))
}

/// The unit ids for `parts`, in config order, or the first kind that is missing.
fn members(units: &[UnitConfig], parts: &[Part], dla: DlaChoice) -> Result<Vec<String>, String> {
    // Enabled units first; a kind only present among disabled entries still counts.
    let of_kind = |kind: UnitKind| -> Vec<usize> {
        let enabled: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].kind == kind && units[i].enabled)
            .collect();
        if enabled.is_empty() {
            (0..units.len())
                .filter(|&i| units[i].kind == kind)
                .collect()
        } else {
            enabled
        }
    };
    let mut chosen: Vec<usize> = Vec::new();
    for part in parts {
        let (kind, take_all) = match part {
            Part::Cpu => (UnitKind::Cpu, false),
            Part::Cuda => (UnitKind::CudaFp32, false),
            Part::Amp => (UnitKind::Amp, false),
            Part::Dla => (UnitKind::Dla, dla == DlaChoice::Both),
            Part::Everything => {
                chosen.extend((0..units.len()).filter(|&i| units[i].enabled));
                continue;
            }
        };
        let found = of_kind(kind);
        if found.is_empty() {
            return Err(kind.as_str().to_string());
        }
        if take_all {
            chosen.extend(found);
        } else {
            chosen.push(found[0]);
        }
    }
    chosen.sort_unstable();
    chosen.dedup();
    Ok(chosen.into_iter().map(|i| units[i].id.clone()).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn orin() -> ResolvedConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/orin-agx-sim.toml");
        ResolvedConfig::load(&path).unwrap()
    }

    #[test]
    fn maps_the_paper_combinations_to_orin_units() {
        let (combos, skipped) = resolve(&orin(), None, DlaChoice::First).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let by_key = |k: &str| combos.iter().find(|c| c.key == k).unwrap().units_label();
        assert_eq!(by_key("cpu"), "cpu");
        assert_eq!(by_key("cuda"), "cuda");
        assert_eq!(by_key("cuda+tensor"), "amp");
        assert_eq!(by_key("cuda+dla"), "cuda+dla0");
        assert_eq!(by_key("cuda+tensor+dla"), "amp+dla0");
        assert_eq!(by_key("all"), "cpu+cuda+amp+dla0+dla1");
        let (both, _) = resolve(&orin(), Some(&["CUDA+DLA".into()]), DlaChoice::Both).unwrap();
        assert_eq!(both[0].units_label(), "cuda+dla0+dla1");
    }

    #[test]
    fn unknown_and_repeated_names_are_refused() {
        let error = resolve(&orin(), Some(&["gpu".into()]), DlaChoice::First).unwrap_err();
        assert!(error.to_string().contains("cuda+tensor+dla"), "{error}");
        let twice = ["cpu".to_string(), "cpu".to_string()];
        assert!(resolve(&orin(), Some(&twice), DlaChoice::First).is_err());
    }
}
