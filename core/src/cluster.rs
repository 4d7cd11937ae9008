//! Bookkeeping behind the `ClusterView`: which batches run where, when they are
//! expected to end, measured rates and unit health.
//!
//! The live dispatcher and the discrete-event simulator both keep one `ClusterState`
//! and feed it the same events, so a policy sees the same kind of view in both.

use std::sync::Arc;
use std::time::Duration;

use crate::profile::Profile;
use crate::unit::{UnitId, UnitKind};
use crate::view::{ClusterView, UnitView};

/// Static description of a unit, from the config.
#[derive(Debug, Clone)]
pub struct UnitSpec {
    /// Config name.
    pub id: UnitId,
    /// Hardware kind.
    pub kind: UnitKind,
    /// GPU index it uses or falls back to; `None` for the CPU.
    pub device: Option<u32>,
    /// Whether its engine is the simulator.
    pub simulated: bool,
    /// Stream workers.
    pub streams: u32,
    /// Largest batch it accepts.
    pub max_batch: u32,
    /// Its profile, if known.
    pub profile: Option<Arc<Profile>>,
    /// The batch sizes its engine runs as they are, ascending, when the engine pads
    /// every other batch up to the next of them (a GPU torch unit: powers of two);
    /// empty when every size runs as it is. The scheduler sends a batch at the size
    /// below rather than pad far up to the one above.
    pub run_sizes: Vec<u32>,
    /// Staggers the unit's streams under dynamic batching: when at least this many
    /// waiting images would all go in the one batch the unit is given, they go as one
    /// share per stream instead, each started a share's expected run time divided by
    /// the streams after the one before (0: never). The shares then finish apart, so
    /// one stream's answer-and-resubmit gap overlaps another's work (`Scheduler::poll`,
    /// `docs/NOTES.md`, "Staggered streams").
    pub stagger_min_images: u32,
}

/// When repeated failures take a unit out of service, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct HealthRules {
    /// Consecutive failed batches that quarantine a unit.
    pub failures_to_quarantine: u32,
    /// How long a quarantine lasts; afterwards the unit gets batches again and one more
    /// failure quarantines it anew.
    pub quarantine: Duration,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self {
            failures_to_quarantine: 3,
            quarantine: Duration::from_secs(5),
        }
    }
}

/// Weight of the newest batch in the measured-rate averages.
const EWMA_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone)]
struct InFlight {
    batch: u64,
    images: u32,
    expected_end: Duration,
}

#[derive(Debug, Clone, Default)]
struct UnitBook {
    in_flight: Vec<InFlight>,
    consecutive_failures: u32,
    quarantined_until: Option<Duration>,
    /// Taken out of service for good (its engine never loaded).
    offline: bool,
    /// Times the unit has been quarantined since start.
    quarantines: u64,
}

/// A unit's standing with the scheduler, for reports (why a unit got no work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitHealth {
    /// Taken out of service for good: its engine failed to load.
    pub offline: bool,
    /// In quarantine now, after repeated failed batches.
    pub quarantined: bool,
    /// Times it has been quarantined since start.
    pub quarantines: u64,
    /// Out of service while a stream worker lost to a hung batch is replaced (set by
    /// the live dispatcher, which knows why a unit is out; never by the scheduler).
    pub replacing_worker: bool,
}

/// The mutable state of all units.
#[derive(Debug, Clone)]
pub struct ClusterState {
    view: ClusterView,
    books: Vec<UnitBook>,
    rules: HealthRules,
}

impl ClusterState {
    /// State for these units, all idle and healthy.
    pub fn new(specs: &[UnitSpec], rules: HealthRules) -> Self {
        let units = specs
            .iter()
            .map(|s| UnitView {
                id: s.id.clone(),
                kind: s.kind,
                device: s.device,
                simulated: s.simulated,
                streams: s.streams,
                free_streams: s.streams,
                in_flight_batches: 0,
                in_flight_images: 0,
                max_batch: s.max_batch,
                next_free_at: Duration::ZERO,
                busy_until: Duration::ZERO,
                recent_throughput_img_s: 0.0,
                recent_latency_ms: 0.0,
                completed_batches: 0,
                healthy: true,
                profile: s.profile.clone(),
            })
            .collect();
        Self {
            view: ClusterView {
                now: Duration::ZERO,
                units,
            },
            books: vec![UnitBook::default(); specs.len()],
            rules,
        }
    }

    /// The view at `now`: expected times are clamped to `now` and quarantines that have
    /// run out are lifted.
    pub fn view_at(&mut self, now: Duration) -> &ClusterView {
        self.view.now = now;
        for (unit, book) in self.view.units.iter_mut().zip(&mut self.books) {
            if let Some(until) = book.quarantined_until {
                if now >= until {
                    book.quarantined_until = None;
                    unit.healthy = !book.offline;
                }
            }
            refresh_expectations(unit, book, now);
        }
        &self.view
    }

    /// The view as last refreshed.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Records that batch `batch` of `images` started on `unit` at `now`, expected to
    /// take `expected` (the caller's prediction; the measured latency stands in when
    /// there is no profile).
    pub fn start(&mut self, unit: usize, batch: u64, images: u32, now: Duration) {
        let expected = self.view.units[unit]
            .predicted_latency(images)
            .unwrap_or(Duration::ZERO);
        let book = &mut self.books[unit];
        book.in_flight.push(InFlight {
            batch,
            images,
            expected_end: now + expected,
        });
        let view = &mut self.view.units[unit];
        view.free_streams = view.free_streams.saturating_sub(1);
        view.in_flight_batches += 1;
        view.in_flight_images += images;
        refresh_expectations(view, book, now);
    }

