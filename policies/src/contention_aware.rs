//! `contention_aware`: active-set selection and placement under a contention model.
//!
//! The policy predicts every unit's slowdown from the set of units running beside it,
//! with the platform's contention model (PCCS on the Jetsons: SM sharing on a GPU, DLA
//! fallback on the GPU, three-region DRAM contention; see `pccs.rs`). Two decisions:
//!
//! - **Active set.** For every subset of the healthy profiled units (all 2^n − 1 of
//!   them for n ≤ 8 units, a greedy removal search above that) it predicts the system
//!   throughput with every unit of the subset busy on all its streams — Σ isolated rate
//!   / predicted slowdown — and keeps the best subset. A unit outside it is left idle
//!   on purpose: running it would cost the others more than it adds (the seed paper's
//!   CUDA + Tensor + DLA at batch 64). The search runs when the units' health,
//!   profiles, streams or batch limits change, not per batch.
//! - **Placement and batch size.** Of the active units that can take a batch now, the
//!   batch goes to the one whose start maximizes the predicted system throughput given
//!   what is already running, at the unit's throughput-optimal batch size (the fixed
//!   batch when there is one). When no active unit is free, the policy waits for one.
//!
//! Units without a profile cannot be predicted: they are always active, their measured
//! rate stands in, and one that has never run gets the next batch so it gets measured.
//! Use this policy when profiles exist and units contend (Jetsons, several precisions on
//! one GPU). The approach follows HaX-CoNN (Dagli & Belviranli, PPoPP 2024), which uses
//! PCCS to decide what runs concurrently on a Jetson's GPU and DLAs; here the unit of
//! decision is a batch rather than a layer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use mica_core::contention::{ContentionConfig, ContentionModel, Load};
use mica_core::pccs::PccsParams;
use mica_core::policy::{Decision, Policy};
use mica_core::profile::Profile;
use mica_core::unit::UnitId;
use mica_core::view::{ClusterView, QueueView, UnitView};

/// Subsets are enumerated exhaustively up to this many profiled units.
const EXHAUSTIVE_UNITS: usize = 8;

/// The default contention model when none is configured: the calibrated Orin platform.
pub fn default_contention() -> ContentionConfig {
    ContentionConfig::Pccs(PccsParams::orin_agx())
}

/// The parameters of `policy = { type = "contention_aware", ... }`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentionAwareSettings {
    /// Contention model to predict with; absent: the platform's (see
    /// `PolicyConfig::resolve_contention`), else the calibrated Orin PCCS model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contention: Option<ContentionConfig>,
}

impl ContentionAwareSettings {
    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        match &self.contention {
            Some(c) => c.validate().map_err(|e| format!("contention: {e}")),
            None => Ok(()),
        }
    }
}

/// What the active set was computed for; a change triggers a new search.
#[derive(Debug, Clone, PartialEq)]
struct PlanKey {
    healthy: bool,
    profile: usize,
    streams: u32,
    max_batch: u32,
    fixed: Option<u32>,
}

#[derive(Debug, Clone, Default)]
struct Plan {
    key: Vec<PlanKey>,
    active: Vec<bool>,
    batch: Vec<u32>,
    predicted_img_s: f64,
}

/// Contention-aware active-set selection and placement.
#[derive(Debug)]
pub struct ContentionAware {
    config: ContentionConfig,
    /// The unit ids the model was built for (a calibrated model's terms are per id).
    ids: Vec<UnitId>,
    model: Box<dyn ContentionModel>,
    plan: Plan,
    loads: Vec<Load>,
    rates: Vec<f64>,
    slowdowns: Vec<f64>,
}

impl ContentionAware {
    /// A policy predicting with this contention model.
    pub fn new(contention: &ContentionConfig) -> Self {
        Self {
            config: contention.clone(),
            ids: Vec::new(),
            model: contention.build(),
            plan: Plan::default(),
            loads: Vec::new(),
            rates: Vec::new(),
            slowdowns: Vec::new(),
        }
    }

    /// The active set chosen for this view (true = may get batches) and its predicted
    /// system throughput, images per second.
    pub fn active_set(&mut self, view: &ClusterView, fixed: Option<u32>) -> (Vec<bool>, f64) {
        self.refresh_plan(view, fixed);
        (self.plan.active.clone(), self.plan.predicted_img_s)
    }

