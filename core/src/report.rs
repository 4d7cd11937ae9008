//! Run reports: the figures `mica bench`, `mica simulate` and the experiments print.
//!
//! One `ReportBuilder` records every finished request (which unit served it, how many
//! images, end-to-end latency, queue wait) and every batch; `finish` turns that into a
//! `RunReport` with the same JSON keys whatever produced it, so a simulated run and a
//! real one can be compared line by line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::cluster::UnitHealth;

/// Figures for one unit or for the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Images completed per second of run time.
    pub throughput_img_s: f64,
    /// Images completed.
    pub images: u64,
    /// Requests completed.
    pub requests: u64,
    /// Batches completed.
    pub batches: u64,
    /// Images per batch, on average.
    pub mean_batch_size: f64,
    /// End-to-end request latency percentiles (admission to answer), milliseconds.
    pub p50_ms: f64,
    /// 95th percentile latency, milliseconds.
    pub p95_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Median time a request waited in the queue before its batch started, milliseconds.
    pub queue_wait_p50_ms: f64,
    /// 99th percentile queue wait, milliseconds.
    pub queue_wait_p99_ms: f64,
}

/// A whole run's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `bench`, `simulate`, ...
    pub mode: String,
    /// Policy that placed the batches.
    pub policy: String,
    /// Whether any figure comes from a simulated unit (sim engine or simulator).
    pub simulated: bool,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Requests that failed (engine error, timeout, shed).
    pub failed_requests: u64,
    /// Requests refused at admission (queue full).
    pub rejected_requests: u64,
    /// The whole run.
    pub total: Stats,
    /// Per unit id.
    pub units: BTreeMap<String, UnitStats>,
}

/// Per-unit figures, with what runs the unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnitStats {
    /// Engine label (`sim`, `torch`, ...).
    pub engine: String,
    /// Unit kind (`cuda_fp32`, ...).
    pub kind: String,
    /// The figures.
    #[serde(flatten)]
    pub stats: Stats,
    /// Why the unit completed nothing in the measured window, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleReason>,
}

/// Why a unit did no work in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum IdleReason {
    /// Healthy and ready the whole time, but the policy sent it no batch (it chose
    /// other units as the better set, or had no work beyond what they took).
    Policy {
        /// The policy that kept it idle.
        policy: String,
    },
    /// Its engine failed to load: out of service for the whole run.
    Offline,
    /// Out of service while a stream worker lost to a hung batch was replaced.
    ReplacingWorker,
    /// Taken out of service after repeated failed batches.
    Quarantined {
        /// Times it was quarantined since the service started.
        times: u64,
    },
}

impl IdleReason {
    /// The reason for an idle unit of this standing under `policy`: offline first, then
    /// a worker being replaced, then quarantine, else the policy's choice.
    pub fn of(health: &UnitHealth, policy: &str) -> Self {
        if health.offline {
            IdleReason::Offline
        } else if health.replacing_worker {
            IdleReason::ReplacingWorker
        } else if health.quarantined || health.quarantines > 0 {
            IdleReason::Quarantined {
                times: health.quarantines.max(1),
            }
        } else {
            IdleReason::Policy {
                policy: policy.to_string(),
            }
        }
    }
}

impl std::fmt::Display for IdleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdleReason::Policy { policy } => write!(f, "kept idle by the policy ({policy})"),
            IdleReason::Offline => write!(f, "offline: its engine failed to load"),
            IdleReason::ReplacingWorker => write!(
                f,
                "out of service: replacing a stream worker after a hung batch"
            ),
            IdleReason::Quarantined { times: 1 } => {
                write!(f, "quarantined after repeated failed batches")
            }
            IdleReason::Quarantined { times } => write!(
                f,
                "quarantined after repeated failed batches ({times} times)"
            ),
        }
    }
}

#[derive(Debug)]
struct Recorder {
    latency_us: Histogram<u64>,
    queue_wait_us: Histogram<u64>,
    images: u64,
    requests: u64,
    batches: u64,
    batch_images: u64,
    /// Batches seen through their requests: each request adds its share of its batch.
    batch_shares: f64,
}

