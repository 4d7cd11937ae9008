//! Jetson telemetry from a `tegrastats` child process, for what sysfs shows only to
//! root (the EMC clock lives in debugfs): `tegrastats --interval MS` prints one line
//! per interval, e.g.
//!
//! ```text
//! RAM 2722/30536MB (lfb 6829x4MB) SWAP 0/15268MB (cached 0MB) CPU [2%@729,...]
//! EMC_FREQ 12%@3199 GR3D_FREQ 61%@[1300,1300] NVDLA0_FREQ @1600 VDD_GPU_SOC 3186mW/3186mW
//! VDD_CPU_CV 797mW/797mW VIN_SYS_5V0 4236mW/4236mW
//! ```
//!
//! (one line in reality). A reader thread keeps the latest parsed line; sampling
//! publishes it. The child is killed when the source is dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::gauges::Gauges;
use super::Source;
use crate::metrics::{
    DEVICE_CLOCK_HZ, DEVICE_GPU_UTILIZATION, DEVICE_MEMORY_CONTROLLER_UTILIZATION,
    DEVICE_POWER_WATTS,
};

/// What one tegrastats line says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TegrastatsSample {
    /// EMC busy share (0..1) and clock (MHz).
    pub emc: Option<(f64, Option<f64>)>,
    /// GPU (GR3D) busy share (0..1) and clock (MHz).
    pub gpu: Option<(f64, Option<f64>)>,
    /// Rails: name and current power, watts.
    pub rails: Vec<(String, f64)>,
}

/// `61%@3199`, `61%@[1300,1300]`, `61%`: the share and the first clock.
fn percent_at(value: &str) -> Option<(f64, Option<f64>)> {
    let (percent, clock) = match value.split_once('@') {
        Some((p, c)) => (p, Some(c)),
        None => (value, None),
    };
    let share = percent.strip_suffix('%')?.parse::<f64>().ok()? / 100.0;
    let mhz = clock.and_then(|c| {
        c.trim_start_matches('[')
            .split([',', ']'])
            .next()
            .and_then(|f| f.parse::<f64>().ok())
    });
    Some((share, mhz))
}

/// Parses one tegrastats line (JetPack 4 to 6 formats).
pub fn parse_line(line: &str) -> TegrastatsSample {
    let mut sample = TegrastatsSample::default();
    let tokens: Vec<&str> = line.split_whitespace().collect();
    for pair in tokens.windows(2) {
        let (key, value) = (pair[0], pair[1]);
        match key {
            "EMC_FREQ" | "EMC" => sample.emc = percent_at(value).or(sample.emc),
            "GR3D_FREQ" | "GR3D" => sample.gpu = percent_at(value).or(sample.gpu),
            _ => {
                // Rails: `NAME 3186mW/3186mW` (JetPack 5+) or `NAME 3186/3186` (JP4).
                let is_rail =
                    key.starts_with("VDD") || key.starts_with("VIN") || key.starts_with("POM_");
                if !is_rail {
                    continue;
                }
                let current = value.split('/').next().unwrap_or("");
                let milliwatts = current.strip_suffix("mW").unwrap_or(current);
                if let Ok(mw) = milliwatts.parse::<f64>() {
                    sample.rails.push((key.to_string(), mw / 1e3));
                }
            }
        }
    }
    sample
}

/// A running `tegrastats` and its latest line.
pub struct TegrastatsSource {
    child: Child,
    latest: Arc<Mutex<Option<TegrastatsSample>>>,
    gauges: Gauges,
}

impl TegrastatsSource {
    /// Starts `tegrastats --interval MS`; the error says why it is not used.
    pub fn spawn(interval: Duration) -> Result<Self, String> {
        let millis = interval.as_millis().max(100).to_string();
        let mut child = Command::new("tegrastats")
            .args(["--interval", &millis])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run tegrastats: {e}"))?;
        let stdout = child.stdout.take().ok_or("tegrastats has no stdout")?;
        let latest = Arc::new(Mutex::new(None));
        let writer = latest.clone();
        std::thread::Builder::new()
            .name("tegrastats".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    *writer.lock() = Some(parse_line(&line));
                }
            })
            .map_err(|e| format!("cannot start the tegrastats reader: {e}"))?;
        Ok(Self {
            child,
            latest,
            gauges: Gauges::default(),
        })
    }
}

impl Drop for TegrastatsSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Source for TegrastatsSource {
    fn name(&self) -> &'static str {
        "tegrastats"
    }

    fn sample(&mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("tegrastats exited: {status}"));
        }
        let Some(sample) = self.latest.lock().clone() else {
            return Ok(());
        };
        let source = ("source", "tegrastats");
        if let Some((share, mhz)) = sample.emc {
            self.gauges.set(
                DEVICE_MEMORY_CONTROLLER_UTILIZATION,
                &[("device", "emc"), source],
                share,
            );
            if let Some(mhz) = mhz {
                self.gauges.set(
                    DEVICE_CLOCK_HZ,
                    &[("device", "emc"), ("clock", "emc"), source],
                    mhz * 1e6,
                );
            }
        }
        if let Some((share, _)) = sample.gpu {
            self.gauges
                .set(DEVICE_GPU_UTILIZATION, &[("device", "gpu0"), source], share);
        }
        for (rail, watts) in &sample.rails {
            self.gauges.set(
                DEVICE_POWER_WATTS,
                &[("device", "jetson"), ("rail", rail), source],
                *watts,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_orin_line() {
        let line = "11-21-2023 10:00:00 RAM 2722/30536MB (lfb 6829x4MB) SWAP 0/15268MB \
                    (cached 0MB) CPU [2%@729,1%@729,off,off] EMC_FREQ 12%@3199 \
                    GR3D_FREQ 61%@[1300,1300] NVDLA0_FREQ @1600 VIC_FREQ 729 \
                    cpu@45.5C VDD_GPU_SOC 3186mW/3186mW VDD_CPU_CV 797mW/797mW \
                    VIN_SYS_5V0 4236mW/4236mW";
        let sample = parse_line(line);
        assert_eq!(sample.emc, Some((0.12, Some(3199.0))));
        assert_eq!(sample.gpu, Some((0.61, Some(1300.0))));
        assert_eq!(
            sample.rails,
            vec![
                ("VDD_GPU_SOC".to_string(), 3.186),
                ("VDD_CPU_CV".to_string(), 0.797),
                ("VIN_SYS_5V0".to_string(), 4.236)
            ]
        );
    }

    #[test]
    fn parses_a_xavier_jetpack4_line() {
        let line = "RAM 3468/3983MB (lfb 48x4MB) SWAP 873/8192MB cpu [17%,13%]@408 \
                    EMC_FREQ 1%@408 GR3D_FREQ 3%@76 APE 25 VDD_GPU 1234/1200";
        let sample = parse_line(line);
        assert_eq!(sample.emc, Some((0.01, Some(408.0))));
        assert_eq!(sample.gpu, Some((0.03, Some(76.0))));
        assert_eq!(sample.rails, vec![("VDD_GPU".to_string(), 1.234)]);
        assert_eq!(parse_line("garbage"), TegrastatsSample::default());
    }
}
