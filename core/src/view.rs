//! What a policy sees: a snapshot of every unit (`ClusterView`) and of the waiting
//! requests (`QueueView`).

use std::sync::Arc;
use std::time::Duration;

use crate::profile::Profile;
use crate::unit::{UnitId, UnitKind};

/// One unit as a policy sees it.
#[derive(Debug, Clone)]
pub struct UnitView {
    /// Config name.
    pub id: UnitId,
    /// Hardware kind.
    pub kind: UnitKind,
    /// GPU index whose SMs the unit uses (GPU units) or falls back to (DLA); `None` for
    /// the CPU.
    pub device: Option<u32>,
    /// Whether the unit's engine is the simulator (never a measurement).
    pub simulated: bool,
    /// Stream workers the unit owns.
    pub streams: u32,
    /// Stream workers idle right now.
    pub free_streams: u32,
    /// Batches running now.
    pub in_flight_batches: u32,
    /// Images in the batches running now.
    pub in_flight_images: u32,
    /// Largest batch the unit accepts.
    pub max_batch: u32,
    /// Expected time at which the first busy stream frees (now if one is free).
    pub next_free_at: Duration,
    /// Expected time at which every running batch has finished.
    pub busy_until: Duration,
    /// Measured images per second over recent batches (EWMA of per-batch rates while
    /// busy); 0 before the first completion.
    pub recent_throughput_img_s: f64,
    /// Measured batch service time over recent batches (EWMA), milliseconds.
    pub recent_latency_ms: f64,
    /// Batches completed since start.
    pub completed_batches: u64,
    /// False while the unit is quarantined after repeated failures.
    pub healthy: bool,
    /// Service-time profile, if one is configured or measured.
    pub profile: Option<Arc<Profile>>,
}

impl UnitView {
    /// Whether a batch can be given to this unit now.
    pub fn can_take_batch(&self) -> bool {
        self.healthy && self.free_streams > 0
    }

    /// Predicted service time of a batch of `images` on this unit alone: from the
    /// profile if there is one, else from the measured recent latency scaled by batch
    /// size, else `None`.
    pub fn predicted_latency(&self, images: u32) -> Option<Duration> {
        if let Some(profile) = &self.profile {
            return Some(profile.latency(images.max(1)));
        }
        if self.recent_throughput_img_s > 0.0 {
            return Some(crate::time::secs(
                f64::from(images.max(1)) / self.recent_throughput_img_s,
            ));
        }
        None
    }

    /// Expected service time of one batch of `images` on one of the unit's streams:
    /// the profile's latency if there is one, else the measured rate per stream
    /// (`recent_throughput_img_s` counts every stream), else `None`. Unlike
    /// [`Self::predicted_latency`], the measured case is not divided among streams.
    pub fn service_time(&self, images: u32) -> Option<Duration> {
        if let Some(profile) = &self.profile {
            return Some(profile.latency(images.max(1)));
        }
        (self.recent_throughput_img_s > 0.0).then(|| {
            crate::time::secs(
                f64::from(images.max(1)) * f64::from(self.streams.max(1))
                    / self.recent_throughput_img_s,
            )
        })
    }

    /// Isolated throughput at the unit's maximum batch, images per second (profile
    /// first, measurement second, 0 when neither is known).
    pub fn nominal_throughput(&self) -> f64 {
        match &self.profile {
            Some(profile) => profile.throughput(self.max_batch.min(profile.max_batch().max(1))),
            None => self.recent_throughput_img_s,
        }
    }
}

/// A snapshot of every unit at one instant.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The instant of the snapshot, as time since the service (or simulation) started.
    pub now: Duration,
    /// Every configured unit, indexed by its position (the index policies return).
    pub units: Vec<UnitView>,
}

impl ClusterView {
    /// Indices of the units that can take a batch now.
    pub fn ready_units(&self) -> impl Iterator<Item = usize> + '_ {
        self.units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.can_take_batch())
            .map(|(i, _)| i)
    }

    /// Index of the unit with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.units.iter().position(|u| u.id.as_str() == id)
    }
}

/// A request waiting in the dispatcher's queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitingRequest {
    /// Dispatcher-assigned id, unique for the service's life.
    pub id: u64,
    /// Images the request carries.
    pub images: u32,
    /// When it was admitted.
    pub arrival: Duration,
    /// When its answer is due, if it has a deadline.
    pub deadline: Option<Duration>,
    /// Priority level, 0 the most urgent.
    pub priority: u8,
}

/// The dispatcher's queue as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct QueueView<'a> {
    /// Requests waiting, over all priority levels.
    pub requests: usize,
    /// Images waiting, over all priority levels.
    pub images: u64,
    /// The next requests in dispatch order (a prefix of the queue, possibly all of it):
    /// a batch is always taken from the front.
    pub head: &'a [WaitingRequest],
    /// When every request carries exactly this many images and units run batches of
    /// this size (the paper's setup, `--batch-size N`).
    pub fixed_batch: Option<u32>,
}

impl QueueView<'_> {
    /// An empty queue.
    pub fn empty() -> QueueView<'static> {
        QueueView {
            requests: 0,
            images: 0,
            head: &[],
            fixed_batch: None,
        }
    }

    /// The batch size to ask for from a unit whose limit is `max_batch`: the fixed
    /// batch, or the unit's limit (the scheduler then holds a partial batch back until
    /// the oldest request has waited the maximum queue delay).
    pub fn target_batch(&self, max_batch: u32) -> u32 {
        let max_batch = max_batch.max(1);
        self.fixed_batch.unwrap_or(max_batch).clamp(1, max_batch)
    }

    /// Images a batch for a unit whose limit is `max_batch` would carry if taken now
    /// (at least 1, at most `max_batch`).
    pub fn batch_for(&self, max_batch: u32) -> u32 {
        let max_batch = max_batch.max(1);
        match self.fixed_batch {
            Some(n) => n.clamp(1, max_batch),
            None => self.images.clamp(1, u64::from(max_batch)) as u32,
        }
    }
}
