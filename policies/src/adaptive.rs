//! `adaptive`: profile-free active-set search by measurement.
//!
//! The policy needs no profile and no contention model. It learns from completions
//! only. What a set of units is worth is measured over epochs: its *output over wall
//! time*, images per second from its first completion in the epoch to its last, which
//! includes whatever contention the units cause each other and whatever their service
//! times leave out (the gap between batches, the dispatcher's time, a co-runner's
//! threads spinning between its batches); for an epoch cut too short to time, its
//! *capacity*, the sum of its units' rates while busy (images / service time ×
//! streams, an EWMA across epochs). A first-improvement hill climb searches which units to keep
//! active: starting from every healthy unit, it tries the neighbouring sets (drop one
//! unit, least productive first; then add one back, most productive first; then swap
//! one active unit for an idle one; then drop two at once — the last two find sets a
//! single move cannot, e.g. when two co-runners only hurt together), measures
//! each for one epoch, and moves only when a neighbour beats the incumbent by more than
//! the hysteresis margin (0.5 % by default), so measurement noise does not make it flap.
//! When no neighbour wins it has converged and stays there until a unit's health
//! changes or `reexplore_batches` completions have passed, then searches again.
//!
//! A measurement counts only batches started after every unit outside the measured set
//! has drained, so batches that ran beside the previous set do not pollute it; an epoch
//! lasts at least `min_epoch_seconds` of measurement (units that finish a batch in a
//! millisecond are not compared over a few tens of milliseconds of a noisy host), then
//! ends after `epoch_batches` counted completions with at least `min_unit_batches` from
//! every measured unit, or 4 × `epoch_batches` counted completions; and it ends after
//! `epoch_seconds` of measurement whatever it counted: epochs are bounded in time, not only in batches, so
//! a unit much slower than the rest (a CPU batch of 256 takes seconds) does not stretch
//! every epoch. Such a unit is judged on what it finished: one that finished nothing in
//! a whole epoch added nothing to it and leaves the set (frozen out of the rest of the
//! search; the set is measured again once its last batch has drained).
//! The whole search is bounded by `search_seconds` (time spent waiting for a frozen
//! unit's last batch excluded): then the best set measured so far stays.
//! A trial that is clearly worse than the incumbent ends sooner (a sequential test:
//! `reject_margin` below after `reject_after_batches` completions, k times that margin
//! after 1/k of them), so verifying that no neighbour wins costs little throughput: a
//! lone DLA tried against the GPU is dropped after its first batch.
//!
//! **Convergence bound.** With n healthy units the search makes at most n accepted
//! moves and tries at most n + n(n−1)/2 + ⌊n²/4⌋ neighbours per move (toggles, pair
//! drops, swaps), so it converges within 1 + n·(n + n(n−1)/2 + ⌊n²/4⌋) epochs of at
//! most 4 × `epoch_batches` counted batches and `epoch_seconds` each, plus one drain per
//! epoch: 106 epochs and 12,720 counted batches for the 5-unit Orin with the defaults
//! (epoch 30), and in any case `search_seconds` (25 s) of wall time plus the last batch
//! of each unit frozen out as too slow. In
//! practice, on the simulated Orin under `mica experiment multi-instance`'s closed
//! loop, it converges after 235–668 completed batches (under 60 simulated seconds) at
//! batch sizes 1–64 (the `converged_after` accessor reports the count).
//!
//! Use it when units have no profile (new hardware, a new model) or profiles are not
//! trusted. It is a measurement-driven version of the active-set selection of
//! `contention_aware`; the search follows classic hill climbing with a hysteresis band
//! as used by online configuration tuners (e.g. the throughput-driven thread-count
//! controllers of SEDA, Welsh et al., SOSP 2001).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use mica_core::policy::{Completion, Decision, Policy, SearchProgress};
use mica_core::view::{ClusterView, QueueView};

