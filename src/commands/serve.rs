//! `mica serve`: the inference service over HTTP (KServe v2 / Triton protocol), with
//! the metrics/admin listener, device telemetry, hot config reload and systemd
//! notifications around it.
//!
//! A config with a `[pipeline]` section serves that pipeline instead of the scheduler
//! over `[[units]]` (its stages name the units): under `pipeline.name` (default
//! `[model] name`), with the first stage's input and the last stage's output, the
//! same protocol, validation and errors, and per-stage series
//! (`mica_pipeline_stage_*`) on the metrics port. There is no policy to swap, so no
//! admin routes and no hot reload.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mica_actors::Service;
use tracing::{error, info, warn};

use super::serve_banner::Banner;
use crate::admin::Admin;
use crate::config::{AdminToken, MetricsConfig, ResolvedConfig, ResolvedPipeline};
use crate::instrumented::Instrumented;
use crate::metrics::MetricsHandle;
use crate::pipeline::setup::build_setup;
use crate::reload::{PolicyControl, PolicySource, ReloadOptions};
use crate::serve::{InferBackend, ModelSettings, PipelineBackend, PipelineOptions, Protocol};
use crate::telemetry::Telemetry;
use crate::wiring::{self, RunOverrides};

/// The Prometheus recorder and the telemetry thread, when metrics are enabled.
fn start_metrics(
    metrics: &MetricsConfig,
) -> anyhow::Result<(Option<MetricsHandle>, Option<Telemetry>)> {
    if !metrics.enabled {
        return Ok((None, None));
    }
    let prometheus =
        crate::metrics::install_recorder().context("installing the metrics recorder")?;
    let telemetry = crate::telemetry::start(crate::telemetry::SAMPLE_INTERVAL)
        .map_err(|e| warn!(error = %e, "cannot start the telemetry thread"))
        .ok();
    Ok((Some(prometheus), telemetry))
}

/// What `mica serve` runs behind the front ends: the scheduler over `[[units]]`, or
/// the config's `[pipeline]`.
enum Plan {
    Scheduler {
        setup: Box<mica_actors::ServiceSetup>,
        written: mica_policies::PolicyConfig,
        resolved: mica_policies::PolicyConfig,
        source: PolicySource,
        admin_token: Option<AdminToken>,
    },
    Pipeline {
        setup: mica_pipeline::run::PipelineSetup,
        options: PipelineOptions,
    },
}

/// What the ready banner says runs the model.
struct Shown {
    /// "5 units (cpu, amp, ...), policy contention_aware" or the pipeline's stages.
    what: String,
    /// Whether every unit is simulated.
    simulated: bool,
}

/// A started backend, and the scheduler's policy control where there is one.
struct Started {
    backend: Arc<dyn InferBackend>,
    control: Option<(Arc<PolicyControl>, Option<AdminToken>)>,
}

impl Plan {
    /// The scheduler over the config's units.
    fn scheduler(
        loaded: &ResolvedConfig,
        overrides: &RunOverrides,
    ) -> anyhow::Result<(Self, Shown)> {
        let admin_token = loaded.admin_token.clone();
        let setup = wiring::service_setup(loaded, overrides)?;
        let (written, source) = match &overrides.policy {
            Some(policy) => (policy.clone(), PolicySource::CommandLine),
            None => (loaded.config.scheduler.policy.clone(), PolicySource::Config),
        };
        info!(
            config = %loaded.path.display(),
            platform = %loaded.config.platform.name,
            units = setup.units.len(),
            policy = setup.policy.name(),
            metrics = loaded.config.metrics.enabled,
            admin = admin_token.is_some(),
            "starting"
        );
        let ids: Vec<String> = setup.units.iter().map(|u| u.spec.id.to_string()).collect();
        let shown = Shown {
            what: format!(
                "{} units ({}), policy {}",
                ids.len(),
                ids.join(", "),
                setup.policy.name()
            ),
            simulated: setup.units.iter().all(|u| u.spec.simulated),
        };
        let plan = Plan::Scheduler {
            resolved: setup.policy.clone(),
            setup: Box::new(setup),
            written,
            source,
            admin_token,
        };
        Ok((plan, shown))
    }

