//! `weighted`: static shares proportional to isolated throughput.
//!
//! Every healthy unit gets a weight, its isolated throughput at the batch it would run
//! (from its profile; its measured rate when it has none; the mean of the known weights
//! while it has neither, so that it gets measured). Batches are handed out by smooth
//! weighted round robin (nginx's SWRR, as in Triton's and Envoy's weighted balancers):
//! at each dispatch every healthy unit's credit grows by its weight, the ready unit with
//! the most credit gets the batch and pays the total weight. Over any window a unit's
//! share of batches tracks its weight, interleaved rather than in bursts, and the order
//! is fully deterministic. A unit that is busy keeps accumulating credit (bounded), so
//! it is served first when it frees.
//!
//! Use it as the "static but speed-aware" baseline: better than `round_robin` when
//! units differ in speed and the load is below capacity; it has no model of contention
//! and never leaves a unit idle on purpose.

use mica_core::policy::{Decision, Policy};
use mica_core::view::{ClusterView, QueueView, UnitView};

/// Credit is clamped to this many times the total weight, so a unit that stays busy for
/// long does not bank an unbounded claim.
const CREDIT_BOUND: f64 = 2.0;

/// Smooth weighted round robin over isolated throughputs.
#[derive(Debug, Default, Clone)]
pub struct Weighted {
    credit: Vec<f64>,
    weights: Vec<f64>,
}

impl Weighted {
    /// A policy with no credit yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The weight of every unit for a batch taken from `queue` now (0 for unhealthy
    /// units).
    fn compute_weights(&mut self, view: &ClusterView, queue: &QueueView<'_>) {
        self.weights.clear();
        self.weights
            .extend(view.units.iter().map(|u| isolated_rate(u, queue)));
        let known: Vec<f64> = self
            .weights
            .iter()
            .zip(&view.units)
            .filter(|(w, u)| u.healthy && **w > 0.0)
            .map(|(w, _)| *w)
            .collect();
        let fallback = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        for (weight, unit) in self.weights.iter_mut().zip(&view.units) {
            if !unit.healthy {
                *weight = 0.0;
            } else if *weight <= 0.0 {
                *weight = fallback;
            }
        }
    }
}

/// Isolated throughput of a unit at the batch it would get, images per second.
fn isolated_rate(unit: &UnitView, queue: &QueueView<'_>) -> f64 {
    let images = queue.target_batch(unit.max_batch);
    let per_stream = match &unit.profile {
        Some(profile) => profile.throughput(images),
        None => unit.recent_throughput_img_s / f64::from(unit.streams.max(1)),
    };
    per_stream * f64::from(unit.streams.max(1))
}

impl Policy for Weighted {
    fn name(&self) -> &'static str {
        "weighted"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        if queue.requests == 0 || view.ready_units().next().is_none() {
            return Decision::Wait { until: None };
        }
        self.credit.resize(view.units.len(), 0.0);
        self.compute_weights(view, queue);
        let total: f64 = self.weights.iter().sum();
        let bound = CREDIT_BOUND * total;
        for (credit, weight) in self.credit.iter_mut().zip(&self.weights) {
            *credit = (*credit + weight).clamp(-bound, bound);
        }
        let mut best: Option<usize> = None;
        for index in view.ready_units() {
            if best.is_none_or(|b| self.credit[index] > self.credit[b]) {
                best = Some(index);
            }
        }
        let Some(unit) = best else {
            return Decision::Wait { until: None };
        };
        self.credit[unit] -= total;
        Decision::Dispatch {
            unit,
            images: queue.target_batch(view.units[unit].max_batch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, unit};

    #[test]
    fn shares_follow_isolated_throughput() {
        // Unit a is three times as fast as b: of every four batches, a gets three.
        let view = cluster(vec![unit("a", 10.0, 8), unit("b", 30.0, 8)]);
        let queue = QueueView {
            requests: 100,
            images: 800,
            head: &[],
            fixed_batch: None,
        };
        let mut policy = Weighted::new();
        let mut counts = [0; 2];
        let mut order = Vec::new();
        for _ in 0..40 {
            match policy.decide(&view, &queue) {
                Decision::Dispatch { unit, images } => {
                    assert_eq!(images, 8);
                    counts[unit] += 1;
                    order.push(unit);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(counts, [30, 10]);
        // Smooth: never more than three of a in a row.
        assert!(!order.windows(4).any(|w| w.iter().all(|u| *u == 0)));
    }

    #[test]
    fn skips_units_that_cannot_take_a_batch() {
        let mut busy = unit("a", 1.0, 8);
        busy.free_streams = 0;
        let mut sick = unit("b", 1.0, 8);
        sick.healthy = false;
        let view = cluster(vec![busy, sick, unit("c", 100.0, 8)]);
        let queue = QueueView {
            requests: 1,
            images: 1,
            head: &[],
            fixed_batch: None,
        };
        let mut policy = Weighted::new();
        for _ in 0..5 {
            assert_eq!(
                policy.decide(&view, &queue),
                Decision::Dispatch { unit: 2, images: 8 }
            );
        }
    }
}
