//! The scheduling core: request queue, dynamic batching, policy calls and bookkeeping.
//!
//! A plain synchronous struct with no clock and no I/O: the live `Dispatcher` actor and
//! the discrete-event simulator both drive it with the same events (a request arrives,
//! time passes, a batch completes), so a policy behaves the same in both.
//!
//! Queue discipline: one bounded queue per priority level (0 most urgent), FIFO except
//! that requests with deadlines are kept in earliest-deadline-first order among
//! themselves; a batch is taken from the most urgent non-empty level first, whole
//! requests only. Dynamic
//! batching follows Triton's rule: a batch smaller than the policy asked for is held
//! back until the oldest waiting request has waited `max_queue_delay`. Requests whose
//! deadline passes while queued are dropped with `DropReason::Expired`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::cluster::{ClusterState, HealthRules, UnitHealth, UnitSpec};
use crate::policy::{Completion, Decision, Policy};
use crate::view::{ClusterView, QueueView, WaitingRequest};

/// How the scheduler batches and admits.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Longest a request waits for its batch to fill before a smaller batch goes.
    pub max_queue_delay: Duration,
    /// Every request carries exactly this many images and batches are this size.
    pub fixed_batch: Option<u32>,
    /// Requests each priority level holds; more are refused at admission.
    pub queue_capacity: usize,
    /// Number of priority levels (at least 1).
    pub priority_levels: u8,
    /// When failing units are quarantined.
    pub health: HealthRules,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_queue_delay: Duration::from_micros(500),
            fixed_batch: None,
            queue_capacity: 4096,
            priority_levels: 2,
            health: HealthRules::default(),
        }
    }
}

/// A request the scheduler holds, with the caller's payload (its responder).
#[derive(Debug)]
pub struct Queued<T> {
    /// What the policy sees of it.
    pub meta: WaitingRequest,
    /// The caller's data, handed back in an `Action`.
    pub payload: T,
}

/// Why a request left the queue without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its deadline passed while it waited.
    Expired,
    /// The policy shed it: it could not meet its deadline.
    Shed,
}

/// What the caller must do after `poll`.
#[derive(Debug)]
pub enum Action<T> {
    /// Run these requests as one batch on `unit`.
    Start {
        /// Unit index.
        unit: usize,
        /// Batch id, to quote in `complete`.
        batch: u64,
        /// Images in the batch.
        images: u32,
        /// The requests, in queue order.
        requests: Vec<Queued<T>>,
    },
    /// Answer this request with an error.
    Drop {
        /// The request.
        request: Queued<T>,
        /// Why.
        reason: DropReason,
    },
}

/// Admission refused: the request's priority level is full.
#[derive(Debug)]
pub struct Rejected<T> {
    /// The caller's payload, handed back.
    pub payload: T,
    /// A hint for the client's `Retry-After`: the time the queue ahead takes to drain.
    pub retry_after: Duration,
}