    /// Records that batch `batch` on `unit` ended at `now` after `service` of work.
    /// Returns false if the batch was not in flight there (a bug in the caller).
    pub fn finish(
        &mut self,
        unit: usize,
        batch: u64,
        now: Duration,
        service: Duration,
        ok: bool,
    ) -> bool {
        let book = &mut self.books[unit];
        let Some(position) = book.in_flight.iter().position(|b| b.batch == batch) else {
            return false;
        };
        let done = book.in_flight.swap_remove(position);
        let view = &mut self.view.units[unit];
        view.free_streams = (view.free_streams + 1).min(view.streams);
        view.in_flight_batches -= 1;
        view.in_flight_images -= done.images;
        if ok {
            book.consecutive_failures = 0;
            view.completed_batches += 1;
            let ms = service.as_secs_f64() * 1e3;
            if ms > 0.0 {
                let rate = f64::from(done.images) * 1e3 / ms * f64::from(view.streams);
                if view.recent_latency_ms == 0.0 {
                    view.recent_latency_ms = ms;
                    view.recent_throughput_img_s = rate;
                } else {
                    view.recent_latency_ms += EWMA_WEIGHT * (ms - view.recent_latency_ms);
                    view.recent_throughput_img_s +=
                        EWMA_WEIGHT * (rate - view.recent_throughput_img_s);
                }
            }
        } else {
            book.consecutive_failures += 1;
            if book.consecutive_failures >= self.rules.failures_to_quarantine {
                book.quarantined_until = Some(now + self.rules.quarantine);
                book.quarantines += 1;
                book.consecutive_failures = self.rules.failures_to_quarantine - 1;
                view.healthy = false;
            }
        }
        refresh_expectations(view, book, now);
        true
    }

    /// Takes a unit out of service for good (its engine failed to load), or puts it
    /// back; an offline unit is never healthy.
    pub fn set_offline(&mut self, unit: usize, offline: bool) {
        self.books[unit].offline = offline;
        self.view.units[unit].healthy = !offline && self.books[unit].quarantined_until.is_none();
    }

    /// Unit `unit`'s standing at `now`: offline, quarantined, and how often it was.
    pub fn health(&self, unit: usize, now: Duration) -> UnitHealth {
        let book = &self.books[unit];
        UnitHealth {
            offline: book.offline,
            quarantined: book.quarantined_until.is_some_and(|until| until > now),
            quarantines: book.quarantines,
            replacing_worker: false,
        }
    }

    /// Replaces a unit's profile (after `mica profile` or a config reload).
    pub fn set_profile(&mut self, unit: usize, profile: Option<Arc<Profile>>) {
        self.view.units[unit].profile = profile;
    }
}

fn refresh_expectations(view: &mut UnitView, book: &UnitBook, now: Duration) {
    let ends = book.in_flight.iter().map(|b| b.expected_end.max(now));
    view.busy_until = ends.clone().max().unwrap_or(now);
    view.next_free_at = if view.free_streams > 0 {
        now
    } else {
        ends.min().unwrap_or(now)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileOrigin, ProfilePoint};

    fn spec(id: &str, streams: u32) -> UnitSpec {
        UnitSpec {
            id: UnitId::new(id),
            kind: UnitKind::CudaFp32,
            device: Some(0),
            simulated: true,
            streams,
            max_batch: 8,
            profile: Some(Arc::new(Profile {
                model: "m".into(),
                origin: ProfileOrigin::Calibrated,
                source: String::new(),
                overhead_ms: 0.0,
                gpu_occupancy: 1.0,
                points: vec![ProfilePoint {
                    batch: 1,
                    latency_ms: 10.0,
                    bandwidth_gbps: 0.0,
                    source: String::new(),
                }],
            })),
            run_sizes: Vec::new(),
            stagger_min_images: 0,
        }
    }

    #[test]
    fn tracks_streams_and_expected_ends() {
        let mut state = ClusterState::new(&[spec("a", 2)], HealthRules::default());
        let t0 = Duration::from_millis(100);
        state.start(0, 1, 2, t0);
        let v = &state.view().units[0];
        assert_eq!(v.free_streams, 1);
        assert_eq!(v.next_free_at, t0);
        assert_eq!(v.busy_until, t0 + Duration::from_millis(20));
        state.start(0, 2, 1, t0);
        let v = &state.view().units[0];
        assert!(!v.can_take_batch());
        assert_eq!(v.next_free_at, t0 + Duration::from_millis(10));
        assert!(state.finish(
            0,
            2,
            t0 + Duration::from_millis(10),
            Duration::from_millis(10),
            true
        ));
        assert!(
            !state.finish(0, 2, t0, Duration::ZERO, true),
            "finished twice"
        );
        let v = &state.view().units[0];
        assert_eq!(v.free_streams, 1);
        assert_eq!(v.completed_batches, 1);
        assert!((v.recent_throughput_img_s - 200.0).abs() < 1e-6);
    }

    #[test]
    fn quarantines_after_repeated_failures_then_recovers() {
        let rules = HealthRules {
            failures_to_quarantine: 2,
            quarantine: Duration::from_secs(1),
        };
        let mut state = ClusterState::new(&[spec("a", 1)], rules);
        for batch in 0..2 {
            state.start(0, batch, 1, Duration::ZERO);
            state.finish(0, batch, Duration::ZERO, Duration::ZERO, false);
        }
        assert!(!state.view_at(Duration::from_millis(500)).units[0].healthy);
        assert!(state.view_at(Duration::from_secs(1)).units[0].healthy);
        // One more failure after the quarantine puts it straight back.
        state.start(0, 9, 1, Duration::from_secs(1));
        state.finish(0, 9, Duration::from_secs(1), Duration::ZERO, false);
        assert!(!state.view_at(Duration::from_secs(1)).units[0].healthy);
    }
}
