//! `Clock`: where the live service reads the time, so that tests can drive it.
//!
//! The scheduler core and the policies take `now` as an argument; the actors and the
//! sim engine's `ContentionHub` need a clock to read it from and to wait on. A `Clock`
//! is a cheap handle on one of two: the system clock (`Instant::now()`, waits in wall
//! time; the default and what the service runs on), or a `ManualClock` that only moves
//! when a test calls `advance` (quickwit runs its actor tests on accelerated time the
//! same way). A manual clock's readings are `Instant`s (its creation plus what it has
//! been advanced by), so code that reads a clock does not care which it has.
//!
//! Waiting differs: on the system clock one waits with the runtime's timer or a
//! condition variable's timeout; on a manual clock one waits for `advance`, which wakes
//! every `Waker` registered with `wake_on_advance` and every `ManualClock::sleep_until`
//! future. The async timer over both lives with the actors (`mica-actors`' `timer.rs`),
//! which own the runtime; the hub waits on its condition variable.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A handle on the clock that the actors and the sim engine read: the system clock by
/// default, or a test's `ManualClock`. Cloning is cheap; clones read the same clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<ManualClock>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        match &self.manual {
            Some(manual) => manual.now(),
            None => Instant::now(),
        }
    }

    /// The manual clock behind this handle, if it is one: waiting on it means waiting
    /// for a test to advance it, not for wall time.
    pub fn as_manual(&self) -> Option<&ManualClock> {
        self.manual.as_ref()
    }
}

/// A clock that moves only when `advance` is called: virtual time for tests. Cloning
/// is cheap; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Manual>,
}

#[derive(Debug)]
struct Manual {
    /// What the clock read when it was made.
    start: Instant,
    state: Mutex<ManualState>,
}

#[derive(Debug, Default)]
struct ManualState {
    /// How far it has been advanced.
    elapsed: Duration,
    /// Woken at the next advance.
    wakers: Vec<Waker>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the present instant until advanced.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Manual {
                start: Instant::now(),
                state: Mutex::new(ManualState::default()),
            }),
        }
    }

    /// A `Clock` handle reading this clock.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.clone()),
        }
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        self.inner.start + self.lock().elapsed
    }

    /// How far the clock has been advanced since it was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().elapsed
    }

    /// Moves the clock forward by `by` and wakes everything waiting on it.
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut state = self.lock();
            state.elapsed = state.elapsed.saturating_add(by);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Registers `waker` to be woken at the next `advance`, unless the clock already
    /// reads later than `seen`: then it returns false and the caller should look at the
    /// time again. Reading the time and registering are one step for the caller that
    /// passes the reading it acted on, so no advance can slip between them unseen.
    pub fn wake_on_advance(&self, seen: Instant, waker: &Waker) -> bool {
        let mut state = self.lock();
        if self.inner.start + state.elapsed > seen {
            return false;
        }
        register(&mut state, waker);
        true
    }

    /// A future that resolves once the clock reads `deadline` or later.
    pub fn sleep_until(&self, deadline: Instant) -> ManualSleep {
        ManualSleep {
            clock: self.clone(),
            deadline,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // The state is a duration and a list of wakers: a panic elsewhere cannot leave
        // it half-changed.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn register(state: &mut ManualState, waker: &Waker) {
    if !state.wakers.iter().any(|w| w.will_wake(waker)) {
        state.wakers.push(waker.clone());
    }
}

/// Resolves once a `ManualClock` reads its deadline or later
/// (`ManualClock::sleep_until`).
#[derive(Debug)]
pub struct ManualSleep {
    clock: ManualClock,
    deadline: Instant,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.lock();
        if self.clock.inner.start + state.elapsed >= self.deadline {
            return Poll::Ready(());
        }
        register(&mut state, cx.waker());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_handles_agree() {
        let manual = ManualClock::new();
        let clock = manual.clock();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        manual.advance(Duration::from_millis(250));
        assert_eq!(clock.now(), t0 + Duration::from_millis(250));
        assert_eq!(manual.clone().now(), clock.now());
        assert_eq!(manual.elapsed(), Duration::from_millis(250));
        assert!(clock.as_manual().is_some());
        assert!(Clock::system().as_manual().is_none());
    }

    #[test]
    fn a_sleep_resolves_at_its_deadline_and_not_before() {
        let manual = ManualClock::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut sleep = manual.sleep_until(manual.now() + Duration::from_millis(10));
        assert_eq!(Pin::new(&mut sleep).poll(&mut cx), Poll::Pending);
        // Polled twice, registered once.
        assert_eq!(Pin::new(&mut sleep).poll(&mut cx), Poll::Pending);
        manual.advance(Duration::from_millis(9));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the advance");
        assert_eq!(Pin::new(&mut sleep).poll(&mut cx), Poll::Pending);
        manual.advance(Duration::from_millis(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(Pin::new(&mut sleep).poll(&mut cx), Poll::Ready(()));
    }

    #[test]
    fn a_waiter_that_missed_an_advance_is_told_so() {
        let manual = ManualClock::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let seen = manual.now();
        manual.advance(Duration::from_nanos(1));
        assert!(!manual.wake_on_advance(seen, &waker));
        assert!(manual.wake_on_advance(manual.now(), &waker));
        manual.advance(Duration::from_nanos(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
