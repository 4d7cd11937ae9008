//! `slo`: deadline-driven placement with shedding.
//!
//! Every request may carry a deadline (`WaitingRequest::deadline`, set by the
//! dispatcher from a per-request timeout or its priority class). At each decision:
//!
//! 1. **Shed the hopeless.** A request of the head whose deadline cannot be met on any
//!    healthy unit — even alone in a batch, starting as soon as the unit frees — is
//!    shed (`Decision::Shed`); the dispatcher answers it with an error and counts it.
//!    Serving it would only make the requests behind it late too.
//!    Under backlog (two full batches queued for the most capable active unit), requests
//!    at the head that such a full batch, started when that unit frees, would make late
//!    are shed too, so batches stay efficient instead of shrinking to fit the tightest
//!    deadline.
//! 2. **Earliest deadline first.** The batch at the front is sized for the earliest
//!    deadline among the requests it would carry: whole requests are added while the
//!    batch still finishes before the tightest deadline among them.
//! 3. **Least cost.** Of the active units that can take the batch now and meet that
//!    deadline, the batch goes to the one that spends the least of its capacity per image —
//!    predicted service time × the unit's best throughput / images (1.0 for a unit at
//!    its most efficient batch) — ties going to the less capable unit, so fast units
//!    stay free for tight deadlines. If only a busy unit can meet the deadline, the
//!    policy waits for it.
//!
//! Only units in the contention model's active set (`contention_aware`'s selection: a
//! unit that costs its co-runners more than it adds stays idle) get batches, and a
//! batch's predicted service time is its profile's (measured rate without one) times
//! the slowdown the model predicts beside the batches already running, times
//! `latency_margin` for jitter. Without the model the policy spread work over every
//! unit, the contention slowed the fast ones, and it missed 13 % of deadlines at two
//! thirds of capacity where `least_loaded` missed none. The queue itself is FIFO per
//! priority level (the scheduler's discipline), which is EDF when requests of one level
//! share their timeout. Use it for latency-critical serving with a load that may exceed capacity.
//! EDF is Liu & Layland (JACM 1973); shedding requests that cannot meet their deadline
//! follows Clipper (Crankshaw et al., NSDI 2017) and Clockwork (Gujarati et al., OSDI
//! 2020), which reject work that would miss its SLO instead of serving it late.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contention_aware::{default_contention, ContentionAware};
use mica_core::contention::ContentionConfig;
use mica_core::policy::{Decision, Policy};
use mica_core::view::{ClusterView, QueueView, UnitView};

/// Knobs of the policy: the parameters of `policy = { type = "slo", ... }`, each
/// defaulted when left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloSettings {
    /// Factor applied to predicted service times to cover contention and jitter (≥ 1).
    pub latency_margin: f64,
    /// Requests at the head of the queue examined for shedding and batching per decision.
    pub max_scan: usize,
    /// Contention model for the active set and for slowdowns of co-running batches;
    /// absent: the platform's (see `PolicyConfig::resolve_contention`), else the
    /// calibrated Orin PCCS model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contention: Option<ContentionConfig>,
}

impl Default for SloSettings {
    fn default() -> Self {
        Self {
            latency_margin: 1.1,
            max_scan: 64,
            contention: None,
        }
    }
}

impl SloSettings {
    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(c) = &self.contention {
            c.validate().map_err(|e| format!("contention: {e}"))?;
        }
        if !(self.latency_margin.is_finite() && self.latency_margin >= 1.0) {
            return Err(format!(
                "latency_margin must be at least 1, got {}",
                self.latency_margin
            ));
        }
        if self.max_scan == 0 {
            return Err("max_scan must be at least 1".into());
        }
        Ok(())
    }
}

/// Deadline-driven placement.
#[derive(Debug)]
pub struct Slo {
    settings: SloSettings,
    /// Active set and co-runner slowdowns under the platform's contention model.
    contention: ContentionAware,
    /// (images, earliest finish on any unit) for the sizes seen in this decision.
    finish_cache: Vec<(u32, Option<Duration>)>,
}

