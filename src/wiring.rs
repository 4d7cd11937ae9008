//! From a loaded config to a running service's setup: which units, which engines,
//! which policy, with the command line's overrides applied.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use mica_actors::{ServiceSetup, UnitSetup};
use mica_core::{Clock, SchedulerSettings, UnitId, UnitSpec};
use mica_engines::{ContentionHub, EngineKind, EngineSpec};
use mica_policies::PolicyConfig;

use crate::config::{ResolvedConfig, UnitConfig};

/// Overrides a command line applies on top of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    /// Policy by name (default parameters), replacing `[scheduler] policy`.
    pub policy: Option<PolicyConfig>,
    /// Only these unit ids (in this order), enabled or not in the file.
    pub units: Option<Vec<String>>,
    /// The paper's setup: every request carries this many images and every unit runs
    /// batches of exactly this size.
    pub batch_size: Option<u32>,
}

/// The units a run uses, in index order, with their config entries.
pub fn selected_units<'a>(
    loaded: &'a ResolvedConfig,
    overrides: &RunOverrides,
) -> anyhow::Result<Vec<(usize, &'a UnitConfig)>> {
    let all = &loaded.config.units;
    match &overrides.units {
        None => Ok(all.iter().enumerate().filter(|(_, u)| u.enabled).collect()),
        Some(ids) => {
            let mut chosen = Vec::new();
            for id in ids {
                let Some(found) = all.iter().position(|u| &u.id == id) else {
                    let known: Vec<&str> = all.iter().map(|u| u.id.as_str()).collect();
                    bail!(
                        "--units: no unit {id:?} in {}; known units: {}",
                        loaded.path.display(),
                        known.join(", ")
                    );
                };
                if chosen.iter().any(|(i, _)| *i == found) {
                    bail!("--units: {id:?} is named twice");
                }
                chosen.push((found, &all[found]));
            }
            if chosen.is_empty() {
                bail!("--units: name at least one unit");
            }
            Ok(chosen)
        }
    }
}

/// The engine spec of stream 0 of the config's unit `config_index` running its whole
/// model at batches up to `max_batch`: the one place a unit's config becomes an
/// [`EngineSpec`] (pipeline stages narrow it to their blocks and shapes).
pub fn unit_engine_spec(
    loaded: &ResolvedConfig,
    config_index: usize,
    max_batch: u32,
) -> EngineSpec {
    let config = &loaded.config;
    let unit = &config.units[config_index];
    EngineSpec::new(
        unit.engine.clone(),
        unit.kind,
        max_batch,
        config.model.input_shape.clone(),
        config.model.output_len(),
    )
    .with_unit(config_index, unit.gpu_device(), unit.core)
    .with_profile(loaded.units[config_index].profile.clone())
    .with_seed(config.scheduler.seed)
}

/// Builds the service setup for a run.
pub fn service_setup(
    loaded: &ResolvedConfig,
    overrides: &RunOverrides,
) -> anyhow::Result<ServiceSetup> {
    let config = &loaded.config;
    if let Some(n) = overrides.batch_size {
        if n == 0 || n > crate::config::MAX_BATCH_LIMIT {
            bail!(
                "--batch-size must be between 1 and {}, got {n}",
                crate::config::MAX_BATCH_LIMIT
            );
        }
    }
    let chosen = selected_units(loaded, overrides)?;
    let mut units = Vec::with_capacity(chosen.len());
    for (position, (config_index, unit)) in chosen.iter().enumerate() {
        let resolved = &loaded.units[*config_index];
        let profile = resolved.profile.clone();
        let max_batch = overrides.batch_size.unwrap_or(resolved.max_batch);
        let device = unit.gpu_device();
        let engine = unit_engine_spec(loaded, *config_index, max_batch)
            .with_unit(position, device, unit.core);
        let spec = UnitSpec {
            id: UnitId::new(&unit.id),
            kind: unit.kind,
            device,
            simulated: unit.engine.kind() == EngineKind::Sim,
            streams: unit.streams,
            max_batch,
            profile: profile.clone(),
            run_sizes: engine.run_sizes(),
            stagger_min_images: unit.stagger_min_images,
        };
        units.push(UnitSetup { spec, engine });
    }
    load_cuda_if_needed(&units);
    let mut policy = overrides
        .policy
        .clone()
        .unwrap_or_else(|| config.scheduler.policy.clone());
    policy.resolve_contention(&loaded.contention);
    policy
        .validate()
        .map_err(|m| anyhow::anyhow!(m))
        .context("policy")?;
    let unit_ids: Vec<UnitId> = units.iter().map(|u| u.spec.id.clone()).collect();
    let scheduler = SchedulerSettings {
        max_queue_delay: Duration::from_micros(config.scheduler.max_queue_delay_us),
        fixed_batch: overrides.batch_size,
        queue_capacity: config.scheduler.queue_capacity,
        priority_levels: config.scheduler.priority_levels,
        health: config.scheduler.health(),
    };
    Ok(ServiceSetup {
        units,
        policy,
        scheduler,
        batch_deadline: config.scheduler.batch_deadline(),
        // The service runs on the system clock; tests of the actors pass a manual one.
        hub: Arc::new(ContentionHub::with_clock(
            loaded.emulated_contention().build_for(&unit_ids),
            Clock::system(),
        )),
        clock: Clock::system(),
        custom_engines: None,
        dispatcher_panic_after: dispatcher_panic_after()?,
        require_all_units: config.scheduler.require_all_units,
    })
}

/// Test tooling: `MICA_TEST_PANIC_DISPATCHER_AFTER=N` makes the dispatcher panic when it
/// admits its N-th request, to exercise the supervision path (a service whose
/// dispatcher died goes not-ready, stops the watchdog and exits non-zero).
pub const PANIC_DISPATCHER_VAR: &str = "MICA_TEST_PANIC_DISPATCHER_AFTER";

fn dispatcher_panic_after() -> anyhow::Result<Option<u64>> {
    match std::env::var(PANIC_DISPATCHER_VAR) {
        Err(_) => Ok(None),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n > 0 => {
                tracing::warn!(after = n, "test tooling: the dispatcher will panic");
                Ok(Some(n))
            }
            _ => bail!("{PANIC_DISPATCHER_VAR} must be a positive request count, got {text:?}"),
        },
    }
}

/// Loads libtorch_cuda now when a torch unit runs on a GPU: libtorch decides once per
/// process whether it has CUDA, so this must happen before any engine is built. A
/// failure is not an error here (`mica simulate` and `mica check` need no GPU): the
/// loader keeps it, and every CUDA unit then fails to load with it when its engine is
/// built.
#[cfg(feature = "torch")]
fn load_cuda_if_needed(units: &[UnitSetup]) {
    if units.iter().any(|u| {
        u.engine.engine.kind() == EngineKind::Torch && u.spec.kind != mica_core::UnitKind::Cpu
    }) {
        if let Err(error) = mica_engines::torch::load_cuda() {
            tracing::warn!(%error, "libtorch_cuda could not be loaded; CUDA torch units will not load");
        }
    }
}

/// Without the torch engine there is nothing to load.
#[cfg(not(feature = "torch"))]
fn load_cuda_if_needed(_units: &[UnitSetup]) {}