/// Tuning knobs of the search: the parameters of `policy = { type = "adaptive", ... }`,
/// each defaulted when left out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveSettings {
    /// Counted completions per measurement epoch.
    pub epoch_batches: u32,
    /// Counted completions every measured unit must reach before an epoch ends.
    pub min_unit_batches: u32,
    /// Relative gain a neighbour must show to replace the incumbent (0.02 = 2 %).
    pub hysteresis: f64,
    /// Completions after convergence before the search runs again.
    pub reexplore_batches: u64,
    /// Weight of the newest batch in each unit's rate EWMA.
    pub ewma_weight: f64,
    /// A trial set measuring this much below the incumbent (0.1 = 10 %) after
    /// `reject_after_batches` counted completions is rejected without finishing its
    /// epoch (with k times fewer completions it must be k times further below): a
    /// clearly worse set is not worth a full epoch of lost throughput.
    pub reject_margin: f64,
    /// Counted completions at which `reject_margin` applies.
    pub reject_after_batches: u32,
    /// Longest an epoch lasts, seconds from the moment its measurement started: then it
    /// ends with what was counted, and a unit that finished fewer than
    /// `min_unit_batches` (a unit much slower than the rest) is judged on what it
    /// finished: one that finished nothing leaves the set for the rest of the search.
    pub epoch_seconds: f64,
    /// Longest a search runs, seconds: then it stops at the best set measured so far
    /// (convergence bounded in wall time whatever the units' speeds). Time spent
    /// waiting for the last batch of a unit left out as too slow does not count.
    pub search_seconds: f64,
    /// Shortest an epoch lasts, seconds of measurement, however many batches it
    /// counted: units that finish a batch in a millisecond (a small model on the CPU)
    /// would otherwise be compared over a few tens of milliseconds, which the host's
    /// scheduling noise decides. A clearly worse trial still ends sooner.
    pub min_epoch_seconds: f64,
}

impl Default for AdaptiveSettings {
    fn default() -> Self {
        Self {
            epoch_batches: 30,
            min_unit_batches: 2,
            hysteresis: 0.005,
            reexplore_batches: 50_000,
            ewma_weight: 0.2,
            reject_margin: 0.1,
            reject_after_batches: 6,
            epoch_seconds: 2.0,
            search_seconds: 25.0,
            min_epoch_seconds: 0.25,
        }
    }
}

