//! Unit profiles: how long a batch takes on a unit, and what it demands of shared resources.
//!
//! A profile is a table of measured (or calibrated) points, batch size → service latency,
//! with linear interpolation between points and a fixed per-batch overhead. The same file
//! format serves simulated units (calibrated from published figures, each point citing
//! its source) and real ones (written by `mica profile`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest batch latency a profile may give, overhead included, milliseconds (one
/// hour). Anything longer is a typo or a unit error, and every predicted time then fits
/// the service's timers with room to spare.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// Where a profile's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProfileOrigin {
    /// Calibrated from published figures or estimates: drives simulated units.
    #[default]
    Calibrated,
    /// Measured on real hardware by `mica profile`.
    Measured,
}

/// One point of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePoint {
    /// Images in the batch.
    pub batch: u32,
    /// Service time of the whole batch when the unit runs alone, in milliseconds,
    /// not counting `overhead_ms`.
    pub latency_ms: f64,
    /// DRAM bandwidth the unit draws while running a batch of this size, GB/s
    /// (used by the contention model; 0 when unknown).
    #[serde(default)]
    pub bandwidth_gbps: f64,
    /// Where the number comes from (paper, data sheet, estimate and its reasoning).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// Service-time profile of one unit running one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Model the profile was taken for (e.g. `resnet50`).
    #[serde(default)]
    pub model: String,
    /// Calibrated (simulated units) or measured (real units).
    #[serde(default)]
    pub origin: ProfileOrigin,
    /// Where the numbers come from, as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// Fixed cost added to every batch, milliseconds (launch, copies, synchronization).
    #[serde(default)]
    pub overhead_ms: f64,
    /// Fraction of the GPU's SMs the unit keeps busy while it runs: 1.0 for a GPU
    /// unit, the fallback share for a DLA whose unsupported layers run on the GPU, 0 for
    /// the CPU.
    #[serde(default)]
    pub gpu_occupancy: f64,
    /// The points, in increasing batch order.
    pub points: Vec<ProfilePoint>,
}

