//! Shared contention state that couples simulated units running in real time.
//!
//! Every simulated batch registers here for its whole life. Its work is measured in
//! "isolated seconds" (its service time were the unit alone); it progresses at
//! `1 / slowdown`, where the slowdown comes from the platform's contention model applied
//! to every batch running at that instant. Whenever a batch starts or ends, progress is
//! brought up to date and every slowdown recomputed, so a batch that starts alone and is
//! joined half-way by a co-runner finishes exactly as the model says. The discrete-event
//! simulator uses the same model with the same progress rule in virtual time.

use std::time::{Duration, Instant};

use mica_core::{ContentionModel, Load};
use parking_lot::{Condvar, Mutex};

/// Work still to do below this many isolated seconds counts as done (a microsecond
/// of rounding when the condition variable wakes exactly at the predicted end).
const DONE_EPSILON_S: f64 = 1e-6;

#[derive(Debug)]
struct Job {
    id: u64,
    load: Load,
    remaining_s: f64,
    slowdown: f64,
}

#[derive(Debug)]
struct HubState {
    jobs: Vec<Job>,
    last_update: Instant,
    next_id: u64,
    scratch_loads: Vec<Load>,
    scratch_slowdowns: Vec<f64>,
}

/// The contention coupling of one platform's simulated units.
#[derive(Debug)]
pub struct ContentionHub {
    model: Box<dyn ContentionModel>,
    state: Mutex<HubState>,
    changed: Condvar,
}

impl ContentionHub {
    /// A hub applying `model`.
    pub fn new(model: Box<dyn ContentionModel>) -> Self {
        Self {
            model,
            state: Mutex::new(HubState {
                jobs: Vec::new(),
                last_update: Instant::now(),
                next_id: 0,
                scratch_loads: Vec::new(),
                scratch_slowdowns: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Blocks the calling thread for `work` of isolated service time, stretched by
    /// contention with whatever else runs meanwhile. Returns the mean slowdown the batch
    /// experienced (elapsed / work).
    pub fn run(&self, load: Load, work: Duration) -> f64 {
        let started = Instant::now();
        let mut state = self.state.lock();
        self.advance(&mut state, started);
        let id = state.next_id;
        state.next_id += 1;
        state.jobs.push(Job {
            id,
            load,
            remaining_s: work.as_secs_f64(),
            slowdown: 1.0,
        });
        self.recompute(&mut state);
        self.changed.notify_all();
        loop {
            let job =
                state.jobs.iter().find(|j| j.id == id).expect(
                    "a job stays registered until its own thread removes it; this is a bug",
                );
            if job.remaining_s <= DONE_EPSILON_S {
                break;
            }
            let wait = mica_core::time::secs(job.remaining_s * job.slowdown);
            self.changed.wait_for(&mut state, wait);
            self.advance(&mut state, Instant::now());
        }
        state.jobs.retain(|j| j.id != id);
        self.recompute(&mut state);
        self.changed.notify_all();
        drop(state);
        let elapsed = started.elapsed().as_secs_f64();
        if work.is_zero() {
            1.0
        } else {
            elapsed / work.as_secs_f64()
        }
    }

    fn advance(&self, state: &mut HubState, now: Instant) {
        let elapsed = now
            .saturating_duration_since(state.last_update)
            .as_secs_f64();
        state.last_update = now;
        if elapsed == 0.0 {
            return;
        }
        for job in &mut state.jobs {
            job.remaining_s -= elapsed / job.slowdown;
        }
    }

    fn recompute(&self, state: &mut HubState) {
        let HubState {
            jobs,
            scratch_loads,
            scratch_slowdowns,
            ..
        } = state;
        scratch_loads.clear();
        scratch_loads.extend(jobs.iter().map(|j| j.load));
        self.model.slowdowns(scratch_loads, scratch_slowdowns);
        for (job, slowdown) in jobs.iter_mut().zip(scratch_slowdowns.iter()) {
            job.slowdown = slowdown.max(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mica_core::contention::BandwidthShare;
    use mica_core::UnitKind;
    use std::sync::Arc;

    fn gpu_load(unit: usize) -> Load {
        Load {
            unit,
            kind: UnitKind::CudaFp32,
            device: Some(0),
            gpu_occupancy: 1.0,
            bandwidth_gbps: 0.0,
        }
    }

    #[test]
    fn a_lone_batch_takes_its_work() {
        let hub = ContentionHub::new(Box::new(BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        }));
        let slowdown = hub.run(gpu_load(0), Duration::from_millis(30));
        assert!((1.0..1.5).contains(&slowdown), "slowdown {slowdown}");
    }

    #[test]
    fn two_gpu_batches_together_take_twice_as_long() {
        let hub = Arc::new(ContentionHub::new(Box::new(BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        })));
        let other = {
            let hub = hub.clone();
            std::thread::spawn(move || hub.run(gpu_load(1), Duration::from_millis(60)))
        };
        let started = Instant::now();
        let mine = hub.run(gpu_load(0), Duration::from_millis(60));
        let theirs = other.join().unwrap();
        // Both share the SMs for (almost) the whole time: each takes ~2x.
        assert!(mine > 1.6 && theirs > 1.6, "mine {mine} theirs {theirs}");
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
