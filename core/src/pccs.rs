//! PCCS: a processor-centric, three-region slowdown model for units that share a GPU
//! and a SoC's DRAM.
//!
//! After Xu, Belviranli, Shen and Vetter, "PCCS: Processor-Centric Contention-aware
//! Slowdown Model for Heterogeneous System-on-Chips" (MICRO 2021), the model HaX-CoNN
//! (PPoPP 2024) uses to map layers over a Jetson's GPU and DLAs. Three couplings, in
//! this order:
//!
//! 1. **Compute sharing.** GPU units on one device (`cuda_fp32`, `amp`, `tensor_fp16`,
//!    ...) share its SMs: when the occupancies of everything running there (GPU units,
//!    and the GPU-fallback share of DLA batches) add up to S > 1, the SMs are
//!    time-sliced and each GPU unit runs S times slower. A DLA batch spends the fraction
//!    `f` (its `gpu_occupancy`) of its work on the GPU: that part slows by S, its own
//!    part by the number of batches sharing the DLA core (`(1 - f)·k + f·S`). A unit
//!    without SMs (the CPU) is shared only by its own concurrent batches (k). Two
//!    streams of one unit therefore never run faster than the unit.
//! 2. **Effective demand.** A batch slowed by compute sharing draws proportionally less
//!    DRAM bandwidth: its demand is its profile's `bandwidth_gbps` divided by the
//!    compute factor. (`BandwidthShare` charged full demand to time-sliced units.)
//! 3. **DRAM contention, three regions.** Nothing happens while the total effective
//!    demand T stays below the contention onset C. Above it, a unit's slowdown depends
//!    on the region of its own demand d: *minor* (d < normal bound): it loses at most
//!    `minor_max_loss`, growing with (T − C)/(peak − C); *intensive* (d ≥ intensive
//!    bound): fully bandwidth-bound, it gets its proportional share C/T of the
//!    sustainable bandwidth, slowdown T/C; *normal*: in between, the bandwidth-bound
//!    weight ramps linearly from the minor region's maximum loss to 1. The slowdown is
//!    capped at `max_slowdown` and by the achieved-bandwidth floor:
//!    `max(d, intensive)/floor` (a saturated unit keeps at least the floor).
//!
//! The result for each batch is compute factor × DRAM factor. The sim engine (through
//! `ContentionHub`) and the discrete-event simulator apply this model to emulate;
//! `contention_aware` applies it to predict, so the two agree by construction.

use serde::{Deserialize, Serialize};

use crate::contention::{ContentionModel, Load};

/// Xavier → Orin scaling of bandwidth figures: 204.8 / 136.5 GB/s peak (CALIBRATION.md).
const ORIN_OVER_XAVIER: f64 = 204.8 / 136.5;

/// Parameters of the PCCS model for one platform (bandwidths in GB/s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PccsParams {
    /// Peak DRAM bandwidth shared by every unit of the SoC.
    pub memory_bandwidth_gbps: f64,
    /// Own demand at which a unit leaves the minor region (PCCS `normal_BW`).
    pub normal_bandwidth_gbps: f64,
    /// Own demand at which a unit enters the intensive region (PCCS `intensive_BW`).
    pub intensive_bandwidth_gbps: f64,
    /// Largest relative speed loss of a minor-region unit (0.0372 = 3.72 %).
    pub minor_max_loss: f64,
    /// Total demand at which contention starts (the sustainable bandwidth).
    pub contention_onset_gbps: f64,
    /// Bandwidth a saturated (intensive) unit still achieves under any contention.
    pub min_achieved_bandwidth_gbps: f64,
    /// Upper bound of the DRAM part of a slowdown.
    pub max_slowdown: f64,
}

