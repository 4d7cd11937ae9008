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
                        },
                    )
                })
                .collect(),
        }
    }
}

impl RunReport {
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
            row(&mut out, id, &unit.kind, &unit.engine, &unit.stats);
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
}