impl Recorder {
    fn new() -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid; this is a bug")
        };
        Self {
            latency_us: histogram(),
            queue_wait_us: histogram(),
            images: 0,
            requests: 0,
            batches: 0,
            batch_images: 0,
            batch_shares: 0.0,
        }
    }

    fn stats(&self, seconds: f64) -> Stats {
        let batches = self.batches + self.batch_shares.round() as u64;
        let batch_images = if self.batch_shares > 0.0 {
            self.batch_images + self.images
        } else {
            self.batch_images
        };
        let ms = |h: &Histogram<u64>, q: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e3
            }
        };
        Stats {
            throughput_img_s: if seconds > 0.0 {
                self.images as f64 / seconds
            } else {
                0.0
            },
            images: self.images,
            requests: self.requests,
            batches,
            mean_batch_size: if self.batch_shares > 0.0 {
                batch_images as f64 / (self.batches as f64 + self.batch_shares)
            } else if batches > 0 {
                batch_images as f64 / batches as f64
            } else {
                0.0
            },
            p50_ms: ms(&self.latency_us, 0.50),
            p95_ms: ms(&self.latency_us, 0.95),
            p99_ms: ms(&self.latency_us, 0.99),
            queue_wait_p50_ms: ms(&self.queue_wait_us, 0.50),
            queue_wait_p99_ms: ms(&self.queue_wait_us, 0.99),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

/// Collects a run's events.
#[derive(Debug)]
pub struct ReportBuilder {
    units: Vec<(String, String, String)>,
    per_unit: Vec<Recorder>,
    total: Recorder,
    failed: u64,
    rejected: u64,
}

impl ReportBuilder {
    /// A builder for these units: (id, kind, engine) in unit-index order.
    pub fn new(units: Vec<(String, String, String)>) -> Self {
        let per_unit = units.iter().map(|_| Recorder::new()).collect();
        Self {
            units,
            per_unit,
            total: Recorder::new(),
            failed: 0,
            rejected: 0,
        }
    }

    /// The index of unit `id`, adding it if this builder has not seen it (reports of
    /// remote services, whose units are only learnt from their answers).
    pub fn unit_index(&mut self, id: &str, kind: &str, engine: &str) -> usize {
        if let Some(index) = self.units.iter().position(|(known, _, _)| known == id) {
            return index;
        }
        self.units
            .push((id.to_string(), kind.to_string(), engine.to_string()));
        self.per_unit.push(Recorder::new());
        self.units.len() - 1
    }

    /// A request of `images` answered by `unit` after `latency`, having waited
    /// `queue_wait` before its batch started.
    pub fn record_request(
        &mut self,
        unit: usize,
        images: u32,
        latency: Duration,
        queue_wait: Duration,
    ) {
        for recorder in [&mut self.per_unit[unit], &mut self.total] {
            recorder.images += u64::from(images);
            recorder.requests += 1;
            let _ = recorder.latency_us.record(micros(latency));
            let _ = recorder.queue_wait_us.record(micros(queue_wait));
        }
    }

    /// A batch of `images` completed on `unit`.
    pub fn record_batch(&mut self, unit: usize, images: u32) {
        for recorder in [&mut self.per_unit[unit], &mut self.total] {
            recorder.batches += 1;
            recorder.batch_images += u64::from(images);
        }
    }

    /// A request of `images` that was part of a batch of `batch_images` on `unit`, when
    /// batches are only seen through their requests (the load generator): each request
    /// counts as its share of a batch. Do not mix with `record_batch` for one unit.
    pub fn record_batch_share(&mut self, unit: usize, images: u32, batch_images: u32) {
        let share = f64::from(images) / f64::from(batch_images.max(images).max(1));
        for recorder in [&mut self.per_unit[unit], &mut self.total] {
            recorder.batch_shares += share;
        }
    }

    /// A request that got an error.
    pub fn record_failure(&mut self) {
        self.failed += 1;
    }

    /// A request refused at admission.
    pub fn record_rejection(&mut self) {
        self.rejected += 1;
    }

    /// The report over a measured window of `duration`.
    pub fn finish(
        &self,
        mode: &str,
        policy: &str,
        simulated: bool,
        duration: Duration,
    ) -> RunReport {
        let seconds = duration.as_secs_f64();
        RunReport {
            mode: mode.to_string(),
            policy: policy.to_string(),
            simulated,
            duration_s: seconds,
            failed_requests: self.failed,
            rejected_requests: self.rejected,
            total: self.total.stats(seconds),
            units: self
                .units
                .iter()
                .zip(&self.per_unit)
                .map(|((id, kind, engine), recorder)| {
                    (
                        id.clone(),
                        UnitStats {
                            engine: engine.clone(),
                            kind: kind.clone(),
                            stats: recorder.stats(seconds),
                            idle: None,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl RunReport {
    /// Says why each unit that completed nothing was idle, from its standing (`health`,
    /// by unit id) at the end of the run.
    pub fn explain_idle<'a>(&mut self, health: impl IntoIterator<Item = (&'a str, UnitHealth)>) {
        for (id, health) in health {
            if let Some(unit) = self.units.get_mut(id) {
                if unit.stats.images == 0 {
                    unit.idle = Some(IdleReason::of(&health, &self.policy));
                }
            }
        }
    }

    /// The report as a terminal table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let label = if self.simulated {
            " [SIMULATED units: emulated, not measured]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{} — policy {} — {:.1} s{}",
            self.mode, self.policy, self.duration_s, label
        );
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:<6} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "unit",
            "kind",
            "engine",
            "img/s",
            "batches",
            "mean bs",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "qwait50"
        );
        let row = |out: &mut String, id: &str, kind: &str, engine: &str, s: &Stats| {
            let _ = writeln!(
                out,
                "{:<14} {:<12} {:<6} {:>10.1} {:>8} {:>7.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                id,
                kind,
                engine,
                s.throughput_img_s,
                s.batches,
                s.mean_batch_size,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.queue_wait_p50_ms
            );
        };
        for (id, unit) in &self.units {
            match &unit.idle {
                Some(reason) => {
                    let _ = writeln!(
                        out,
                        "{:<14} {:<12} {:<6} {:>10} idle: {reason}",
                        id, unit.kind, unit.engine, "-"
                    );
                }
                None => row(&mut out, id, &unit.kind, &unit.engine, &unit.stats),
            }
        }
        row(&mut out, "total", "", "", &self.total);
        if self.failed_requests > 0 || self.rejected_requests > 0 {
            let _ = writeln!(
                out,
                "failed requests: {}, rejected at admission: {}",
                self.failed_requests, self.rejected_requests
            );
        }
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes; this is a bug")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_add_up() {
        let mut b = ReportBuilder::new(vec![
            ("a".into(), "cpu".into(), "sim".into()),
            ("b".into(), "cuda_fp32".into(), "sim".into()),
        ]);
        for _ in 0..10 {
            b.record_request(0, 2, Duration::from_millis(10), Duration::from_millis(1));
        }
        b.record_batch(0, 20);
        b.record_request(1, 5, Duration::from_millis(30), Duration::from_millis(2));
        b.record_batch(1, 5);
        let r = b.finish("bench", "round_robin", true, Duration::from_secs(5));
        assert_eq!(r.total.images, 25);
        assert!((r.total.throughput_img_s - 5.0).abs() < 1e-9);
        assert!((r.units["a"].stats.mean_batch_size - 20.0).abs() < 1e-9);
        assert!((r.units["a"].stats.p50_ms - 10.0).abs() < 0.1);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        for key in [
            "throughput_img_s",
            "batches",
            "mean_batch_size",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "queue_wait_p50_ms",
        ] {
            assert!(json["total"][key].is_number(), "total.{key}");
            assert!(json["units"]["b"][key].is_number(), "units.b.{key}");
        }
        assert!(r.render_table().contains("SIMULATED"));
    }

    fn two_units_one_idle() -> RunReport {
        let mut b = ReportBuilder::new(vec![
            ("busy".into(), "amp".into(), "sim".into()),
            ("idle".into(), "dla".into(), "sim".into()),
        ]);
        b.record_request(0, 4, Duration::from_millis(10), Duration::from_millis(1));
        b.record_batch(0, 4);
        b.finish("bench", "contention_aware", true, Duration::from_secs(1))
    }

    #[test]
    fn an_idle_unit_says_why_instead_of_a_row_of_zeros() {
        let cases = [
            (
                UnitHealth::default(),
                "kept idle by the policy (contention_aware)",
            ),
            (
                UnitHealth {
                    offline: true,
                    ..Default::default()
                },
                "offline: its engine failed to load",
            ),
            (
                UnitHealth {
                    replacing_worker: true,
                    ..Default::default()
                },
                "out of service: replacing a stream worker after a hung batch",
            ),
            (
                UnitHealth {
                    quarantined: true,
                    quarantines: 1,
                    ..Default::default()
                },
                "quarantined after repeated failed batches",
            ),
            (
                UnitHealth {
                    quarantines: 3,
                    ..Default::default()
                },
                "quarantined after repeated failed batches (3 times)",
            ),
        ];
        for (health, text) in cases {
            let mut r = two_units_one_idle();
            r.explain_idle([("busy", health), ("idle", health)]);
            // A unit that worked gets no reason, whatever its standing.
            assert_eq!(r.units["busy"].idle, None);
            let reason = r.units["idle"]
                .idle
                .clone()
                .expect("the idle unit has a reason");
            assert_eq!(reason.to_string(), text);
            let table = r.render_table();
            let line = table
                .lines()
                .find(|l| l.starts_with("idle "))
                .expect("a row for the idle unit");
            assert!(line.ends_with(&format!("idle: {text}")), "{line}");
            assert!(!line.contains("0.00"), "{line}");
            let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
            assert!(json["units"]["idle"]["idle"]["reason"].is_string());
            assert!(json["units"]["busy"].get("idle").is_none());
        }
    }
}
