//! Triton's statistics extension (`GET /v2/models/{m}/stats`): cumulative counts and
//! durations, counted by the HTTP layer as requests finish.
//!
//! Mapping to Triton's fields: `success`/`fail` = whole request (arrival to answer);
//! `queue` = time in the scheduler's queue; `compute_input` = body parsing and image
//! preprocessing; `compute_infer` = from batch start to answer; `compute_output` =
//! encoding the response. `execution_count` and `batch_stats` count requests by their
//! size: batches formed by the scheduler are reported by mica's own metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// A cumulative count and duration.
#[derive(Debug, Default)]
struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    fn add(&self, duration: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(nanos(duration), Ordering::Relaxed);
    }

    fn read(&self) -> StatDuration {
        StatDuration {
            count: self.count.load(Ordering::Relaxed),
            ns: self.ns.load(Ordering::Relaxed),
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How long each phase of one successful request took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// Arrival to answer.
    pub total: Duration,
    /// Parsing and preprocessing.
    pub input: Duration,
    /// Waiting in the scheduler's queue.
    pub queue: Duration,
    /// Batch start to answer.
    pub infer: Duration,
    /// Encoding the response.
    pub output: Duration,
}

#[derive(Debug, Default, Clone, Copy)]
struct BatchCounters {
    count: u64,
    input_ns: u64,
    infer_ns: u64,
    output_ns: u64,
}

/// Statistics of the served model.
#[derive(Debug, Default)]
pub struct ModelStats {
    success: Counter,
    fail: Counter,
    queue: Counter,
    compute_input: Counter,
    compute_infer: Counter,
    compute_output: Counter,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<u32, BatchCounters>>,
}

impl ModelStats {
    /// Records a request answered with outputs for `images` images.
    pub fn record_success(&self, images: u32, phases: Phases) {
        self.success.add(phases.total);
        self.queue.add(phases.queue);
        self.compute_input.add(phases.input);
        self.compute_infer.add(phases.infer);
        self.compute_output.add(phases.output);
        self.inference_count
            .fetch_add(u64::from(images), Ordering::Relaxed);
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.last_inference_ms
            .fetch_max(now_ms(), Ordering::Relaxed);
        let mut batches = self.batches.lock();
        let batch = batches.entry(images).or_default();
        batch.count += 1;
        batch.input_ns += nanos(phases.input);
        batch.infer_ns += nanos(phases.infer);
        batch.output_ns += nanos(phases.output);
    }

    /// Records a failed inference request that took `total`.
    pub fn record_failure(&self, total: Duration) {
        self.fail.add(total);
    }

    /// The statistics as Triton reports one model version.
    pub fn snapshot<'a>(&self, name: &'a str, version: &'a str) -> ModelStatistics<'a> {
        let batch_stats = self
            .batches
            .lock()
            .iter()
            .map(|(&size, b)| BatchStatistics {
                batch_size: u64::from(size),
                compute_input: StatDuration {
                    count: b.count,
                    ns: b.input_ns,
                },
                compute_infer: StatDuration {
                    count: b.count,
                    ns: b.infer_ns,
                },
                compute_output: StatDuration {
                    count: b.count,
                    ns: b.output_ns,
                },
            })
            .collect();
        ModelStatistics {
            name,
            version,
            last_inference: self.last_inference_ms.load(Ordering::Relaxed),
            inference_count: self.inference_count.load(Ordering::Relaxed),
            execution_count: self.execution_count.load(Ordering::Relaxed),
            inference_stats: InferStatistics {
                success: self.success.read(),
                fail: self.fail.read(),
                queue: self.queue.read(),
                compute_input: self.compute_input.read(),
                compute_infer: self.compute_infer.read(),
                compute_output: self.compute_output.read(),
                cache_hit: StatDuration::default(),
                cache_miss: StatDuration::default(),
            },
            batch_stats,
            memory_usage: Vec::new(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `{"model_stats": [...]}`.
#[derive(Debug, Serialize)]
pub struct StatsResponse<'a> {
    /// One entry per model version.
    pub model_stats: Vec<ModelStatistics<'a>>,
}

/// Triton's `ModelStatistics`.
#[derive(Debug, Serialize)]
pub struct ModelStatistics<'a> {
    /// Model name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// Milliseconds since the epoch of the last successful inference (0: none yet).
    pub last_inference: u64,
    /// Images inferred successfully.
    pub inference_count: u64,
    /// Successful requests.
    pub execution_count: u64,
    /// Cumulative durations.
    pub inference_stats: InferStatistics,
    /// Per request size.
    pub batch_stats: Vec<BatchStatistics>,
    /// Not tracked (empty).
    pub memory_usage: Vec<serde_json::Value>,
}

/// Triton's `InferStatistics`.
#[derive(Debug, Serialize)]
pub struct InferStatistics {
    /// Successful requests.
    pub success: StatDuration,
    /// Failed requests.
    pub fail: StatDuration,
    /// Time queued.
    pub queue: StatDuration,
    /// Parsing and preprocessing.
    pub compute_input: StatDuration,
    /// Inference.
    pub compute_infer: StatDuration,
    /// Response encoding.
    pub compute_output: StatDuration,
    /// No response cache (zero).
    pub cache_hit: StatDuration,
    /// No response cache (zero).
    pub cache_miss: StatDuration,
}

/// Triton's `InferBatchStatistics`.
#[derive(Debug, Serialize)]
pub struct BatchStatistics {
    /// Images per request.
    pub batch_size: u64,
    /// Parsing and preprocessing.
    pub compute_input: StatDuration,
    /// Inference.
    pub compute_infer: StatDuration,
    /// Response encoding.
    pub compute_output: StatDuration,
}

/// Triton's `StatisticDuration`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatDuration {
    /// Occurrences.
    pub count: u64,
    /// Their total duration in nanoseconds.
    pub ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_in_triton_fields() {
        let stats = ModelStats::default();
        let phases = Phases {
            total: Duration::from_micros(10),
            input: Duration::from_micros(1),
            queue: Duration::from_micros(2),
            infer: Duration::from_micros(6),
            output: Duration::from_micros(1),
        };
        stats.record_success(4, phases);
        stats.record_success(4, phases);
        stats.record_success(1, phases);
        stats.record_failure(Duration::from_micros(3));
        let json = serde_json::to_value(StatsResponse {
            model_stats: vec![stats.snapshot("m", "1")],
        })
        .unwrap();
        let model = &json["model_stats"][0];
        assert_eq!(model["name"], "m");
        assert_eq!(model["inference_count"], 9);
        assert_eq!(model["execution_count"], 3);
        assert!(model["last_inference"].as_u64().unwrap() > 0);
        let s = &model["inference_stats"];
        assert_eq!(s["success"]["count"], 3);
        assert_eq!(s["success"]["ns"], 30_000);
        assert_eq!(s["fail"]["count"], 1);
        assert_eq!(s["queue"]["ns"], 6_000);
        assert_eq!(s["cache_hit"]["count"], 0);
        let batches = model["batch_stats"].as_array().unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1]["batch_size"], 4);
        assert_eq!(batches[1]["compute_infer"]["count"], 2);
    }
}