impl AdaptiveSettings {
    /// Checks parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        let AdaptiveSettings {
            epoch_batches,
            hysteresis,
            ewma_weight,
            reject_margin,
            epoch_seconds,
            search_seconds,
            min_epoch_seconds,
            ..
        } = *self;
        if !(epoch_seconds.is_finite() && epoch_seconds > 0.0) {
            return Err(format!(
                "epoch_seconds must be a positive number, got {epoch_seconds}"
            ));
        }
        if !(min_epoch_seconds.is_finite()
            && min_epoch_seconds >= 0.0
            && min_epoch_seconds <= epoch_seconds)
        {
            return Err(format!(
                "min_epoch_seconds must be between 0 and epoch_seconds ({epoch_seconds}), got {min_epoch_seconds}"
            ));
        }
        if !(search_seconds.is_finite() && search_seconds >= epoch_seconds) {
            return Err(format!(
                "search_seconds must be at least epoch_seconds ({epoch_seconds}), got {search_seconds}"
            ));
        }
        if epoch_batches == 0 {
            return Err("epoch_batches must be at least 1".into());
        }
        if !(hysteresis.is_finite() && hysteresis >= 0.0) {
            return Err(format!("hysteresis must be >= 0, got {hysteresis}"));
        }
        if !(ewma_weight > 0.0 && ewma_weight <= 1.0) {
            return Err(format!("ewma_weight must be in (0, 1], got {ewma_weight}"));
        }
        if !(reject_margin > 0.0 && reject_margin < 1.0) {
            return Err(format!(
                "reject_margin must be in (0, 1), got {reject_margin}"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct Epoch {
    /// When the epoch began (its set got the batches).
    began: Duration,
    /// Set when no unit outside the measured set has a batch in flight any more.
    clean_since: Option<Duration>,
    /// Whether the epoch waited for the last batch of a frozen (too slow) unit.
    waited_on_frozen: bool,
    counted: u32,
    images: Vec<f64>,
    busy_s: Vec<f64>,
    batches: Vec<u32>,
    /// The set's output over wall time: from the first completion of a set unit after
    /// the epoch became clean (`window_start`) to the latest (`window_end`), the images
    /// of the completions in between.
    window_start: Option<Duration>,
    window_end: Duration,
    window_images: f64,
    window_batches: u32,
}

/// Measurement-driven active-set hill climbing.
#[derive(Debug, Clone)]
pub struct Adaptive {
    settings: AdaptiveSettings,
    rates: Vec<f64>,
    healthy: Vec<bool>,
    incumbent: Vec<bool>,
    incumbent_value: Option<f64>,
    trial: Option<Vec<bool>>,
    pending: Vec<Vec<bool>>,
    moves: usize,
    epoch: Epoch,
    completed: u64,
    converged_at: Option<u64>,
    search_started_at: u64,
    /// When the latest search started, and when it converged.
    search_started: Duration,
    converged_time: Option<Duration>,
    /// Units found too slow to measure in an epoch (they finished nothing in one): left
    /// out of the rest of the search.
    frozen: Vec<bool>,
    /// Time the search spent waiting for frozen units' last batches to drain.
    frozen_wait: Duration,
}

impl Adaptive {
    /// A policy that will start by measuring every unit together.
    pub fn new(settings: AdaptiveSettings) -> Self {
        Self {
            settings,
            rates: Vec::new(),
            healthy: Vec::new(),
            incumbent: Vec::new(),
            incumbent_value: None,
            trial: None,
            pending: Vec::new(),
            moves: 0,
            epoch: Epoch::default(),
            completed: 0,
            converged_at: None,
            search_started_at: 0,
            search_started: Duration::ZERO,
            converged_time: None,
            frozen: Vec::new(),
            frozen_wait: Duration::ZERO,
        }
    }

    /// Completed batches the latest search took to converge, if it has.
    pub fn converged_after(&self) -> Option<u64> {
        self.converged_at.map(|at| at - self.search_started_at)
    }

    /// Time the latest search took to converge, if it has.
    pub fn converged_after_time(&self) -> Option<Duration> {
        self.converged_time
            .map(|at| at.saturating_sub(self.search_started))
    }

    /// The set batches go to now (the one being measured).
    pub fn active(&self) -> &[bool] {
        self.trial.as_deref().unwrap_or(&self.incumbent)
    }

    /// Measured rate of each unit while busy, images per second (EWMA).
    pub fn rates(&self) -> &[f64] {
        &self.rates
    }

    /// Starts a new search from every healthy unit.
    fn restart(&mut self, view: &ClusterView) {
        let n = view.units.len();
        self.rates.resize(n, 0.0);
        self.healthy = view.units.iter().map(|u| u.healthy).collect();
        self.incumbent = self.healthy.clone();
        self.incumbent_value = None;
        self.trial = None;
        self.pending.clear();
        self.moves = 0;
        self.converged_at = None;
        self.converged_time = None;
        self.search_started_at = self.completed;
        self.search_started = view.now;
        self.frozen = vec![false; n];
        self.frozen_wait = Duration::ZERO;
        self.begin_epoch(n, view.now);
    }

    fn begin_epoch(&mut self, n: usize, now: Duration) {
        self.epoch = Epoch {
            began: now,
            clean_since: None,
            waited_on_frozen: false,
            counted: 0,
            images: vec![0.0; n],
            busy_s: vec![0.0; n],
            batches: vec![0; n],
            ..Epoch::default()
        };
    }

    /// Neighbours of the incumbent: drop one unit (least productive first), then add
    /// one back (most productive first). Stored so that `pop` yields them in order.
    fn neighbours(&mut self) {
        let mut inside: Vec<usize> = (0..self.incumbent.len())
            .filter(|&i| self.incumbent[i] && self.healthy[i])
            .collect();
        let mut outside: Vec<usize> = (0..self.incumbent.len())
            .filter(|&i| !self.incumbent[i] && self.healthy[i] && !self.frozen[i])
            .collect();
        inside.sort_by(|a, b| self.rates[*a].total_cmp(&self.rates[*b]).then(a.cmp(b)));
        outside.sort_by(|a, b| self.rates[*b].total_cmp(&self.rates[*a]).then(a.cmp(b)));
        let mut order: Vec<Vec<usize>> = Vec::new();
        if inside.len() > 1 {
            order.extend(inside.iter().map(|&i| vec![i]));
        }
        order.extend(outside.iter().map(|&j| vec![j]));
        for &i in &inside {
            for &j in &outside {
                order.push(vec![i, j]);
            }
        }
        // Dropping two at once: units that each pay for themselves alone can still
        // cost more together (two co-runners pushing DRAM into its intensive region).
        if inside.len() > 2 {
            for (k, &i) in inside.iter().enumerate() {
                for &j in &inside[k + 1..] {
                    order.push(vec![i, j]);
                }
            }
        }
        self.pending = order
            .into_iter()
            .rev()
            .map(|toggles| {
                let mut set = self.incumbent.clone();
                for toggle in toggles {
                    set[toggle] = !set[toggle];
                }
                set
            })
            .collect();
    }

    /// What the set of the finished epoch did: its output over wall time, images per
    /// second from its first completion to its last, which counts what the units'
    /// service times leave out (the gap between one batch and the next, the
    /// dispatcher's time, a co-runner's threads spinning between its batches). Under a
    /// load lighter than the set can serve it is the load, for this set as for any
    /// other that can serve it, so no trial beats the incumbent by the hysteresis and
    /// the set stays; a set that cannot serve the load shows less. Measured over fewer
    /// than half an epoch's batches (an epoch cut short by a slow unit's drain: two
    /// completions a moment apart say nothing of a rate), its capacity from service
    /// times (`capacity`) instead.
    fn epoch_value(&self, set: &[bool]) -> f64 {
        let epoch = &self.epoch;
        let measured = epoch.window_batches >= (self.settings.epoch_batches / 2).max(2);
        match epoch.window_start {
            Some(start) if measured && epoch.window_end > start => {
                epoch.window_images / (epoch.window_end - start).as_secs_f64()
            }
            _ => self.capacity(set),
        }
    }

    /// The set's capacity from service times: each unit's rate while busy over the
    /// batches it finished in the epoch (its earlier rate if it finished none: a unit
    /// slower than the epoch is judged on what it finished before), summed.
    fn capacity(&self, set: &[bool]) -> f64 {
        (0..set.len())
            .filter(|&i| set[i])
            .map(|i| {
                if self.epoch.busy_s[i] > 0.0 {
                    self.epoch.images[i] / self.epoch.busy_s[i]
                } else {
                    self.rates[i]
                }
            })
            .sum()
    }

    /// Ends the search where it stands: the incumbent (the best set measured) stays.
    fn converge(&mut self, now: Duration) {
        self.trial = None;
        self.pending.clear();
        self.converged_at = Some(self.completed);
        self.converged_time = Some(now);
    }

    /// How long the current epoch has been counting completions.
    fn measuring_for(&self, now: Duration) -> f64 {
        self.epoch
            .clean_since
            .map_or(0.0, |clean| now.saturating_sub(clean).as_secs_f64())
    }

    fn finish_epoch(&mut self, n: usize, now: Duration) {
        let mut set = self.active().to_vec();
        // A unit that finished nothing in a whole epoch of `epoch_seconds` added nothing
        // to what was measured: the set is judged without it (it leaves the set), as
        // contention can only have slowed the others.
        if self.measuring_for(now) >= self.settings.epoch_seconds {
            let silent: Vec<usize> = (0..n)
                .filter(|&i| set[i] && self.healthy[i] && self.epoch.batches[i] == 0)
                .collect();
            let members = (0..n).filter(|&i| set[i] && self.healthy[i]).count();
            if !silent.is_empty() && silent.len() < members {
                for i in silent {
                    set[i] = false;
                    self.frozen[i] = true;
                }
                match &mut self.trial {
                    Some(trial) => trial.clone_from(&set),
                    None => {
                        // The incumbent's figure was taken beside the silent units:
                        // measure it again without them (after they drain).
                        self.incumbent.clone_from(&set);
                        self.incumbent_value = None;
                        self.begin_epoch(n, now);
                        return;
                    }
                }
            }
        }
        let value = self.epoch_value(&set);
        let mut previous = None;
        let mut fresh_incumbent = false;
        match self.trial.take() {
            None => {
                self.incumbent_value = Some(value);
                fresh_incumbent = true;
            }
            Some(trial) => {
                let incumbent = self.incumbent_value.unwrap_or(0.0);
                if value > incumbent * (1.0 + self.settings.hysteresis) {
                    previous = Some(std::mem::replace(&mut self.incumbent, trial));
                    self.incumbent_value = Some(value);
                    self.moves += 1;
                    fresh_incumbent = true;
                }
            }
        }
        if self.converged_at.is_none() {
            if fresh_incumbent && self.moves < n {
                self.neighbours();
                // Moving straight back to where we came from is never better.
                if let Some(previous) = &previous {
                    self.pending.retain(|set| set != previous);
                }
            }
            self.trial = self.pending.pop();
            if self.trial.is_none() || self.moves >= n {
                self.converge(now);
            }
        }
        self.begin_epoch(n, now);
    }

    fn epoch_done(&self, now: Duration) -> bool {
        let set = self.active();
        let counted = self.epoch.counted;
        if counted > 0 && self.measuring_for(now) >= self.settings.epoch_seconds {
            return true;
        }
        if self.clearly_worse(set) {
            return true;
        }
        if self.measuring_for(now) < self.settings.min_epoch_seconds {
            return false;
        }
        if counted >= 4 * self.settings.epoch_batches {
            return true;
        }
        counted >= self.settings.epoch_batches
            && (0..set.len())
                .filter(|&i| set[i] && self.healthy[i])
                .all(|i| self.epoch.batches[i] >= self.settings.min_unit_batches)
    }

    /// Whether the trial being measured is already clearly below the incumbent: every
    /// unit of it has a rate (measured in this epoch, or from earlier batches) and the
    /// set's capacity is further under the incumbent's than the evidence so far allows
    /// for noise. The margin shrinks as completions accrue (a sequential test): after
    /// `reject_after_batches` counted completions it is `reject_margin`, after a sixth
    /// of them six times that, so a hopeless set (a lone DLA against the GPU) is dropped
    /// after its first batch and a nearly-as-good one still gets a full epoch.
    fn clearly_worse(&self, set: &[bool]) -> bool {
        let (Some(_), Some(incumbent)) = (&self.trial, self.incumbent_value) else {
            return false;
        };
        let counted = self.epoch.counted;
        if counted == 0 {
            return false;
        }
        let margin = self.settings.reject_margin * f64::from(self.settings.reject_after_batches)
            / f64::from(counted);
        if margin >= 1.0 {
            return false;
        }
        let every_unit_has_a_rate = (0..set.len())
            .filter(|&i| set[i] && self.healthy[i])
            .all(|i| self.epoch.batches[i] > 0 || self.rates[i] > 0.0);
        every_unit_has_a_rate && self.capacity(set) < incumbent * (1.0 - margin)
    }

    fn note_clean(&mut self, view: &ClusterView) {
        if self.epoch.clean_since.is_some() {
            return;
        }
        let set = self.active();
        let outside_busy =
            |i: usize, in_flight: u32| !set.get(i).copied().unwrap_or(false) && in_flight > 0;
        let dirty = view
            .units
            .iter()
            .enumerate()
            .any(|(i, u)| outside_busy(i, u.in_flight_batches));
        let frozen_busy = view.units.iter().enumerate().any(|(i, u)| {
            self.frozen.get(i).copied().unwrap_or(false) && outside_busy(i, u.in_flight_batches)
        });
        if frozen_busy {
            self.epoch.waited_on_frozen = true;
        }
        if !dirty {
            self.epoch.clean_since = Some(view.now);
            if self.epoch.waited_on_frozen {
                // The last batch of a too-slow unit is not the search's time.
                self.frozen_wait += view.now.saturating_sub(self.epoch.began);
            }
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        let health: Vec<bool> = view.units.iter().map(|u| u.healthy).collect();
        if health != self.healthy || self.rates.len() != view.units.len() {
            self.restart(view);
        }
        self.note_clean(view);
        if queue.requests == 0 {
            return Decision::Wait { until: None };
        }
        let active = self.active();
        let any_active = (0..view.units.len()).any(|i| active[i] && view.units[i].healthy);
        let mut best: Option<(usize, f64)> = None;
        for index in view.ready_units() {
            if any_active && !active[index] {
                continue;
            }
            let unit = &view.units[index];
            let score = if unit.completed_batches == 0 {
                f64::INFINITY
            } else {
                self.rates[index] / f64::from(unit.streams.max(1))
            };
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((index, score));
            }
        }
        match best {
            Some((unit, _)) => Decision::Dispatch {
                unit,
                images: queue.target_batch(view.units[unit].max_batch),
            },
            None => Decision::Wait { until: None },
        }
    }

    fn search_progress(&self) -> Option<SearchProgress> {
        Some(match self.converged_after() {
            Some(after_batches) => SearchProgress::Converged { after_batches },
            None => SearchProgress::Searching {
                batches: self.completed - self.search_started_at,
            },
        })
    }

    fn on_completion(&mut self, view: &ClusterView, completion: &Completion) {
        let n = view.units.len();
        if self.rates.len() != n {
            self.restart(view);
        }
        self.completed += 1;
        let unit = completion.unit;
        let service = completion.service_time().as_secs_f64();
        if completion.ok && service > 0.0 && unit < n {
            let streams = f64::from(view.units[unit].streams.max(1));
            let rate = f64::from(completion.images) / service * streams;
            let rate_ewma = &mut self.rates[unit];
            if *rate_ewma == 0.0 {
                *rate_ewma = rate;
            } else {
                *rate_ewma += self.settings.ewma_weight * (rate - *rate_ewma);
            }
            let counts = self.active()[unit]
                && self
                    .epoch
                    .clean_since
                    .is_some_and(|clean| completion.started >= clean);
            let in_set = self.active()[unit];
            if let Some(clean) = self.epoch.clean_since.filter(|_| in_set) {
                if completion.finished >= clean {
                    match self.epoch.window_start {
                        None => self.epoch.window_start = Some(completion.finished),
                        Some(_) => {
                            self.epoch.window_images += f64::from(completion.images);
                            self.epoch.window_batches += 1;
                        }
                    }
                    self.epoch.window_end = self.epoch.window_end.max(completion.finished);
                }
            }
            if counts {
                self.epoch.counted += 1;
                self.epoch.images[unit] += f64::from(completion.images) * streams;
                self.epoch.busy_s[unit] += service;
                self.epoch.batches[unit] += 1;
            }
        }
        self.note_clean(view);
        if self.epoch_done(view.now) {
            self.finish_epoch(n, view.now);
        }
        let searching_for = view
            .now
            .saturating_sub(self.search_started)
            .saturating_sub(self.frozen_wait)
            .as_secs_f64();
        let draining_frozen = self.epoch.clean_since.is_none() && self.epoch.waited_on_frozen;
        if self.converged_at.is_none()
            && !draining_frozen
            && searching_for >= self.settings.search_seconds
        {
            self.converge(view.now);
            self.begin_epoch(n, view.now);
        }
        if let Some(at) = self.converged_at {
            if self.completed - at >= self.settings.reexplore_batches {
                self.restart(view);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{cluster, unit};
    use std::time::Duration;

    /// Drives adaptive over `units` identical units in rounds until it converges (or
    /// `max_rounds`): each round, one decision with work waiting, then every active unit
    /// runs one batch of 8 images from the round's start; `round(active)` gives each
    /// active unit's service time and the round's length (ms), both from the set.
    fn drive(
        units: usize,
        max_rounds: usize,
        round: impl Fn(&[bool]) -> (Vec<(usize, u64)>, u64),
    ) -> Adaptive {
        let names = ["a", "b", "c", "d"];
        let mut view = cluster(names[..units].iter().map(|n| unit(n, 1.0, 8)).collect());
        for u in &mut view.units {
            u.completed_batches = 1;
        }
        let mut policy = Adaptive::new(AdaptiveSettings::default());
        let queue = QueueView {
            requests: 10,
            images: 80,
            head: &[],
            fixed_batch: Some(8),
        };
        let mut now = Duration::ZERO;
        for _ in 0..max_rounds {
            let _ = policy.decide(&view, &queue);
            let (mut services, length) = round(policy.active());
            services.sort_by_key(|&(unit, ms)| (ms, unit));
            let started = now;
            for (unit, ms) in services {
                let finished = started + Duration::from_millis(ms);
                view.now = finished;
                policy.on_completion(
                    &view,
                    &Completion {
                        unit,
                        images: 8,
                        started,
                        finished,
                        ok: true,
                    },
                );
            }
            now = started + Duration::from_millis(length);
            if policy.converged_after().is_some() {
                break;
            }
        }
        policy
    }

    /// A synthetic platform where running unit 2 beside the others halves their rate
    /// while adding little: the search must drop unit 2.
    #[test]
    fn drops_the_unit_that_costs_more_than_it_adds_and_converges() {
        let policy = drive(3, 5_000, |active| {
            let services: Vec<(usize, u64)> = (0..3)
                .filter(|&unit| active[unit])
                .map(|unit| match unit {
                    2 => (unit, 40),
                    _ if active[2] => (unit, 20),
                    _ => (unit, 10),
                })
                .collect();
            let length = services.iter().map(|&(_, ms)| ms).max().unwrap_or(1);
            (services, length)
        });
        assert_eq!(policy.active(), &[true, true, false]);
        let took = policy.converged_after().expect("converges");
        assert!(took <= 31 * 4 * 30, "took {took} batches");
    }

    /// Two units whose service times do not change when they run together, but which
    /// together start each batch only after a long gap (a dispatcher, a host, threads
    /// spinning between batches): their capacity from service times doubles, their
    /// output over wall time halves. The search must judge by the output and keep one.
    #[test]
    fn judges_a_set_by_its_output_over_wall_time_not_by_service_times() {
        let policy = drive(2, 20_000, |active| {
            let services = (0..2).filter(|&u| active[u]).map(|u| (u, 10)).collect();
            // Alone a unit starts its next batch at once; together, 30 ms later.
            let both = active.iter().all(|&a| a);
            (services, if both { 40 } else { 10 })
        });
        assert!(policy.converged_after().is_some());
        assert_eq!(
            policy.active().iter().filter(|&&a| a).count(),
            1,
            "{:?}",
            policy.active()
        );
    }

    /// The sequential test: a trial far below the incumbent is rejected after one
    /// completion, one slightly below only once the evidence is enough.
    #[test]
    fn rejects_a_clearly_worse_trial_early_and_a_close_one_late() {
        let mut policy = Adaptive::new(AdaptiveSettings::default());
        let view = cluster(vec![unit("gpu", 1.0, 8), unit("dla", 1.0, 8)]);
        policy.restart(&view);
        policy.incumbent_value = Some(100.0);
        policy.trial = Some(vec![false, true]);
        let trial = [false, true];
        let measure = |policy: &mut Adaptive, counted: u32, rate: f64| {
            policy.epoch.counted = counted;
            policy.epoch.batches[1] = counted;
            policy.epoch.busy_s[1] = f64::from(counted);
            policy.epoch.images[1] = rate * f64::from(counted);
            policy.clearly_worse(&trial)
        };
        // Margin 0.1 at 6 completions: 0.6 after one, 0.2 after three.
        assert!(measure(&mut policy, 1, 30.0));
        assert!(!measure(&mut policy, 1, 50.0));
        assert!(!measure(&mut policy, 3, 85.0));
        assert!(measure(&mut policy, 3, 75.0));
        assert!(measure(&mut policy, 6, 89.0));
        assert!(!measure(&mut policy, 6, 91.0));
        // The incumbent itself is never "rejected".
        policy.trial = None;
        assert!(!measure(&mut policy, 6, 10.0));
    }
}
