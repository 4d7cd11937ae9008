//! The `Policy` trait: where the next batch goes.
//!
//! A policy is pure and synchronous: it never sleeps, reads a clock or does I/O. Time
//! comes in through the view (`ClusterView::now`); none randomizes (ties break by unit
//! index), and one that needed to would take a seed in its settings. That is what lets
//! one policy run in the live dispatcher, in the discrete-event simulator, and in a
//! deterministic test.

use std::fmt::Debug;
use std::time::Duration;

use crate::view::{ClusterView, QueueView};

/// A policy's answer to "what now?".
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take up to `images` images (whole requests) from the front of the queue and run
    /// them as one batch on the unit with index `unit`, which must be able to take it.
    Dispatch {
        /// Index into `ClusterView::units`.
        unit: usize,
        /// Images wanted in the batch (at least 1, at most the unit's `max_batch`).
        images: u32,
    },
    /// Drop these waiting requests: they cannot meet their deadline. The dispatcher
    /// answers each with an error and counts it.
    Shed {
        /// Ids of the requests to drop (from `QueueView::head`).
        requests: Vec<u64>,
    },
    /// Dispatch nothing now. The dispatcher asks again at the next event (arrival,
    /// completion), or at `until` if given.
    Wait {
        /// When to ask again at the latest.
        until: Option<Duration>,
    },
}

/// A finished batch, as fed back to the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    /// Index of the unit that ran it.
    pub unit: usize,
    /// Images in the batch.
    pub images: u32,
    /// When the unit started it.
    pub started: Duration,
    /// When it finished.
    pub finished: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

impl Completion {
    /// Service time of the batch.
    pub fn service_time(&self) -> Duration {
        self.finished.saturating_sub(self.started)
    }
}

/// A load-allocation policy.
pub trait Policy: Send + Sync + Debug {
    /// The config name of the policy (`round_robin`, ...).
    fn name(&self) -> &'static str;

    /// Decides what to do with the queue now. Called whenever a unit frees a stream or
    /// work arrives, and again after every `Dispatch` or `Shed` while the queue is not
    /// empty. Must only dispatch to units whose `can_take_batch()` is true.
    fn decide(&mut self, view: &ClusterView, queue: &QueueView<'_>) -> Decision;

    /// Learns from a finished batch. `view` already reflects the completion.
    fn on_completion(&mut self, view: &ClusterView, completion: &Completion) {
        let _ = (view, completion);
    }

    /// The policy's predicted slowdown (≥ 1) of each unit under contention right now, if
    /// it models contention; exported as a metric beside the observed slowdown.
    fn predicted_slowdowns(&self, view: &ClusterView) -> Option<Vec<f64>> {
        let _ = view;
        None
    }

    /// For a policy that searches online (`adaptive`): where its latest search stands,
    /// still searching or converged, and after how many completed batches. `None` for
    /// the policies that do not search.
    fn search_progress(&self) -> Option<SearchProgress> {
        None
    }

    /// For a policy that searches online: how many completed batches its latest search
    /// took to converge, once it has. `None` for the others and while it searches.
    fn converged_after_batches(&self) -> Option<u64> {
        match self.search_progress()? {
            SearchProgress::Converged { after_batches } => Some(after_batches),
            SearchProgress::Searching { .. } => None,
        }
    }
}

/// Where an online search (`adaptive`'s active-set search) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchProgress {
    /// Still measuring candidates: what it runs now may not be its final choice.
    Searching {
        /// Completed batches since the search started.
        batches: u64,
    },
    /// The search has settled on a set of units.
    Converged {
        /// Completed batches the search took.
        after_batches: u64,
    },
}

impl std::fmt::Display for SearchProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SearchProgress::Searching { batches } => {
                write!(f, "still searching after {batches} completed batches")
            }
            SearchProgress::Converged { after_batches } => {
                write!(f, "converged after {after_batches} completed batches")
            }
        }
    }
}
