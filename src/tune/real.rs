//! `--backend real`: measures a point by running it through the pipeline actors
//! (`mica_actors::pipeline`) on the config's engines, in real time.
//!
//! Stages are built as the config's units would run them: a `sim` unit emulates its
//! stage's share of its profile (`stage_unit_profile`) in real time with the shared
//! contention hub, so figures from sim units are still emulations (labelled so); a
//! `torch` unit runs the stage's per-block TorchScript files (`<model_dir>/
//! block_<i>.pt`, written by `scripts/export_model.py --stages`) one after the other.
//! Limits: the CPU pre/post-processing threads are not part of the actor pipeline
//! (the service's preprocess pool does that work), so the `threads` dimension does not
//! change what is measured here; each point costs its measuring time (seconds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mica_actors::pipeline::{Pipeline, PipelineSetup};
use mica_actors::pipeline_stage::{StageSetup, StageUnit};
use mica_engines::{ContentionHub, EngineContext, EngineKind, EngineSpec};
use mica_policies::pipeline::{stage_unit_profile, PipelineSpec, RoleUnits, StageProfile};

use crate::config::LoadedConfig;
use crate::tune::measure::{point_spec, utilizations, Backend, Measured};
use crate::tune::run::Problem;
use crate::tune::space::Point;

/// Measures points on the pipeline actors.
#[derive(Debug)]
pub struct RealBackend {
    loaded: LoadedConfig,
    base: PipelineSpec,
    roles: RoleUnits,
    config_units: Vec<usize>,
    duration: Duration,
    simulated: bool,
    last: Option<Measured>,
}

impl RealBackend {
    /// A backend over `problem`'s units, measuring each point for `duration`.
    pub fn new(problem: &Problem, duration: Duration) -> anyhow::Result<Self> {
        let simulated = problem
            .resolved
            .config_units
            .iter()
            .any(|&u| problem.loaded.config.units[u].engine == EngineKind::Sim);
        Ok(Self {
            loaded: problem.loaded.clone(),
            base: problem.base().clone(),
            roles: *problem.roles(),
            config_units: problem.resolved.config_units.clone(),
            duration,
            simulated,
            last: None,
        })
    }

    /// The actor pipeline of `spec`.
    pub fn setup(&self, spec: &PipelineSpec) -> anyhow::Result<PipelineSetup> {
        build_setup(&self.loaded, spec, &self.config_units)
    }
}

/// The actor pipeline for `spec` over `loaded`'s units (`config_units[i]` is the
/// config index of `spec.units[i]`).
pub fn build_setup(
    loaded: &LoadedConfig,
    spec: &PipelineSpec,
    config_units: &[usize],
) -> anyhow::Result<PipelineSetup> {
    let mut stages = Vec::with_capacity(spec.stages.len());
    for (index, stage) in spec.stages.iter().enumerate() {
        let input_len = spec.table.boundary_elems(stage.blocks.start) as usize;
        let output_len = spec.table.boundary_elems(stage.blocks.end) as usize;
        let mut units = Vec::new();
        for &u in &stage.units {
            let unit = &spec.units[u];
            let config_index = config_units[u];
            let config = &loaded.config.units[config_index];
            let device =
                (unit.kind != mica_policies::UnitKind::Cpu).then_some(config.device.unwrap_or(0));
            let shares = StageProfile::new(&spec.table, unit.kind);
            let profile = Arc::new(stage_unit_profile(
                &unit.profile,
                &shares,
                stage.blocks.clone(),
            ));
            let spec_for = |block: Option<usize>, stream: u32| EngineSpec {
                engine: config.engine,
                unit: config_index,
                unit_kind: unit.kind,
                device,
                stream,
                max_batch: stage.batch,
                input_shape: vec![match block {
                    Some(b) => spec.table.boundary_elems(b) as usize,
                    None => input_len,
                }],
                output_len: match block {
                    Some(b) => spec.table.boundary_elems(b + 1) as usize,
                    None => output_len,
                },
                profile: Some(Arc::clone(&profile)),
                model_path: block.and_then(|b| {
                    config
                        .model_path
                        .as_ref()
                        .map(|dir| dir.join(format!("block_{b}.pt")))
                }),
                jitter: config.jitter,
                seed: loaded.config.scheduler.seed,
                cuda_graphs: config.cuda_graphs,
                warmup_batches: config.warmup_batches,
            };
            let streams = (0..stage.streams)
                .map(|s| match config.engine {
                    EngineKind::Torch => {
                        stage.blocks.clone().map(|b| spec_for(Some(b), s)).collect()
                    }
                    _ => vec![spec_for(None, s)],
                })
                .collect();
            units.push(StageUnit {
                id: unit.id.to_string(),
                streams,
            });
        }
        stages.push(StageSetup {
            name: format!("stage{index}"),
            units,
            batch: stage.batch,
        });
    }
    let buffer_images = spec.buffers as usize * spec.max_batch() as usize;
    Ok(PipelineSetup {
        stages,
        buffer_images,
        context: EngineContext {
            hub: Arc::new(ContentionHub::new(loaded.contention.build())),
            custom: None,
        },
    })
}

