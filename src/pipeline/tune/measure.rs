//! Measuring one point of the space: on the discrete-event pipeline model
//! (`--backend sim`, about a millisecond a point) or through the running pipeline
//! actors (`--backend real`, seconds a point).

use mica_core::{ContentionModel, UnitKind};
use mica_pipeline::{simulate_pipeline, PipelineSpec, RoleUnits, RunLength, StageSpec};
use serde::{Deserialize, Serialize};

use crate::config::{auto_buffers, ResolvedPipeline};
use crate::pipeline::tune::space::Point;

/// What one measurement gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Images per second.
    pub throughput_img_s: f64,
    /// Mean end-to-end latency, ms.
    pub latency_mean_ms: f64,
    /// 99th percentile latency, ms.
    pub latency_p99_ms: f64,
    /// Fraction of the time the GPU computed.
    pub gpu_utilization: f64,
    /// Mean over the DLAs used of the fraction of the time each computed.
    pub dla_utilization: f64,
}

/// Measures points.
pub trait Backend {
    /// `sim` or `real`: written into the report; simulated figures say so.
    fn name(&self) -> &'static str;

    /// Measures one point.
    fn measure(&mut self, point: &Point) -> anyhow::Result<Measured>;
}

/// The pipeline `point` describes on the base pipeline's units and CPU side.
pub fn point_spec(
    base: &PipelineSpec,
    roles: &RoleUnits,
    point: &Point,
) -> anyhow::Result<PipelineSpec> {
    let stages: Vec<StageSpec> = roles
        .stages(
            point.option,
            &point.cuts,
            &base.table,
            point.batch,
            point.streams,
        )
        .map_err(anyhow::Error::msg)?;
    let mut spec = base.clone();
    spec.buffers = auto_buffers(&stages);
    spec.stages = stages;
    spec.cpu.pre_threads = point.threads;
    spec.cpu.post_threads = point.threads;
    Ok(spec)
}

/// GPU and mean DLA utilization from per-unit figures.
pub fn utilizations(spec: &PipelineSpec, per_unit: &[f64]) -> (f64, f64) {
    let used: Vec<usize> = spec.stages.iter().flat_map(|s| s.units.clone()).collect();
    let mut gpu: f64 = 0.0;
    let (mut dla_sum, mut dla_count) = (0.0, 0);
    for (index, unit) in spec.units.iter().enumerate() {
        if !used.contains(&index) {
            continue;
        }
        let u = per_unit.get(index).copied().unwrap_or(0.0);
        if unit.kind == UnitKind::Dla {
            dla_sum += u;
            dla_count += 1;
        } else if unit.kind.uses_gpu_sms() {
            gpu = gpu.max(u);
        }
    }
    (
        gpu,
        if dla_count == 0 {
            0.0
        } else {
            dla_sum / f64::from(dla_count)
        },
    )
}

/// The discrete-event backend: simulated figures.
#[derive(Debug)]
pub struct SimBackend {
    base: PipelineSpec,
    roles: RoleUnits,
    model: Box<dyn ContentionModel>,
}

impl SimBackend {
    /// A backend over `resolved`'s units, contention model and CPU side.
    pub fn new(resolved: &ResolvedPipeline) -> Self {
        Self {
            base: resolved.spec.clone(),
            roles: resolved.roles,
            model: resolved.contention.build(),
        }
    }
}

impl Backend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn measure(&mut self, point: &Point) -> anyhow::Result<Measured> {
        let spec = point_spec(&self.base, &self.roles, point)?;
        let outcome = simulate_pipeline(&spec, self.model.as_ref(), RunLength::for_spec(&spec))
            .map_err(anyhow::Error::msg)?;
        let (gpu, dla) = utilizations(&spec, &outcome.unit_utilization);
        Ok(Measured {
            throughput_img_s: outcome.throughput_img_s,
            latency_mean_ms: outcome.latency_mean_ms,
            latency_p99_ms: outcome.latency_p99_ms,
            gpu_utilization: gpu,
            dla_utilization: dla,
        })
    }
}