impl PccsParams {
    /// Jetson AGX Xavier, fitted on PCCS's sample data (CALIBRATION.md): normal_BW 37.6,
    /// intensive_BW 65.7, minor loss ≤ 3.72 %, onset 82.8 GB/s (~61 % of 136.5), floor
    /// ~45 GB/s (slowdown cap ~1.9x).
    pub fn xavier_agx() -> Self {
        Self {
            memory_bandwidth_gbps: 136.5,
            normal_bandwidth_gbps: 37.6,
            intensive_bandwidth_gbps: 65.7,
            minor_max_loss: 0.0372,
            contention_onset_gbps: 82.8,
            min_achieved_bandwidth_gbps: 45.0,
            max_slowdown: 1.9,
        }
    }

    /// Jetson AGX Orin: the Xavier fit with every bandwidth scaled by 204.8 / 136.5
    /// (the first guess CALIBRATION.md suggests); losses and caps unchanged.
    pub fn orin_agx() -> Self {
        let x = Self::xavier_agx();
        let scale = |v: f64| (v * ORIN_OVER_XAVIER * 10.0).round() / 10.0;
        Self {
            memory_bandwidth_gbps: 204.8,
            normal_bandwidth_gbps: scale(x.normal_bandwidth_gbps),
            intensive_bandwidth_gbps: scale(x.intensive_bandwidth_gbps),
            contention_onset_gbps: scale(x.contention_onset_gbps),
            min_achieved_bandwidth_gbps: scale(x.min_achieved_bandwidth_gbps),
            ..x
        }
    }

    /// Checks the parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("memory_bandwidth_gbps", self.memory_bandwidth_gbps),
            ("normal_bandwidth_gbps", self.normal_bandwidth_gbps),
            ("intensive_bandwidth_gbps", self.intensive_bandwidth_gbps),
            ("contention_onset_gbps", self.contention_onset_gbps),
            (
                "min_achieved_bandwidth_gbps",
                self.min_achieved_bandwidth_gbps,
            ),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{key} must be a positive number, got {value}"));
            }
        }
        if self.intensive_bandwidth_gbps <= self.normal_bandwidth_gbps {
            return Err(format!(
                "intensive_bandwidth_gbps ({}) must exceed normal_bandwidth_gbps ({})",
                self.intensive_bandwidth_gbps, self.normal_bandwidth_gbps
            ));
        }
        if self.contention_onset_gbps >= self.memory_bandwidth_gbps {
            return Err(format!(
                "contention_onset_gbps ({}) must be below memory_bandwidth_gbps ({})",
                self.contention_onset_gbps, self.memory_bandwidth_gbps
            ));
        }
        if !(0.0..1.0).contains(&self.minor_max_loss) {
            return Err(format!(
                "minor_max_loss must be in [0, 1), got {}",
                self.minor_max_loss
            ));
        }
        if !(self.max_slowdown.is_finite() && self.max_slowdown >= 1.0) {
            return Err(format!(
                "max_slowdown must be at least 1, got {}",
                self.max_slowdown
            ));
        }
        Ok(())
    }
}

impl Default for PccsParams {
    fn default() -> Self {
        Self::orin_agx()
    }
}

/// The PCCS model with its parameters.
#[derive(Debug, Clone, Copy)]
pub struct Pccs {
    params: PccsParams,
    /// Bandwidth-bound weight at the lower edge of the normal region, chosen so that a
    /// unit there loses `minor_max_loss` when the total demand reaches the peak: the
    /// normal region continues the minor one.
    normal_floor_weight: f64,
}