/// A profile that cannot be used, and why.
#[derive(Debug, Error, PartialEq)]
pub enum ProfileError {
    /// The table has no point.
    #[error("profile has no points")]
    Empty,
    /// Points are not in strictly increasing batch order.
    #[error(
        "points must be in strictly increasing batch order (batch {batch} follows {previous})"
    )]
    Unordered {
        /// The batch that is out of order.
        batch: u32,
        /// The one before it.
        previous: u32,
    },
    /// A value is negative, zero where it must not be, or not finite.
    #[error("point for batch {batch}: {what} must be a finite positive number, got {value}")]
    BadValue {
        /// The batch of the point.
        batch: u32,
        /// The field.
        what: &'static str,
        /// The value found.
        value: f64,
    },
    /// A latency (with the overhead) longer than `MAX_LATENCY_MS`: no unit takes that
    /// long, and the value would not fit the service's timers.
    #[error(
        "point for batch {batch}: latency_ms {value} plus overhead_ms is longer than \
         {MAX_LATENCY_MS} ms (one hour); a real batch never takes that long"
    )]
    TooLong {
        /// The batch of the point.
        batch: u32,
        /// The value found.
        value: f64,
    },
    /// A field of the whole profile is out of range.
    #[error("{what} out of range: {value}")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value found.
        value: f64,
    },
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl Profile {
    /// Reads and validates a profile from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ProfileError> {
        let file_error = |message: String| ProfileError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let profile: Profile = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        profile.validate().map_err(|e| file_error(e.to_string()))?;
        Ok(profile)
    }

    /// Writes the profile as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a profile always serializes; this is a bug")
    }

    /// Checks the table: at least one point, strictly increasing batches, finite positive
    /// latencies, occupancy within 0..=1.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let first = self.points.first().ok_or(ProfileError::Empty)?;
        if !(self.overhead_ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&self.overhead_ms)) {
            return Err(ProfileError::OutOfRange {
                what: "overhead_ms",
                value: self.overhead_ms,
            });
        }
        if !(0.0..=1.0).contains(&self.gpu_occupancy) {
            return Err(ProfileError::OutOfRange {
                what: "gpu_occupancy",
                value: self.gpu_occupancy,
            });
        }
        let mut previous: Option<u32> = None;
        for point in &self.points {
            if point.batch == 0 {
                return Err(ProfileError::BadValue {
                    batch: 0,
                    what: "batch",
                    value: 0.0,
                });
            }
            if let Some(previous) = previous {
                if point.batch <= previous {
                    return Err(ProfileError::Unordered {
                        batch: point.batch,
                        previous,
                    });
                }
            }
            if !(point.latency_ms.is_finite() && point.latency_ms > 0.0) {
                return Err(ProfileError::BadValue {
                    batch: point.batch,
                    what: "latency_ms",
                    value: point.latency_ms,
                });
            }
            if point.latency_ms + self.overhead_ms > MAX_LATENCY_MS {
                return Err(ProfileError::TooLong {
                    batch: point.batch,
                    value: point.latency_ms,
                });
            }
            if !(point.bandwidth_gbps.is_finite() && point.bandwidth_gbps >= 0.0) {
                return Err(ProfileError::BadValue {
                    batch: point.batch,
                    what: "bandwidth_gbps",
                    value: point.bandwidth_gbps,
                });
            }
            previous = Some(point.batch);
        }
        let _ = first;
        Ok(())
    }

    /// Largest batch the table covers.
    pub fn max_batch(&self) -> u32 {
        self.points.last().map_or(0, |p| p.batch)
    }

    /// Service time of a batch of `batch` images on the unit alone, overhead included.
    pub fn latency(&self, batch: u32) -> Duration {
        crate::time::millis(self.latency_ms(batch))
    }

    /// Service time in milliseconds, overhead included.
    pub fn latency_ms(&self, batch: u32) -> f64 {
        self.overhead_ms + interpolate(&self.points, batch, |p| p.latency_ms)
    }

    /// Images per second at this batch size on the unit alone.
    pub fn throughput(&self, batch: u32) -> f64 {
        let ms = self.latency_ms(batch.max(1));
        if ms <= 0.0 {
            0.0
        } else {
            f64::from(batch.max(1)) * 1e3 / ms
        }
    }

    /// DRAM bandwidth the unit draws while running a batch of this size, GB/s.
    pub fn bandwidth_gbps(&self, batch: u32) -> f64 {
        // Bandwidth is a rate, not a cumulative quantity: hold it flat outside the table.
        let first = match self.points.first() {
            Some(p) => p,
            None => return 0.0,
        };
        let last = self.points.last().expect("non-empty, checked above");
        if batch <= first.batch {
            return first.bandwidth_gbps;
        }
        if batch >= last.batch {
            return last.bandwidth_gbps;
        }
        interpolate(&self.points, batch, |p| p.bandwidth_gbps)
    }

    /// The batch size (among the table's points) with the highest throughput.
    pub fn best_batch(&self) -> u32 {
        self.points
            .iter()
            .map(|p| p.batch)
            .max_by(|a, b| self.throughput(*a).total_cmp(&self.throughput(*b)))
            .unwrap_or(1)
    }
}

