//! Contention models: how much slower a unit runs because of what runs beside it.
//!
//! A model maps the set of units running at one instant (their kinds, the GPU they
//! use, their DRAM bandwidth demand) to a slowdown factor (≥ 1) for each. Policies use
//! it to predict; the sim engine and the discrete-event simulator use the same model to
//! emulate, so prediction and emulation agree by construction.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::pairwise::{Calibrated, CalibratedParams};
use crate::pccs::{Pccs, PccsParams};
use crate::unit::{UnitId, UnitKind};

/// One unit running at the instant being modelled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Index of the unit.
    pub unit: usize,
    /// Its kind.
    pub kind: UnitKind,
    /// GPU it uses (GPU units) or falls back to (DLA).
    pub device: Option<u32>,
    /// Fraction of the GPU's SMs it keeps busy (1 for GPU units, the fallback share for
    /// a DLA, 0 for the CPU).
    pub gpu_occupancy: f64,
    /// DRAM bandwidth it draws alone, GB/s.
    pub bandwidth_gbps: f64,
    /// Images in its batch (0 where not known); a calibrated model's pairwise terms
    /// depend on it.
    pub images: u32,
}

/// Predicts slowdowns under co-location.
pub trait ContentionModel: Send + Sync + Debug {
    /// The model's config name.
    fn name(&self) -> &'static str;

    /// Writes into `slowdowns` (cleared first) one factor ≥ 1 per entry of `loads`, in
    /// the same order: how many times longer that unit's batch takes than alone.
    fn slowdowns(&self, loads: &[Load], slowdowns: &mut Vec<f64>);

    /// Throughput measured for exactly these units (indices, ascending) with every
    /// stream busy at `batch`, if the model carries measurements (`mica calibrate`).
    fn measured_img_s(&self, units: &[usize], batch: u32) -> Option<f64> {
        let _ = (units, batch);
        None
    }

    /// Relative error to allow a prediction for a set of units nobody measured
    /// together (the calibration's held-out error; 0 when unknown).
    fn uncertainty(&self) -> f64 {
        0.0
    }
}

/// Config of the contention model, chosen per platform.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentionConfig {
    /// No contention: every unit runs as if alone (a data-center host with one unit
    /// per GPU, or an upper bound).
    #[default]
    None,
    /// Proportional sharing: GPU units on one device share its SMs in proportion to
    /// their occupancy, and all units share DRAM bandwidth in proportion to demand.
    BandwidthShare {
        /// Peak DRAM bandwidth shared by every unit, GB/s.
        memory_bandwidth_gbps: f64,
    },
    /// PCCS three-region DRAM model with SM sharing and DLA fallback (`pccs.rs`): the
    /// calibrated model of the Jetson platforms (`config/profiles/*/platform.toml`).
    Pccs(PccsParams),
    /// A parametric base model with pairwise corrections fitted on co-run measurements
    /// by `mica calibrate` (`pairwise.rs`); its terms are keyed by unit id.
    Calibrated(CalibratedParams),
}

impl ContentionConfig {
    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ContentionConfig::None => Ok(()),
            ContentionConfig::BandwidthShare {
                memory_bandwidth_gbps,
            } => positive("memory_bandwidth_gbps", *memory_bandwidth_gbps),
            ContentionConfig::Pccs(params) => params.validate(),
            ContentionConfig::Calibrated(params) => params.validate(),
        }
    }

    /// Reads a platform's contention table from a TOML file (`type = "pccs"` and its
    /// parameters, as in `config/profiles/orin-agx/platform.toml`) and validates it.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: ContentionConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Builds the model without unit ids (pairwise terms of a calibrated model then
    /// refer to nothing: use `build_for`).
    pub fn build(&self) -> Box<dyn ContentionModel> {
        self.build_for(&[])
    }

    /// Builds the model for these units (`Load::unit` indexes `ids`).
    pub fn build_for(&self, ids: &[UnitId]) -> Box<dyn ContentionModel> {
        match self {
            ContentionConfig::None => Box::new(NoContention),
            ContentionConfig::BandwidthShare {
                memory_bandwidth_gbps,
            } => Box::new(BandwidthShare {
                memory_bandwidth_gbps: *memory_bandwidth_gbps,
            }),
            ContentionConfig::Pccs(params) => Box::new(Pccs::new(*params)),
            ContentionConfig::Calibrated(params) => Box::new(Calibrated::new(params, ids)),
        }
    }
}

fn positive(key: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} must be a positive number, got {value}"))
    }
}

/// Every unit runs as if alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContention;