impl Pccs {
    /// The model with these (validated) parameters.
    pub fn new(params: PccsParams) -> Self {
        let p = &params;
        let at_peak = p.memory_bandwidth_gbps / p.contention_onset_gbps - 1.0;
        let minor_slowdown = 1.0 / (1.0 - p.minor_max_loss) - 1.0;
        Self {
            params,
            normal_floor_weight: (minor_slowdown / at_peak).clamp(0.0, 1.0),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &PccsParams {
        &self.params
    }

    /// DRAM slowdown (≥ 1) of a unit whose own effective demand is `own` GB/s while the
    /// total effective demand of everything running (itself included) is `total`.
    pub fn memory_slowdown(&self, own: f64, total: f64) -> f64 {
        let p = &self.params;
        if own <= 0.0 || total <= p.contention_onset_gbps {
            return 1.0;
        }
        let over = total / p.contention_onset_gbps - 1.0;
        let slowdown = if own < p.normal_bandwidth_gbps {
            let pressure = (total - p.contention_onset_gbps)
                / (p.memory_bandwidth_gbps - p.contention_onset_gbps);
            1.0 / (1.0 - p.minor_max_loss * pressure.min(1.0))
        } else {
            let ramp = ((own - p.normal_bandwidth_gbps)
                / (p.intensive_bandwidth_gbps - p.normal_bandwidth_gbps))
                .min(1.0);
            let weight = self.normal_floor_weight + (1.0 - self.normal_floor_weight) * ramp;
            1.0 + weight * over
        };
        let floor_cap = own.max(p.intensive_bandwidth_gbps) / p.min_achieved_bandwidth_gbps;
        slowdown.min(p.max_slowdown).min(floor_cap.max(1.0))
    }
}

/// Compute-sharing factor of every load: SM time-slicing per GPU, DLA fallback, and a
/// unit's own concurrent batches. Written into `out` in the order of `loads`.
pub fn compute_factors(loads: &[Load], out: &mut Vec<f64>) {
    out.clear();
    for load in loads {
        let same_unit = loads.iter().filter(|o| o.unit == load.unit).count() as f64;
        let sm_demand: f64 = match load.device {
            Some(device) => loads
                .iter()
                .filter(|o| o.device == Some(device))
                .map(|o| o.gpu_occupancy)
                .sum(),
            None => 0.0,
        };
        let sm_factor = sm_demand.max(1.0);
        let factor = if load.kind.uses_gpu_sms() {
            // SM time-slicing also covers a GPU unit's own streams (occupancy 1 each);
            // a unit that leaves SMs idle (occupancy < 1) overlaps its streams.
            sm_factor
        } else if load.device.is_some() && load.gpu_occupancy > 0.0 {
            let fallback = load.gpu_occupancy.min(1.0);
            (1.0 - fallback) * same_unit + fallback * sm_factor.max(same_unit)
        } else {
            same_unit
        };
        out.push(factor.max(1.0));
    }
}

impl ContentionModel for Pccs {
    fn name(&self) -> &'static str {
        "pccs"
    }

    fn slowdowns(&self, loads: &[Load], slowdowns: &mut Vec<f64>) {
        compute_factors(loads, slowdowns);
        let total: f64 = loads
            .iter()
            .zip(slowdowns.iter())
            .map(|(l, c)| l.bandwidth_gbps.max(0.0) / c)
            .sum();
        for (load, factor) in loads.iter().zip(slowdowns.iter_mut()) {
            let own = load.bandwidth_gbps.max(0.0) / *factor;
            *factor *= self.memory_slowdown(own, total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitKind;

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

    fn run(model: &Pccs, loads: &[Load]) -> Vec<f64> {
        let mut out = Vec::new();
        model.slowdowns(loads, &mut out);
        out
    }

    #[test]
    fn orin_parameters_are_the_xavier_fit_scaled() {
        let o = PccsParams::orin_agx();
        assert_eq!(o.normal_bandwidth_gbps, 56.4);
        assert_eq!(o.intensive_bandwidth_gbps, 98.6);
        assert_eq!(o.contention_onset_gbps, 124.2);
        assert_eq!(o.min_achieved_bandwidth_gbps, 67.5);
        o.validate().unwrap();
        PccsParams::xavier_agx().validate().unwrap();
        let mut bad = o;
        bad.contention_onset_gbps = 300.0;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("contention_onset_gbps"));
        bad = o;
        bad.intensive_bandwidth_gbps = 10.0;
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("intensive_bandwidth_gbps"));
    }

    #[test]
    fn a_unit_alone_below_the_onset_runs_at_full_speed() {
        let model = Pccs::new(PccsParams::orin_agx());
        for kind in [UnitKind::Cpu, UnitKind::Amp, UnitKind::Dla] {
            assert_eq!(run(&model, &[load(0, kind, 0.1, 120.0)]), vec![1.0]);
        }
    }

    #[test]
    fn the_three_regions_order_the_losses() {
        let model = Pccs::new(PccsParams::xavier_agx());
        let total = 120.0;
        let minor = model.memory_slowdown(20.0, total);
        let normal = model.memory_slowdown(50.0, total);
        let intensive = model.memory_slowdown(70.0, total);
        assert!(
            minor > 1.0 && minor <= 1.0 / (1.0 - 0.0372) + 1e-12,
            "{minor}"
        );
        assert!(
            normal > minor && intensive > normal,
            "{minor} {normal} {intensive}"
        );
        assert!((intensive - 120.0 / 82.8).abs() < 1e-12);
        // Minor units never lose more than the bound, however heavy the co-runners.
        assert!(model.memory_slowdown(20.0, 1000.0) <= 1.0 / (1.0 - 0.0372) + 1e-12);
        // A saturated unit keeps its floor: 70 GB/s never drops below 45 GB/s...
        assert!((model.memory_slowdown(70.0, 1000.0) - 70.0 / 45.0).abs() < 1e-12);
        // ...and no slowdown exceeds the cap.
        assert!((model.memory_slowdown(200.0, 1000.0) - 1.9).abs() < 1e-12);
    }

    #[test]
    fn normal_region_continues_the_minor_one_at_peak_demand() {
        let model = Pccs::new(PccsParams::xavier_agx());
        let below = model.memory_slowdown(37.59, 136.5);
        let above = model.memory_slowdown(37.61, 136.5);
        assert!((below - above).abs() < 1e-3, "{below} vs {above}");
    }

    #[test]
    fn gpu_units_time_slice_and_dla_fallback_occupies_the_gpu() {
        let model = Pccs::new(PccsParams::orin_agx());
        let out = run(
            &model,
            &[
                load(0, UnitKind::CudaFp32, 1.0, 0.0),
                load(1, UnitKind::TensorFp16, 1.0, 0.0),
                load(2, UnitKind::Dla, 0.1, 0.0),
                load(3, UnitKind::Cpu, 0.0, 0.0),
            ],
        );
        assert!((out[0] - 2.1).abs() < 1e-12 && (out[1] - 2.1).abs() < 1e-12);
        assert!((out[2] - (0.9 + 0.1 * 2.1)).abs() < 1e-12);
        assert_eq!(out[3], 1.0);
    }

    #[test]
    fn streams_of_one_unit_share_it() {
        let model = Pccs::new(PccsParams::orin_agx());
        let cpu = run(
            &model,
            &[
                load(0, UnitKind::Cpu, 0.0, 5.0),
                load(0, UnitKind::Cpu, 0.0, 5.0),
            ],
        );
        assert_eq!(cpu, vec![2.0, 2.0]);
        let dla = run(
            &model,
            &[
                load(4, UnitKind::Dla, 0.1, 5.0),
                load(4, UnitKind::Dla, 0.1, 5.0),
            ],
        );
        assert!((dla[0] - 2.0).abs() < 1e-12, "{dla:?}");
    }

    #[test]
    fn time_slicing_lowers_effective_demand() {
        // Two heavy GPU units on one device: alone each draws 100 GB/s; time-sliced,
        // each draws 50, total 100 < onset: no DRAM slowdown on top of the SM share.
        let model = Pccs::new(PccsParams::orin_agx());
        let out = run(
            &model,
            &[
                load(0, UnitKind::CudaFp32, 1.0, 100.0),
                load(1, UnitKind::Amp, 1.0, 100.0),
            ],
        );
        assert_eq!(out, vec![2.0, 2.0]);
        // The same demand from units on different resources does contend for DRAM.
        let out = run(
            &model,
            &[
                load(0, UnitKind::Amp, 1.0, 110.0),
                load(1, UnitKind::Cpu, 0.0, 40.0),
            ],
        );
        assert!(out[0] > 1.1 && out[1] > 1.0 && out[1] < 1.04, "{out:?}");
    }
}
