//! The pipelining paper's design-space exploration heuristic (Kang et al., "Scheduling
//! DNN inference on GPU and DLA... pipelining", journal version JEDI, ACM TECS 2022):
//! find cut points, streams and threads by measuring a small part of the space.
//!
//! 1. **Initial cut from the profiles** (`planner::profile_cuts`): per option and batch
//!    size, the cut tuple that balances the isolated stage times.
//! 2. **Global search** from that cut and from a few sampled cut tuples, at the largest
//!    streams and threads of the space, with the paper's move policies:
//!    - *toward the GPU, binary-search style*: when the GPU's utilization is below the
//!      threshold the GPU tail takes more blocks (the last cut moves to the middle of
//!      the interval still open below it), otherwise the DLA side takes more; the
//!      interval halves at each step;
//!    - *move one cut by one*: each cut ±1, hill-climbing while throughput improves;
//!    - *shift all cuts*: every cut ±1 together.
//!
//!    Every measured point is offered to a top-10 list.
//! 3. **Local search** around each new top-10 entry whose GPU utilization is above the
//!    threshold (the GPU is saturated: the balance is right, its neighbours are worth
//!    measuring): each cut ±1 and ±2, and the neighbouring batch sizes. Repeats until
//!    the top-10 list stops changing.
//! 4. **Reduce streams, then threads** of the best entries while throughput holds
//!    (within `hold` of the entry's), so the chosen configuration uses no more
//!    resources than it needs.
//!
//! Every point goes through the `Evaluator`, so a point is measured once however often
//! the moves reach it, and the count of distinct points is the search's cost.

use mica_pipeline::{profile_cuts, MappingOption, PipelineSpec, RoleUnits};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::pipeline::tune::cache::Evaluator;
use crate::pipeline::tune::measure::Measured;
use crate::pipeline::tune::space::{Point, Space};

/// Knobs of the heuristic.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// GPU utilization below which work moves toward the GPU.
    pub threshold: f64,
    /// Sampled starting cut tuples per option and batch size, besides the profile one.
    pub samples: usize,
    /// Size of the top list.
    pub top: usize,
    /// Fraction of throughput a reduction of streams or threads must keep.
    pub hold: f64,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: 0.9,
            samples: 2,
            top: 10,
            hold: 0.99,
            seed: 42,
        }
    }
}

/// The best entries, highest throughput first.
#[derive(Debug, Default)]
struct TopList {
    entries: Vec<(Point, Measured)>,
    capacity: usize,
}

impl TopList {
    /// Offers a point; true when it entered the list.
    fn offer(&mut self, point: &Point, measured: &Measured) -> bool {
        if self.entries.iter().any(|(p, _)| p == point) {
            return false;
        }
        let position = self
            .entries
            .iter()
            .position(|(_, m)| measured.throughput_img_s > m.throughput_img_s)
            .unwrap_or(self.entries.len());
        if position >= self.capacity {
            return false;
        }
        self.entries
            .insert(position, (point.clone(), measured.clone()));
        self.entries.truncate(self.capacity);
        true
    }
}

/// The search state.
struct Search<'s, 'e, 'b> {
    space: &'s Space,
    ev: &'e mut Evaluator<'b>,
    settings: Settings,
    top: TopList,
    fresh: Vec<Point>,
}

