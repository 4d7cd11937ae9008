//! Stage profiles: what a block range costs on a unit, from the unit's whole-network
//! profile and the block table.
//!
//! The whole-network profile says how long a batch of the full network takes on a unit
//! (measured, or calibrated from published figures). A stage runs only some blocks; its
//! share of that time is each block's roofline time `flops / F + bytes / B` normalized
//! over the network, where `F / B` is the unit's machine balance (peak arithmetic over
//! DRAM bandwidth, FLOP per byte) and `bytes` the activations the block reads and
//! writes at the unit's precision. High-resolution early blocks move more bytes per
//! FLOP, so on a unit with a high balance (Tensor Cores, DLA) they take a larger share
//! of the time than of the FLOPs — the effect the pipelining paper's per-layer profiles
//! show (JEDI, ACM TECS 2022). Balances are estimates, stated with `balance_for`.
//!
//! A stage pays the profile's fixed per-batch overhead (launch, synchronization) once
//! per batch: splitting a network into more stages costs more hand-offs.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::blocks::BlockTable;
use mica_core::profile::Profile;
use mica_core::unit::UnitKind;

/// GPU SM share a DLA stage without the head keeps busy: the reformatting layers at the
/// DLA/GPU boundary only (estimate; the whole-network DLA profile's larger share pays
/// for the head's fallback, which a DLA stage never holds).
pub const DLA_BOUNDARY_OCCUPANCY: f64 = 0.02;

/// Machine balance of a unit kind, FLOP per byte of DRAM traffic, and bytes per
/// activation element. Estimates: Orin's GPU does ~5.3 TFLOP/s FP32 on 204.8 GB/s
/// (≈ 26 FLOP/B, CALIBRATION.md); Tensor Cores ~4x that arithmetic; a DLA core
/// (FP16/INT8 MAC arrays fed through DRAM, CALIBRATION.md) sits between; the 12 Arm
/// cores reach a few hundred GFLOP/s (≈ 2 FLOP/B).
pub fn balance_for(kind: UnitKind) -> (f64, f64) {
    match kind {
        UnitKind::Cpu => (2.0, 4.0),
        UnitKind::CudaFp32 => (26.0, 4.0),
        UnitKind::CudaTf32 => (52.0, 4.0),
        UnitKind::TensorFp16 | UnitKind::TensorBf16 | UnitKind::Amp => (100.0, 2.0),
        UnitKind::Dla => (50.0, 2.0),
    }
}

/// The share of the whole network's time each block takes on one unit kind, and the
/// bytes each block boundary hands on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProfile {
    /// Unit kind the shares are for.
    pub kind: UnitKind,
    /// Share of the whole-network time per block (sums to 1).
    pub fractions: Vec<f64>,
    /// Bytes per image of each block's output at the unit's precision.
    pub output_bytes: Vec<f64>,
}

impl StageProfile {
    /// The shares of `table`'s blocks on a unit of `kind`.
    pub fn new(table: &BlockTable, kind: UnitKind) -> Self {
        let (balance, element_bytes) = balance_for(kind);
        let costs: Vec<f64> = table
            .blocks
            .iter()
            .map(|b| {
                let bytes = (b.input_elems + b.output_elems) as f64 * element_bytes;
                b.flops + balance * bytes
            })
            .collect();
        let total: f64 = costs.iter().sum();
        Self {
            kind,
            fractions: costs
                .iter()
                .map(|c| c / total.max(f64::MIN_POSITIVE))
                .collect(),
            output_bytes: table
                .blocks
                .iter()
                .map(|b| b.output_elems as f64 * element_bytes)
                .collect(),
        }
    }

    /// Share of the whole network's time the blocks of `range` take.
    pub fn fraction(&self, range: Range<usize>) -> f64 {
        self.fractions.get(range).map_or(0.0, |f| f.iter().sum())
    }
}

/// Cost of one stage (a block range) on one unit, derived from the unit's profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageCost {
    /// Fixed part per batch, ms: the profile's overhead (not slowed by contention).
    pub overhead_ms: f64,
    /// Compute part per batch when alone, ms (slowed by contention).
    pub compute_ms: f64,
    /// GPU SM share while computing.
    pub gpu_occupancy: f64,
    /// DRAM bandwidth drawn while computing, GB/s.
    pub bandwidth_gbps: f64,
}

impl StageCost {
    /// The cost of `range` at `batch` on a unit with this profile and stage profile.
    pub fn new(profile: &Profile, shares: &StageProfile, range: Range<usize>, batch: u32) -> Self {
        let whole = (profile.latency_ms(batch) - profile.overhead_ms).max(0.0);
        let gpu_occupancy = if shares.kind == UnitKind::Dla {
            profile.gpu_occupancy.min(DLA_BOUNDARY_OCCUPANCY)
        } else {
            profile.gpu_occupancy
        };
        Self {
            overhead_ms: profile.overhead_ms,
            compute_ms: whole * shares.fraction(range),
            gpu_occupancy,
            bandwidth_gbps: profile.bandwidth_gbps(batch),
        }
    }

    /// Isolated time of one batch, ms.
    pub fn total_ms(&self) -> f64 {
        self.overhead_ms + self.compute_ms
    }
}

/// A profile for one stage: the unit's profile with every point's latency scaled to
/// the stage's share (overhead kept whole, DLA occupancy cut to the boundary share).
/// What a `sim` engine emulates when it runs a stage.
pub fn stage_unit_profile(
    profile: &Profile,
    shares: &StageProfile,
    range: Range<usize>,
) -> Profile {
    let fraction = shares.fraction(range.clone());
    let mut out = profile.clone();
    out.source = format!(
        "stage {}..{} ({:.1} % of the whole network's time on {}) of: {}",
        range.start,
        range.end,
        100.0 * fraction,
        shares.kind,
        profile.source
    );
    if shares.kind == UnitKind::Dla {
        out.gpu_occupancy = profile.gpu_occupancy.min(DLA_BOUNDARY_OCCUPANCY);
    }
    for point in &mut out.points {
        point.latency_ms = (point.latency_ms * fraction).max(1e-6);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_one_and_early_blocks_cost_more_on_high_balance_units() {
        let table = BlockTable::resnet50();
        let fp32 = StageProfile::new(&table, UnitKind::CudaFp32);
        let dla = StageProfile::new(&table, UnitKind::Dla);
        for p in [&fp32, &dla] {
            assert!((p.fraction(0..18) - 1.0).abs() < 1e-12);
        }
        let flop_share = table.blocks[0].flops / table.total_flops();
        assert!(dla.fractions[0] > flop_share);
        let fp16 = StageProfile::new(&table, UnitKind::TensorFp16);
        assert!(fp16.fraction(0..4) > fp32.fraction(0..4));
        assert_eq!(fp32.output_bytes[0], (64 * 56 * 56 * 4) as f64);
    }
}
