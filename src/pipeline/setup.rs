//! From a resolved pipeline to the actor pipeline that runs it (`mica serve` on a
//! config with `[pipeline]`, `mica tune --backend real`).

use std::ops::Range;
use std::sync::Arc;

#[cfg(feature = "torch")]
use mica_core::UnitKind;
use mica_engines::{ContentionHub, EngineContext, EngineSpec};
use mica_pipeline::run::PipelineSetup;
use mica_pipeline::stage::{StageSetup, StageUnit};
use mica_pipeline::{stage_unit_profile, PipelineSpec, StageProfile};

use crate::config::{PipelineConfig, ResolvedConfig};

/// The actor pipeline for `spec` over `loaded`'s units (`config_units[i]` is the
/// config index of `spec.units[i]`).
///
/// Stages are built as the config's units would run them: a `sim` unit emulates its
/// stage's share of its profile (`stage_unit_profile`) in real time with the shared
/// contention hub; a `torch` unit runs the stage's per-block TorchScript files
/// (`<engine.model>/block_<i>.pt`, written by `scripts/export_model.py --stages`) as one
/// engine that chains them on its device. With a torch unit on a GPU, libtorch_cuda is
/// loaded first.
pub fn build_setup(
    loaded: &ResolvedConfig,
    spec: &PipelineSpec,
    config_units: &[usize],
) -> anyhow::Result<PipelineSetup> {
    load_cuda_if_needed(loaded, spec, config_units);
    // Model files are per block of the model's own table; a coarsened table's block
    // is a run of them.
    let files: Vec<Range<usize>> = match loaded.config.pipeline.as_ref().map(PipelineConfig::table)
    {
        Some(Ok(fine)) => fine
            .coarse_groups(spec.table.len())
            .map_err(anyhow::Error::msg)?,
        _ => (0..spec.table.len()).map(|b| b..b + 1).collect(),
    };
    let device_handoff = loaded
        .config
        .pipeline
        .as_ref()
        .is_none_or(|p| p.device_handoff);
    // Stages whose every engine takes and keeps activations on its device.
    let keeps_on_device = |stage: &mica_pipeline::StageSpec| {
        stage.units.iter().all(|&u| {
            loaded.config.units[config_units[u]]
                .engine
                .kind()
                .keeps_activations_on_device()
        })
    };
    let mut stages = Vec::with_capacity(spec.stages.len());
    for (index, stage) in spec.stages.iter().enumerate() {
        let input_len = spec.table.boundary_elems(stage.blocks.start) as usize;
        let output_len = spec.table.boundary_elems(stage.blocks.end) as usize;
        let mut units = Vec::new();
        for &u in &stage.units {
            let unit = &spec.units[u];
            let config_index = config_units[u];
            let config = &loaded.config.units[config_index];
            let shares = StageProfile::new(&spec.table, unit.kind);
            let profile = Arc::new(stage_unit_profile(
                &unit.profile,
                &shares,
                stage.blocks.clone(),
            ));
            // The engine names the stage's model files (torch: the block files, run
            // as one engine chaining them on its device); emulating engines none.
            let first = files[stage.blocks.start].start;
            let last = files[stage.blocks.end - 1].end;
            let models = config
                .engine
                .stage_models(first..last)
                .map_err(|m| anyhow::anyhow!("unit {}: {m}", unit.id))?;
            let base = crate::wiring::unit_engine_spec(loaded, config_index, stage.batch);
            let spec_for = |stream: u32| EngineSpec {
                input_shape: vec![input_len],
                output_len,
                ..base
                    .clone()
                    .with_stream(stream)
                    .with_profile(Some(Arc::clone(&profile)))
                    .with_models(models.clone())
            };
            let streams = (0..stage.streams).map(spec_for).collect();
            units.push(StageUnit {
                id: unit.id.to_string(),
                streams,
            });
        }
        stages.push(StageSetup {
            name: format!("stage{index}"),
            units,
            batch: stage.batch,
            device_output: device_handoff
                && spec
                    .stages
                    .get(index + 1)
                    .is_some_and(|next| keeps_on_device(next) && keeps_on_device(stage)),
            builder: None,
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

/// Loads libtorch_cuda when a torch unit of the pipeline runs on a GPU: libtorch
/// decides once per process whether it has CUDA, so before any engine is built. A
/// failure is logged; the CUDA units then fail to load with it.
#[cfg(feature = "torch")]
fn load_cuda_if_needed(loaded: &ResolvedConfig, spec: &PipelineSpec, config_units: &[usize]) {
    let cuda = spec.units.iter().zip(config_units).any(|(unit, &c)| {
        unit.kind != UnitKind::Cpu
            && loaded.config.units[c].engine.kind() == mica_engines::EngineKind::Torch
    });
    if cuda {
        if let Err(error) = mica_engines::torch::load_cuda() {
            tracing::warn!(%error, "libtorch_cuda could not be loaded; CUDA torch stages will not load");
        }
    }
}

/// Without the torch engine there is nothing to load.
#[cfg(not(feature = "torch"))]
fn load_cuda_if_needed(_: &ResolvedConfig, _: &PipelineSpec, _: &[usize]) {}