impl ContentionModel for NoContention {
    fn name(&self) -> &'static str {
        "none"
    }

    fn slowdowns(&self, loads: &[Load], slowdowns: &mut Vec<f64>) {
        slowdowns.clear();
        slowdowns.resize(loads.len(), 1.0);
    }
}

/// Proportional sharing of SMs (per GPU) and of DRAM bandwidth (whole platform).
///
/// GPU units on one device that together ask for more than the whole device (sum of
/// occupancies S > 1) are time-sliced: each runs S times slower, and a DLA's fallback
/// part slows by the same factor in proportion to its share. When the total bandwidth
/// demand D exceeds the peak, every unit drawing bandwidth gets peak/D of what it asks.
#[derive(Debug, Clone, Copy)]
pub struct BandwidthShare {
    /// Peak DRAM bandwidth, GB/s.
    pub memory_bandwidth_gbps: f64,
}

impl ContentionModel for BandwidthShare {
    fn name(&self) -> &'static str {
        "bandwidth_share"
    }

    fn slowdowns(&self, loads: &[Load], slowdowns: &mut Vec<f64>) {
        slowdowns.clear();
        let demand: f64 = loads.iter().map(|l| l.bandwidth_gbps).sum();
        let memory_factor = (demand / self.memory_bandwidth_gbps).max(1.0);
        for load in loads {
            let sm_demand: f64 = loads
                .iter()
                .filter(|other| other.device.is_some() && other.device == load.device)
                .map(|other| other.gpu_occupancy)
                .sum();
            let sm_factor = if load.kind.uses_gpu_sms() {
                sm_demand.max(1.0)
            } else {
                1.0 + load.gpu_occupancy * (sm_demand.max(1.0) - 1.0)
            };
            let memory = if load.bandwidth_gbps > 0.0 {
                memory_factor
            } else {
                1.0
            };
            slowdowns.push(sm_factor.max(memory));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(unit: usize, kind: UnitKind, occupancy: f64, bandwidth: f64) -> Load {
        Load {
            unit,
            kind,
            device: (kind != UnitKind::Cpu).then_some(0),
            gpu_occupancy: occupancy,
            bandwidth_gbps: bandwidth,
            images: 1,
        }
    }

    #[test]
    fn pccs_config_reads_from_a_table_and_rejects_unknown_keys() {
        let table = r#"
            type = "pccs"
            memory_bandwidth_gbps = 136.5
            normal_bandwidth_gbps = 37.6
            intensive_bandwidth_gbps = 65.7
            minor_max_loss = 0.0372
            contention_onset_gbps = 82.8
            min_achieved_bandwidth_gbps = 45.0
            max_slowdown = 1.9
        "#;
        let config: ContentionConfig = toml::from_str(table).unwrap();
        assert_eq!(config, ContentionConfig::Pccs(PccsParams::xavier_agx()));
        assert_eq!(config.build().name(), "pccs");
        let typo = table.replace("max_slowdown", "max_slowdwn");
        assert!(toml::from_str::<ContentionConfig>(&typo).is_err());
        let round_trip: ContentionConfig =
            toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(round_trip, config);
    }

    #[test]
    fn alone_means_no_slowdown() {
        let model = BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        };
        let mut out = Vec::new();
        model.slowdowns(&[load(0, UnitKind::CudaFp32, 1.0, 50.0)], &mut out);
        assert_eq!(out, vec![1.0]);
    }

    #[test]
    fn two_gpu_units_share_the_sms_and_a_dla_pays_for_its_fallback() {
        let model = BandwidthShare {
            memory_bandwidth_gbps: 1000.0,
        };
        let mut out = Vec::new();
        model.slowdowns(
            &[
                load(0, UnitKind::CudaFp32, 1.0, 10.0),
                load(1, UnitKind::Amp, 1.0, 10.0),
                load(2, UnitKind::Dla, 0.1, 10.0),
                load(3, UnitKind::Cpu, 0.0, 10.0),
            ],
            &mut out,
        );
        assert!((out[0] - 2.1).abs() < 1e-9);
        assert!((out[1] - 2.1).abs() < 1e-9);
        assert!((out[2] - 1.11).abs() < 1e-9);
        assert_eq!(out[3], 1.0);
    }

    #[test]
    fn bandwidth_oversubscription_slows_everyone_who_draws_it() {
        let model = BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        };
        let mut out = Vec::new();
        model.slowdowns(
            &[
                load(0, UnitKind::Cpu, 0.0, 100.0),
                load(1, UnitKind::Dla, 0.0, 100.0),
                load(2, UnitKind::Dla, 0.0, 0.0),
            ],
            &mut out,
        );
        assert_eq!(out, vec![2.0, 2.0, 1.0]);
    }
}
