//! Exhaustive search: measures every point of the space. The reference the heuristic
//! is judged against (best found, points measured, wall time).

use crate::pipeline::tune::cache::Evaluator;
use crate::pipeline::tune::measure::Measured;
use crate::pipeline::tune::space::{Point, Space};

/// Measures every point; returns the best (ties: fewer streams, then fewer threads).
pub fn search(space: &Space, ev: &mut Evaluator<'_>) -> anyhow::Result<(Point, Measured)> {
    let mut best: Option<(Point, Measured)> = None;
    for point in space.points() {
        let m = ev.eval(&point)?;
        let better = match &best {
            None => true,
            Some((p, b)) => {
                m.throughput_img_s > b.throughput_img_s
                    || (m.throughput_img_s == b.throughput_img_s
                        && (point.streams, point.threads) < (p.streams, p.threads))
            }
        };
        if better {
            best = Some((point, m));
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("the space is empty"))
}
