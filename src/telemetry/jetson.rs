//! Jetson telemetry from sysfs, as tegrastats and jtop read it:
//!
//! - GPU load: `devices/platform/gpu.0/load` (Orin; `devices/gpu.0/load` on Xavier and
//!   older, or the GPU's platform node), per mille;
//! - GPU clock: the GPU's devfreq node (`class/devfreq/*gpu*|*ga10b*|*gv11b*/cur_freq`);
//! - EMC: activity `kernel/actmon_avg_activity/mc_all` (kHz) over the EMC clock
//!   (`kernel/debug/bpmp/debug/clk/emc/rate` or `kernel/debug/clk/emc/clk_rate`, Hz;
//!   debugfs, so root only: otherwise `tegrastats` supplies it);
//! - power: INA3221 monitors, `class/hwmon/hwmon*/` with `name` = `ina3221`
//!   (`inN_label`, `inN_input` mV, `currN_input` mA), or the older iio driver
//!   (`bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_N`, `in_powerN_input` mW);
//! - DLA: runtime PM state `devices/platform/host1x/*.nvdlaN/power/runtime_status` and
//!   clock `kernel/debug/bpmp/debug/clk/nvdlaN/rate`;
//! - thermal zones `class/thermal/thermal_zone*/{type,temp}` (m°C).
//!
//! Paths are relative to a root (`/`, or a fixture tree in tests).

use std::path::{Path, PathBuf};

use super::gauges::Gauges;
use super::Source;
use crate::metrics::{
    DEVICE_CLOCK_HZ, DEVICE_DLA_ACTIVE, DEVICE_GPU_UTILIZATION,
    DEVICE_MEMORY_CONTROLLER_UTILIZATION, DEVICE_POWER_WATTS, DEVICE_TEMPERATURE_CELSIUS,
};

const GPU_LOAD: &[&str] = &[
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.ga10b/load",
    "sys/devices/17000000.gv11b/load",
    "sys/devices/17000000.gp10b/load",
];
const GPU_DEVFREQ_NAMES: &[&str] = &["gpu", "ga10b", "gv11b", "gp10b", "gm20b"];
const EMC_ACTIVITY: &str = "sys/kernel/actmon_avg_activity/mc_all";
const EMC_RATE: &[&str] = &[
    "sys/kernel/debug/bpmp/debug/clk/emc/rate",
    "sys/kernel/debug/clk/emc/clk_rate",
];

/// One power rail reader.
#[derive(Debug, Clone)]
enum Rail {
    /// hwmon: millivolts × milliamps.
    Hwmon {
        name: String,
        voltage: PathBuf,
        current: PathBuf,
    },
    /// iio: milliwatts.
    Iio { name: String, power: PathBuf },
}

/// The Jetson sysfs files found at probe time.
#[derive(Debug)]
pub struct JetsonSysfs {
    gpu_load: Option<PathBuf>,
    gpu_freq: Option<PathBuf>,
    emc: Option<(PathBuf, PathBuf)>,
    rails: Vec<Rail>,
    dlas: Vec<(String, PathBuf, Option<PathBuf>)>,
    thermal: Vec<(String, PathBuf)>,
    gauges: Gauges,
}

fn first_file(root: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(|c| root.join(c))
        .find(|p| p.is_file())
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads a file holding one number.
pub fn read_number(path: &Path) -> Result<f64, String> {
    let text = read_trimmed(path)?;
    text.parse::<f64>()
        .map_err(|e| format!("{}: {e} ({text:?})", path.display()))
}

fn hwmon_rails(root: &Path) -> Vec<Rail> {
    let mut rails = Vec::new();
    for dir in entries(&root.join("sys/class/hwmon")) {
        let is_ina = read_trimmed(&dir.join("name")).is_ok_and(|n| n.starts_with("ina3221"));
        if !is_ina {
            continue;
        }
        for channel in 1..=8 {
            let Ok(label) = read_trimmed(&dir.join(format!("in{channel}_label"))) else {
                continue;
            };
            let voltage = dir.join(format!("in{channel}_input"));
            let current = dir.join(format!("curr{channel}_input"));
            if label.is_empty() || label == "NC" || !voltage.is_file() || !current.is_file() {
                continue;
            }
            rails.push(Rail::Hwmon {
                name: label,
                voltage,
                current,
            });
        }
    }
    rails
}

fn iio_rails(root: &Path) -> Vec<Rail> {
    let mut rails = Vec::new();
    for device in entries(&root.join("sys/bus/i2c/drivers/ina3221x")) {
        for iio in entries(&device) {
            let is_iio = iio
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("iio:device"));
            if !is_iio {
                continue;
            }
            for channel in 0..8 {
                let Ok(name) = read_trimmed(&iio.join(format!("rail_name_{channel}"))) else {
                    continue;
                };
                let power = iio.join(format!("in_power{channel}_input"));
                if power.is_file() {
                    rails.push(Rail::Iio { name, power });
                }
            }
        }
    }
    rails
}

