//! `mica serve`: the inference service over HTTP (KServe v2 / Triton protocol).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use mica_actors::Service;
use tracing::{error, info};

use crate::config::LoadedConfig;
use crate::wiring::{self, RunOverrides};

/// Runs the service until SIGTERM/SIGINT, then drains and exits.
pub fn run(config: &Path, overrides: &RunOverrides) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    let setup = wiring::service_setup(&loaded, overrides)?;
    let _metrics = crate::metrics::install_recorder().context("installing the metrics recorder")?;
    let server = loaded.config.server.clone();
    let model = loaded.config.model.clone();
    info!(
        config = %loaded.path.display(),
        platform = %loaded.config.platform.name,
        units = setup.units.len(),
        policy = setup.policy.name(),
        "starting"
    );
    actix::System::new().block_on(async move {
        let service = Service::start(setup)?;
        let http = crate::serve::start(&server, &model, Arc::new(service.clone()))?;
        let waiting = service.clone();
        actix_rt::spawn(async move {
            match waiting.wait_ready().await {
                Ok(()) => info!("every unit is loaded and warm: ready"),
                Err(e) => error!(error = %e, "a unit failed to load; the server stays not ready"),
            }
        });
        http.run_until_signal().await?;
        let left = service.shutdown(server.drain_time).await;
        info!(unanswered_in_queue = left, "stopped");
        Ok(())
    })
}