    fn refresh_plan(&mut self, view: &ClusterView, fixed: Option<u32>) {
        if self.ids.len() != view.units.len()
            || self.ids.iter().zip(&view.units).any(|(id, u)| *id != u.id)
        {
            self.ids = view.units.iter().map(|u| u.id.clone()).collect();
            self.model = self.config.build_for(&self.ids);
            self.plan = Plan::default();
        }
        let key: Vec<PlanKey> = view
            .units
            .iter()
            .map(|u| PlanKey {
                healthy: u.healthy,
                profile: u
                    .profile
                    .as_ref()
                    .map_or(0, |p| std::sync::Arc::as_ptr(p) as usize),
                streams: u.streams,
                max_batch: u.max_batch,
                fixed,
            })
            .collect();
        if key == self.plan.key && !key.is_empty() {
            return;
        }
        let batch: Vec<u32> = view.units.iter().map(|u| plan_batch(u, fixed)).collect();
        let candidates: Vec<usize> = (0..view.units.len())
            .filter(|&i| view.units[i].healthy && view.units[i].profile.is_some())
            .collect();
        let mut best = (Vec::new(), 0.0);
        if candidates.len() <= EXHAUSTIVE_UNITS {
            for mask in 1u32..(1u32 << candidates.len()) {
                let subset: Vec<usize> = candidates
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| mask & (1 << bit) != 0)
                    .map(|(_, &i)| i)
                    .collect();
                let rate = self.predict_all_busy(view, &subset, &batch);
                if rate > best.1 + 1e-9 {
                    best = (subset, rate);
                }
            }
        } else {
            let mut subset = candidates.clone();
            let mut rate = self.predict_all_busy(view, &subset, &batch);
            loop {
                let mut improved = None;
                for drop in 0..subset.len() {
                    let mut smaller = subset.clone();
                    smaller.remove(drop);
                    let r = self.predict_all_busy(view, &smaller, &batch);
                    if r > improved.map_or(rate, |(_, best)| best) + 1e-9 {
                        improved = Some((drop, r));
                    }
                }
                match improved {
                    Some((drop, r)) if subset.len() > 1 => {
                        subset.remove(drop);
                        rate = r;
                    }
                    _ => break,
                }
            }
            best = (subset, rate);
        }
        let mut active: Vec<bool> = view
            .units
            .iter()
            .map(|u| u.healthy && u.profile.is_none())
            .collect();
        for &i in &best.0 {
            active[i] = true;
        }
        self.plan = Plan {
            key,
            active,
            batch,
            predicted_img_s: best.1,
        };
    }

    /// Predicted throughput of `subset` with every stream of every unit busy.
    fn predict_all_busy(&mut self, view: &ClusterView, subset: &[usize], batch: &[u32]) -> f64 {
        self.loads.clear();
        self.rates.clear();
        for &i in subset {
            let unit = &view.units[i];
            let Some(profile) = &unit.profile else {
                continue;
            };
            let streams = unit.streams.max(1);
            let load = load_of(i, unit, profile, batch[i]);
            // A solo rate measured by `mica calibrate` at this batch stands in for the
            // profile's, so that the set is predicted as the fit predicted its runs
            // (alone × slowdown alone / slowdown in the set) and the fit's held-out
            // error is this prediction's error.
            let rate = match self.model.measured_img_s(&[i], batch[i]) {
                Some(measured) => {
                    let alone = vec![load; streams as usize];
                    self.model.slowdowns(&alone, &mut self.slowdowns);
                    let slowdown =
                        self.slowdowns.iter().map(|s| s.max(1.0)).sum::<f64>() / f64::from(streams);
                    measured / f64::from(streams) * slowdown
                }
                None => profile.throughput(batch[i]),
            };
            for _ in 0..streams {
                self.loads.push(load);
                self.rates.push(rate);
            }
        }
        // A set measured together (by `mica calibrate`) at the batch it would run is
        // taken as measured; a set nobody measured is discounted by the model's held-out
        // error, so that where the model is unsure a measured set wins.
        if let Some(&first) = subset.first() {
            let b = batch[first];
            if subset.iter().all(|&i| batch[i] == b) {
                if let Some(measured) = self.model.measured_img_s(subset, b) {
                    return measured;
                }
            }
        }
        self.model.slowdowns(&self.loads, &mut self.slowdowns);
        let predicted: f64 = self
            .rates
            .iter()
            .zip(&self.slowdowns)
            .map(|(r, s)| r / s.max(1.0))
            .sum();
        if subset.len() >= 2 {
            predicted * (1.0 - self.model.uncertainty().clamp(0.0, 0.5))
        } else {
            predicted
        }
    }

    /// Loads of the batches running now, with their isolated rates.
    fn running_loads(&mut self, view: &ClusterView) {
        self.loads.clear();
        self.rates.clear();
        for (i, unit) in view.units.iter().enumerate() {
            if unit.in_flight_batches == 0 {
                continue;
            }
            let batch = (unit.in_flight_images / unit.in_flight_batches).max(1);
            for _ in 0..unit.in_flight_batches {
                let (load, rate) = running_load(i, unit, batch);
                self.loads.push(load);
                self.rates.push(rate);
            }
        }
    }

    /// Predicted slowdown (≥ 1) of a batch of `images` started on `unit` now, beside the
    /// batches running there already.
    pub fn slowdown_if_started(&mut self, view: &ClusterView, unit: usize, images: u32) -> f64 {
        self.running_loads(view);
        let (load, rate) = running_load(unit, &view.units[unit], images);
        self.loads.push(load);
        self.rates.push(rate);
        self.model.slowdowns(&self.loads, &mut self.slowdowns);
        self.slowdowns.last().copied().unwrap_or(1.0).max(1.0)
    }

    /// Predicted system throughput if a batch of `images` started on `unit` now.
    fn rate_with(&mut self, view: &ClusterView, unit: usize, images: u32) -> f64 {
        self.running_loads(view);
        let (load, rate) = running_load(unit, &view.units[unit], images);
        self.loads.push(load);
        self.rates.push(rate);
        self.model.slowdowns(&self.loads, &mut self.slowdowns);
        self.rates
            .iter()
            .zip(&self.slowdowns)
            .map(|(r, s)| r / s.max(1.0))
            .sum()
    }
}

