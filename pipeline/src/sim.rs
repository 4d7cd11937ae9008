//! Discrete-event simulation of a pipeline: throughput and latency of one
//! configuration in about a millisecond, so a tuner can measure thousands.
//!
//! Stations in a row: pre-processing threads (CPU, one image per job), the model's
//! stages (one job per batch, on the stage's units and streams), post-processing
//! threads. Each station has a bounded input buffer (two batches of the larger of the
//! two batch sizes around it) and jobs block after service while the next buffer is
//! full, holding their stream — the back-pressure of the paper's bounded buffers
//! (Kang et al., JEDI, ACM TECS 2022). `buffers` caps the batches in flight in the
//! whole pipeline; a source keeps it full, so the result is the saturated throughput.
//!
//! A job first spends its fixed part (launch/synchronization overhead and, between two
//! different units, the activation hand-off), which other streams overlap, then its
//! compute part, which progresses at `1 / slowdown` where the slowdown comes from the
//! platform's `ContentionModel` applied to every job computing at that instant — the
//! same `ContentionProgress` as `simulator.rs` and the sim engine's `ContentionHub`. GPU stages of one
//! network on the same GPU therefore time-slice its SMs; CPU threads map to cores and
//! time-slice only when there are more threads than cores. Everything is
//! deterministic: no jitter, no randomness.

use std::collections::VecDeque;

use serde::Serialize;

use crate::spec::PipelineSpec;
use crate::stage_profile::{balance_for, StageCost, StageProfile};
use mica_core::contention::{ContentionModel, Load};
use mica_core::progress::{ContentionProgress, WorkId};
use mica_core::unit::UnitKind;

/// A fixed part below this counts as done, seconds.
const EPSILON_S: f64 = 1e-12;
/// A run stops with an error after this many events (a bug, not a slow pipeline).
const MAX_EVENTS: u64 = 20_000_000;

/// How long to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunLength {
    /// Images completed before measuring starts.
    pub warmup_images: u64,
    /// Images measured.
    pub measured_images: u64,
}

impl RunLength {
    /// A length that reaches steady state for `spec`: warm-up of two pipelines full,
    /// then at least 16 batches of the largest stage batch (and 240 images).
    pub fn for_spec(spec: &PipelineSpec) -> Self {
        let batch = u64::from(spec.max_batch());
        let in_flight = u64::from(spec.buffers) * batch;
        Self {
            warmup_images: 2 * in_flight + batch,
            measured_images: (16 * batch).max(240),
        }
    }
}

/// Per-stage figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStats {
    /// Stage name (`pre`, `stage0`, ..., `post`).
    pub name: String,
    /// Batches completed in the measured window.
    pub batches: u64,
    /// Mean number of jobs in service (overhead or compute) over the window.
    pub busy: f64,
    /// Mean isolated-to-actual service time ratio (mean slowdown) of its compute.
    pub mean_slowdown: f64,
}

/// What a run measured (simulated figures).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineOutcome {
    /// Images per second over the measured window.
    pub throughput_img_s: f64,
    /// Mean image latency from the start of its pre-processing to the end of its
    /// post-processing, ms.
    pub latency_mean_ms: f64,
    /// 99th percentile of the same, ms.
    pub latency_p99_ms: f64,
    /// Per pipeline unit (same order as `PipelineSpec::units`): fraction of the window
    /// it was computing.
    pub unit_utilization: Vec<f64>,
    /// Per station.
    pub stages: Vec<StageStats>,
    /// Simulated seconds of the window.
    pub window_s: f64,
    /// Events processed.
    pub events: u64,
}

#[derive(Debug)]
struct Slot {
    /// Pipeline unit (model stages) or none (CPU threads).
    pipeline_unit: Option<usize>,
    busy: bool,
}

#[derive(Debug)]
struct Station {
    name: String,
    batch: usize,
    slots: Vec<Slot>,
    next_slot: usize,
    queue: VecDeque<f64>,
    capacity: usize,
    /// Fixed and compute parts per slot (isolated seconds), and the load template.
    costs: Vec<(f64, f64, Load)>,
    batches: u64,
    busy_integral: f64,
    slowdown_integral: f64,
    compute_integral: f64,
}

