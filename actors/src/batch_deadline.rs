//! `BatchDeadline`: how long a batch may run before its unit declares the engine hung.
//!
//! The deadline is `factor × predicted + floor`, where `predicted` is the unit's
//! profile latency for the batch's size (zero without a profile, so the floor alone
//! applies). At expiry the unit answers the batch's requests with an error, counts a
//! failed batch (towards quarantine), and replaces the stream worker whose engine call
//! never returned (`UnitActor`).

use std::time::Duration;

use mica_core::Profile;

/// The per-batch deadline rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchDeadline {
    /// Multiple of the predicted service time a batch may take.
    pub factor: f64,
    /// Added to every deadline: covers what the profile cannot predict (contention,
    /// a cold cache, a loaded host).
    pub floor: Duration,
}

impl Default for BatchDeadline {
    fn default() -> Self {
        Self {
            factor: 10.0,
            floor: Duration::from_secs(5),
        }
    }
}

impl BatchDeadline {
    /// The deadline of a batch of `images` on a unit with this profile.
    pub fn for_batch(&self, profile: Option<&Profile>, images: u32) -> Duration {
        let predicted = profile.map_or(Duration::ZERO, |p| p.latency(images.max(1)));
        mica_core::time::scale(predicted, self.factor).saturating_add(self.floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mica_core::{ProfileOrigin, ProfilePoint};

    #[test]
    fn a_multiple_of_the_prediction_plus_the_floor() {
        let profile = Profile {
            model: "m".into(),
            origin: ProfileOrigin::Calibrated,
            source: String::new(),
            overhead_ms: 0.0,
            gpu_occupancy: 0.0,
            points: vec![ProfilePoint {
                batch: 1,
                latency_ms: 20.0,
                bandwidth_gbps: 0.0,
                source: String::new(),
            }],
        };
        let rule = BatchDeadline {
            factor: 4.0,
            floor: Duration::from_millis(100),
        };
        assert_eq!(
            rule.for_batch(Some(&profile), 1),
            Duration::from_millis(180)
        );
        assert_eq!(rule.for_batch(None, 8), Duration::from_millis(100));
    }
}
