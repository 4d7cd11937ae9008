//! `mica serve`: the inference service over HTTP (KServe v2 / Triton protocol), with
//! the metrics/admin listener, device telemetry, hot config reload and systemd
//! notifications around it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mica_actors::Service;
use tracing::{error, info, warn};

use crate::admin::Admin;
use crate::config::LoadedConfig;
use crate::instrumented::Instrumented;
use crate::reload::{PolicyControl, PolicySource, ReloadOptions};
use crate::serve::InferBackend;
use crate::wiring::{self, RunOverrides};

/// Runs the service until SIGTERM/SIGINT, then drains and exits.
pub fn run(config: &Path, overrides: &RunOverrides) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    let admin_token = crate::admin::token(&loaded)?;
    let setup = wiring::service_setup(&loaded, overrides)?;
    let metrics = loaded.config.metrics.clone();
    let prometheus = if metrics.enabled {
        Some(crate::metrics::install_recorder().context("installing the metrics recorder")?)
    } else {
        None
    };
    let _telemetry = if metrics.enabled {
        crate::telemetry::start(crate::telemetry::SAMPLE_INTERVAL)
            .map_err(|e| warn!(error = %e, "cannot start the telemetry thread"))
            .ok()
    } else {
        None
    };
    let server = loaded.config.server.clone();
    let model = loaded.config.model.clone();
    let (written, source) = match &overrides.policy {
        Some(policy) => (policy.clone(), PolicySource::CommandLine),
        None => (loaded.config.scheduler.policy.clone(), PolicySource::Config),
    };
    let resolved = setup.policy.clone();
    info!(
        config = %loaded.path.display(),
        platform = %loaded.config.platform.name,
        units = setup.units.len(),
        policy = setup.policy.name(),
        metrics = metrics.enabled,
        admin = admin_token.is_some(),
        "starting"
    );
    actix::System::new().block_on(async move {
        let service = Service::start(setup)?;
        let control = Arc::new(PolicyControl::new(
            service.clone(),
            &loaded,
            written,
            resolved,
            source,
        ));
        let backend: Arc<dyn InferBackend> = if metrics.enabled {
            Arc::new(Instrumented::new(
                service.clone(),
                &model.name,
                &model.version,
            ))
        } else {
            Arc::new(service.clone())
        };
        let http = crate::serve::start(&server, &model, backend)?;
        let admin = admin_token.map(|token| Admin::new(token, control.clone()));
        let side = crate::metrics_server::start(metrics.address, metrics.port, prometheus, admin)?;
        let _reloader = crate::reload::spawn(&loaded.path, control, ReloadOptions::default())?;
        crate::systemd::spawn_watchdog();
        let waiting = service.clone();
        actix_rt::spawn(async move {
            match waiting.wait_ready().await {
                Ok(()) => {
                    info!("every unit is loaded and warm: ready");
                    crate::systemd::ready();
                }
                Err(e) => {
                    error!(error = %e, "a unit failed to load; the server stays not ready");
                    crate::systemd::status(&format!("not ready: {e}"));
                }
            }
        });
        actix_rt::spawn(async {
            if stop_signal().await.is_ok() {
                crate::systemd::stopping();
            }
        });
        http.run_until_signal().await?;
        let left = service.shutdown(server.drain_time).await;
        if let Some(side) = side {
            side.stop().await;
        }
        info!(unanswered_in_queue = left, "stopped");
        Ok(())
    })
}

/// Resolves on the first SIGTERM or SIGINT (the HTTP server listens for them too).
async fn stop_signal() -> anyhow::Result<()> {
    use actix_rt::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