/// A job passes through three phases: its fixed part (`fixed_left`, at full speed),
/// its compute part (an item of the `ContentionProgress`, `computing`), then finished
/// (`blocked`) until the next buffer takes its images.
#[derive(Debug)]
struct Job {
    station: usize,
    slot: usize,
    images: Vec<f64>,
    fixed_left: f64,
    /// Isolated seconds of compute, done once the fixed part is.
    work: f64,
    computing: Option<WorkId>,
    blocked: bool,
}

impl Job {
    /// Whether it is in its fixed part.
    fn in_fixed_part(&self) -> bool {
        !self.blocked && self.computing.is_none() && self.fixed_left > EPSILON_S
    }
}

/// Simulates `spec` under `model` for `length`; see the module docs.
pub fn simulate_pipeline(
    spec: &PipelineSpec,
    model: &dyn ContentionModel,
    length: RunLength,
) -> Result<PipelineOutcome, String> {
    spec.validate()?;
    let mut sim = PipelineSim::new(spec, model);
    sim.run(length)
}

struct PipelineSim<'a> {
    spec: &'a PipelineSpec,
    model: &'a dyn ContentionModel,
    stations: Vec<Station>,
    jobs: Vec<Job>,
    /// The compute parts in flight.
    computing: ContentionProgress<()>,
    finished: Vec<(WorkId, ())>,
    now: f64,
    in_system: usize,
    limit: usize,
}

impl<'a> PipelineSim<'a> {
    fn new(spec: &'a PipelineSpec, model: &'a dyn ContentionModel) -> Self {
        let cpu = spec.cpu;
        let cpu_base = spec.units.len();
        let cpu_load = |core: usize| Load {
            unit: cpu_base + core,
            kind: UnitKind::Cpu,
            device: None,
            gpu_occupancy: 0.0,
            bandwidth_gbps: cpu.bandwidth_gbps_per_thread,
            images: 0,
        };
        let cores = cpu.cores as usize;
        let cpu_station = |name: &str, threads: u32, ms: f64, first_core: usize| {
            let slots: Vec<Slot> = (0..threads as usize)
                .map(|_| Slot {
                    pipeline_unit: None,
                    busy: false,
                })
                .collect();
            let costs = (0..threads as usize)
                .map(|t| (0.0, ms / 1e3, cpu_load((first_core + t) % cores)))
                .collect();
            Station {
                name: name.into(),
                batch: 1,
                slots,
                next_slot: 0,
                queue: VecDeque::new(),
                capacity: usize::MAX,
                costs,
                batches: 0,
                busy_integral: 0.0,
                slowdown_integral: 0.0,
                compute_integral: 0.0,
            }
        };
        let mut stations = vec![cpu_station("pre", cpu.pre_threads, cpu.pre_ms_per_image, 0)];
        for (index, stage) in spec.stages.iter().enumerate() {
            let mut slots = Vec::new();
            let mut costs = Vec::new();
            for stream in 0..stage.streams {
                for &unit_index in &stage.units {
                    let _ = stream;
                    let unit = &spec.units[unit_index];
                    let shares = StageProfile::new(&spec.table, unit.kind);
                    let cost =
                        StageCost::new(&unit.profile, &shares, stage.blocks.clone(), stage.batch);
                    let hand_off_ms = if spec.hands_off_into(index) {
                        let bytes = f64::from(stage.batch)
                            * spec.table.boundary_elems(stage.blocks.start) as f64
                            * balance_for(unit.kind).1;
                        spec.transfer_overhead_ms + bytes / (spec.transfer_gbps * 1e6)
                    } else {
                        0.0
                    };
                    slots.push(Slot {
                        pipeline_unit: Some(unit_index),
                        busy: false,
                    });
                    costs.push((
                        (cost.overhead_ms + hand_off_ms) / 1e3,
                        cost.compute_ms / 1e3,
                        Load {
                            unit: unit_index,
                            kind: unit.kind,
                            device: unit.device,
                            gpu_occupancy: cost.gpu_occupancy,
                            bandwidth_gbps: cost.bandwidth_gbps,
                            images: 0,
                        },
                    ));
                }
            }
            stations.push(Station {
                name: format!("stage{index}"),
                batch: stage.batch as usize,
                slots,
                next_slot: 0,
                queue: VecDeque::new(),
                capacity: 0,
                costs,
                batches: 0,
                busy_integral: 0.0,
                slowdown_integral: 0.0,
                compute_integral: 0.0,
            });
        }
        stations.push(cpu_station(
            "post",
            cpu.post_threads,
            cpu.post_ms_per_image,
            cpu.pre_threads as usize,
        ));
        for index in 1..stations.len() {
            let around = stations[index].batch.max(stations[index - 1].batch);
            stations[index].capacity = 2 * around;
        }
        let limit = spec.buffers as usize * spec.max_batch() as usize;
        Self {
            spec,
            model,
            stations,
            jobs: Vec::new(),
            computing: ContentionProgress::new(),
            finished: Vec::new(),
            now: 0.0,
            in_system: 0,
            limit,
        }
    }