impl Search<'_, '_, '_> {
    fn eval(&mut self, point: &Point) -> anyhow::Result<Option<Measured>> {
        if !self.space.contains(point) {
            return Ok(None);
        }
        let measured = self.ev.eval(point)?;
        if self.top.offer(point, &measured) {
            self.fresh.push(point.clone());
        }
        Ok(Some(measured))
    }

    fn with_cuts(point: &Point, cuts: Vec<usize>) -> Point {
        Point {
            cuts,
            ..point.clone()
        }
    }

    /// Binary-search moves of the last cut (the GPU tail's start).
    fn binary_moves(&mut self, cur: &mut Point, cur_m: &mut Measured) -> anyhow::Result<()> {
        let k = cur.cuts.len() - 1;
        let mut lo = if k == 0 { 1 } else { cur.cuts[k - 1] + 1 };
        let mut hi = self.space.table.len() - 1;
        while lo <= hi {
            let at = cur.cuts[k];
            let down = cur_m.gpu_utilization < self.settings.threshold;
            let next = if down {
                // GPU starved: it takes more blocks, the last cut moves down.
                hi = hi.min(at.saturating_sub(1));
                if at == 0 || lo > hi {
                    break;
                }
                lo + (hi - lo) / 2
            } else {
                lo = lo.max(at + 1);
                if lo > hi {
                    break;
                }
                lo + (hi - lo).div_ceil(2)
            };
            let mut cuts = cur.cuts.clone();
            cuts[k] = next;
            let candidate = Self::with_cuts(cur, cuts);
            let better = match self.eval(&candidate)? {
                Some(m) if m.throughput_img_s > cur_m.throughput_img_s => Some(m),
                _ => None,
            };
            match better {
                Some(m) => {
                    *cur = candidate;
                    *cur_m = m;
                }
                // The interval halves on the side of the rejected candidate.
                None if down => lo = next + 1,
                None => hi = next.saturating_sub(1),
            }
        }
        Ok(())
    }

    /// Each cut ±1 while throughput improves.
    fn one_by_one(&mut self, cur: &mut Point, cur_m: &mut Measured) -> anyhow::Result<()> {
        for _ in 0..self.space.table.len() {
            let mut best: Option<(Point, Measured)> = None;
            for i in 0..cur.cuts.len() {
                for delta in [-1_i64, 1] {
                    let Some(c) = cur.cuts[i].checked_add_signed(delta as isize) else {
                        continue;
                    };
                    let mut cuts = cur.cuts.clone();
                    cuts[i] = c;
                    let candidate = Self::with_cuts(cur, cuts);
                    if let Some(m) = self.eval(&candidate)? {
                        let bar = best
                            .as_ref()
                            .map_or(cur_m.throughput_img_s, |(_, b)| b.throughput_img_s);
                        if m.throughput_img_s > bar {
                            best = Some((candidate, m));
                        }
                    }
                }
            }
            match best {
                Some((p, m)) => {
                    *cur = p;
                    *cur_m = m;
                }
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Every cut ±1 together; true when it improved.
    fn shift_all(&mut self, cur: &mut Point, cur_m: &mut Measured) -> anyhow::Result<bool> {
        for delta in [-1_isize, 1] {
            let cuts: Option<Vec<usize>> = cur
                .cuts
                .iter()
                .map(|c| c.checked_add_signed(delta))
                .collect();
            let Some(cuts) = cuts else { continue };
            let candidate = Self::with_cuts(cur, cuts);
            if let Some(m) = self.eval(&candidate)? {
                if m.throughput_img_s > cur_m.throughput_img_s {
                    *cur = candidate;
                    *cur_m = m;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn climb(&mut self, start: Point) -> anyhow::Result<()> {
        let Some(mut m) = self.eval(&start)? else {
            return Ok(());
        };
        let mut cur = start;
        if cur.cuts.is_empty() {
            return Ok(());
        }
        self.binary_moves(&mut cur, &mut m)?;
        loop {
            self.one_by_one(&mut cur, &mut m)?;
            if !self.shift_all(&mut cur, &mut m)? {
                return Ok(());
            }
        }
    }

    fn local(&mut self, around: &Point) -> anyhow::Result<()> {
        for i in 0..around.cuts.len() {
            for delta in [-2_isize, -1, 1, 2] {
                if let Some(c) = around.cuts[i].checked_add_signed(delta) {
                    let mut cuts = around.cuts.clone();
                    cuts[i] = c;
                    self.eval(&Self::with_cuts(around, cuts))?;
                }
            }
        }
        let sizes = &self.space.batch_sizes;
        if let Some(at) = sizes.iter().position(|b| *b == around.batch) {
            let neighbours = [at.checked_sub(1), Some(at + 1)];
            for n in neighbours.into_iter().flatten() {
                if let Some(&batch) = sizes.get(n) {
                    self.eval(&Point {
                        batch,
                        ..around.clone()
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Lowers `field` (streams or threads) step by step while throughput holds.
    fn reduce(&mut self, mut cur: Point, mut cur_m: Measured) -> anyhow::Result<(Point, Measured)> {
        for streams_not_threads in [true, false] {
            loop {
                let values = if streams_not_threads {
                    &self.space.streams
                } else {
                    &self.space.threads
                };
                let now = if streams_not_threads {
                    cur.streams
                } else {
                    cur.threads
                };
                let Some(lower) = values.iter().rev().find(|v| **v < now).copied() else {
                    break;
                };
                let candidate = if streams_not_threads {
                    Point {
                        streams: lower,
                        ..cur.clone()
                    }
                } else {
                    Point {
                        threads: lower,
                        ..cur.clone()
                    }
                };
                match self.eval(&candidate)? {
                    Some(m)
                        if m.throughput_img_s >= self.settings.hold * cur_m.throughput_img_s =>
                    {
                        cur = candidate;
                        cur_m = m;
                    }
                    _ => break,
                }
            }
        }
        Ok((cur, cur_m))
    }
}

/// Runs the heuristic; returns the chosen point and its measurement.
pub fn search(
    space: &Space,
    ev: &mut Evaluator<'_>,
    base: &PipelineSpec,
    roles: &RoleUnits,
    settings: Settings,
) -> anyhow::Result<(Point, Measured)> {
    let (Some(&streams), Some(&threads)) = (space.streams.last(), space.threads.last()) else {
        anyhow::bail!("the space has no streams or threads values");
    };
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut s = Search {
        space,
        ev,
        settings,
        top: TopList {
            entries: Vec::new(),
            capacity: settings.top.max(1),
        },
        fresh: Vec::new(),
    };
    // 1-2. Initial cuts from the profiles, sampled cuts, global moves.
    for &batch in &space.batch_sizes {
        for &option in &space.options {
            let point = |cuts: Vec<usize>| Point {
                option,
                cuts,
                batch,
                streams,
                threads,
            };
            if option == MappingOption::Gpu {
                s.climb(point(Vec::new()))?;
                continue;
            }
            let tuples = space.cuts_of(option);
            let initial = profile_cuts(option, roles, &base.units, &space.table, batch)
                .map_err(anyhow::Error::msg)?;
            s.climb(point(initial))?;
            for _ in 0..settings.samples {
                if tuples.is_empty() {
                    break;
                }
                let pick = tuples[rng.random_range(0..tuples.len())].clone();
                s.climb(point(pick))?;
            }
        }
    }
    // 3. Local search around new top entries with a saturated GPU.
    let mut expanded: Vec<Point> = Vec::new();
    loop {
        let candidates: Vec<Point> = s
            .top
            .entries
            .iter()
            .filter(|(p, m)| !expanded.contains(p) && m.gpu_utilization >= settings.threshold)
            .map(|(p, _)| p.clone())
            .collect();
        if candidates.is_empty() {
            break;
        }
        for point in candidates {
            s.local(&point)?;
            expanded.push(point);
        }
    }
    // 4. Reduce streams and threads of the best entries while throughput holds.
    let leaders: Vec<(Point, Measured)> = s.top.entries.iter().take(3).cloned().collect();
    let mut candidates: Vec<(Point, Measured)> = s.top.entries.clone();
    for (point, measured) in leaders {
        candidates.push(s.reduce(point, measured)?);
    }
    let max = candidates
        .iter()
        .map(|(_, m)| m.throughput_img_s)
        .fold(0.0, f64::max);
    // The most frugal configuration that holds the best throughput.
    let chosen = candidates
        .into_iter()
        .filter(|(_, m)| m.throughput_img_s >= settings.hold * max)
        .min_by(|(p, m), (q, n)| {
            (p.streams, p.threads)
                .cmp(&(q.streams, q.threads))
                .then(n.throughput_img_s.total_cmp(&m.throughput_img_s))
        })
        .ok_or_else(|| anyhow::anyhow!("no point of the space could be measured"))?;
    Ok(chosen)
}