fn dlas(root: &Path) -> Vec<(String, PathBuf, Option<PathBuf>)> {
    let mut found = Vec::new();
    for node in entries(&root.join("sys/devices/platform/host1x")) {
        let Some(name) = node.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((_, dla)) = name.rsplit_once('.') else {
            continue;
        };
        let Some(core) = dla.strip_prefix("nvdla") else {
            continue;
        };
        let status = node.join("power/runtime_status");
        if !status.is_file() {
            continue;
        }
        let rate = root.join(format!("sys/kernel/debug/bpmp/debug/clk/nvdla{core}/rate"));
        found.push((format!("dla{core}"), status, rate.is_file().then_some(rate)));
    }
    found
}

impl JetsonSysfs {
    /// Looks for the Jetson files under `root`; `None` when there is no GPU load file
    /// and no INA3221 rail (not a Jetson).
    pub fn probe(root: &Path) -> Option<Self> {
        let gpu_load = first_file(root, GPU_LOAD);
        let gpu_freq = entries(&root.join("sys/class/devfreq"))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| GPU_DEVFREQ_NAMES.iter().any(|g| n.contains(g)))
            })
            .map(|p| p.join("cur_freq"))
            .find(|p| p.is_file());
        let emc = match (root.join(EMC_ACTIVITY), first_file(root, EMC_RATE)) {
            (activity, Some(rate)) if activity.is_file() => Some((activity, rate)),
            _ => None,
        };
        let mut rails = hwmon_rails(root);
        if rails.is_empty() {
            rails = iio_rails(root);
        }
        if gpu_load.is_none() && rails.is_empty() {
            return None;
        }
        let thermal = entries(&root.join("sys/class/thermal"))
            .into_iter()
            .filter_map(|zone| {
                let kind = read_trimmed(&zone.join("type")).ok()?;
                let temp = zone.join("temp");
                temp.is_file().then(|| (kind.to_lowercase(), temp))
            })
            .collect();
        Some(Self {
            gpu_load,
            gpu_freq,
            emc,
            rails,
            dlas: dlas(root),
            thermal,
            gauges: Gauges::default(),
        })
    }

    /// Whether sysfs shows the EMC (else `tegrastats` is asked).
    pub fn has_emc(&self) -> bool {
        self.emc.is_some()
    }

    /// Names of the power rails found.
    pub fn rail_names(&self) -> Vec<&str> {
        self.rails
            .iter()
            .map(|r| match r {
                Rail::Hwmon { name, .. } | Rail::Iio { name, .. } => name.as_str(),
            })
            .collect()
    }
}

