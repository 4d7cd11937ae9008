//! The calibrated contention model: a parametric base model (PCCS, proportional
//! sharing, or none) times a pairwise interference correction fitted on co-run
//! measurements by `mica calibrate` (`fit.rs`).
//!
//! A unit's slowdown beside a set of running batches is
//! `base × (1 + Σ_j a[unit][unit_j])`, the sum over the running batches of *other*
//! units (a unit with two streams busy counts twice). `a[u][v]` is the extra slowdown one
//! batch of `v` inflicts on `u` beyond what the base model explains: 1.0 when two units
//! time-share a resource the base model does not know (two CPU units on the same cores),
//! slightly positive when FP32 and FP16 batches on one GPU interfere more than
//! time-slicing says, negative when the base model over-predicts. The terms are keyed by
//! unit id; a model built for a unit list without some id simply has no term for it.

use serde::{Deserialize, Serialize};

use crate::contention::{ContentionConfig, ContentionModel, Load};
use crate::unit::UnitId;

/// One fitted pairwise term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairTerm {
    /// The unit that is slowed.
    pub unit: String,
    /// The unit whose running batch slows it.
    pub with: String,
    /// Extra slowdown per running batch of `with`, beyond the base model (≥ -0.9).
    pub added_slowdown: f64,
    /// The batch size the term was fitted at. A batch of another size uses the terms of
    /// the fitted size nearest to it (by ratio); a term without a size applies to every
    /// size that has no term of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

/// A set's throughput as `mica calibrate` measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasuredSet {
    /// Unit ids of the set.
    pub units: Vec<String>,
    /// Batch size every unit ran.
    pub batch: u32,
    /// Images per second of the whole set, every stream busy.
    pub img_s: f64,
}

/// Parameters of the calibrated model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibratedParams {
    /// The parametric model, with its fitted parameters.
    pub base: Box<ContentionConfig>,
    /// Pairwise corrections where the parametric model could not fit.
    #[serde(default)]
    pub pairs: Vec<PairTerm>,
    /// Largest relative error of the fitted model on the runs it did not see: how far a
    /// prediction for a set nobody measured may be off.
    #[serde(default)]
    pub held_out_error: f64,
    /// The sets measured, for the policies to prefer over a prediction.
    #[serde(default)]
    pub measured: Vec<MeasuredSet>,
}

impl CalibratedParams {
    /// Checks the parameters; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(*self.base, ContentionConfig::Calibrated(_)) {
            return Err("base: a calibrated model cannot be the base of another".into());
        }
        self.base.validate().map_err(|e| format!("base: {e}"))?;
        if !(self.held_out_error.is_finite() && (0.0..1.0).contains(&self.held_out_error)) {
            return Err(format!(
                "held_out_error must be in [0, 1), got {}",
                self.held_out_error
            ));
        }
        for (i, m) in self.measured.iter().enumerate() {
            if m.units.is_empty() || m.batch == 0 || !(m.img_s.is_finite() && m.img_s >= 0.0) {
                return Err(format!(
                    "measured[{i}]: needs units, a batch of at least 1 and img_s >= 0"
                ));
            }
        }
        for (i, pair) in self.pairs.iter().enumerate() {
            if pair.unit.is_empty() || pair.with.is_empty() {
                return Err(format!("pairs[{i}]: unit and with must name units"));
            }
            if pair.unit == pair.with {
                return Err(format!(
                    "pairs[{i}]: unit and with are both {:?} (a unit's own streams are the base model's)",
                    pair.unit
                ));
            }
            if !(pair.added_slowdown.is_finite() && pair.added_slowdown >= -0.9) {
                return Err(format!(
                    "pairs[{i}].added_slowdown must be a number >= -0.9, got {}",
                    pair.added_slowdown
                ));
            }
        }
        Ok(())
    }
}

/// The calibrated model built for one unit list.
#[derive(Debug)]
pub struct Calibrated {
    base: Box<dyn ContentionModel>,
    /// `matrix[u][v]` per fitted batch size (ascending; `None`, the terms without a
    /// size, first), units by index in the list it was built for.
    matrices: Vec<(Option<u32>, Vec<Vec<f64>>)>,
    /// Measured sets whose units are all in the list: (ascending indices, batch, img/s).
    measured: Vec<(Vec<usize>, u32, f64)>,
    uncertainty: f64,
}

impl Calibrated {
    /// The model for units `ids` (the indices `Load::unit` refers to).
    pub fn new(params: &CalibratedParams, ids: &[UnitId]) -> Self {
        let n = ids.len();
        let index = |name: &str| ids.iter().position(|id| id.as_str() == name);
        let mut sizes: Vec<Option<u32>> = params.pairs.iter().map(|p| p.batch).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut matrices: Vec<(Option<u32>, Vec<Vec<f64>>)> = sizes
            .into_iter()
            .map(|size| (size, vec![vec![0.0; n]; n]))
            .collect();
        for pair in &params.pairs {
            if let (Some(u), Some(v)) = (index(&pair.unit), index(&pair.with)) {
                if let Some((_, matrix)) = matrices.iter_mut().find(|(b, _)| *b == pair.batch) {
                    matrix[u][v] = pair.added_slowdown;
                }
            }
        }
        let measured = params
            .measured
            .iter()
            .filter_map(|m| {
                let mut set: Vec<usize> =
                    m.units.iter().map(|u| index(u)).collect::<Option<_>>()?;
                set.sort_unstable();
                Some((set, m.batch, m.img_s))
            })
            .collect();
        Self {
            base: params.base.build_for(ids),
            matrices,
            measured,
            uncertainty: params.held_out_error,
        }
    }
}

