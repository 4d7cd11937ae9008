//! `mica units` and `mica check`: what a config file configures.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::config::ResolvedConfig;

/// Lists the units and their profiles.
pub fn run(config: &Path, as_json: bool) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(config)?;
    if as_json {
        let units: Vec<_> = loaded
            .config
            .units
            .iter()
            .zip(&loaded.units)
            .map(|(unit, resolved)| {
                json!({
                    "id": unit.id,
                    "kind": unit.kind.as_str(),
                    "engine": unit.engine.as_str(),
                    "simulated": unit.engine.kind() == mica_engines::EngineKind::Sim,
                    "enabled": unit.enabled,
                    "streams": unit.streams,
                    "max_batch": resolved.max_batch,
                    "device": unit.device,
                    "core": unit.core,
                    "provider": unit.engine.provider_label(unit.kind).map(|(p, _)| p),
                    "precision": unit.engine.provider_label(unit.kind).map(|(_, p)| p),
                    "dla_core": (unit.kind == mica_core::UnitKind::Dla).then_some(unit.core).flatten(),
                    "model": unit.engine.models().first(),
                    "not_run_on_hardware": unit.engine.not_run_on_hardware(),
                    "profile": resolved.profile.as_deref(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "platform": loaded.config.platform.name, "units": units })
            )?
        );
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "platform: {}  ({})",
        loaded.config.platform.name,
        loaded.path.display()
    );
    let _ = writeln!(
        out,
        "contention model: {}",
        loaded.contention.build().name()
    );
    for (unit, resolved) in loaded.config.units.iter().zip(&loaded.units) {
        let simulated = if unit.engine.kind() == mica_engines::EngineKind::Sim {
            " [SIMULATED]"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "\n{} — kind {}, engine {}{}, {} stream(s), max batch {}{}",
            unit.id,
            unit.kind,
            unit.engine.as_str(),
            simulated,
            unit.streams,
            resolved.max_batch,
            if unit.enabled { "" } else { " (disabled)" }
        );
        if let Some((provider, precision)) = unit.engine.provider_label(unit.kind) {
            let core = match (unit.kind, unit.core) {
                (mica_core::UnitKind::Dla, Some(core)) => format!(", DLA core {core}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "  runs on: {provider}, {precision}{core}");
        }
        if let Some(model) = unit.engine.models().first() {
            let _ = writeln!(out, "  model: {}", model.display());
        }
        if let Some(note) = unit.engine.not_run_on_hardware() {
            let _ = writeln!(out, "  {note}");
        }
        match &resolved.profile {
            None => {
                let _ = writeln!(out, "  no profile (policies use measured rates)");
            }
            Some(p) => {
                let _ = writeln!(
                    out,
                    "  profile: {:?}, overhead {:.2} ms, GPU occupancy {:.2}{}",
                    p.origin,
                    p.overhead_ms,
                    p.gpu_occupancy,
                    if p.source.is_empty() {
                        String::new()
                    } else {
                        format!(", source: {}", p.source)
                    }
                );
                let _ = writeln!(
                    out,
                    "  {:>6} {:>12} {:>10} {:>10}",
                    "batch", "latency ms", "img/s", "GB/s"
                );
                for point in &p.points {
                    let _ = writeln!(
                        out,
                        "  {:>6} {:>12.2} {:>10.1} {:>10.1}",
                        point.batch,
                        p.latency_ms(point.batch),
                        p.throughput(point.batch),
                        point.bandwidth_gbps
                    );
                }
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// Each enabled unit's id and one line saying what runs it: engine, provider,
/// precision, DLA core, and "not run on hardware" where that is so.
pub fn runs_on(loaded: &ResolvedConfig) -> Vec<(String, String)> {
    loaded
        .config
        .units
        .iter()
        .filter(|u| u.enabled)
        .map(|unit| {
            let mut line = format!("kind {}, engine {}", unit.kind, unit.engine.as_str());
            if unit.engine.kind() == mica_engines::EngineKind::Sim {
                line.push_str(" (SIMULATED)");
            }
            if let Some((provider, precision)) = unit.engine.provider_label(unit.kind) {
                let _ = write!(line, ", provider {provider}, precision {precision}");
            }
            if let (mica_core::UnitKind::Dla, Some(core)) = (unit.kind, unit.core) {
                let _ = write!(line, ", DLA core {core}");
            }
            if unit.engine.not_run_on_hardware().is_some() {
                line.push_str(", not run on hardware");
            }
            (unit.id.clone(), line)
        })
        .collect()
}

/// Validates a config (everything `mica serve` checks before it starts, the
/// `[pipeline]` included) and says so.
pub fn check(config: &Path) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(config)?;
    let serves = match &loaded.pipeline {
        Some(pipeline) => format!(
            "pipeline {} of {} stages",
            pipeline.model.name,
            pipeline.spec.stages.len()
        ),
        None => format!("policy {}", loaded.config.scheduler.policy.name()),
    };
    println!(
        "{}: ok ({} units, {serves})",
        loaded.path.display(),
        loaded.config.units.len(),
    );
    Ok(())
}