impl Source for JetsonSysfs {
    fn name(&self) -> &'static str {
        "jetson-sysfs"
    }

    fn sample(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        let jetson = [("source", "jetson")];
        if let Some(path) = &self.gpu_load {
            match read_number(path) {
                Ok(per_mille) => self.gauges.set(
                    DEVICE_GPU_UTILIZATION,
                    &[("device", "gpu0"), jetson[0]],
                    (per_mille / 1000.0).clamp(0.0, 1.0),
                ),
                Err(e) => errors.push(e),
            }
        }
        if let Some(path) = &self.gpu_freq {
            match read_number(path) {
                Ok(hz) => self.gauges.set(
                    DEVICE_CLOCK_HZ,
                    &[("device", "gpu0"), ("clock", "gpu"), jetson[0]],
                    hz,
                ),
                Err(e) => errors.push(e),
            }
        }
        if let Some((activity, rate)) = &self.emc {
            match (read_number(activity), read_number(rate)) {
                (Ok(khz), Ok(hz)) if hz > 0.0 => {
                    self.gauges.set(
                        DEVICE_MEMORY_CONTROLLER_UTILIZATION,
                        &[("device", "emc"), jetson[0]],
                        (khz * 1000.0 / hz).clamp(0.0, 1.0),
                    );
                    self.gauges.set(
                        DEVICE_CLOCK_HZ,
                        &[("device", "emc"), ("clock", "emc"), jetson[0]],
                        hz,
                    );
                }
                (Err(e), _) | (_, Err(e)) => errors.push(e),
                _ => {}
            }
        }
        for rail in &self.rails {
            let (name, watts) = match rail {
                Rail::Hwmon {
                    name,
                    voltage,
                    current,
                } => match (read_number(voltage), read_number(current)) {
                    (Ok(mv), Ok(ma)) => (name, mv * ma / 1e6),
                    (Err(e), _) | (_, Err(e)) => {
                        errors.push(e);
                        continue;
                    }
                },
                Rail::Iio { name, power } => match read_number(power) {
                    Ok(mw) => (name, mw / 1e3),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            self.gauges.set(
                DEVICE_POWER_WATTS,
                &[("device", "jetson"), ("rail", name), jetson[0]],
                watts,
            );
        }
        for (dla, status, rate) in &self.dlas {
            match read_trimmed(status) {
                Ok(state) => self.gauges.set(
                    DEVICE_DLA_ACTIVE,
                    &[("device", dla), jetson[0]],
                    if state == "active" { 1.0 } else { 0.0 },
                ),
                Err(e) => errors.push(e),
            }
            if let Some(rate) = rate {
                match read_number(rate) {
                    Ok(hz) => self.gauges.set(
                        DEVICE_CLOCK_HZ,
                        &[("device", dla), ("clock", "dla"), jetson[0]],
                        hz,
                    ),
                    Err(e) => errors.push(e),
                }
            }
        }
        for (sensor, path) in &self.thermal {
            if let Ok(milli) = read_number(path) {
                self.gauges.set(
                    DEVICE_TEMPERATURE_CELSIUS,
                    &[("device", "jetson"), ("sensor", sensor), jetson[0]],
                    milli / 1000.0,
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes an Orin-like sysfs tree (values from an AGX Orin under load).
    pub(crate) fn orin_fixture(root: &Path) {
        let files: &[(&str, &str)] = &[
            ("sys/devices/platform/gpu.0/load", "734\n"),
            ("sys/class/devfreq/17000000.ga10b/cur_freq", "1300500000\n"),
            ("sys/kernel/actmon_avg_activity/mc_all", "1066000\n"),
            ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "3199000000\n"),
            ("sys/class/hwmon/hwmon1/name", "ina3221\n"),
            ("sys/class/hwmon/hwmon1/in1_label", "VDD_GPU_SOC\n"),
            ("sys/class/hwmon/hwmon1/in1_input", "5000\n"),
            ("sys/class/hwmon/hwmon1/curr1_input", "1600\n"),
            ("sys/class/hwmon/hwmon1/in2_label", "VDD_CPU_CV\n"),
            ("sys/class/hwmon/hwmon1/in2_input", "5000\n"),
            ("sys/class/hwmon/hwmon1/curr2_input", "400\n"),
            (
                "sys/class/hwmon/hwmon1/in7_label",
                "sum of shunt voltages\n",
            ),
            ("sys/class/hwmon/hwmon0/name", "some-other-sensor\n"),
            (
                "sys/devices/platform/host1x/15880000.nvdla0/power/runtime_status",
                "active\n",
            ),
            (
                "sys/devices/platform/host1x/158c0000.nvdla1/power/runtime_status",
                "suspended\n",
            ),
            (
                "sys/kernel/debug/bpmp/debug/clk/nvdla0/rate",
                "1600000000\n",
            ),
            ("sys/class/thermal/thermal_zone1/type", "GPU-therm\n"),
            ("sys/class/thermal/thermal_zone1/temp", "48500\n"),
        ];
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn probes_an_orin_tree() {
        let dir = tempfile::tempdir().unwrap();
        orin_fixture(dir.path());
        let mut jetson = JetsonSysfs::probe(dir.path()).unwrap();
        assert!(jetson.has_emc());
        assert_eq!(jetson.rail_names(), vec!["VDD_GPU_SOC", "VDD_CPU_CV"]);
        assert_eq!(jetson.dlas.len(), 2);
        assert_eq!(jetson.dlas[0].0, "dla0");
        assert!(jetson.dlas[0].2.is_some() && jetson.dlas[1].2.is_none());
        assert_eq!(jetson.thermal[0].0, "gpu-therm");
        jetson.sample().unwrap();
    }

    #[test]
    fn an_x86_host_is_not_a_jetson() {
        let dir = tempfile::tempdir().unwrap();
        let hwmon = dir.path().join("sys/class/hwmon/hwmon0");
        std::fs::create_dir_all(&hwmon).unwrap();
        std::fs::write(hwmon.join("name"), "coretemp\n").unwrap();
        assert!(JetsonSysfs::probe(dir.path()).is_none());
    }

    #[test]
    fn reads_the_older_iio_power_driver() {
        let dir = tempfile::tempdir().unwrap();
        let iio = dir
            .path()
            .join("sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0");
        std::fs::create_dir_all(&iio).unwrap();
        std::fs::write(iio.join("rail_name_0"), "GPU\n").unwrap();
        std::fs::write(iio.join("in_power0_input"), "2345\n").unwrap();
        let jetson = JetsonSysfs::probe(dir.path()).unwrap();
        assert_eq!(jetson.rail_names(), vec!["GPU"]);
        assert!(read_number(&iio.join("rail_name_0")).is_err());
    }
}
