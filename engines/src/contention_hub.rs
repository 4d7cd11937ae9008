//! Shared contention state that couples simulated units running in real time.
//!
//! Every simulated batch registers here for its whole life. Its work is measured in
//! "isolated seconds" (its service time were the unit alone); it progresses at
//! `1 / slowdown`, where the slowdown comes from the platform's contention model applied
//! to every batch running at that instant. Whenever a batch starts or ends, progress is
//! brought up to date and every slowdown recomputed, so a batch that starts alone and is
//! joined half-way by a co-runner finishes exactly as the model says. The progress rule
//! is `mica_core::ContentionProgress`, the one the discrete-event simulator advances
//! in virtual time.

use std::time::{Duration, Instant};

use mica_core::{ContentionModel, ContentionProgress, Load};
use parking_lot::{Condvar, Mutex};

#[derive(Debug)]
struct HubState {
    progress: ContentionProgress<()>,
    last_update: Instant,
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
                progress: ContentionProgress::new(),
                last_update: Instant::now(),
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
        Self::advance(&mut state, started);
        let id = state
            .progress
            .add(self.model.as_ref(), load, work.as_secs_f64(), ());
        self.changed.notify_all();
        while !state.progress.is_finished(id) {
            let left = state
                .progress
                .finishes_in(id)
                .expect("a batch stays registered until its own thread removes it; this is a bug");
            self.changed.wait_for(&mut state, wait_time(left));
            Self::advance(&mut state, Instant::now());
        }
        state.progress.remove(self.model.as_ref(), id);
        self.changed.notify_all();
        drop(state);
        let elapsed = started.elapsed().as_secs_f64();
        if work.is_zero() {
            1.0
        } else {
            elapsed / work.as_secs_f64()
        }
    }

    /// Brings progress up to `now`.
    fn advance(state: &mut HubState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.last_update);
        state.last_update = state.last_update.max(now);
        state.progress.advance(elapsed.as_secs_f64());
    }
}

/// `seconds` as a time to wait, rounded up to the nanosecond: waiting it out leaves no
/// work beyond the rounding that `DONE_EPSILON_S` absorbs.
fn wait_time(seconds: f64) -> Duration {
    let rounded = mica_core::time::secs(seconds);
    if rounded.as_secs_f64() < seconds {
        rounded + Duration::from_nanos(1)
    } else {
        rounded
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
