//! The actors' metrics: names, descriptions, units and histogram buckets, declared once.
//!
//! Every per-unit series carries `unit` and `engine` labels (`engine="sim"` marks a
//! simulated unit, so its figures never pass for measurements). Handles are resolved
//! once per unit at start, so recording costs an atomic add, not a registry lookup.
//!
//! The per-batch and per-request histograms (the `HistogramSpec`s below) are this
//! crate's own `LocalHistogram`s, not the exporter's: a sample is a few plain stores on
//! the recording thread, and the scrape renders them as ordinary Prometheus histograms
//! (`histogram` explains why). Gauges that the actors can compute at any time (queue
//! depth, running and in-flight batches) are sampled every `SAMPLE_INTERVAL` rather
//! than written on every change.

mod histogram;

use metrics::{describe_counter, describe_gauge, Counter, Gauge, Unit};
use mica_core::UnitSpec;

pub use histogram::{HistogramRegistry, HistogramSpec, LocalHistogram};

/// Batches completed, per unit.
pub const BATCHES_TOTAL: &str = "mica_batches_total";
/// Images completed, per unit.
pub const IMAGES_TOTAL: &str = "mica_images_total";
/// Batches that failed (engine error or panic), per unit.
pub const BATCH_FAILURES_TOTAL: &str = "mica_batch_failures_total";
/// Engine time per batch, per unit. `rate(..._sum)` is the unit's busy stream-seconds
/// per second; divided by `mica_unit_streams` it is the busy ratio.
pub const BATCH_DURATION_SECONDS: &str = "mica_batch_duration_seconds";
/// Images per batch, per unit.
pub const BATCH_SIZE: &str = "mica_batch_size";
/// Time requests waited in the queue before their batch started, per unit.
pub const QUEUE_WAIT_SECONDS: &str = "mica_queue_wait_seconds";
/// Batches running now, per unit (sampled every `SAMPLE_INTERVAL`).
pub const IN_FLIGHT_BATCHES: &str = "mica_in_flight_batches";
/// Stream workers configured, per unit.
pub const UNIT_STREAMS: &str = "mica_unit_streams";
/// Device memory held by a stream worker's captured CUDA graphs (their private memory
/// pool), per unit and stream; set once the worker has loaded.
pub const CUDA_GRAPH_MEMORY_BYTES: &str = "mica_cuda_graph_memory_bytes";
/// 1 while a unit takes batches: every engine loaded, not taken offline, not
/// quarantined, no stream worker being replaced after a hung batch; else 0.
pub const UNIT_HEALTHY: &str = "mica_unit_healthy";
/// Batches that ran past their deadline (the engine hung), per unit.
pub const BATCH_TIMEOUTS_TOTAL: &str = "mica_batch_timeouts_total";
/// Stream-worker threads abandoned inside a hung engine call and not yet returned,
/// per unit.
pub const HUNG_WORKERS: &str = "mica_hung_workers";
/// Requests waiting in the dispatcher's queue (sampled every `SAMPLE_INTERVAL`).
pub const QUEUE_DEPTH: &str = "mica_queue_depth";
/// Batches running over all units (sampled every `SAMPLE_INTERVAL`).
pub const RUNNING_BATCHES: &str = "mica_running_batches";
/// Batches placed by the policy, per policy and unit.
pub const DISPATCH_DECISIONS_TOTAL: &str = "mica_dispatch_decisions_total";
/// Requests answered with an error before running, per reason.
pub const REQUESTS_DROPPED_TOTAL: &str = "mica_requests_dropped_total";
/// Policy swaps, per old and new policy.
pub const POLICY_CHANGES_TOTAL: &str = "mica_policy_changes_total";
/// Info metric: 1 for the active policy, 0 for every other (all registered at start, so
/// a swap flips two existing series and `changes()` sees it).
pub const POLICY_INFO: &str = "mica_policy_info";
/// The policy's predicted contention slowdown (≥ 1) per unit, sampled; NaN while the
/// active policy does not model contention.
pub const PREDICTED_SLOWDOWN: &str = "mica_predicted_slowdown";
/// Observed slowdown per batch: engine time / the profile's isolated time for that
/// batch size, per unit (units with a profile only).
pub const BATCH_SLOWDOWN_RATIO: &str = "mica_batch_slowdown_ratio";
/// Share of the unit's stream time spent running batches over the last sampling
/// window (0..1), per unit.
pub const UNIT_BUSY_RATIO: &str = "mica_unit_busy_ratio";

