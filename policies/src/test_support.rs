//! Builders shared by the unit tests of the policies (compiled only for tests).

use std::sync::Arc;
use std::time::Duration;

use mica_core::profile::{Profile, ProfileOrigin, ProfilePoint};
use mica_core::unit::{UnitId, UnitKind};
use mica_core::view::{ClusterView, UnitView};

/// A profile whose batches cost `ms_per_image` per image, with this occupancy and
/// bandwidth at every batch.
pub fn linear_profile(ms_per_image: f64, occupancy: f64, bandwidth_gbps: f64) -> Profile {
    Profile {
        model: "test".into(),
        origin: ProfileOrigin::Calibrated,
        source: String::new(),
        overhead_ms: 0.0,
        gpu_occupancy: occupancy,
        points: vec![
            ProfilePoint {
                batch: 1,
                latency_ms: ms_per_image,
                bandwidth_gbps,
                source: String::new(),
            },
            ProfilePoint {
                batch: 64,
                latency_ms: ms_per_image * 64.0,
                bandwidth_gbps,
                source: String::new(),
            },
        ],
    }
}

/// An idle, healthy GPU unit with one stream and a linear profile.
pub fn unit(id: &str, ms_per_image: f64, max_batch: u32) -> UnitView {
    UnitView {
        id: UnitId::new(id),
        kind: UnitKind::CudaFp32,
        device: Some(0),
        simulated: true,
        streams: 1,
        free_streams: 1,
        in_flight_batches: 0,
        in_flight_images: 0,
        max_batch,
        next_free_at: Duration::ZERO,
        busy_until: Duration::ZERO,
        recent_throughput_img_s: 0.0,
        recent_latency_ms: 0.0,
        completed_batches: 0,
        healthy: true,
        profile: Some(Arc::new(linear_profile(ms_per_image, 1.0, 0.0))),
    }
}

/// A unit of another kind and device with its own profile.
pub fn unit_of(id: &str, kind: UnitKind, profile: Profile, max_batch: u32) -> UnitView {
    UnitView {
        kind,
        device: (kind != UnitKind::Cpu).then_some(0),
        profile: Some(Arc::new(profile)),
        ..unit(id, 1.0, max_batch)
    }
}

/// A view of these units at time zero.
pub fn cluster(units: Vec<UnitView>) -> ClusterView {
    ClusterView {
        now: Duration::ZERO,
        units,
    }
}
