//! The Prometheus recorder behind the `metrics` facade, and the service crate's own
//! metric names, declared once.
//!
//! The recorder is installed once per process, with every histogram's buckets declared
//! here (names and buckets of the actors' series come from `mica_actors::metrics`, the
//! HTTP layer's from `crate::serve::metrics`). The actors' per-batch and per-request
//! histograms are not the exporter's but `mica_actors::metrics::HistogramRegistry`'s,
//! installed beside it; `MetricsHandle::render` puts both in one exposition. Without an
//! installed recorder every handle is a no-op: a run with `[metrics] enabled = false`
//! (or `mica bench --no-metrics`) records nothing.
//!
//! Names here: the Triton series the instrumented backend adds
//! (`crate::instrumented`), config reloads (`crate::reload`), and the device and
//! process gauges of `crate::telemetry`.

use std::time::Duration;

use metrics::{describe_counter, describe_gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use mica_actors::metrics::HistogramRegistry;
use tracing::warn;

/// Model executions (batches that carried the model's requests), Triton's name. A
/// batch of several requests counts once: each request adds its share.
pub const EXEC_COUNT: &str = "nv_inference_exec_count";
/// Requests submitted to the scheduler and not yet answered, Triton's name.
pub const PENDING_REQUEST_COUNT: &str = "nv_inference_pending_request_count";
/// Config reloads, per `result` (`applied`, `unchanged`, `invalid`, `failed`).
pub const CONFIG_RELOADS_TOTAL: &str = "mica_config_reloads_total";
/// Every `result` label of `CONFIG_RELOADS_TOTAL`.
pub const RELOAD_RESULTS: &[&str] = &["applied", "unchanged", "invalid", "failed"];

/// GPU busy share (0..1), per `device` and `source` (`nvml`, `jetson`).
pub const DEVICE_GPU_UTILIZATION: &str = "mica_device_gpu_utilization_ratio";
/// Memory controller busy share (0..1): NVML's memory utilization, Jetson's EMC.
pub const DEVICE_MEMORY_CONTROLLER_UTILIZATION: &str =
    "mica_device_memory_controller_utilization_ratio";
/// Device memory in use, bytes.
pub const DEVICE_MEMORY_USED_BYTES: &str = "mica_device_memory_used_bytes";
/// Device memory installed, bytes.
pub const DEVICE_MEMORY_TOTAL_BYTES: &str = "mica_device_memory_total_bytes";
/// Power draw, watts, per `device` and `rail`.
pub const DEVICE_POWER_WATTS: &str = "mica_device_power_watts";
/// Clock frequency, hertz, per `device` and `clock`.
pub const DEVICE_CLOCK_HZ: &str = "mica_device_clock_hz";
/// Temperature, degrees Celsius, per `device` and `sensor`.
pub const DEVICE_TEMPERATURE_CELSIUS: &str = "mica_device_temperature_celsius";
/// 1 while a DLA core is powered (runtime PM `active`), per `device`.
pub const DEVICE_DLA_ACTIVE: &str = "mica_device_dla_active";
/// Host CPU busy share over all cores (0..1), from `/proc/stat`.
pub const DEVICE_CPU_UTILIZATION: &str = "mica_device_cpu_utilization_ratio";
/// Process CPU time per wall second (1.0 = one core busy), from `/proc/self/stat`.
pub const PROCESS_CPU_UTILIZATION: &str = "mica_process_cpu_utilization_ratio";
/// Process resident memory, bytes.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "mica_process_resident_memory_bytes";
/// Process threads.
pub const PROCESS_THREADS: &str = "mica_process_threads";
/// Process open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "mica_process_open_fds";

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Renders the exposition text: the exporter's series, then the actors' histograms.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
    histograms: &'static HistogramRegistry,
}

impl MetricsHandle {
    /// The whole exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = self.prometheus.render();
        self.histograms.render(&mut text);
        text
    }
}

/// Installs the global Prometheus recorder and the actors' histogram registry,
/// registers every metric description and starts the upkeep thread. Returns the handle
/// that renders the exposition text.
pub fn install_recorder() -> anyhow::Result<MetricsHandle> {
    let builder = PrometheusBuilder::new().set_buckets_for_metric(
        Matcher::Suffix("_seconds".to_string()),
        mica_actors::metrics::SECONDS_BUCKETS,
    )?;
    let handle = builder.install_recorder()?;
    let histograms = HistogramRegistry::install();
    mica_actors::metrics::describe();
    mica_pipeline::stage::describe();
    crate::serve::metrics::describe();
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        });
    if let Err(error) = spawned {
        warn!(%error, "cannot start the metrics upkeep thread; histograms drain only when scraped");
    }
    Ok(MetricsHandle {
        prometheus: handle,
        histograms,
    })
}

/// Registers this crate's descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(
        EXEC_COUNT,
        Unit::Count,
        "Model executions (batches); a batch of several requests counts once"
    );
    describe_gauge!(
        PENDING_REQUEST_COUNT,
        Unit::Count,
        "Requests submitted to the scheduler and not yet answered"
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        Unit::Count,
        "Config reloads (SIGHUP, file change), per result"
    );
    describe_gauge!(DEVICE_GPU_UTILIZATION, Unit::Count, "GPU busy share (0..1)");
    describe_gauge!(
        DEVICE_MEMORY_CONTROLLER_UTILIZATION,
        Unit::Count,
        "Memory controller (EMC) busy share (0..1)"
    );
    describe_gauge!(
        DEVICE_MEMORY_USED_BYTES,
        Unit::Bytes,
        "Device memory in use"
    );
    describe_gauge!(
        DEVICE_MEMORY_TOTAL_BYTES,
        Unit::Bytes,
        "Device memory installed"
    );
    describe_gauge!(
        DEVICE_POWER_WATTS,
        Unit::Count,
        "Power draw in watts, per rail"
    );
    describe_gauge!(DEVICE_CLOCK_HZ, Unit::Count, "Clock frequency in hertz");
    describe_gauge!(
        DEVICE_TEMPERATURE_CELSIUS,
        Unit::Count,
        "Temperature in degrees Celsius"
    );
    describe_gauge!(
        DEVICE_DLA_ACTIVE,
        Unit::Count,
        "1 while the DLA core is powered"
    );
    describe_gauge!(
        DEVICE_CPU_UTILIZATION,
        Unit::Count,
        "Host CPU busy share over all cores (0..1)"
    );
    describe_gauge!(
        PROCESS_CPU_UTILIZATION,
        Unit::Count,
        "Process CPU seconds per wall second"
    );
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Process resident memory"
    );
    describe_gauge!(PROCESS_THREADS, Unit::Count, "Process threads");
    describe_gauge!(
        PROCESS_OPEN_FDS,
        Unit::Count,
        "Process open file descriptors"
    );
}
