//! `least_loaded`: earliest expected finish time.
//!
//! For every healthy unit the policy predicts when the next batch would finish there:
//! the time its first stream frees (now, if one is free) plus the batch's service time
//! from the unit's profile (or its measured rate when it has no profile). The batch
//! goes to the unit with the earliest finish; if that unit is busy the policy waits for
//! it rather than hand the batch to a slower unit that happens to be idle. This is the
//! classic list-scheduling rule (earliest finish time, as in HEFT; Topcuoglu et al.,
//! IEEE TPDS 2002) without any model of contention between units.

use std::time::Duration;

use mica_core::policy::{Decision, Policy};
use mica_core::view::{ClusterView, QueueView};

/// Earliest-finish-time placement.
#[derive(Debug, Default, Clone)]
pub struct LeastLoaded;

impl LeastLoaded {
    /// The policy (it keeps no state).
    pub fn new() -> Self {
        Self
    }
}

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision {
        if queue.requests == 0 {
            return Decision::Wait { until: None };
        }
        let mut best: Option<(usize, Duration, u32)> = None;
        for (index, unit) in view.units.iter().enumerate() {
            if !unit.healthy {
                continue;
            }
            let images = queue.batch_for(unit.max_batch);
            // A unit with neither profile nor measurement yet gets a batch as soon as it
            // is free, so that it can be measured.
            let finish = match unit.predicted_latency(images) {
                Some(latency) => unit.next_free_at.max(view.now) + latency,
                None if unit.can_take_batch() => view.now,
                None => continue,
            };
            let better = match best {
                None => true,
                Some((best_index, best_finish, _)) => {
                    finish < best_finish
                        || (finish == best_finish
                            && unit.can_take_batch()
                            && !view.units[best_index].can_take_batch())
                }
            };
            if better {
                best = Some((index, finish, images));
            }
        }
        match best {
            Some((unit, _, _)) if view.units[unit].can_take_batch() => Decision::Dispatch {
                unit,
                images: queue.target_batch(view.units[unit].max_batch),
            },
            // The fastest place is busy: wait for it to free a stream.
            Some((unit, _, _)) => Decision::Wait {
                until: Some(view.units[unit].next_free_at),
            },
            None => Decision::Wait { until: None },
        }
    }
}