/// The batch a unit runs in the plan: the fixed batch, else its throughput-optimal size.
fn plan_batch(unit: &UnitView, fixed: Option<u32>) -> u32 {
    let max_batch = unit.max_batch.max(1);
    if let Some(n) = fixed {
        return n.clamp(1, max_batch);
    }
    match &unit.profile {
        Some(profile) => best_batch_up_to(profile, max_batch),
        None => max_batch,
    }
}

/// The profile's best batch among its points up to `max_batch` and `max_batch` itself.
fn best_batch_up_to(profile: &Profile, max_batch: u32) -> u32 {
    profile
        .points
        .iter()
        .map(|p| p.batch)
        .filter(|b| *b <= max_batch)
        .chain(std::iter::once(max_batch))
        .fold((max_batch, f64::MIN), |(best, rate), b| {
            let r = profile.throughput(b);
            if r > rate + 1e-9 {
                (b, r)
            } else {
                (best, rate)
            }
        })
        .0
}

fn load_of(index: usize, unit: &UnitView, profile: &Profile, batch: u32) -> Load {
    Load {
        unit: index,
        kind: unit.kind,
        device: unit.device,
        gpu_occupancy: profile.gpu_occupancy,
        bandwidth_gbps: profile.bandwidth_gbps(batch),
        images: batch,
    }
}

/// The load and isolated per-stream rate of a batch on a unit, profile or not.
fn running_load(index: usize, unit: &UnitView, batch: u32) -> (Load, f64) {
    match &unit.profile {
        Some(profile) => (
            load_of(index, unit, profile, batch),
            profile.throughput(batch),
        ),
        None => (
            Load {
                unit: index,
                kind: unit.kind,
                device: unit.device,
                gpu_occupancy: if unit.kind.uses_gpu_sms() { 1.0 } else { 0.0 },
                bandwidth_gbps: 0.0,
                images: batch,
            },
            unit.recent_throughput_img_s / f64::from(unit.streams.max(1)),
        ),
    }
}