/// Histogram buckets for durations in seconds (50 µs .. 30 s).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets for batch sizes.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Histogram buckets for observed slowdown ratios.
pub const SLOWDOWN_BUCKETS: &[f64] = &[
    0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0,
];
/// How often the dispatcher samples the policy's predicted slowdowns, the queue depth
/// and the running batches, and unit actors their busy ratio and in-flight batches.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// `BATCH_DURATION_SECONDS`: engine time per batch.
pub static BATCH_DURATION: HistogramSpec = HistogramSpec {
    name: BATCH_DURATION_SECONDS,
    help: "Engine time per batch, per unit",
    buckets: SECONDS_BUCKETS,
};
/// `BATCH_SIZE`: images per batch.
pub static BATCH_IMAGES: HistogramSpec = HistogramSpec {
    name: BATCH_SIZE,
    help: "Images per batch, per unit",
    buckets: BATCH_SIZE_BUCKETS,
};
/// `QUEUE_WAIT_SECONDS`: queue wait per request.
pub static QUEUE_WAIT: HistogramSpec = HistogramSpec {
    name: QUEUE_WAIT_SECONDS,
    help: "Queue wait before the batch started, per unit",
    buckets: SECONDS_BUCKETS,
};
/// `BATCH_SLOWDOWN_RATIO`: engine time over the profile's isolated time per batch.
pub static BATCH_SLOWDOWN: HistogramSpec = HistogramSpec {
    name: BATCH_SLOWDOWN_RATIO,
    help: "Engine time over the profile's isolated time per batch, per unit",
    buckets: SLOWDOWN_BUCKETS,
};

/// Every `reason` label of `REQUESTS_DROPPED_TOTAL`, registered at 0 at start so that
/// rates exist before the first drop.
pub const DROP_REASONS: &[&str] = &[
    "overloaded",
    "timeout",
    "shed",
    "invalid",
    "engine",
    "unavailable",
    "shutting_down",
];

/// Registers descriptions and units with the installed recorder (the histograms carry
/// theirs in their `HistogramSpec`).
pub fn describe() {
    describe_counter!(BATCHES_TOTAL, Unit::Count, "Batches completed, per unit");
    describe_counter!(IMAGES_TOTAL, Unit::Count, "Images completed, per unit");
    describe_counter!(
        BATCH_FAILURES_TOTAL,
        Unit::Count,
        "Batches that failed, per unit"
    );
    describe_gauge!(
        IN_FLIGHT_BATCHES,
        Unit::Count,
        "Batches running now, per unit"
    );
    describe_gauge!(
        CUDA_GRAPH_MEMORY_BYTES,
        Unit::Bytes,
        "Device memory held by a stream worker's CUDA graphs, per unit and stream"
    );
    describe_gauge!(
        UNIT_STREAMS,
        Unit::Count,
        "Stream workers configured, per unit"
    );
    describe_gauge!(
        UNIT_HEALTHY,
        Unit::Count,
        "1 while the unit takes batches: loaded, not offline, not quarantined, not hung"
    );
    describe_counter!(
        BATCH_TIMEOUTS_TOTAL,
        Unit::Count,
        "Batches that ran past their deadline (engine hung), per unit"
    );
    describe_gauge!(
        HUNG_WORKERS,
        Unit::Count,
        "Stream-worker threads still blocked in a hung engine call, per unit"
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Requests waiting in the dispatcher queue"
    );
    describe_gauge!(
        RUNNING_BATCHES,
        Unit::Count,
        "Batches running over all units"
    );
    describe_counter!(
        DISPATCH_DECISIONS_TOTAL,
        Unit::Count,
        "Batches placed, per policy and unit"
    );
    describe_counter!(
        REQUESTS_DROPPED_TOTAL,
        Unit::Count,
        "Requests answered with an error before running, per reason"
    );
    describe_counter!(POLICY_CHANGES_TOTAL, Unit::Count, "Policy swaps");
    describe_gauge!(
        POLICY_INFO,
        Unit::Count,
        "1 for the active policy, 0 for the others"
    );
    describe_gauge!(
        PREDICTED_SLOWDOWN,
        Unit::Count,
        "Policy's predicted contention slowdown per unit (NaN: the policy does not predict)"
    );
    describe_gauge!(
        UNIT_BUSY_RATIO,
        Unit::Count,
        "Share of the unit's stream time spent running batches, last second"
    );
}

