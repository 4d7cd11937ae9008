//! The front ends' metrics, declared once: Triton's names where the meaning is the
//! same (so existing dashboards work; they count both protocols together, as Triton's
//! do), `mica_*` for the rest. Labels: `model`, `version`; the latency histograms add
//! `protocol` (`http`, `grpc`); failures add `protocol` and `reason` (from
//! `ServeError::reason`).
//!
//! `describe` registers descriptions with the installed recorder; histogram buckets
//! come from the `_seconds` suffix rule in `crate::metrics`.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

use super::error::ServeError;
use super::infer::Protocol;
use super::stats::Phases;

/// Successful inference requests (Triton).
pub const REQUEST_SUCCESS: &str = "nv_inference_request_success";
/// Failed inference requests, per `reason` (Triton's name, mica's reasons).
pub const REQUEST_FAILURE: &str = "nv_inference_request_failure";
/// Images inferred (Triton: inferences, each image of a batched request counted).
pub const INFERENCE_COUNT: &str = "nv_inference_count";
/// Cumulative request duration in microseconds (Triton).
pub const REQUEST_DURATION_US: &str = "nv_inference_request_duration_us";
/// Cumulative queue time in microseconds (Triton).
pub const QUEUE_DURATION_US: &str = "nv_inference_queue_duration_us";
/// Cumulative input processing time in microseconds (Triton).
pub const COMPUTE_INPUT_DURATION_US: &str = "nv_inference_compute_input_duration_us";
/// Cumulative inference time in microseconds (Triton).
pub const COMPUTE_INFER_DURATION_US: &str = "nv_inference_compute_infer_duration_us";
/// Cumulative output processing time in microseconds (Triton).
pub const COMPUTE_OUTPUT_DURATION_US: &str = "nv_inference_compute_output_duration_us";
/// Inference request latency as seen by the front end, successes only, per protocol.
pub const REQUEST_SECONDS: &str = "mica_request_duration_seconds";
/// Body parsing and image preprocessing time per request, per protocol.
pub const PREPROCESS_SECONDS: &str = "mica_preprocess_duration_seconds";

/// Registers descriptions and units with the installed recorder.
pub fn describe() {
    describe_counter!(
        REQUEST_SUCCESS,
        Unit::Count,
        "Successful inference requests"
    );
    describe_counter!(
        REQUEST_FAILURE,
        Unit::Count,
        "Failed inference requests, per reason"
    );
    describe_counter!(INFERENCE_COUNT, Unit::Count, "Images inferred");
    describe_counter!(
        REQUEST_DURATION_US,
        Unit::Microseconds,
        "Cumulative inference request duration"
    );
    describe_counter!(
        QUEUE_DURATION_US,
        Unit::Microseconds,
        "Cumulative time requests waited in the scheduler queue"
    );
    describe_counter!(
        COMPUTE_INPUT_DURATION_US,
        Unit::Microseconds,
        "Cumulative body parsing and preprocessing time"
    );
    describe_counter!(
        COMPUTE_INFER_DURATION_US,
        Unit::Microseconds,
        "Cumulative time from batch start to answer"
    );
    describe_counter!(
        COMPUTE_OUTPUT_DURATION_US,
        Unit::Microseconds,
        "Cumulative response encoding time"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Inference request latency in the front end, successes, per protocol"
    );
    describe_histogram!(
        PREPROCESS_SECONDS,
        Unit::Seconds,
        "Body parsing and image preprocessing time per request, per protocol"
    );
}

/// Every `reason` of `REQUEST_FAILURE` (`ServeError::reason`), exported at 0 from the
/// start as Triton does, so alert rules and `rate()` have the series before the first
/// failure.
pub const FAILURE_REASONS: &[&str] = &[
    "invalid",
    "unknown_model",
    "not_found",
    "method_not_allowed",
    "too_large",
    "body_timeout",
    "over_budget",
    "overloaded",
    "timeout",
    "shed",
    "not_ready",
    "unavailable",
    "shutting_down",
    "unimplemented",
    "engine",
    "internal",
];

fn zeroed(counter: Counter) -> Counter {
    counter.increment(0);
    counter
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The per-model series of successful requests over one protocol, resolved once when
/// the server starts (after the recorder is installed), so a request costs atomic adds
/// rather than nine registry lookups by label.
#[derive(Debug, Clone)]
pub struct ModelSeries {
    success: Counter,
    images: Counter,
    request_us: Counter,
    queue_us: Counter,
    input_us: Counter,
    infer_us: Counter,
    output_us: Counter,
    request_seconds: Histogram,
    preprocess_seconds: Histogram,
}

impl ModelSeries {
    /// The series of `model` at `version` answered over `protocol`.
    pub fn new(model: &str, version: &str, protocol: Protocol) -> Self {
        let labels = [
            ("model", model.to_string()),
            ("version", version.to_string()),
        ];
        let per_protocol = [
            ("model", model.to_string()),
            ("version", version.to_string()),
            ("protocol", protocol.as_str().to_string()),
        ];
        for reason in FAILURE_REASONS {
            let labels = [
                ("model", model.to_string()),
                ("version", version.to_string()),
                ("protocol", protocol.as_str().to_string()),
                ("reason", (*reason).to_string()),
            ];
            counter!(REQUEST_FAILURE, &labels).increment(0);
        }
        Self {
            success: zeroed(counter!(REQUEST_SUCCESS, &labels)),
            images: zeroed(counter!(INFERENCE_COUNT, &labels)),
            request_us: zeroed(counter!(REQUEST_DURATION_US, &labels)),
            queue_us: zeroed(counter!(QUEUE_DURATION_US, &labels)),
            input_us: zeroed(counter!(COMPUTE_INPUT_DURATION_US, &labels)),
            infer_us: zeroed(counter!(COMPUTE_INFER_DURATION_US, &labels)),
            output_us: zeroed(counter!(COMPUTE_OUTPUT_DURATION_US, &labels)),
            request_seconds: histogram!(REQUEST_SECONDS, &per_protocol),
            preprocess_seconds: histogram!(PREPROCESS_SECONDS, &per_protocol),
        }
    }

    /// Records a request answered with outputs for `images` images.
    pub fn record_success(&self, images: u32, phases: &Phases) {
        self.success.increment(1);
        self.images.increment(u64::from(images));
        self.request_us.increment(micros(phases.total));
        self.queue_us.increment(micros(phases.queue));
        self.input_us.increment(micros(phases.input));
        self.infer_us.increment(micros(phases.infer));
        self.output_us.increment(micros(phases.output));
        self.request_seconds.record(phases.total.as_secs_f64());
        self.preprocess_seconds.record(phases.input.as_secs_f64());
    }
}

/// Records a failed inference request.
pub fn record_failure(model: &str, version: &str, protocol: Protocol, error: &ServeError) {
    let labels = [
        ("model", model.to_string()),
        ("version", version.to_string()),
        ("protocol", protocol.as_str().to_string()),
        ("reason", error.reason().to_string()),
    ];
    counter!(REQUEST_FAILURE, &labels).increment(1);
}