impl Policy for ContentionAware {
    fn name(&self) -> &'static str {
        "contention_aware"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        if queue.requests == 0 {
            return Decision::Wait { until: None };
        }
        self.refresh_plan(view, queue.fixed_batch);
        let mut best: Option<(usize, u32, f64)> = None;
        let mut next_free: Option<Duration> = None;
        for (index, unit) in view.units.iter().enumerate() {
            if !unit.healthy || !self.plan.active[index] {
                continue;
            }
            if !unit.can_take_batch() {
                next_free = Some(next_free.map_or(unit.next_free_at, |t| t.min(unit.next_free_at)));
                continue;
            }
            let images = queue
                .target_batch(unit.max_batch)
                .min(self.plan.batch[index].max(1));
            let score = if unit.profile.is_none() && unit.completed_batches == 0 {
                f64::INFINITY
            } else {
                self.rate_with(view, index, images)
            };
            if best.is_none_or(|(_, _, s)| score > s) {
                best = Some((index, images, score));
            }
        }
        match best {
            Some((unit, images, _)) => Decision::Dispatch { unit, images },
            None => Decision::Wait {
                until: next_free.filter(|t| *t > view.now),
            },
        }
    }

    fn predicted_slowdowns(&self, view: &ClusterView) -> Option<Vec<f64>> {
        let mut loads = Vec::new();
        for (i, unit) in view.units.iter().enumerate() {
            let batch = unit
                .in_flight_images
                .checked_div(unit.in_flight_batches)
                .map_or_else(
                    || self.plan.batch.get(i).copied().unwrap_or(1),
                    |b| b.max(1),
                );
            for _ in 0..unit.in_flight_batches {
                loads.push(running_load(i, unit, batch).0);
            }
        }
        let mut out = vec![1.0; view.units.len()];
        let mut slowdowns = Vec::new();
        for (i, unit) in view.units.iter().enumerate() {
            let mut with = loads.clone();
            if unit.in_flight_batches == 0 {
                // An idle unit: the slowdown it would see if it started a batch now.
                let batch = self.plan.batch.get(i).copied().unwrap_or(1);
                with.push(running_load(i, unit, batch).0);
            }
            self.model.slowdowns(&with, &mut slowdowns);
            if let Some(position) = with.iter().position(|l| l.unit == i) {
                out[i] = slowdowns[position].max(1.0);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, linear_profile, unit_of};
    use mica_core::unit::UnitKind;

    fn queue(fixed: Option<u32>) -> QueueView<'static> {
        QueueView {
            requests: 1000,
            images: 64_000,
            head: &[],
            fixed_batch: fixed,
        }
    }

    /// With a calibrated model the measured sets win over predictions: two CPU units
    /// the base model thinks independent measured worse together than one alone, and a
    /// set nobody measured is discounted by the held-out error.
    #[test]
    fn prefers_the_measured_best_set_over_a_prediction() {
        use mica_core::pairwise::{CalibratedParams, MeasuredSet};
        let a = unit_of("a", UnitKind::Cpu, linear_profile(10.0, 0.0, 0.0), 8);
        let b = unit_of("b", UnitKind::Cpu, linear_profile(10.0, 0.0, 0.0), 8);
        let view = cluster(vec![a, b]);
        let set = |units: &[&str], img_s: f64| MeasuredSet {
            units: units.iter().map(|u| u.to_string()).collect(),
            batch: 8,
            img_s,
        };
        let calibrated = |measured: Vec<MeasuredSet>, held_out_error: f64| {
            ContentionConfig::Calibrated(CalibratedParams {
                base: Box::new(ContentionConfig::None),
                pairs: Vec::new(),
                held_out_error,
                measured,
            })
        };
        // Uncalibrated: both units, 200 img/s predicted.
        let mut policy = ContentionAware::new(&ContentionConfig::None);
        assert_eq!(policy.active_set(&view, Some(8)).0, vec![true, true]);
        // Measured: the pair delivers 90, a alone 100.
        let config = calibrated(
            vec![
                set(&["a"], 100.0),
                set(&["b"], 95.0),
                set(&["a", "b"], 90.0),
            ],
            0.05,
        );
        let mut policy = ContentionAware::new(&config);
        let (active, predicted) = policy.active_set(&view, Some(8));
        assert_eq!(active, vec![true, false]);
        assert_eq!(predicted, 100.0);
        // The pair unmeasured: predicted 200 discounted by 5 % still wins.
        let mut policy = ContentionAware::new(&calibrated(vec![set(&["a"], 100.0)], 0.05));
        let (active, predicted) = policy.active_set(&view, Some(8));
        assert_eq!(active, vec![true, true]);
        assert!((predicted - 190.0).abs() < 1e-9, "{predicted}");
        // Solo rates measured on this machine stand in for the profiles' (100 each):
        // the unmeasured pair is predicted from 20 + 150, discounted by 5 %.
        let config = calibrated(vec![set(&["a"], 20.0), set(&["b"], 150.0)], 0.05);
        let mut policy = ContentionAware::new(&config);
        let (active, predicted) = policy.active_set(&view, Some(8));
        assert_eq!(active, vec![true, true]);
        assert!((predicted - 161.5).abs() < 1e-9, "{predicted}");
    }

    #[test]
    fn leaves_a_unit_idle_when_it_costs_more_than_it_adds() {
        // Two GPU units on one device: time-sliced, together they deliver the average
        // of their rates, so only the faster one should run. The DLA (small fallback
        // share) adds more than it costs.
        let fast = unit_of(
            "fast",
            UnitKind::TensorFp16,
            linear_profile(1.0, 1.0, 0.0),
            64,
        );
        let slow = unit_of(
            "slow",
            UnitKind::CudaFp32,
            linear_profile(2.5, 1.0, 0.0),
            64,
        );
        let dla = unit_of("dla", UnitKind::Dla, linear_profile(10.0, 0.05, 0.0), 64);
        let view = cluster(vec![slow, fast, dla]);
        let mut policy = ContentionAware::new(&default_contention());
        let (active, predicted) = policy.active_set(&view, Some(8));
        assert_eq!(active, vec![false, true, true]);
        let expected = 1000.0 / 1.05 + 100.0 / (0.95 + 0.05 * 1.05);
        assert!(
            (predicted - expected).abs() < 1e-6,
            "{predicted} vs {expected}"
        );
        // The first batch goes to the unit whose start adds the most.
        assert_eq!(
            policy.decide(&view, &queue(Some(8))),
            Decision::Dispatch { unit: 1, images: 8 }
        );
    }

    #[test]
    fn waits_for_an_active_unit_rather_than_use_an_idle_inactive_one() {
        let mut fast = unit_of(
            "fast",
            UnitKind::TensorFp16,
            linear_profile(1.0, 1.0, 0.0),
            64,
        );
        fast.free_streams = 0;
        fast.in_flight_batches = 1;
        fast.in_flight_images = 8;
        fast.next_free_at = Duration::from_millis(5);
        let slow = unit_of(
            "slow",
            UnitKind::CudaFp32,
            linear_profile(2.5, 1.0, 0.0),
            64,
        );
        let view = cluster(vec![fast, slow]);
        let mut policy = ContentionAware::new(&default_contention());
        assert_eq!(
            policy.decide(&view, &queue(Some(8))),
            Decision::Wait {
                until: Some(Duration::from_millis(5))
            }
        );
        let slowdowns = policy.predicted_slowdowns(&view).unwrap();
        assert_eq!(slowdowns, vec![1.0, 2.0]);
    }

    #[test]
    fn picks_the_throughput_optimal_batch_when_batching_is_dynamic() {
        // A CPU-like unit whose per-image cost grows with batch size: batch 1 is best.
        let mut profile = linear_profile(10.0, 0.0, 0.0);
        profile.points[1].latency_ms = 64.0 * 12.0;
        let cpu = unit_of("cpu", UnitKind::Cpu, profile, 64);
        let view = cluster(vec![cpu]);
        let mut policy = ContentionAware::new(&default_contention());
        assert_eq!(
            policy.decide(&view, &queue(None)),
            Decision::Dispatch { unit: 0, images: 1 }
        );
    }
}