/// The per-unit handles a unit actor records into. The histograms have one writer, the
/// unit actor, which records them through `&mut self`.
#[derive(Debug)]
pub struct UnitMetrics {
    /// Batches completed.
    pub batches: Counter,
    /// Images completed.
    pub images: Counter,
    /// Failed batches.
    pub failures: Counter,
    /// Engine time per batch.
    pub duration: LocalHistogram,
    /// Images per batch.
    pub batch_size: LocalHistogram,
    /// Queue wait per request.
    pub queue_wait: LocalHistogram,
    /// Batches running.
    pub in_flight: Gauge,
    /// Batches past their deadline.
    pub timeouts: Counter,
    /// Worker threads abandoned in a hung call.
    pub hung_workers: Gauge,
    /// Engine time over profile time per batch.
    pub slowdown: LocalHistogram,
    /// Busy share of stream time over the last window.
    pub busy_ratio: Gauge,
}

impl UnitMetrics {
    /// Handles for one unit.
    pub fn new(unit: &str, engine: &'static str, streams: u32) -> Self {
        let labels = [("unit", unit.to_string()), ("engine", engine.to_string())];
        metrics::gauge!(UNIT_STREAMS, &labels).set(f64::from(streams));
        let in_flight = metrics::gauge!(IN_FLIGHT_BATCHES, &labels);
        in_flight.set(0.0);
        Self {
            batches: zeroed(metrics::counter!(BATCHES_TOTAL, &labels)),
            images: zeroed(metrics::counter!(IMAGES_TOTAL, &labels)),
            failures: zeroed(metrics::counter!(BATCH_FAILURES_TOTAL, &labels)),
            duration: LocalHistogram::new(&BATCH_DURATION, &labels),
            batch_size: LocalHistogram::new(&BATCH_IMAGES, &labels),
            queue_wait: LocalHistogram::new(&QUEUE_WAIT, &labels),
            in_flight,
            timeouts: zeroed(metrics::counter!(BATCH_TIMEOUTS_TOTAL, &labels)),
            hung_workers: {
                let gauge = metrics::gauge!(HUNG_WORKERS, &labels);
                gauge.set(0.0);
                gauge
            },
            slowdown: LocalHistogram::new(&BATCH_SLOWDOWN, &labels),
            busy_ratio: metrics::gauge!(UNIT_BUSY_RATIO, &labels),
        }
    }
}

/// A counter exported at 0 from the start, so that alert rules and `rate()` see the
/// series before its first event.
fn zeroed(counter: Counter) -> Counter {
    counter.increment(0);
    counter
}