    fn run(&mut self, length: RunLength) -> Result<PipelineOutcome, String> {
        let mut completed: u64 = 0;
        let mut window_start: Option<f64> = None;
        let mut latencies: Vec<f64> = Vec::with_capacity(length.measured_images as usize);
        let mut busy_units = vec![0.0; self.spec.units.len()];
        let mut events: u64 = 0;
        loop {
            self.start_jobs();
            self.start_compute();
            let Some(dt) = self.next_event_in() else {
                return Err("the pipeline stalled: no job can run (this is a bug)".into());
            };
            events += 1;
            if events > MAX_EVENTS {
                return Err(format!("no result after {MAX_EVENTS} events"));
            }
            if window_start.is_some() {
                self.integrate(dt, &mut busy_units);
            }
            self.advance(dt);
            for done in self.finish_jobs() {
                completed += 1;
                if completed == length.warmup_images {
                    window_start = Some(self.now);
                } else if completed > length.warmup_images {
                    latencies.push((self.now - done) * 1e3);
                }
            }
            if completed >= length.warmup_images + length.measured_images {
                break;
            }
        }
        let start = window_start.unwrap_or(0.0);
        let window = (self.now - start).max(f64::MIN_POSITIVE);
        latencies.sort_by(f64::total_cmp);
        let p99 = latencies
            .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
        Ok(PipelineOutcome {
            throughput_img_s: latencies.len() as f64 / window,
            latency_mean_ms: mean,
            latency_p99_ms: p99,
            unit_utilization: busy_units.iter().map(|b| b / window).collect(),
            stages: self
                .stations
                .iter()
                .map(|s| StageStats {
                    name: s.name.clone(),
                    batches: s.batches,
                    busy: s.busy_integral / window,
                    mean_slowdown: if s.compute_integral > 0.0 {
                        s.slowdown_integral / s.compute_integral
                    } else {
                        1.0
                    },
                })
                .collect(),
            window_s: window,
            events,
        })
    }

