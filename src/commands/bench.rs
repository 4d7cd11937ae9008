//! `mica bench`: start the service in-process and offer it load.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use mica_actors::Service;
use mica_policies::PolicyConfig;

use crate::bench::{self, BenchOptions, Load, Stop};
use crate::cli::RunArgs;
use crate::config::LoadedConfig;
use crate::wiring::{self, RunOverrides};

/// Overrides from the shared run arguments.
pub fn overrides(run: &RunArgs) -> anyhow::Result<RunOverrides> {
    let policy = match &run.policy {
        Some(name) => {
            Some(PolicyConfig::from_name(name).map_err(|m| anyhow::anyhow!("--policy: {m}"))?)
        }
        None => None,
    };
    Ok(RunOverrides {
        policy,
        units: run.units.clone(),
        batch_size: run.batch_size,
    })
}

/// The offered load and stop rule from the shared run arguments.
pub fn load_and_stop(run: &RunArgs) -> anyhow::Result<(Load, Stop)> {
    let load = match (run.concurrency, run.rate) {
        (_, Some(rate)) if !(rate.is_finite() && rate > 0.0) => {
            anyhow::bail!("--rate must be a positive number of requests per second, got {rate}")
        }
        (_, Some(rate)) => Load::Open { rate },
        (Some(0), None) => anyhow::bail!("--concurrency must be at least 1"),
        (Some(concurrency), None) => Load::Closed { concurrency },
        (None, None) => Load::Closed { concurrency: 16 },
    };
    let stop = match (run.duration, run.requests) {
        (_, Some(0)) => anyhow::bail!("--requests must be at least 1"),
        (_, Some(n)) => Stop::Requests(n),
        (Some(d), None) if d.is_zero() => anyhow::bail!("--duration must be longer than 0"),
        (Some(d), None) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    Ok((load, stop))
}

/// Runs the command.
pub fn run(config: &Path, run: &RunArgs, warmup: Duration, progress: bool) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    let overrides = overrides(run)?;
    let (load, stop) = load_and_stop(run)?;
    let setup = wiring::service_setup(&loaded, &overrides)?;
    let labels: bench::UnitLabels = setup
        .units
        .iter()
        .map(|u| {
            (
                u.spec.id.to_string(),
                u.spec.kind.as_str().to_string(),
                u.engine.engine.as_str().to_string(),
            )
        })
        .collect();
    let options = BenchOptions {
        load,
        stop,
        warmup,
        images_per_request: run.batch_size.unwrap_or(1),
        progress,
        seed: loaded.config.scheduler.seed,
        policy: setup.policy.name().to_string(),
    };
    let _metrics = crate::metrics::install_recorder().context("installing the metrics recorder")?;
    let report = actix::System::new().block_on(async move {
        let service = Service::start(setup)?;
        service.wait_ready().await?;
        let report = bench::run(&service, labels, &options).await;
        service.shutdown(Duration::from_secs(5)).await;
        Ok::<_, anyhow::Error>(report)
    })?;
    if run.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render_table());
    }
    Ok(())
}
