//! `round_robin`: the static baseline.
//!
//! Units take batches in a fixed rotation; a unit with no free stream is skipped, and
//! every batch is as large as the unit accepts. This is what Triton's instance groups do
//! (each instance pulls the next batch when it is free) and what the multi-instance
//! paper ran as "several processes on several units": no model of speed or contention.
//! Use it as the baseline the other policies are measured against.

use mica_core::policy::{Decision, Policy};
use mica_core::view::{ClusterView, QueueView};

/// Rotation over the units that can take a batch.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// A rotation starting at the first unit.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        let count = view.units.len();
        if queue.requests == 0 || count == 0 {
            return Decision::Wait { until: None };
        }
        for offset in 0..count {
            let index = (self.next + offset) % count;
            let unit = &view.units[index];
            if unit.can_take_batch() {
                self.next = (index + 1) % count;
                return Decision::Dispatch {
                    unit: index,
                    images: queue.target_batch(unit.max_batch),
                };
            }
        }
        Decision::Wait { until: None }
    }
}
