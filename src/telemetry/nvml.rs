//! Data-center GPU telemetry through NVML (`nvml-wrapper`): utilization, memory, power,
//! clocks and temperature per GPU. `libnvidia-ml.so.1` is loaded at run time, so a
//! machine without the NVIDIA driver (or a Jetson, which has no NVML) only loses this
//! source.

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::Nvml;

use super::gauges::Gauges;
use super::Source;
use crate::metrics::{
    DEVICE_CLOCK_HZ, DEVICE_GPU_UTILIZATION, DEVICE_MEMORY_CONTROLLER_UTILIZATION,
    DEVICE_MEMORY_TOTAL_BYTES, DEVICE_MEMORY_USED_BYTES, DEVICE_POWER_WATTS,
    DEVICE_TEMPERATURE_CELSIUS,
};

/// Samples every GPU NVML sees.
pub struct NvmlSource {
    nvml: Nvml,
    devices: u32,
    gauges: Gauges,
}

impl NvmlSource {
    /// Loads NVML; the error says why it is not available.
    pub fn open() -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("cannot load NVML: {e}"))?;
        let devices = nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        if devices == 0 {
            return Err("NVML sees no GPU".into());
        }
        Ok(Self {
            nvml,
            devices,
            gauges: Gauges::default(),
        })
    }
}

impl Source for NvmlSource {
    fn name(&self) -> &'static str {
        "nvml"
    }

    fn sample(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        for index in 0..self.devices {
            let device = match self.nvml.device_by_index(index) {
                Ok(device) => device,
                Err(e) => {
                    errors.push(format!("gpu{index}: {e}"));
                    continue;
                }
            };
            let name = format!("gpu{index}");
            let labels = [("device", name.as_str()), ("source", "nvml")];
            match device.utilization_rates() {
                Ok(u) => {
                    self.gauges
                        .set(DEVICE_GPU_UTILIZATION, &labels, f64::from(u.gpu) / 100.0);
                    self.gauges.set(
                        DEVICE_MEMORY_CONTROLLER_UTILIZATION,
                        &labels,
                        f64::from(u.memory) / 100.0,
                    );
                }
                Err(e) => errors.push(format!("{name} utilization: {e}")),
            }
            match device.memory_info() {
                Ok(m) => {
                    self.gauges
                        .set(DEVICE_MEMORY_USED_BYTES, &labels, m.used as f64);
                    self.gauges
                        .set(DEVICE_MEMORY_TOTAL_BYTES, &labels, m.total as f64);
                }
                Err(e) => errors.push(format!("{name} memory: {e}")),
            }
            match device.power_usage() {
                Ok(mw) => self.gauges.set(
                    DEVICE_POWER_WATTS,
                    &[
                        ("device", name.as_str()),
                        ("rail", "board"),
                        ("source", "nvml"),
                    ],
                    f64::from(mw) / 1e3,
                ),
                Err(e) => errors.push(format!("{name} power: {e}")),
            }
            for (clock, label) in [
                (Clock::Graphics, "graphics"),
                (Clock::SM, "sm"),
                (Clock::Memory, "memory"),
            ] {
                match device.clock_info(clock) {
                    Ok(mhz) => self.gauges.set(
                        DEVICE_CLOCK_HZ,
                        &[
                            ("device", name.as_str()),
                            ("clock", label),
                            ("source", "nvml"),
                        ],
                        f64::from(mhz) * 1e6,
                    ),
                    Err(e) => errors.push(format!("{name} {label} clock: {e}")),
                }
            }
            match device.temperature(TemperatureSensor::Gpu) {
                Ok(celsius) => self.gauges.set(
                    DEVICE_TEMPERATURE_CELSIUS,
                    &[
                        ("device", name.as_str()),
                        ("sensor", "gpu"),
                        ("source", "nvml"),
                    ],
                    f64::from(celsius),
                ),
                Err(e) => errors.push(format!("{name} temperature: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}