    /// The config's pipeline; `model` becomes what it serves.
    fn pipeline(
        loaded: &ResolvedConfig,
        resolved: &ResolvedPipeline,
        overrides: &RunOverrides,
        model: &mut ModelSettings,
    ) -> anyhow::Result<(Self, Shown)> {
        let file = loaded.path.display().to_string();
        if overrides.policy.is_some() || overrides.units.is_some() {
            anyhow::bail!(
                "--policy and --units choose the scheduler's policy and units, but {file} has a \
                 [pipeline] section: it serves the pipeline, whose stages name the units"
            );
        }
        if loaded.admin_token.is_some() {
            warn!("admin routes swap the scheduler's policy; a pipeline has none: not served");
        }
        let spec = &resolved.spec;
        model.clone_from(&resolved.model);
        let setup = build_setup(loaded, spec, &resolved.config_units)?;
        let engines: BTreeSet<&'static str> = resolved
            .config_units
            .iter()
            .map(|&u| loaded.config.units[u].engine.as_str())
            .collect();
        let engine = match engines.iter().next() {
            Some(only) if engines.len() == 1 => *only,
            _ => "mixed",
        };
        let options = PipelineOptions {
            capacity: loaded.config.scheduler.queue_capacity,
            priority_levels: loaded.config.scheduler.priority_levels,
            input_len: model.input_len(),
            output_len: model.output_len(),
            engine,
        };
        let stages: Vec<String> = spec
            .stages
            .iter()
            .map(|s| {
                let units: Vec<&str> = s.units.iter().map(|&u| spec.units[u].id.as_str()).collect();
                format!(
                    "{}: blocks {}..{} b{} s{}",
                    units.join("|"),
                    s.blocks.start,
                    s.blocks.end,
                    s.batch,
                    s.streams
                )
            })
            .collect();
        info!(
            config = %file,
            platform = %loaded.config.platform.name,
            model = %model.name,
            pipeline = %spec.table.model,
            stages = %stages.join(" -> "),
            engine,
            metrics = loaded.config.metrics.enabled,
            "starting a pipeline"
        );
        let shown = Shown {
            what: format!(
                "a pipeline of {} stages ({})",
                stages.len(),
                stages.join(" -> ")
            ),
            simulated: engine == "sim",
        };
        Ok((Plan::Pipeline { setup, options }, shown))
    }

    /// Starts the backend (inside the actix system).
    fn start(self, loaded: &ResolvedConfig) -> anyhow::Result<Started> {
        Ok(match self {
            Plan::Scheduler {
                setup,
                written,
                resolved,
                source,
                admin_token,
            } => {
                let service = Service::start(*setup)?;
                let control = Arc::new(PolicyControl::new(
                    service.clone(),
                    loaded,
                    written,
                    resolved,
                    source,
                ));
                Started {
                    backend: Arc::new(service),
                    control: Some((control, admin_token)),
                }
            }
            Plan::Pipeline { setup, options } => Started {
                backend: Arc::new(PipelineBackend::start(setup, options)?),
                control: None,
            },
        })
    }
}

/// Runs the service until SIGTERM/SIGINT, then drains and exits: one path for the
/// scheduler and the pipeline backends.
pub fn run(config: &Path, overrides: &RunOverrides) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(config)?;
    let mut model = loaded.config.model.clone();
    model.units = crate::commands::units::runs_on(&loaded);
    let (plan, shown) = match &loaded.pipeline {
        Some(pipeline) => Plan::pipeline(&loaded, pipeline, overrides, &mut model)?,
        None => Plan::scheduler(&loaded, overrides)?,
    };
    let metrics = loaded.config.metrics.clone();
    let (prometheus, _telemetry) = start_metrics(&metrics)?;
    let server = loaded.config.server.clone();
    actix::System::new().block_on(async move {
        let Started { backend, control } = plan.start(&loaded)?;
        let served: Arc<dyn InferBackend> = if metrics.enabled {
            Arc::new(Instrumented::new(
                backend.clone(),
                &model.name,
                &model.version,
            ))
        } else {
            backend.clone()
        };
        let fronts = crate::serve::start(&server, &model, served)?;
        let mut serves_admin = false;
        let (admin, _reloader) = match control {
            Some((control, token)) => {
                let admin = token.map(|token| Admin::new(token, control.clone()));
                serves_admin = admin.is_some();
                let reloader =
                    crate::reload::spawn(&loaded.path, control, ReloadOptions::default())?;
                (admin, Some(reloader))
            }
            None => (None, None),
        };
        let side = crate::metrics_server::start(metrics.address, metrics.port, prometheus, admin)?;
        let watched = backend.clone();
        crate::systemd::spawn_watchdog(move || watched.alive().is_ok());
        let banner = Banner {
            model: model.clone(),
            http: fronts.local_addr(),
            grpc: fronts.addr(Protocol::Grpc),
            metrics: side.as_ref().map(|s| s.local_addr()),
            prometheus: metrics.enabled,
            admin: serves_admin,
            what: shown.what,
            simulated: shown.simulated,
        };
        let serves = backend.serves();
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
        crate::systemd::extend_start_while(async move {
            let _ = loaded_rx.await;
        });
        let ready = {
            let backend = backend.clone();
            async move {
                let settled = backend.wait_ready().await;
                let _ = loaded_tx.send(());
                settled?;
                Ok::<_, String>(backend.missing())
            }
        };
        let drain_began = announce_lifecycle(ready, serves.part, banner);
        let died: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        fronts
            .run_until(supervise(
                backend.clone(),
                died.clone(),
                drain_began.clone(),
            ))
            .await?;
        // One drain budget for the front ends and the backend together: the backend
        // gets what the front ends left of `drain_time`.
        let left = backend
            .shutdown(remaining(&drain_began, server.drain_time))
            .await;
        if let Some(side) = side {
            side.stop().await;
        }
        info!(unanswered = left, of = serves.unanswered, "stopped");
        match died.get() {
            Some(dead) => Err(anyhow::anyhow!(
                "{dead}: exiting so that the service manager restarts mica"
            )),
            None => Ok(()),
        }
    })
}

