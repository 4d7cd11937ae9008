//! `--backend real`: measures a point by running it through the pipeline actors
//! (`mica_actors::pipeline`) on the config's engines, in real time.
//!
//! Stages are built as the config's units would run them: a `sim` unit emulates its
//! stage's share of its profile (`stage_unit_profile`) in real time with the shared
//! contention hub, so figures from sim units are still emulations (labelled so); a
//! `torch` unit runs the stage's per-block TorchScript files (`<model_dir>/
//! block_<i>.pt`, written by `scripts/export_model.py --stages`) one after the other.
//! Around them run the CPU side's stages (`cpu_stages`): pre-processing of a raw frame
//! and post-processing of the output, each on the point's `threads` host threads, so
//! that the `threads` dimension is measured too. The pipeline is kept full (a feeder
//! blocks on the first buffer) for the point's duration; throughput and latency count
//! the images finished after the first fifth of it. Unit utilization is the engines'
//! busy time over the run. Each point costs its measuring time plus loading.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mica_engines::EngineKind;
use mica_pipeline::run::{Pipeline, PipelineSetup};
use mica_pipeline::{PipelineSpec, RoleUnits};

use crate::config::ResolvedConfig;
use crate::pipeline::setup::build_setup;
use crate::pipeline::tune::cpu_stages;
use crate::pipeline::tune::measure::{point_spec, utilizations, Backend, Measured};
use crate::pipeline::tune::run::Problem;
use crate::pipeline::tune::space::Point;

/// Measures points on the pipeline actors.
#[derive(Debug)]
pub struct RealBackend {
    loaded: ResolvedConfig,
    base: PipelineSpec,
    roles: RoleUnits,
    config_units: Vec<usize>,
    duration: Duration,
    simulated: bool,
}

impl RealBackend {
    /// A backend over `problem`'s units, measuring each point for `duration`.
    pub fn new(problem: &Problem, duration: Duration) -> anyhow::Result<Self> {
        let simulated = problem
            .resolved
            .config_units
            .iter()
            .any(|&u| problem.loaded.config.units[u].engine.kind() == EngineKind::Sim);
        Ok(Self {
            loaded: problem.loaded.clone(),
            base: problem.base().clone(),
            roles: *problem.roles(),
            config_units: problem.resolved.config_units.clone(),
            duration,
            simulated,
        })
    }

    /// The actor pipeline of `spec`, with `threads` pre- and post-processing threads
    /// around its stages.
    pub fn setup(&self, spec: &PipelineSpec, threads: u32) -> anyhow::Result<PipelineSetup> {
        let mut setup = build_setup(&self.loaded, spec, &self.config_units)?;
        let input_len = spec.table.boundary_elems(0) as usize;
        let output_len = spec.table.boundary_elems(spec.table.len()) as usize;
        setup.stages.insert(
            0,
            cpu_stages::pre_stage(input_len, threads).map_err(anyhow::Error::msg)?,
        );
        setup
            .stages
            .push(cpu_stages::post_stage(output_len, threads));
        Ok(setup)
    }
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
        let pipeline = Pipeline::start(self.setup(&spec, point.threads)?)?;
        let image = vec![0.0; cpu_stages::TOKEN_LEN];
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (mut done, mut latency_sum) = (0_u64, 0.0);
        let mut latencies = Vec::new();
        let mut failure = None;
        let mut window = 0.0;
        std::thread::scope(|scope| {
            // Keeps the first buffer full until the time is up, then closes the input.
            scope.spawn(|| {
                while started.elapsed() < self.duration && !stop.load(Ordering::Relaxed) {
                    if pipeline.submit(image.clone()).is_err() {
                        break;
                    }
                }
                pipeline.close();
            });
            // Throughput counts the images finished between the end of the warm-up (a
            // fixed instant, not the first counted output: batches finish in bursts) and
            // the end of the point.
            let warm = self.duration / 5;
            while started.elapsed() < self.duration {
                let Some(output) = pipeline.next_output() else {
                    break;
                };
                if let Err(e) = output.result {
                    failure = Some(e);
                    break;
                }
                if started.elapsed() >= warm {
                    done += 1;
                    let ms = output.latency.as_secs_f64() * 1e3;
                    latency_sum += ms;
                    latencies.push(ms);
                }
            }
            window = (started.elapsed().saturating_sub(warm)).as_secs_f64();
            // Stop the submitter and drain what is in flight, so no worker blocks.
            stop.store(true, Ordering::Relaxed);
            while pipeline.next_output().is_some() {}
        });
        let elapsed = started.elapsed().as_secs_f64();
        // The network's stages, without the CPU side's first and last.
        let mut report = pipeline.report();
        pipeline.shutdown();
        report.pop();
        report.remove(0);
        if let Some(e) = failure {
            anyhow::bail!("point {point}: a stage failed: {e}");
        }
        let per_unit: Vec<f64> = (0..spec.units.len())
            .map(|u| {
                let busy: f64 = spec
                    .stages
                    .iter()
                    .zip(&report)
                    .filter(|(s, _)| s.units.contains(&u))
                    .map(|(s, r)| r.busy_s / s.units.len() as f64)
                    .sum();
                (busy / elapsed).min(1.0)
            })
            .collect();
        let (gpu, dla) = utilizations(&spec, &per_unit);
        latencies.sort_by(f64::total_cmp);
        let p99 = latencies
            .get(((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        Ok(Measured {
            throughput_img_s: if window > 0.0 {
                done as f64 / window
            } else {
                0.0
            },
            latency_mean_ms: latency_sum / (done.max(1) as f64),
            latency_p99_ms: p99,
            gpu_utilization: gpu,
            dla_utilization: dla,
        })
    }
}
