//! `ContentionProgress`: work in flight on contending units, progressing at
//! `1 / slowdown`.
//!
//! Each item carries its work in isolated seconds (how long it would take with its unit
//! alone). Over `dt` seconds of elapsed time an item at slowdown `s` does `dt / s`
//! seconds of its work, where the slowdowns come from the platform's `ContentionModel`
//! applied to every item in flight at that instant and are recomputed whenever an item
//! joins or leaves. A batch joined half-way by a co-runner is therefore slowed only for
//! the overlap.
//!
//! This is the one place the rule is written. The discrete-event simulator
//! (`simulator.rs`) and the pipeline simulator (`pipeline/sim.rs`) advance it in virtual
//! time from event to event; the sim engine's `ContentionHub` advances it in the time of
//! its clock (wall time in service, a test's virtual clock in tests). Emulation and
//! simulation thus agree by construction, not by copy.

use crate::contention::{ContentionModel, Load};

/// Work left below this many isolated seconds counts as done: the rounding of turning
/// progress into a time to wait (a nanosecond, `Duration`'s resolution) and back.
pub const DONE_EPSILON_S: f64 = 1e-9;

/// Identifies an item for as long as it is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkId(u64);

#[derive(Debug)]
struct Item<T> {
    id: WorkId,
    load: Load,
    remaining_s: f64,
    slowdown: f64,
    payload: T,
}

/// In-flight work items, each with a payload `T` (what the caller needs back when it
/// finishes), and their progress under contention. See the module docs.
#[derive(Debug)]
pub struct ContentionProgress<T> {
    items: Vec<Item<T>>,
    next_id: u64,
    loads: Vec<Load>,
    slowdowns: Vec<f64>,
}

impl<T> Default for ContentionProgress<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ContentionProgress<T> {
    /// Nothing in flight.
    pub fn new() -> Self {
        Self {
            items: Vec::new(),
            next_id: 0,
            loads: Vec::new(),
            slowdowns: Vec::new(),
        }
    }

    /// Items in flight.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Adds an item drawing `load` with `work_s` isolated seconds to do (a negative or
    /// NaN amount counts as none), and recomputes every slowdown under `model`. Bring
    /// progress up to the present (`advance`) first.
    pub fn add(
        &mut self,
        model: &dyn ContentionModel,
        load: Load,
        work_s: f64,
        payload: T,
    ) -> WorkId {
        let id = WorkId(self.next_id);
        self.next_id += 1;
        self.items.push(Item {
            id,
            load,
            remaining_s: if work_s > 0.0 { work_s } else { 0.0 },
            slowdown: 1.0,
            payload,
        });
        self.recompute(model);
        id
    }

    /// Removes an item (finished or not), recomputing the others' slowdowns under
    /// `model`; its payload, or `None` if it is not in flight.
    pub fn remove(&mut self, model: &dyn ContentionModel, id: WorkId) -> Option<T> {
        let index = self.items.iter().position(|item| item.id == id)?;
        let item = self.items.remove(index);
        self.recompute(model);
        Some(item.payload)
    }

    /// Removes every finished item (work left within `DONE_EPSILON_S`) into `done`, in
    /// the order they were added, and recomputes the others' slowdowns once.
    pub fn take_finished(&mut self, model: &dyn ContentionModel, done: &mut Vec<(WorkId, T)>) {
        let before = done.len();
        let mut index = 0;
        while index < self.items.len() {
            if self.items[index].remaining_s <= DONE_EPSILON_S {
                let item = self.items.remove(index);
                done.push((item.id, item.payload));
            } else {
                index += 1;
            }
        }
        if done.len() > before {
            self.recompute(model);
        }
    }

    /// Progresses every item by `elapsed_s` seconds at its current slowdown.
    pub fn advance(&mut self, elapsed_s: f64) {
        if elapsed_s > 0.0 {
            for item in &mut self.items {
                item.remaining_s -= elapsed_s / item.slowdown;
            }
        }
    }

