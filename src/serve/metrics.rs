//! The HTTP layer's metrics, declared once: Triton's names where the meaning is the
//! same (so existing dashboards work), `mica_http_*` for the rest. Labels: `model`,
//! `version`; failures add `reason` (from `ServeError::reason`).
//!
//! `describe` registers descriptions with the installed recorder; histogram buckets
//! come from the `_seconds` suffix rule in `crate::metrics`.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

use super::error::ServeError;
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
/// Inference request latency as seen by the HTTP layer, successes only.
pub const HTTP_REQUEST_SECONDS: &str = "mica_http_request_duration_seconds";
/// Body parsing and image preprocessing time per request.
pub const HTTP_PREPROCESS_SECONDS: &str = "mica_http_preprocess_duration_seconds";

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
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Inference request latency in the HTTP layer, successes"
    );
    describe_histogram!(
        HTTP_PREPROCESS_SECONDS,
        Unit::Seconds,
        "Body parsing and image preprocessing time per request"
    );
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Records a request answered with outputs for `images` images.
pub fn record_success(model: &str, version: &str, images: u32, phases: &Phases) {
    let labels = [
        ("model", model.to_string()),
        ("version", version.to_string()),
    ];
    counter!(REQUEST_SUCCESS, &labels).increment(1);
    counter!(INFERENCE_COUNT, &labels).increment(u64::from(images));
    counter!(REQUEST_DURATION_US, &labels).increment(micros(phases.total));
    counter!(QUEUE_DURATION_US, &labels).increment(micros(phases.queue));
    counter!(COMPUTE_INPUT_DURATION_US, &labels).increment(micros(phases.input));
    counter!(COMPUTE_INFER_DURATION_US, &labels).increment(micros(phases.infer));
    counter!(COMPUTE_OUTPUT_DURATION_US, &labels).increment(micros(phases.output));
    histogram!(HTTP_REQUEST_SECONDS, &labels).record(phases.total.as_secs_f64());
    histogram!(HTTP_PREPROCESS_SECONDS, &labels).record(phases.input.as_secs_f64());
}

/// Records a failed inference request.
pub fn record_failure(model: &str, version: &str, error: &ServeError) {
    let labels = [
        ("model", model.to_string()),
        ("version", version.to_string()),
        ("reason", error.reason().to_string()),
    ];
    counter!(REQUEST_FAILURE, &labels).increment(1);
}
