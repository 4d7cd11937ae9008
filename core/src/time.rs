//! Checked conversions from floating-point seconds to `Duration`.
//!
//! `Duration::from_secs_f64` and `Duration::mul_f64` panic on a negative, NaN or
//! overflowing value, and a panic inside the dispatcher stops the service's scheduling
//! (issue 13: a profile with a huge latency did exactly that). Every place where a float
//! becomes a time goes through these functions instead: NaN and negative values become
//! zero, values past `MAX_TIME` become `MAX_TIME`. `MAX_TIME` is far beyond any real
//! service time and small enough that adding two of them to a monotonic clock reading
//! cannot overflow.

use std::time::Duration;

/// The longest time a conversion returns: 10⁹ s (about 31 years).
pub const MAX_TIME: Duration = Duration::from_secs(1_000_000_000);

/// `seconds` as a `Duration`, clamped into `0..=MAX_TIME` (NaN is zero).
pub fn secs(seconds: f64) -> Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return Duration::ZERO;
    }
    if seconds >= MAX_TIME.as_secs_f64() {
        return MAX_TIME;
    }
    Duration::from_secs_f64(seconds)
}

/// `milliseconds` as a `Duration`, clamped like `secs`.
pub fn millis(milliseconds: f64) -> Duration {
    secs(milliseconds / 1e3)
}

/// `duration × factor`, clamped like `secs` (a NaN or negative factor gives zero).
pub fn scale(duration: Duration, factor: f64) -> Duration {
    secs(duration.as_secs_f64() * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_are_clamped_not_panics() {
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(-1.0), Duration::ZERO);
        assert_eq!(secs(f64::INFINITY), MAX_TIME);
        assert_eq!(secs(1e300), MAX_TIME);
        assert_eq!(millis(1e300), MAX_TIME);
        assert_eq!(scale(Duration::from_secs(1), f64::NAN), Duration::ZERO);
        assert_eq!(scale(MAX_TIME, 1e9), MAX_TIME);
        assert_eq!(secs(1.5), Duration::from_millis(1500));
        assert_eq!(millis(2.0), Duration::from_millis(2));
        // Two of the largest added to a clock reading stay representable.
        let _ = Duration::from_secs(u64::from(u32::MAX)) + MAX_TIME + MAX_TIME;
    }
}