impl Calibrated {
    /// The terms for a batch of `images`: those fitted at that size, else at the fitted
    /// size nearest by ratio (the smaller on a tie), else the terms without a size.
    /// `images` 0 (not known) takes the terms without a size, else the smallest size's.
    fn matrix_for(&self, images: u32) -> Option<&Vec<Vec<f64>>> {
        let sized = self.matrices.iter().filter_map(|(b, m)| b.map(|b| (b, m)));
        let nearest = if images == 0 {
            None
        } else {
            let distance = |b: u32| (f64::from(b) / f64::from(images)).ln().abs();
            sized
                .clone()
                .min_by(|(a, _), (b, _)| distance(*a).total_cmp(&distance(*b)))
                .map(|(_, m)| m)
        };
        nearest
            .or_else(|| {
                self.matrices
                    .iter()
                    .find(|(b, _)| b.is_none())
                    .map(|(_, m)| m)
            })
            .or_else(|| sized.map(|(_, m)| m).next())
    }
}

impl ContentionModel for Calibrated {
    fn name(&self) -> &'static str {
        "calibrated"
    }

    fn slowdowns(&self, loads: &[Load], slowdowns: &mut Vec<f64>) {
        self.base.slowdowns(loads, slowdowns);
        for (load, factor) in loads.iter().zip(slowdowns.iter_mut()) {
            let Some(row) = self.matrix_for(load.images).and_then(|m| m.get(load.unit)) else {
                continue;
            };
            let added: f64 = loads
                .iter()
                .filter(|other| other.unit != load.unit)
                .filter_map(|other| row.get(other.unit))
                .sum();
            *factor = (*factor * (1.0 + added)).max(1.0);
        }
    }

    fn measured_img_s(&self, units: &[usize], batch: u32) -> Option<f64> {
        self.measured
            .iter()
            .find(|(set, b, _)| *b == batch && set.as_slice() == units)
            .map(|(_, _, img_s)| *img_s)
    }

    fn uncertainty(&self) -> f64 {
        self.uncertainty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitKind;

    fn cpu(unit: usize) -> Load {
        Load {
            unit,
            kind: UnitKind::Cpu,
            device: None,
            gpu_occupancy: 0.0,
            bandwidth_gbps: 0.0,
            images: 1,
        }
    }

    #[test]
    fn pairs_add_to_the_base_and_round_trip_through_toml() {
        let params = CalibratedParams {
            base: Box::new(ContentionConfig::None),
            pairs: vec![
                PairTerm {
                    unit: "a".into(),
                    with: "b".into(),
                    added_slowdown: 1.0,
                    batch: None,
                },
                PairTerm {
                    unit: "b".into(),
                    with: "a".into(),
                    added_slowdown: 0.5,
                    batch: None,
                },
            ],
            held_out_error: 0.03,
            measured: vec![MeasuredSet {
                units: vec!["b".into(), "a".into()],
                batch: 8,
                img_s: 120.0,
            }],
        };
        let config = ContentionConfig::Calibrated(params);
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        let back: ContentionConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
        let ids = [UnitId::new("a"), UnitId::new("b"), UnitId::new("c")];
        let model = config.build_for(&ids);
        let mut out = Vec::new();
        model.slowdowns(&[cpu(0), cpu(1), cpu(2)], &mut out);
        assert_eq!(out, vec![2.0, 1.5, 1.0]);
        assert_eq!(model.measured_img_s(&[0, 1], 8), Some(120.0));
        assert_eq!(model.measured_img_s(&[0, 1], 4), None);
        assert_eq!(model.uncertainty(), 0.03);
        // Without the ids the terms have nothing to refer to.
        config.build().slowdowns(&[cpu(0), cpu(1)], &mut out);
        assert_eq!(out, vec![1.0, 1.0]);
        let mut bad = match config {
            ContentionConfig::Calibrated(p) => p,
            _ => unreachable!(),
        };
        bad.pairs[0].with = "a".into();
        assert!(bad.validate().unwrap_err().contains("pairs[0]"));
    }

    #[test]
    fn a_batch_uses_the_terms_of_the_nearest_fitted_size() {
        let term = |batch, added_slowdown| PairTerm {
            unit: "a".into(),
            with: "b".into(),
            added_slowdown,
            batch: Some(batch),
        };
        let params = CalibratedParams {
            base: Box::new(ContentionConfig::None),
            pairs: vec![term(8, 0.25), term(256, 1.0)],
            held_out_error: 0.0,
            measured: Vec::new(),
        };
        let model = Calibrated::new(&params, &[UnitId::new("a"), UnitId::new("b")]);
        let slowdown_of_a = |images| {
            let mut out = Vec::new();
            let at = |unit| Load {
                images,
                ..cpu(unit)
            };
            model.slowdowns(&[at(0), at(1)], &mut out);
            out[0]
        };
        assert_eq!(slowdown_of_a(8), 1.25);
        assert_eq!(slowdown_of_a(16), 1.25);
        assert_eq!(slowdown_of_a(64), 2.0, "64 is nearer 256 than 8 by ratio");
        assert_eq!(slowdown_of_a(256), 2.0);
        assert_eq!(
            slowdown_of_a(0),
            1.25,
            "an unknown size takes the smallest size's"
        );
        let text = toml::to_string(&ContentionConfig::Calibrated(params)).unwrap();
        assert!(text.contains("batch = 256"), "{text}");
    }
}