/// The dispatcher's handles.
#[derive(Debug)]
pub struct DispatcherMetrics {
    units: Vec<(String, &'static str)>,
    decisions: Vec<Counter>,
    policy: &'static str,
    queue_depth: Gauge,
    running: Gauge,
    predicted: Vec<Gauge>,
    healthy: Vec<Gauge>,
    dropped: Vec<(&'static str, Counter)>,
}

impl DispatcherMetrics {
    /// Handles for these units under `policy`.
    pub fn new(specs: &[UnitSpec], engines: &[&'static str], policy: &'static str) -> Self {
        let units: Vec<(String, &'static str)> = specs
            .iter()
            .zip(engines)
            .map(|(s, engine)| (s.id.to_string(), *engine))
            .collect();
        let predicted = units
            .iter()
            .map(|(unit, engine)| {
                metrics::gauge!(PREDICTED_SLOWDOWN, "unit" => unit.clone(), "engine" => *engine)
            })
            .collect();
        let healthy = units
            .iter()
            .map(|(unit, engine)| {
                let gauge =
                    metrics::gauge!(UNIT_HEALTHY, "unit" => unit.clone(), "engine" => *engine);
                gauge.set(0.0);
                gauge
            })
            .collect();
        let dropped = DROP_REASONS
            .iter()
            .map(|reason| {
                let counter = metrics::counter!(REQUESTS_DROPPED_TOTAL, "reason" => *reason);
                counter.increment(0);
                (*reason, counter)
            })
            .collect();
        let mut metrics = Self {
            decisions: Vec::new(),
            units,
            policy,
            queue_depth: metrics::gauge!(QUEUE_DEPTH),
            running: metrics::gauge!(RUNNING_BATCHES),
            predicted,
            healthy,
            dropped,
        };
        metrics.resolve_decisions();
        for name in mica_policies::PolicyConfig::names() {
            let active = if *name == policy { 1.0 } else { 0.0 };
            metrics::gauge!(POLICY_INFO, "policy" => *name).set(active);
        }
        metrics
    }

    fn resolve_decisions(&mut self) {
        self.decisions = self
            .units
            .iter()
            .map(|(unit, engine)| {
                metrics::counter!(
                    DISPATCH_DECISIONS_TOTAL,
                    "policy" => self.policy,
                    "unit" => unit.clone(),
                    "engine" => *engine
                )
            })
            .collect();
    }

    /// A batch placed on `unit`.
    pub fn dispatched(&mut self, unit: usize, policy: &'static str, _images: u32) {
        if policy != self.policy {
            self.policy = policy;
            self.resolve_decisions();
        }
        self.decisions[unit].increment(1);
    }

    /// A request dropped before running.
    pub fn dropped(&self, reason: &'static str) {
        match self.dropped.iter().find(|(known, _)| *known == reason) {
            Some((_, counter)) => counter.increment(1),
            None => metrics::counter!(REQUESTS_DROPPED_TOTAL, "reason" => reason).increment(1),
        }
    }

    /// The policy's predicted slowdown per unit (`None`: it does not predict).
    pub fn predicted_slowdowns(&self, slowdowns: Option<&[f64]>) {
        for (index, gauge) in self.predicted.iter().enumerate() {
            gauge.set(
                slowdowns
                    .and_then(|s| s.get(index))
                    .copied()
                    .unwrap_or(f64::NAN),
            );
        }
    }

    /// Whether unit `index` takes batches now.
    pub fn unit_healthy(&self, index: usize, healthy: bool) {
        if let Some(gauge) = self.healthy.get(index) {
            gauge.set(if healthy { 1.0 } else { 0.0 });
        }
    }

    /// Queue and running counts, sampled.
    pub fn queue(&self, queued: usize, running: usize) {
        self.queue_depth.set(queued as f64);
        self.running.set(running as f64);
    }

    /// A policy swap.
    pub fn policy_changed(&self, from: &'static str, to: &'static str) {
        metrics::counter!(POLICY_CHANGES_TOTAL, "from" => from, "to" => to).increment(1);
        if from != to {
            metrics::gauge!(POLICY_INFO, "policy" => from).set(0.0);
        }
        metrics::gauge!(POLICY_INFO, "policy" => to).set(1.0);
    }
}
