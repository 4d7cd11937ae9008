//! Device and process telemetry, sampled on a background thread into `mica_device_*`
//! and `mica_process_*` gauges (names in `crate::metrics`).
//!
//! One file per source: `procfs` (this process and the host CPU, always), `nvml`
//! (data-center GPUs, `libnvidia-ml` loaded at run time), `jetson` (Jetson sysfs: GPU
//! load and clock, EMC, INA3221 rails, DLA state, thermal zones) and `tegrastats` (a
//! `tegrastats` child for what sysfs does not show unprivileged, such as EMC load). A
//! source that is absent is reported once at info level and skipped, never an error.
//!
//! `MICA_TELEMETRY_SYSFS_ROOT` puts a prefix before every sysfs path (fixture trees in
//! tests; a bind-mounted host `/sys` in a container).

mod gauges;
mod jetson;
mod nvml;
mod procfs;
mod tegrastats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

pub use jetson::JetsonSysfs;
pub use procfs::{parse_proc_stat_cpu, parse_self_stat, parse_status, CpuTimes, SelfStat, Status};
pub use tegrastats::{parse_line as parse_tegrastats_line, TegrastatsSample};

/// Environment variable naming a prefix for every sysfs path.
pub const SYSFS_ROOT_ENV: &str = "MICA_TELEMETRY_SYSFS_ROOT";

/// How often sources are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One telemetry source.
pub trait Source: Send {
    /// Short name for logs.
    fn name(&self) -> &'static str;
    /// Reads the source and sets its gauges. An error is logged at debug level; the
    /// next sample tries again.
    fn sample(&mut self) -> Result<(), String>;
}

/// The running sampler; stops its thread when dropped.
#[derive(Debug)]
pub struct Telemetry {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Finds the sources present on this machine (each absent one reported once at info
/// level) and starts sampling them every `interval`.
pub fn start(interval: Duration) -> std::io::Result<Telemetry> {
    let sysfs_root = std::env::var_os(SYSFS_ROOT_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut sources: Vec<Box<dyn Source>> =
        vec![Box::new(procfs::ProcSource::new(PathBuf::from("/proc")))];
    match nvml::NvmlSource::open() {
        Ok(source) => sources.push(Box::new(source)),
        Err(reason) => info!(%reason, "NVML telemetry not available"),
    }
    let jetson = JetsonSysfs::probe(&sysfs_root);
    let emc_in_sysfs = jetson.as_ref().is_some_and(JetsonSysfs::has_emc);
    match jetson {
        Some(source) => sources.push(Box::new(source)),
        None => info!(root = %sysfs_root.display(), "no Jetson sysfs telemetry found"),
    }
    if !emc_in_sysfs {
        match tegrastats::TegrastatsSource::spawn(interval) {
            Ok(source) => sources.push(Box::new(source)),
            Err(reason) => debug!(%reason, "tegrastats not used"),
        }
    }
    let names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
    info!(sources = ?names, interval = ?interval, "telemetry sampling");
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || run(sources, interval, &stopping))?;
    Ok(Telemetry {
        stop,
        thread: Some(thread),
    })
}

fn run(mut sources: Vec<Box<dyn Source>>, interval: Duration, stop: &AtomicBool) {
    let mut failing = vec![false; sources.len()];
    while !stop.load(Ordering::Acquire) {
        let started = Instant::now();
        for (source, failing) in sources.iter_mut().zip(failing.iter_mut()) {
            match source.sample() {
                Ok(()) => *failing = false,
                Err(error) if !*failing => {
                    *failing = true;
                    warn!(source = source.name(), %error, "telemetry sample failed; retrying");
                }
                Err(error) => debug!(source = source.name(), %error, "telemetry sample failed"),
            }
        }
        let next = started + interval;
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                break;
            }
            std::thread::park_timeout(next - now);
        }
    }
}