impl Slo {
    /// The policy with these settings, predicting contention with their model (the
    /// calibrated Orin model when they name none).
    pub fn new(settings: SloSettings) -> Self {
        let contention = settings
            .contention
            .clone()
            .unwrap_or_else(default_contention);
        Self {
            settings,
            contention: ContentionAware::new(&contention),
            finish_cache: Vec::new(),
        }
    }

    /// Predicted service time of `images` on `unit` running alone, margin included.
    fn service(&self, unit: &UnitView, images: u32) -> Option<Duration> {
        unit.predicted_latency(images)
            .map(|d| mica_core::time::scale(d, self.settings.latency_margin.max(1.0)))
    }

    /// Earliest time a batch of `images` could finish on any healthy unit.
    fn earliest_finish(&mut self, view: &ClusterView, images: u32) -> Option<Duration> {
        if let Some((_, finish)) = self.finish_cache.iter().find(|(n, _)| *n == images) {
            return *finish;
        }
        let finish = view
            .units
            .iter()
            .filter(|u| u.healthy)
            .filter_map(|u| {
                let images = images.min(u.max_batch.max(1));
                Some(u.next_free_at.max(view.now) + self.service(u, images)?)
            })
            .min();
        self.finish_cache.push((images, finish));
        finish
    }

    /// The largest batch from the front that `unit` can run now and still meet the
    /// tightest deadline it carries: (images, predicted finish). `None` if not even
    /// the front request fits.
    /// `slowdown` stretches the isolated service time for the batches it would run beside.
    fn feasible_batch(
        &self,
        view: &ClusterView,
        unit: &UnitView,
        queue: &QueueView<'_>,
        slowdown: f64,
    ) -> Option<(u32, Duration)> {
        let limit = queue.batch_for(unit.max_batch);
        if self.service(unit, 1).is_none() {
            // Nothing predicts this unit (no profile, nothing measured yet), so no
            // deadline can be checked against it; it gets the front request to be
            // measured, or it would never be and the queue would wait for ever.
            let images = match queue.head.first() {
                Some(front) if queue.fixed_batch.is_none() => front.images.min(limit),
                _ => limit,
            };
            return Some((images.max(1), view.now));
        }
        let service = |images| {
            self.service(unit, images)
                .map(|d| mica_core::time::scale(d, slowdown))
        };
        if queue.head.is_empty() || queue.fixed_batch.is_some() {
            // No per-request view, or a fixed size: the batch is what it is.
            let finish = view.now + service(limit)?;
            let deadline = queue.head.first().and_then(|r| r.deadline);
            return deadline
                .is_none_or(|d| finish <= d)
                .then_some((limit, finish));
        }
        let mut best = None;
        let mut images = 0u32;
        let mut deadline: Option<Duration> = None;
        for request in queue.head.iter().take(self.settings.max_scan) {
            if images > 0 && images + request.images > limit {
                break;
            }
            images = (images + request.images).min(limit);
            deadline = match (deadline, request.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let finish = view.now + service(images)?;
            if deadline.is_some_and(|d| finish > d) {
                break;
            }
            best = Some((images, finish));
            if images >= limit {
                break;
            }
        }
        best
    }
}

/// Capacity a batch uses per image served: 1.0 for a unit at its most efficient batch.
fn cost_per_image(unit: &UnitView, images: u32, service: Duration) -> f64 {
    let best = unit.nominal_throughput();
    if best <= 0.0 || images == 0 {
        return f64::INFINITY;
    }
    service.as_secs_f64() * best / f64::from(images)
}

impl Policy for Slo {
    fn name(&self) -> &'static str {
        "slo"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        if queue.requests == 0 {
            return Decision::Wait { until: None };
        }
        self.finish_cache.clear();
        let mut shed = Vec::new();
        for request in queue.head.iter().take(self.settings.max_scan) {
            let Some(deadline) = request.deadline else {
                continue;
            };
            if deadline <= view.now {
                shed.push(request.id);
                continue;
            }
            if let Some(finish) = self.earliest_finish(view, request.images) {
                if finish > deadline {
                    shed.push(request.id);
                }
            }
        }
        if !shed.is_empty() {
            return Decision::Shed { requests: shed };
        }
        // Under backlog, keep batches efficient: when the queue holds two full batches
        // for the most capable healthy unit, requests at the head that a full batch
        // there (starting when it next frees) would make late are shed rather than
        // shrinking every batch to fit them (an overloaded EDF queue otherwise serves
        // ever smaller batches and collapses). The most capable unit is chosen among
        // all healthy ones, busy or not: judged by whichever small unit happens to be
        // free, "a full batch" is tiny and the rule would shed below capacity.
        let (active, _) = self.contention.active_set(view, queue.fixed_batch);
        let strongest = view
            .units
            .iter()
            .zip(&active)
            .filter(|(u, active)| u.healthy && **active)
            .map(|(u, _)| u)
            .max_by(|a, b| a.nominal_throughput().total_cmp(&b.nominal_throughput()));
        if let Some(unit) = strongest {
            let full = queue.target_batch(unit.max_batch);
            if queue.images >= 2 * u64::from(full) {
                if let Some(service) = self.service(unit, full) {
                    let finish = unit.next_free_at.max(view.now) + service;
                    let late: Vec<u64> = queue
                        .head
                        .iter()
                        .take(self.settings.max_scan)
                        .filter(|r| r.deadline.is_some_and(|d| d < finish))
                        .map(|r| r.id)
                        .collect();
                    if !late.is_empty() {
                        return Decision::Shed { requests: late };
                    }
                }
            }
        }
        // (unit, images, cost, capability)
        let mut best: Option<(usize, u32, f64, f64)> = None;
        for index in view.ready_units() {
            if !active[index] {
                continue;
            }
            let unit = &view.units[index];
            let slowdown =
                self.contention
                    .slowdown_if_started(view, index, queue.batch_for(unit.max_batch));
            let Some((images, finish)) = self.feasible_batch(view, unit, queue, slowdown) else {
                continue;
            };
            let service = finish.saturating_sub(view.now);
            let cost = if unit.profile.is_none() && unit.completed_batches == 0 {
                0.0
            } else {
                cost_per_image(unit, images, service)
            };
            let capability = unit.nominal_throughput();
            let better = best.is_none_or(|(_, b_images, b_cost, b_capability)| {
                cost < b_cost - 1e-9
                    || ((cost - b_cost).abs() <= 1e-9
                        && (capability < b_capability
                            || (capability == b_capability && images > b_images)))
            });
            if better {
                best = Some((index, images, cost, capability));
            }
        }
        if let Some((unit, images, _, _)) = best {
            return Decision::Dispatch { unit, images };
        }
        // No free unit meets the front deadline: wait for a busy one that would.
        let until = view
            .units
            .iter()
            .zip(&active)
            .filter(|(u, active)| u.healthy && **active && !u.can_take_batch())
            .map(|(u, _)| u.next_free_at)
            .filter(|t| *t > view.now)
            .min();
        if until.is_some() {
            return Decision::Wait { until };
        }
        // Nothing busy will free up, so waiting changes nothing (the property test's
        // liveness check found this): a free unit outside the active set serves what
        // it can meet; requests with a deadline none meets now are late and shed; the
        // rest go to a free unit.
        for index in view.ready_units() {
            let unit = &view.units[index];
            let slowdown =
                self.contention
                    .slowdown_if_started(view, index, queue.batch_for(unit.max_batch));
            if let Some((images, _)) = self.feasible_batch(view, unit, queue, slowdown) {
                return Decision::Dispatch {
                    unit: index,
                    images,
                };
            }
        }
        let late: Vec<u64> = queue
            .head
            .iter()
            .take(self.settings.max_scan)
            .filter(|r| r.deadline.is_some())
            .map(|r| r.id)
            .collect();
        if !late.is_empty() {
            return Decision::Shed { requests: late };
        }
        match view.ready_units().next() {
            Some(index) => Decision::Dispatch {
                unit: index,
                images: queue.batch_for(view.units[index].max_batch).max(1),
            },
            None => Decision::Wait { until: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, unit};
    use mica_core::view::WaitingRequest;

    fn request(id: u64, deadline_ms: Option<u64>) -> WaitingRequest {
        WaitingRequest {
            id,
            images: 1,
            arrival: Duration::ZERO,
            deadline: deadline_ms.map(Duration::from_millis),
            priority: 0,
        }
    }

    fn without_contention() -> SloSettings {
        SloSettings {
            contention: Some(ContentionConfig::None),
            ..SloSettings::default()
        }
    }

    fn queue(head: &[WaitingRequest]) -> QueueView<'_> {
        QueueView {
            requests: head.len(),
            images: head.len() as u64,
            head,
            fixed_batch: None,
        }
    }

