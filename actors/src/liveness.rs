//! `Liveness`: whether the dispatcher and the unit actors are still running.
//!
//! Each actor stamps a heartbeat from its sampling timer (every `SAMPLE_INTERVAL`) and
//! marks itself stopped when the actor stops for any reason, a panic in a handler
//! included. `Service::alive` reads them: the readiness probe and the systemd watchdog
//! rely on it, so a service whose dispatcher died says so instead of staying "ready"
//! (issue 13's zombie). The clock is passed in, so the rules are tested without waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A heartbeat older than this means the actor's thread no longer runs its timers.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Beat {
    /// Milliseconds since `Liveness::epoch` of the last beat.
    at_ms: AtomicU64,
    stopped: AtomicBool,
}

impl Beat {
    fn beat(&self, since_epoch: Duration) {
        let ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        self.at_ms.store(ms, Ordering::Release);
    }
}

/// Which actor is not alive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dead {
    /// The dispatcher stopped (a panic in it, or it was stopped).
    #[error("the dispatcher actor stopped")]
    DispatcherStopped,
    /// The dispatcher's timers have not run for `STALE_AFTER`.
    #[error("the dispatcher has not run its timers for {0:?}")]
    DispatcherStalled(Duration),
    /// A unit actor stopped.
    #[error("the actor of unit {0} stopped")]
    UnitStopped(String),
    /// A unit actor's timers have not run for `STALE_AFTER`.
    #[error("the actor of unit {0} has not run its timers for {1:?}")]
    UnitStalled(String, Duration),
}

/// Heartbeats of the dispatcher and of every unit actor.
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    dispatcher: Beat,
    units: Vec<(String, Beat)>,
}

impl Liveness {
    /// Heartbeats for a dispatcher and these units, all fresh at `epoch`.
    pub fn new(epoch: Instant, units: impl IntoIterator<Item = String>) -> Self {
        Self {
            epoch,
            dispatcher: Beat::default(),
            units: units.into_iter().map(|u| (u, Beat::default())).collect(),
        }
    }

    /// The dispatcher's timer ran at `now`.
    pub fn dispatcher_beat(&self, now: Instant) {
        self.dispatcher
            .beat(now.saturating_duration_since(self.epoch));
    }

    /// Unit `index`'s timer ran at `now`.
    pub fn unit_beat(&self, index: usize, now: Instant) {
        if let Some((_, beat)) = self.units.get(index) {
            beat.beat(now.saturating_duration_since(self.epoch));
        }
    }

    /// The dispatcher stopped.
    pub fn dispatcher_stopped(&self) {
        self.dispatcher.stopped.store(true, Ordering::Release);
    }

    /// Unit `index`'s actor stopped.
    pub fn unit_stopped(&self, index: usize) {
        if let Some((_, beat)) = self.units.get(index) {
            beat.stopped.store(true, Ordering::Release);
        }
    }

    /// Whether every actor is alive at `now`: none stopped, none silent for
    /// `STALE_AFTER`.
    pub fn check(&self, now: Instant) -> Result<(), Dead> {
        let since = now.saturating_duration_since(self.epoch);
        let age = |beat: &Beat| {
            since.saturating_sub(Duration::from_millis(beat.at_ms.load(Ordering::Acquire)))
        };
        if self.dispatcher.stopped.load(Ordering::Acquire) {
            return Err(Dead::DispatcherStopped);
        }
        let silent = age(&self.dispatcher);
        if silent > STALE_AFTER {
            return Err(Dead::DispatcherStalled(silent));
        }
        for (unit, beat) in &self.units {
            if beat.stopped.load(Ordering::Acquire) {
                return Err(Dead::UnitStopped(unit.clone()));
            }
            let silent = age(beat);
            if silent > STALE_AFTER {
                return Err(Dead::UnitStalled(unit.clone(), silent));
            }
        }
        Ok(())
    }
}

/// Held by an actor; marks it stopped when dropped. An actor whose handler panics is
/// dropped while the panic unwinds (its `stopped` hook never runs), so this guard is
/// what reports a panicked actor.
#[derive(Debug)]
pub struct StopGuard {
    liveness: std::sync::Arc<Liveness>,
    /// `None` for the dispatcher, else the unit index.
    unit: Option<usize>,
}

impl StopGuard {
    /// A guard for the dispatcher.
    pub fn dispatcher(liveness: std::sync::Arc<Liveness>) -> Self {
        Self {
            liveness,
            unit: None,
        }
    }

    /// A guard for unit `index`'s actor.
    pub fn unit(liveness: std::sync::Arc<Liveness>, index: usize) -> Self {
        Self {
            liveness,
            unit: Some(index),
        }
    }

    /// Stamps this actor's heartbeat at `now`.
    pub fn beat(&self, now: Instant) {
        match self.unit {
            None => self.liveness.dispatcher_beat(now),
            Some(index) => self.liveness.unit_beat(index, now),
        }
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        match self.unit {
            None => self.liveness.dispatcher_stopped(),
            Some(index) => self.liveness.unit_stopped(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopped_or_silent_actors_are_dead() {
        let start = Instant::now();
        let live = Liveness::new(start, ["a".to_string()]);
        assert_eq!(live.check(start + STALE_AFTER), Ok(()));
        let later = start + STALE_AFTER * 2;
        assert!(matches!(live.check(later), Err(Dead::DispatcherStalled(_))));
        live.dispatcher_beat(later);
        assert!(matches!(live.check(later), Err(Dead::UnitStalled(u, _)) if u == "a"));
        live.unit_beat(0, later);
        assert_eq!(live.check(later), Ok(()));
        live.unit_stopped(0);
        assert_eq!(live.check(later), Err(Dead::UnitStopped("a".into())));
        live.dispatcher_stopped();
        assert_eq!(live.check(later), Err(Dead::DispatcherStopped));
    }
}
