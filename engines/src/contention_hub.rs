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
//!
//! Time is the hub's `Clock`: wall time in service, where a batch's thread sleeps on a
//! condition variable until its predicted end (or until a batch starts or ends); a
//! test's `ManualClock` in tests, where it sleeps until the clock is advanced, so a sim
//! engine takes exactly its emulated time of virtual time and no wall time.

use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mica_core::{Clock, ContentionModel, ContentionProgress, Load};
use parking_lot::{Condvar, Mutex};

#[derive(Debug)]
struct HubState {
    progress: ContentionProgress<()>,
    /// The clock reading progress is brought up to.
    last_update: Instant,
}

/// The state and the condition variable its waiting batches sleep on.
#[derive(Debug)]
struct Shared {
    state: Mutex<HubState>,
    changed: Condvar,
}

/// A manual clock's advance wakes the hub's sleepers through this.
impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Taking the lock orders the wake-up after a sleeper's look at the clock: it is
        // either still looking (and sees the new time) or already waiting.
        let _state = self.state.lock();
        self.changed.notify_all();
    }
}

/// The contention coupling of one platform's simulated units.
#[derive(Debug)]
pub struct ContentionHub {
    model: Box<dyn ContentionModel>,
    clock: Clock,
    shared: Arc<Shared>,
    waker: Waker,
}

impl ContentionHub {
    /// A hub applying `model`, in wall time.
    pub fn new(model: Box<dyn ContentionModel>) -> Self {
        Self::with_clock(model, Clock::system())
    }

    /// A hub applying `model` in the time of `clock` (the service's clock).
    pub fn with_clock(model: Box<dyn ContentionModel>, clock: Clock) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(HubState {
                progress: ContentionProgress::new(),
                last_update: clock.now(),
            }),
            changed: Condvar::new(),
        });
        Self {
            model,
            clock,
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// The clock the hub runs on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Blocks the calling thread for `work` of isolated service time, stretched by
    /// contention with whatever else runs meanwhile. Returns the mean slowdown the batch
    /// experienced (elapsed / work).
    pub fn run(&self, load: Load, work: Duration) -> f64 {
        let started = self.clock.now();
        let mut state = self.shared.state.lock();
        Self::advance(&mut state, started);
        let id = state
            .progress
            .add(self.model.as_ref(), load, work.as_secs_f64(), ());
        self.shared.changed.notify_all();
        while !state.progress.is_finished(id) {
            match self.clock.as_manual() {
                // Virtual time moves only when the test advances it: sleep until it
                // does (or until a batch starts or ends), unless it already has.
                Some(manual) => {
                    if manual.wake_on_advance(state.last_update, &self.waker) {
                        self.shared.changed.wait(&mut state);
                    }
                }
                None => {
                    let left = state.progress.finishes_in(id).expect(
                        "a batch stays registered until its own thread removes it; this is a bug",
                    );
                    self.shared.changed.wait_for(&mut state, wait_time(left));
                }
            }
            Self::advance(&mut state, self.clock.now());
        }
        state.progress.remove(self.model.as_ref(), id);
        self.shared.changed.notify_all();
        drop(state);
        let elapsed = self
            .clock
            .now()
            .saturating_duration_since(started)
            .as_secs_f64();
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

    /// Test tooling: blocks until `batches` batches are in flight.
    #[cfg(test)]
    pub(crate) fn wait_for_batches(&self, batches: usize) {
        let mut state = self.shared.state.lock();
        while state.progress.len() != batches {
            self.shared.changed.wait(&mut state);
        }
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
    use mica_core::{ManualClock, UnitKind};
    use std::thread;

    fn gpu_load(unit: usize) -> Load {
        Load {
            unit,
            kind: UnitKind::CudaFp32,
            device: Some(0),
            gpu_occupancy: 1.0,
            bandwidth_gbps: 0.0,
            images: 1,
        }
    }

    /// Two GPU units on one GPU share its SMs: slowdown 2 while both run.
    fn hub(clock: &ManualClock) -> Arc<ContentionHub> {
        Arc::new(ContentionHub::with_clock(
            Box::new(BandwidthShare {
                memory_bandwidth_gbps: 100.0,
            }),
            clock.clock(),
        ))
    }

    fn spawn_batch(
        hub: &Arc<ContentionHub>,
        unit: usize,
        work: Duration,
    ) -> thread::JoinHandle<f64> {
        let hub = hub.clone();
        thread::spawn(move || hub.run(gpu_load(unit), work))
    }

    #[test]
    fn a_lone_batch_takes_its_work_of_virtual_time() {
        let clock = ManualClock::new();
        let hub = hub(&clock);
        let batch = spawn_batch(&hub, 0, Duration::from_millis(30));
        hub.wait_for_batches(1);
        clock.advance(Duration::from_millis(29));
        assert!(!batch.is_finished(), "1 ms of work is left");
        clock.advance(Duration::from_millis(1));
        assert_eq!(batch.join().unwrap(), 1.0);
    }

    #[test]
    fn two_gpu_batches_together_take_twice_as_long() {
        let clock = ManualClock::new();
        let hub = hub(&clock);
        let a = spawn_batch(&hub, 0, Duration::from_millis(60));
        let b = spawn_batch(&hub, 1, Duration::from_millis(60));
        hub.wait_for_batches(2);
        clock.advance(Duration::from_millis(120));
        assert_eq!(a.join().unwrap(), 2.0);
        assert_eq!(b.join().unwrap(), 2.0);
    }

    #[test]
    fn a_batch_joined_half_way_is_slowed_only_for_the_overlap() {
        // `a` (60 ms alone) runs alone for 20 ms, then `b` (20 ms alone) joins: both at
        // slowdown 2 until `b` ends 40 ms later; `a` then has 20 ms left, alone.
        let clock = ManualClock::new();
        let hub = hub(&clock);
        let a = spawn_batch(&hub, 0, Duration::from_millis(60));
        hub.wait_for_batches(1);
        clock.advance(Duration::from_millis(20));
        let b = spawn_batch(&hub, 1, Duration::from_millis(20));
        hub.wait_for_batches(2);
        clock.advance(Duration::from_millis(40));
        assert_eq!(b.join().unwrap(), 2.0);
        hub.wait_for_batches(1);
        clock.advance(Duration::from_millis(20));
        // 80 ms for 60 ms of work.
        let slowdown = a.join().unwrap();
        assert!((slowdown - 80.0 / 60.0).abs() < 1e-12, "{slowdown}");
    }

    #[test]
    fn on_the_system_clock_a_batch_takes_at_least_its_work() {
        let hub = ContentionHub::new(Box::new(BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        }));
        let started = Instant::now();
        let slowdown = hub.run(gpu_load(0), Duration::from_millis(5));
        assert!(started.elapsed() >= Duration::from_millis(5));
        assert!(slowdown >= 1.0, "{slowdown}");
    }
}