/// Linear interpolation of a batch-indexed quantity over the table; outside the table
/// the nearest segment is extended (proportionally from the origin below a one-point
/// table's only point), never below zero.
fn interpolate(points: &[ProfilePoint], batch: u32, value: impl Fn(&ProfilePoint) -> f64) -> f64 {
    let x = f64::from(batch);
    match points {
        [] => 0.0,
        [only] => value(only) * x / f64::from(only.batch),
        _ => {
            let upper_index = points
                .iter()
                .position(|p| p.batch >= batch)
                .unwrap_or(points.len() - 1)
                .max(1);
            let (a, b) = (&points[upper_index - 1], &points[upper_index]);
            let (xa, xb) = (f64::from(a.batch), f64::from(b.batch));
            let slope = (value(b) - value(a)) / (xb - xa);
            let y = value(a) + slope * (x - xa);
            if batch < a.batch {
                // Below the table: scale the first point down, a batch never costs less
                // than its share of the first point's per-image cost times a floor.
                let first = &points[0];
                let per_image = value(first) / f64::from(first.batch);
                return y.max(per_image * x).max(0.0);
            }
            y.max(0.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(batch: u32, latency_ms: f64) -> ProfilePoint {
        ProfilePoint {
            batch,
            latency_ms,
            bandwidth_gbps: f64::from(batch),
            source: String::new(),
        }
    }

    fn profile(points: Vec<ProfilePoint>) -> Profile {
        Profile {
            model: "test".into(),
            origin: ProfileOrigin::Calibrated,
            source: String::new(),
            overhead_ms: 1.0,
            gpu_occupancy: 1.0,
            points,
        }
    }

    #[test]
    fn interpolates_between_points_and_adds_overhead() {
        let p = profile(vec![point(1, 10.0), point(8, 24.0), point(64, 136.0)]);
        assert!((p.latency_ms(1) - 11.0).abs() < 1e-9);
        assert!((p.latency_ms(4) - (10.0 + 2.0 * 3.0 + 1.0)).abs() < 1e-9);
        assert!((p.latency_ms(36) - (24.0 + 2.0 * 28.0 + 1.0)).abs() < 1e-9);
        // Beyond the table the last segment's slope continues.
        assert!((p.latency_ms(128) - (136.0 + 2.0 * 64.0 + 1.0)).abs() < 1e-9);
    }

    #[test]
    fn throughput_and_best_batch() {
        let p = profile(vec![point(1, 9.0), point(8, 19.0), point(64, 159.0)]);
        assert!((p.throughput(8) - 400.0).abs() < 1e-9);
        assert_eq!(p.best_batch(), 64);
    }

    #[test]
    fn bandwidth_is_flat_outside_the_table() {
        let p = profile(vec![point(2, 1.0), point(4, 2.0)]);
        assert_eq!(p.bandwidth_gbps(1), 2.0);
        assert_eq!(p.bandwidth_gbps(3), 3.0);
        assert_eq!(p.bandwidth_gbps(100), 4.0);
    }

    #[test]
    fn rejects_bad_tables() {
        assert_eq!(profile(vec![]).validate(), Err(ProfileError::Empty));
        assert!(matches!(
            profile(vec![point(4, 1.0), point(2, 2.0)]).validate(),
            Err(ProfileError::Unordered { .. })
        ));
        assert!(matches!(
            profile(vec![point(1, -1.0)]).validate(),
            Err(ProfileError::BadValue { .. })
        ));
        let mut p = profile(vec![point(1, 1.0)]);
        p.gpu_occupancy = 2.0;
        assert!(matches!(p.validate(), Err(ProfileError::OutOfRange { .. })));
        // Finite but absurd latencies are refused, naming the point and the key (they
        // once passed `mica check` and panicked the dispatcher at the first batch).
        let huge = profile(vec![point(1, 1.0), point(8, 1e300)]).validate();
        assert_eq!(
            huge,
            Err(ProfileError::TooLong {
                batch: 8,
                value: 1e300
            })
        );
        assert!(huge.unwrap_err().to_string().contains("latency_ms"));
        let mut p = profile(vec![point(1, 1.0)]);
        p.overhead_ms = 1e12;
        assert!(matches!(
            p.validate(),
            Err(ProfileError::OutOfRange {
                what: "overhead_ms",
                ..
            })
        ));
    }

    #[test]
    fn round_trips_through_toml() {
        let p = profile(vec![point(1, 10.0), point(8, 24.0)]);
        let back: Profile = toml::from_str(&p.to_toml()).unwrap();
        assert_eq!(back, p);
    }
}