    /// The item that finishes first if nothing joins or leaves meanwhile, and the
    /// seconds until it does (zero for one already finished).
    pub fn next_finish(&self) -> Option<(WorkId, f64)> {
        self.items
            .iter()
            .map(|item| (item.id, Self::left(item)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Seconds until `id` finishes if nothing joins or leaves meanwhile (zero once it
    /// has); `None` if it is not in flight.
    pub fn finishes_in(&self, id: WorkId) -> Option<f64> {
        self.item(id).map(Self::left)
    }

    /// Whether `id` has done its work (within `DONE_EPSILON_S`); false if it is not in
    /// flight.
    pub fn is_finished(&self, id: WorkId) -> bool {
        self.item(id)
            .is_some_and(|item| item.remaining_s <= DONE_EPSILON_S)
    }

    /// The current slowdown of `id` (≥ 1); `None` if it is not in flight.
    pub fn slowdown(&self, id: WorkId) -> Option<f64> {
        self.item(id).map(|item| item.slowdown)
    }

    /// Isolated seconds of work `id` has left; `None` if it is not in flight.
    pub fn remaining_s(&self, id: WorkId) -> Option<f64> {
        self.item(id).map(|item| item.remaining_s.max(0.0))
    }

    /// The items in flight, in the order they were added: id, slowdown, payload.
    pub fn iter(&self) -> impl Iterator<Item = (WorkId, f64, &T)> {
        self.items
            .iter()
            .map(|item| (item.id, item.slowdown, &item.payload))
    }

    fn item(&self, id: WorkId) -> Option<&Item<T>> {
        self.items.iter().find(|item| item.id == id)
    }

    fn left(item: &Item<T>) -> f64 {
        (item.remaining_s * item.slowdown).max(0.0)
    }

    /// Applies `model` to every item in flight.
    fn recompute(&mut self, model: &dyn ContentionModel) {
        self.loads.clear();
        self.loads.extend(self.items.iter().map(|item| item.load));
        model.slowdowns(&self.loads, &mut self.slowdowns);
        for (item, slowdown) in self.items.iter_mut().zip(&self.slowdowns) {
            item.slowdown = slowdown.max(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contention::{BandwidthShare, NoContention};
    use crate::unit::UnitKind;

    /// A GPU unit on GPU 0 keeping all of its SMs busy: two of them share the SMs
    /// (slowdown 2 each under `BandwidthShare`).
    fn gpu(unit: usize) -> Load {
        Load {
            unit,
            kind: UnitKind::CudaFp32,
            device: Some(0),
            gpu_occupancy: 1.0,
            bandwidth_gbps: 0.0,
            images: 1,
        }
    }

    fn sm_sharing() -> BandwidthShare {
        BandwidthShare {
            memory_bandwidth_gbps: 100.0,
        }
    }

    /// Runs events until nothing is in flight; the finish time of each payload.
    fn finish_times(
        model: &dyn ContentionModel,
        progress: &mut ContentionProgress<&'static str>,
        mut now: f64,
    ) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        while let Some((_, dt)) = progress.next_finish() {
            progress.advance(dt);
            now += dt;
            progress.take_finished(model, &mut done);
            out.extend(done.drain(..).map(|(_, name)| (name, now)));
        }
        out
    }

    #[test]
    fn a_lone_item_takes_its_solo_time() {
        let model = sm_sharing();
        let mut progress = ContentionProgress::new();
        let id = progress.add(&model, gpu(0), 0.03, "a");
        assert_eq!(progress.slowdown(id), Some(1.0));
        assert_eq!(progress.next_finish(), Some((id, 0.03)));
        assert_eq!(finish_times(&model, &mut progress, 0.0), vec![("a", 0.03)]);
        assert!(progress.is_empty());
    }

    #[test]
    fn two_items_at_slowdown_two_take_twice_their_solo_time() {
        let model = sm_sharing();
        let mut progress = ContentionProgress::new();
        let a = progress.add(&model, gpu(0), 0.06, "a");
        let b = progress.add(&model, gpu(1), 0.06, "b");
        assert_eq!(progress.slowdown(a), Some(2.0));
        assert_eq!(progress.slowdown(b), Some(2.0));
        assert_eq!(progress.finishes_in(a), Some(0.12));
        // Both finish at the same instant, together.
        assert_eq!(
            finish_times(&model, &mut progress, 0.0),
            vec![("a", 0.12), ("b", 0.12)]
        );
    }

    #[test]
    fn an_item_added_mid_way_slows_the_other_only_for_the_overlap() {
        let model = sm_sharing();
        let mut progress = ContentionProgress::new();
        // `a` (0.5 s alone) runs alone for 0.125 s, then `b` (0.25 s alone) joins: both
        // at slowdown 2. `b` finishes 0.5 s later, at 0.625 s, having cost `a` 0.25 s of
        // work; `a` has 0.125 s left, alone again: it ends at 0.75 s.
        let a = progress.add(&model, gpu(0), 0.5, "a");
        progress.advance(0.125);
        assert_eq!(progress.remaining_s(a), Some(0.375));
        let b = progress.add(&model, gpu(1), 0.25, "b");
        assert_eq!(progress.slowdown(a), Some(2.0));
        assert_eq!(progress.next_finish(), Some((b, 0.5)));
        assert_eq!(
            finish_times(&model, &mut progress, 0.125),
            vec![("b", 0.625), ("a", 0.75)]
        );
    }

    #[test]
    fn slowdowns_change_when_an_item_leaves() {
        let model = sm_sharing();
        let mut progress = ContentionProgress::new();
        let a = progress.add(&model, gpu(0), 0.5, "a");
        let b = progress.add(&model, gpu(1), 0.5, "b");
        // 0.25 s together (0.125 s of work each), then `b` is withdrawn unfinished: `a`
        // runs alone at once and finishes its 0.375 s left in 0.375 s.
        progress.advance(0.25);
        assert_eq!(progress.remaining_s(b), Some(0.375));
        assert_eq!(progress.finishes_in(a), Some(0.75));
        assert_eq!(progress.remove(&model, b), Some("b"));
        assert_eq!(progress.remove(&model, b), None);
        assert_eq!(progress.slowdown(a), Some(1.0));
        assert_eq!(progress.next_finish(), Some((a, 0.375)));
        progress.advance(0.375);
        assert!(progress.is_finished(a));
    }

    #[test]
    fn finished_items_leave_in_the_order_they_came_and_others_stay() {
        let model = NoContention;
        let mut progress = ContentionProgress::new();
        progress.add(&model, gpu(0), 0.25, "a");
        progress.add(&model, gpu(1), 0.75, "b");
        progress.add(&model, gpu(2), 0.25, "c");
        progress.add(&model, gpu(3), -1.0, "d");
        progress.advance(0.25);
        let mut done = Vec::new();
        progress.take_finished(&model, &mut done);
        let names: Vec<_> = done.iter().map(|(_, name)| *name).collect();
        assert_eq!(names, ["a", "c", "d"]);
        let left: Vec<_> = progress.iter().map(|(_, _, name)| *name).collect();
        assert_eq!(left, ["b"]);
    }
}