impl Backend for RealBackend {
    fn name(&self) -> &'static str {
        if self.simulated {
            "real-actors-sim-engines"
        } else {
            "real"
        }
    }

    fn measure(&mut self, point: &Point) -> anyhow::Result<Measured> {
        let spec = point_spec(&self.base, &self.roles, point)?;
        let pipeline = Pipeline::start(self.setup(&spec)?)?;
        let input_len = spec.table.boundary_elems(0) as usize;
        let image: Vec<f32> = (0..input_len).map(|i| (i % 251) as f32 / 251.0).collect();
        let started = Instant::now();
        let (mut done, mut latency_sum) = (0_u64, 0.0);
        let mut latencies = Vec::new();
        std::thread::scope(|scope| -> anyhow::Result<()> {
            let submitter = scope.spawn(|| {
                while started.elapsed() < self.duration {
                    if pipeline.submit(image.clone()).is_err() {
                        break;
                    }
                }
            });
            let warm = self.duration / 5;
            let mut window_start = None;
            while started.elapsed() < self.duration {
                let Some(output) = pipeline.next_output() else {
                    break;
                };
                if let Err(e) = output.result {
                    anyhow::bail!("stage failed: {e}");
                }
                if started.elapsed() >= warm {
                    window_start.get_or_insert_with(Instant::now);
                    done += 1;
                    let ms = output.latency.as_secs_f64() * 1e3;
                    latency_sum += ms;
                    latencies.push(ms);
                }
            }
            let window = window_start.map_or(0.0, |w| w.elapsed().as_secs_f64());
            let report = pipeline.report();
            // Let the submitter see the deadline, then drain.
            while !submitter.is_finished() {
                if pipeline.next_output().is_none() {
                    break;
                }
            }
            let _ = submitter.join();
            let per_unit: Vec<f64> = spec
                .units
                .iter()
                .enumerate()
                .map(|(u, _)| {
                    let busy: f64 = spec
                        .stages
                        .iter()
                        .zip(&report)
                        .filter(|(s, _)| s.units.contains(&u))
                        .map(|(s, r)| r.busy_s / s.units.len() as f64)
                        .sum();
                    (busy / started.elapsed().as_secs_f64()).min(1.0)
                })
                .collect();
            let (gpu, dla) = utilizations(&spec, &per_unit);
            latencies.sort_by(f64::total_cmp);
            let p99 = latencies
                .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0);
            self.last = Some(Measured {
                throughput_img_s: if window > 0.0 {
                    done as f64 / window
                } else {
                    0.0
                },
                latency_mean_ms: latency_sum / (done.max(1) as f64),
                latency_p99_ms: p99,
                gpu_utilization: gpu,
                dla_utilization: dla,
            });
            Ok(())
        })?;
        pipeline.shutdown();
        self.last
            .take()
            .ok_or_else(|| anyhow::anyhow!("no measurement; this is a bug"))
    }
}