    /// Starts every job that can start: blocked jobs first (downstream first), then
    /// new batches from the buffers, then new images from the source.
    fn start_jobs(&mut self) {
        loop {
            let mut progress = false;
            // Unblock finished jobs whose next buffer has room.
            for j in 0..self.jobs.len() {
                if self.jobs[j].blocked && self.try_hand_on(j) {
                    progress = true;
                }
            }
            self.jobs
                .retain(|job| !(job.blocked && job.images.is_empty()));
            for station in (0..self.stations.len()).rev() {
                while self.try_start(station) {
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn try_start(&mut self, station_index: usize) -> bool {
        let station = &mut self.stations[station_index];
        let Some(slot) = (0..station.slots.len())
            .map(|k| (station.next_slot + k) % station.slots.len())
            .find(|&k| !station.slots[k].busy)
        else {
            return false;
        };
        let images = if station_index == 0 {
            if self.in_system >= self.limit {
                return false;
            }
            self.in_system += 1;
            vec![self.now]
        } else {
            if station.queue.len() < station.batch {
                return false;
            }
            station.queue.drain(..station.batch).collect()
        };
        station.slots[slot].busy = true;
        station.next_slot = (slot + 1) % station.slots.len();
        let (fixed, work, _) = station.costs[slot];
        self.jobs.push(Job {
            station: station_index,
            slot,
            images,
            fixed_left: fixed,
            work,
            computing: None,
            blocked: false,
        });
        true
    }

    /// Moves a finished job's images into the next buffer if they fit; frees its slot.
    fn try_hand_on(&mut self, j: usize) -> bool {
        let station = self.jobs[j].station;
        let next = station + 1;
        if next < self.stations.len() {
            let room = self.stations[next].capacity - self.stations[next].queue.len();
            if room < self.jobs[j].images.len() {
                return false;
            }
            let images = std::mem::take(&mut self.jobs[j].images);
            self.stations[next].queue.extend(images);
        }
        let slot = self.jobs[j].slot;
        self.stations[station].slots[slot].busy = false;
        self.jobs[j].images.clear();
        true
    }

    /// Starts the compute part of every job whose fixed part is done.
    fn start_compute(&mut self) {
        for job in &mut self.jobs {
            if !job.blocked && job.computing.is_none() && job.fixed_left <= EPSILON_S {
                let load = self.stations[job.station].costs[job.slot].2;
                job.computing = Some(self.computing.add(self.model, load, job.work, ()));
            }
        }
    }

    fn next_event_in(&self) -> Option<f64> {
        let fixed = self
            .jobs
            .iter()
            .filter(|job| job.in_fixed_part())
            .map(|job| job.fixed_left);
        let compute = self.computing.next_finish().map(|(_, dt)| dt);
        fixed
            .chain(compute)
            .min_by(f64::total_cmp)
            .map(|dt| dt.max(0.0))
    }

    fn integrate(&mut self, dt: f64, busy_units: &mut [f64]) {
        let mut computing = vec![false; busy_units.len()];
        for job in self.jobs.iter().filter(|j| !j.blocked) {
            let station = &mut self.stations[job.station];
            station.busy_integral += dt;
            if let Some(slowdown) = job.computing.and_then(|id| self.computing.slowdown(id)) {
                station.slowdown_integral += dt * slowdown;
                station.compute_integral += dt;
                if let Some(unit) = station.slots[job.slot].pipeline_unit {
                    computing[unit] = true;
                }
            }
        }
        for (busy, on) in busy_units.iter_mut().zip(computing) {
            if on {
                *busy += dt;
            }
        }
    }

    fn advance(&mut self, dt: f64) {
        self.now += dt;
        for job in self.jobs.iter_mut().filter(|j| j.in_fixed_part()) {
            job.fixed_left -= dt;
        }
        self.computing.advance(dt);
    }

    /// Completes finished jobs; returns the start times of images that left the
    /// pipeline.
    fn finish_jobs(&mut self) -> Vec<f64> {
        let mut out = Vec::new();
        let last = self.stations.len() - 1;
        self.finished.clear();
        self.computing.take_finished(self.model, &mut self.finished);
        for j in 0..self.jobs.len() {
            let job = &self.jobs[j];
            let Some(id) = job.computing else {
                continue;
            };
            if !self.finished.iter().any(|(done, ())| *done == id) {
                continue;
            }
            self.jobs[j].computing = None;
            let station = self.jobs[j].station;
            self.stations[station].batches += 1;
            if station == last {
                out.extend(self.jobs[j].images.iter().copied());
                self.in_system -= self.jobs[j].images.len();
                let slot = self.jobs[j].slot;
                self.stations[station].slots[slot].busy = false;
                self.jobs[j].images.clear();
                self.jobs[j].blocked = true;
            } else {
                self.jobs[j].blocked = true;
                self.try_hand_on(j);
            }
        }
        self.jobs
            .retain(|job| !(job.blocked && job.images.is_empty()));
        out
    }
}