/// Admission refused for a request that can never run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidRequest {
    /// No unit accepts a batch this large.
    TooManyImages {
        /// Images in the request.
        images: u32,
        /// Largest batch any unit accepts.
        max: u32,
    },
    /// A fixed-batch run got a request of another size.
    WrongBatch {
        /// Images in the request.
        images: u32,
        /// The fixed batch size.
        fixed: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct RunningBatch {
    unit: usize,
    images: u32,
    started: Duration,
}

/// The scheduling core.
#[derive(Debug)]
pub struct Scheduler<T> {
    settings: SchedulerSettings,
    policy: Box<dyn Policy>,
    cluster: ClusterState,
    metas: Vec<VecDeque<WaitingRequest>>,
    payloads: Vec<VecDeque<T>>,
    queued_images: u64,
    queued_requests: usize,
    next_deadline: Option<Duration>,
    running: HashMap<u64, RunningBatch>,
    next_batch: u64,
    next_request: u64,
    policy_errors: u64,
    max_batch: u32,
    /// Per unit, the sizes its engine runs without padding ([`UnitSpec::run_sizes`]).
    run_sizes: Vec<Vec<u32>>,
    /// Per unit, the waiting images from which a batch that would take them all is
    /// staggered over the unit's streams ([`UnitSpec::stagger_min_images`]; 0: never).
    stagger_min_images: Vec<u32>,
    /// Per unit, the staggered batch whose later shares are still to start.
    staggers: Vec<Option<Stagger>>,
}

/// A batch started share by share over a unit's streams ([`Scheduler::stagger_plan`]).
#[derive(Debug, Clone, Copy)]
struct Stagger {
    /// Images in each share but the last, which takes the rest.
    share: u32,
    /// Shares still to start.
    left: u32,
    /// Images that were waiting after the first share: more waiting means new work
    /// arrived, and the rest then goes as an ordinary batch.
    rest: u64,
    /// When the next share may start.
    next_at: Duration,
    /// Between one share's start and the next.
    lag: Duration,
}

impl<T> Scheduler<T> {
    /// A scheduler over these units with this policy.
    pub fn new(units: &[UnitSpec], policy: Box<dyn Policy>, settings: SchedulerSettings) -> Self {
        let levels = usize::from(settings.priority_levels.max(1));
        let max_batch = units.iter().map(|u| u.max_batch).max().unwrap_or(0);
        Self {
            cluster: ClusterState::new(units, settings.health),
            settings,
            policy,
            metas: (0..levels).map(|_| VecDeque::new()).collect(),
            payloads: (0..levels).map(|_| VecDeque::new()).collect(),
            queued_images: 0,
            queued_requests: 0,
            next_deadline: None,
            running: HashMap::new(),
            next_batch: 0,
            next_request: 0,
            policy_errors: 0,
            max_batch,
            run_sizes: units.iter().map(|u| u.run_sizes.clone()).collect(),
            stagger_min_images: units.iter().map(|u| u.stagger_min_images).collect(),
            staggers: vec![None; units.len()],
        }
    }

    /// Checks whether a request of `images` could ever run here.
    pub fn check(&self, images: u32) -> Result<(), InvalidRequest> {
        if let Some(fixed) = self.settings.fixed_batch {
            if images != fixed {
                return Err(InvalidRequest::WrongBatch { images, fixed });
            }
        }
        if images == 0 || images > self.max_batch {
            return Err(InvalidRequest::TooManyImages {
                images,
                max: self.max_batch,
            });
        }
        Ok(())
    }

    /// Queues a request (already `check`ed) arriving at `now`; returns its id.
    pub fn admit(
        &mut self,
        now: Duration,
        images: u32,
        priority: u8,
        timeout: Option<Duration>,
        payload: T,
    ) -> Result<u64, Rejected<T>> {
        let level = usize::from(priority).min(self.metas.len() - 1);
        if self.metas[level].len() >= self.settings.queue_capacity {
            return Err(Rejected {
                payload,
                retry_after: self.drain_estimate(),
            });
        }
        let id = self.next_request;
        self.next_request += 1;
        let deadline = timeout.map(|t| now + t);
        if let Some(deadline) = deadline {
            self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        }
        // Earliest deadline first among requests with deadlines: a request is placed
        // before queued requests whose deadline is later, but never before an earlier
        // request without a deadline (those keep FIFO order). Equal timeouts append.
        let queue = &mut self.metas[level];
        let mut position = queue.len();
        if let Some(deadline) = deadline {
            while position > 0 {
                match queue[position - 1].deadline {
                    Some(other) if other > deadline => position -= 1,
                    _ => break,
                }
            }
        }
        queue.insert(
            position,
            WaitingRequest {
                id,
                images,
                arrival: now,
                deadline,
                priority: level as u8,
            },
        );
        self.payloads[level].insert(position, payload);
        self.queued_images += u64::from(images);
        self.queued_requests += 1;
        Ok(id)
    }

    /// Lets the policy place work at `now`. Pushes what to do into `actions` and returns
    /// the latest time at which `poll` must be called again if nothing else happens.
    pub fn poll(&mut self, now: Duration, actions: &mut Vec<Action<T>>) -> Option<Duration> {
        self.expire(now, actions);
        let mut wake: Option<Duration> = None;
        // Each pass either dispatches, sheds or stops, and both shrink the queue, so
        // the loop ends; the bound guards against a policy that sheds nothing.
        for _ in 0..=self.queued_requests + self.cluster.view().units.len() {
            if self.queued_requests == 0 {
                break;
            }
            let view = self.cluster.view_at(now);
            if view.ready_units().next().is_none() {
                break;
            }
            let level = self.metas.iter().position(|q| !q.is_empty()).unwrap_or(0);
            let head: &[WaitingRequest] = self.metas[level].make_contiguous();
            let queue = QueueView {
                requests: self.queued_requests,
                images: self.queued_images,
                head,
                fixed_batch: self.settings.fixed_batch,
            };
            match self.policy.decide(view, &queue) {
                Decision::Dispatch { unit, images } => {
                    let Some(target) = view.units.get(unit).filter(|u| u.can_take_batch()) else {
                        self.policy_errors += 1;
                        break;
                    };
                    let images = images.clamp(1, target.max_batch.max(1));
                    let dynamic = self.settings.fixed_batch.is_none();
                    if let Some(plan) = self.staggers[unit].filter(|_| dynamic) {
                        if self.queued_images > plan.rest || now >= plan.next_at + plan.lag {
                            // New work arrived (the unit is no longer short of work), or
                            // the plan went stale (its rest went elsewhere, or no stream
                            // was free for a whole lag): the ordinary rules take over.
                            self.staggers[unit] = None;
                        } else if now < plan.next_at {
                            wake = earliest(wake, Some(plan.next_at));
                            break;
                        } else {
                            let share = if plan.left > 1 { plan.share } else { images };
                            self.staggers[unit] = (plan.left > 1).then(|| Stagger {
                                left: plan.left - 1,
                                rest: plan.rest.saturating_sub(u64::from(plan.share)),
                                next_at: now + plan.lag,
                                ..plan
                            });
                            self.start_batch(unit, share, now, actions);
                            continue;
                        }
                    }
                    if dynamic && self.queued_images < u64::from(images) {
                        let oldest = self.oldest_arrival().unwrap_or(now);
                        let release = oldest + self.settings.max_queue_delay;
                        if now < release {
                            wake = earliest(wake, Some(release));
                            break;
                        }
                    }
                    let images = if dynamic {
                        fit_run_size(&self.run_sizes[unit], images, self.queued_images)
                    } else {
                        images
                    };
                    let plan = if dynamic {
                        self.stagger_plan(unit, images, now)
                    } else {
                        None
                    };
                    match plan {
                        Some(plan) => {
                            self.staggers[unit] = Some(plan);
                            self.start_batch(unit, plan.share, now, actions);
                        }
                        None => self.start_batch(unit, images, now, actions),
                    }
                }
                Decision::Shed { requests } => {
                    let before = actions.len();
                    for id in requests {
                        if let Some(request) = self.remove(id) {
                            actions.push(Action::Drop {
                                request,
                                reason: DropReason::Shed,
                            });
                        }
                    }
                    if actions.len() == before {
                        self.policy_errors += 1;
                        break;
                    }
                }
                Decision::Wait { until } => {
                    wake = earliest(wake, until.filter(|t| *t > now));
                    break;
                }
            }
        }
        earliest(wake, self.next_deadline)
    }

    /// Takes up to `images` images from the queue's front and starts them as one batch
    /// on `unit`.
    fn start_batch(
        &mut self,
        unit: usize,
        images: u32,
        now: Duration,
        actions: &mut Vec<Action<T>>,
    ) {
        let (requests, taken) = self.take(images);
        let batch = self.next_batch;
        self.next_batch += 1;
        self.cluster.start(unit, batch, taken, now);
        self.running.insert(
            batch,
            RunningBatch {
                unit,
                images: taken,
                started: now,
            },
        );
        actions.push(Action::Start {
            unit,
            batch,
            images: taken,
            requests,
        });
    }

    /// Whether the batch of `images` about to start on `unit` goes as staggered shares,
    /// and their plan: the unit staggers ([`UnitSpec::stagger_min_images`]) and the
    /// batch would take everything waiting, at least `stagger_min_images` images. Then
    /// each of the unit's streams gets an equal share (fitted to the run sizes); the
    /// first starts now, each next one a share's expected service time divided by the
    /// shares later, by which the shares finish apart. A unit answering one whole batch
    /// at a time leaves its other streams idle while the clients' next requests come
    /// back and are copied in; staggered shares overlap that gap of one with another's
    /// work (`docs/NOTES.md`, "Staggered streams"). The unit need not look idle: its
    /// stream workers answer the clients before the scheduler hears of the completion,
    /// so the next requests can arrive while the last batch still counts as running.
    /// No plan before the unit's service time is known.
    fn stagger_plan(&self, unit: usize, images: u32, now: Duration) -> Option<Stagger> {
        let from = self.stagger_min_images[unit];
        let view = &self.cluster.view().units[unit];
        let waiting = u32::try_from(self.queued_images).ok()?;
        if from == 0 || waiting < from || waiting > images || view.streams < 2 {
            return None;
        }
        let count = view.streams.min(waiting);
        let share = fit_run_size(
            &self.run_sizes[unit],
            waiting.div_ceil(count),
            u64::from(waiting),
        );
        let lag = view.service_time(share)? / count;
        Some(Stagger {
            share,
            left: count - 1,
            rest: u64::from(waiting - share),
            next_at: now + lag,
            lag,
        })
    }

    /// Records the end of batch `batch` at `now`; `service` is the engine's own time for
    /// it if known (else start-to-now is used). Returns what the policy was told, or
    /// `None` if no such batch was running.
    pub fn complete(
        &mut self,
        now: Duration,
        batch: u64,
        service: Option<Duration>,
        ok: bool,
    ) -> Option<Completion> {
        let running = self.running.remove(&batch)?;
        let service = service.unwrap_or_else(|| now.saturating_sub(running.started));
        self.cluster.finish(running.unit, batch, now, service, ok);
        let completion = Completion {
            unit: running.unit,
            images: running.images,
            started: now.saturating_sub(service),
            finished: now,
            ok,
        };
        let view = self.cluster.view_at(now);
        self.policy.on_completion(view, &completion);
        Some(completion)
    }

    /// Takes a unit out of service for good, or puts it back.
    pub fn set_offline(&mut self, unit: usize, offline: bool) {
        self.cluster.set_offline(unit, offline);
    }

    /// Replaces the policy; queued and running work is untouched.
    pub fn set_policy(&mut self, policy: Box<dyn Policy>) {
        self.policy = policy;
    }

    /// Every unit's standing at `now` (offline, quarantined), in index order.
    pub fn unit_health(&self, now: Duration) -> Vec<UnitHealth> {
        (0..self.cluster.view().units.len())
            .map(|unit| self.cluster.health(unit, now))
            .collect()
    }

    /// The active policy.
    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// The units as last seen.
    pub fn view(&self) -> &ClusterView {
        self.cluster.view()
    }

    /// The units at `now`: quarantines that ended are lifted.
    pub fn view_at(&mut self, now: Duration) -> &ClusterView {
        self.cluster.view_at(now)
    }

    /// Requests waiting.
    pub fn queued_requests(&self) -> usize {
        self.queued_requests
    }

    /// Images waiting.
    pub fn queued_images(&self) -> u64 {
        self.queued_images
    }

    /// Batches running.
    pub fn running_batches(&self) -> usize {
        self.running.len()
    }

    /// Times the policy answered something impossible (a busy unit, an unknown id).
    pub fn policy_errors(&self) -> u64 {
        self.policy_errors
    }

    /// Largest batch any unit accepts.
    pub fn max_batch(&self) -> u32 {
        self.max_batch
    }

    /// Removes every queued request (shutdown without drain).
    pub fn drain_queue(&mut self) -> Vec<Queued<T>> {
        let mut out = Vec::with_capacity(self.queued_requests);
        for (metas, payloads) in self.metas.iter_mut().zip(&mut self.payloads) {
            for (meta, payload) in metas.drain(..).zip(payloads.drain(..)) {
                out.push(Queued { meta, payload });
            }
        }
        self.queued_images = 0;
        self.queued_requests = 0;
        self.next_deadline = None;
        out
    }

    fn oldest_arrival(&self) -> Option<Duration> {
        self.metas
            .iter()
            .filter_map(|q| q.front().map(|r| r.arrival))
            .min()
    }

    fn drain_estimate(&self) -> Duration {
        let rate: f64 = self
            .cluster
            .view()
            .units
            .iter()
            .filter(|u| u.healthy)
            .map(|u| u.nominal_throughput())
            .sum();
        if rate > 0.0 {
            crate::time::secs((self.queued_images as f64 / rate).clamp(0.001, 3600.0))
        } else {
            Duration::from_secs(1)
        }
    }

    /// Takes whole requests from the front, most urgent level first, up to `images`
    /// images (always at least one request).
    fn take(&mut self, images: u32) -> (Vec<Queued<T>>, u32) {
        let mut taken = 0u32;
        let mut requests = Vec::new();
        for (metas, payloads) in self.metas.iter_mut().zip(&mut self.payloads) {
            while let Some(front) = metas.front() {
                if !requests.is_empty() && taken + front.images > images {
                    break;
                }
                let meta = metas.pop_front().expect("front exists; this is a bug");
                let payload = payloads
                    .pop_front()
                    .expect("queues move in step; this is a bug");
                taken += meta.images;
                requests.push(Queued { meta, payload });
                if taken >= images {
                    break;
                }
            }
            if taken >= images {
                break;
            }
        }
        self.queued_images -= u64::from(taken);
        self.queued_requests -= requests.len();
        (requests, taken)
    }

    fn remove(&mut self, id: u64) -> Option<Queued<T>> {
        for (metas, payloads) in self.metas.iter_mut().zip(&mut self.payloads) {
            if let Some(position) = metas.iter().position(|m| m.id == id) {
                let meta = metas.remove(position)?;
                let payload = payloads.remove(position)?;
                self.queued_images -= u64::from(meta.images);
                self.queued_requests -= 1;
                return Some(Queued { meta, payload });
            }
        }
        None
    }

    fn expire(&mut self, now: Duration, actions: &mut Vec<Action<T>>) {
        match self.next_deadline {
            Some(deadline) if deadline <= now => {}
            _ => return,
        }
        let mut next: Option<Duration> = None;
        for (metas, payloads) in self.metas.iter_mut().zip(&mut self.payloads) {
            let mut index = 0;
            while index < metas.len() {
                match metas[index].deadline {
                    Some(deadline) if deadline <= now => {
                        let meta = metas.remove(index).expect("index in range; this is a bug");
                        let payload = payloads
                            .remove(index)
                            .expect("queues move in step; this is a bug");
                        self.queued_images -= u64::from(meta.images);
                        self.queued_requests -= 1;
                        actions.push(Action::Drop {
                            request: Queued { meta, payload },
                            reason: DropReason::Expired,
                        });
                    }
                    Some(deadline) => {
                        next = earliest(next, Some(deadline));
                        index += 1;
                    }
                    None => index += 1,
                }
            }
        }
        self.next_deadline = next;
    }
}

/// The images to take for a batch of up to `images` with `queued` waiting, on a unit
/// whose engine pads every batch up to the next of `run_sizes` (empty: no padding).
/// When the padding up would add more rows than rounding down to the size below
/// leaves waiting, the batch goes at the size below and the rest waits for the next
/// one: 130 images on a unit of powers of two go as 128 (2 wait) rather than as 256
/// with 126 rows of padding; 200 go as 200 (56 rows of padding rather than 72 left).
fn fit_run_size(run_sizes: &[u32], images: u32, queued: u64) -> u32 {
    let wanted = u32::try_from(queued).map_or(images, |q| q.min(images));
    let Some(&up) = run_sizes.iter().find(|&&s| s >= wanted) else {
        return images;
    };
    match run_sizes.iter().rev().find(|&&s| s <= wanted) {
        Some(&down) if down > 0 && up - wanted > wanted - down => down,
        _ => images,
    }
}

fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::fit_run_size;

    #[test]
    fn a_batch_rounds_down_only_when_padding_up_would_waste_more_than_it_leaves() {
        let powers = [1, 2, 4, 8, 16, 32, 64, 128, 256];
        assert_eq!(fit_run_size(&powers, 256, 130), 128);
        assert_eq!(fit_run_size(&powers, 256, 200), 256, "pads 200 to 256");
        assert_eq!(fit_run_size(&powers, 256, 96), 256, "a tie pads");
        assert_eq!(fit_run_size(&powers, 256, 97), 256);
        assert_eq!(fit_run_size(&powers, 256, 95), 64);
        assert_eq!(
            fit_run_size(&powers, 256, 600),
            256,
            "a full batch is a run size"
        );
        assert_eq!(
            fit_run_size(&powers, 130, 600),
            128,
            "the policy's own size is fitted too"
        );
        assert_eq!(fit_run_size(&powers, 256, 1), 256);
        assert_eq!(
            fit_run_size(&[], 256, 130),
            256,
            "no padding, nothing to fit"
        );
        assert_eq!(
            fit_run_size(&[64], 64, 10),
            64,
            "one size: nothing to choose"
        );
    }
}