/// How often `supervise` checks that the backend is alive.
const SUPERVISE_EVERY: Duration = Duration::from_millis(500);

/// Resolves (to the reason) once the backend is dead (the scheduler's dispatcher or a
/// unit actor), never while it runs or once it shuts down on purpose. The caller then
/// drains and exits non-zero: mica does not restart actors in place (their state, the
/// queue and the responders of what they held, died with them); the process restarts
/// with everything rebuilt (docs/NOTES.md, "Supervision").
async fn supervise(
    backend: Arc<dyn InferBackend>,
    died: Arc<OnceLock<String>>,
    drain_began: Arc<OnceLock<Instant>>,
) -> String {
    let mut ticks = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        ticks.tick().await;
        if let Err(dead) = backend.alive() {
            error!(error = %dead, "the service is dead: not ready, watchdog stopped, exiting");
            crate::systemd::status(&format!("failed: {dead}"));
            let _ = drain_began.set(Instant::now());
            let _ = died.set(dead.clone());
            return dead;
        }
    }
}

/// What is left of `budget` since the drain began (all of it if it has not).
fn remaining(drain_began: &OnceLock<Instant>, budget: Duration) -> Duration {
    match drain_began.get() {
        Some(began) => budget.saturating_sub(began.elapsed()),
        None => budget,
    }
}

/// Tells the log, systemd and the user when `ready` resolves (READY=1 and the `banner`
/// on stdout, or a not-ready status naming the failure of a `part`: "unit", "pipeline
/// stage"), and STOPPING=1 on the first stop signal. Returns when the drain began (set
/// on that signal), for the drain budget.
fn announce_lifecycle<E: std::fmt::Display>(
    ready: impl std::future::Future<Output = Result<Vec<String>, E>> + 'static,
    part: &'static str,
    banner: Banner,
) -> Arc<OnceLock<Instant>> {
    let drain_began = Arc::new(OnceLock::new());
    actix_rt::spawn(async move {
        match ready.await {
            Ok(missing) if missing.is_empty() => {
                info!("every {part} is loaded and warm: ready");
                print!("{}", banner.render());
                let _ = std::io::Write::flush(&mut std::io::stdout());
                crate::systemd::ready();
            }
            Ok(missing) => {
                for why in &missing {
                    warn!(missing = %why, "a {part} failed to load; serving without it");
                }
                warn!(
                    missing = missing.len(),
                    "ready on the {part}s that loaded (require_all_units = false)"
                );
                print!("{}", banner.render());
                println!("  missing:    {}", missing.join("\n              "));
                let _ = std::io::Write::flush(&mut std::io::stdout());
                crate::systemd::ready();
                crate::systemd::status(&format!("ready without: {}", missing.join("; ")));
            }
            Err(e) => {
                error!(error = %e, "a {part} failed to load; the server stays not ready");
                crate::systemd::status(&format!("not ready: {e}"));
            }
        }
    });
    let began = drain_began.clone();
    actix_rt::spawn(async move {
        if crate::serve::stop_signal().await.is_ok() {
            let _ = began.set(Instant::now());
            crate::systemd::stopping();
        }
    });
    drain_began
}