    #[test]
    fn sheds_what_no_unit_can_finish_in_time() {
        let view = cluster(vec![unit("fast", 10.0, 8), unit("slow", 50.0, 8)]);
        let head = [request(1, Some(5)), request(2, Some(100)), request(3, None)];
        let mut policy = Slo::new(without_contention());
        assert_eq!(
            policy.decide(&view, &queue(&head)),
            Decision::Shed { requests: vec![1] }
        );
    }

    #[test]
    fn sizes_the_batch_for_the_tightest_deadline_and_prefers_the_cheaper_unit() {
        // Two equally efficient units; the slow one is cheaper to occupy. Four requests
        // due at 120 ms: the slow unit (50 ms/img with a 10 % margin) fits two of them.
        let view = cluster(vec![unit("fast", 10.0, 8), unit("slow", 50.0, 8)]);
        let head: Vec<_> = (0..4).map(|id| request(id, Some(120))).collect();
        let mut policy = Slo::new(without_contention());
        assert_eq!(
            policy.decide(&view, &queue(&head)),
            Decision::Dispatch { unit: 1, images: 2 }
        );
        // With room for all four on the slow unit, it still takes them, not the fast one.
        let head: Vec<_> = (0..4).map(|id| request(id, Some(1000))).collect();
        assert_eq!(
            policy.decide(&view, &queue(&head)),
            Decision::Dispatch { unit: 1, images: 4 }
        );
    }

    #[test]
    fn a_unit_nothing_predicts_gets_the_front_request_to_be_measured() {
        // No profile and no batch measured yet: without this, it would wait for ever
        // (found by the liveness check of the shared property test).
        let mut cold = unit("cold", 10.0, 8);
        cold.profile = None;
        let view = cluster(vec![cold]);
        let head = [request(1, None), request(2, Some(100))];
        let mut policy = Slo::new(without_contention());
        assert_eq!(
            policy.decide(&view, &queue(&head)),
            Decision::Dispatch { unit: 0, images: 1 }
        );
    }

    #[test]
    fn waits_for_the_busy_unit_that_alone_meets_the_deadline() {
        let mut fast = unit("fast", 10.0, 8);
        fast.free_streams = 0;
        fast.next_free_at = Duration::from_millis(5);
        let view = cluster(vec![fast, unit("slow", 50.0, 8)]);
        let head = [request(1, Some(30))];
        let mut policy = Slo::new(without_contention());
        assert_eq!(
            policy.decide(&view, &queue(&head)),
            Decision::Wait {
                until: Some(Duration::from_millis(5))
            }
        );
    }
}
