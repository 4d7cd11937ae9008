//! `mica units` and `mica check`: what a config file configures.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use crate::config::LoadedConfig;

/// Lists the units and their profiles.
pub fn run(config: &Path, as_json: bool) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    if as_json {
        let units: Vec<_> = loaded
            .config
            .units
            .iter()
            .zip(&loaded.profiles)
            .map(|(unit, profile)| {
                json!({
                    "id": unit.id,
                    "kind": unit.kind.as_str(),
                    "engine": unit.engine.as_str(),
                    "simulated": unit.engine.kind() == mica_engines::EngineKind::Sim,
                    "enabled": unit.enabled,
                    "streams": unit.streams,
                    "max_batch": unit.max_batch,
                    "device": unit.device,
                    "core": unit.core,
                    "profile": profile.as_deref(),
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
    for (unit, profile) in loaded.config.units.iter().zip(&loaded.profiles) {
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
            unit.max_batch.unwrap_or(0),
            if unit.enabled { "" } else { " (disabled)" }
        );
        match profile {
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

/// Validates a config and says so.
pub fn check(config: &Path) -> anyhow::Result<()> {
    let loaded = LoadedConfig::load(config)?;
    println!(
        "{}: ok ({} units, policy {})",
        loaded.path.display(),
        loaded.config.units.len(),
        loaded.config.scheduler.policy.name()
    );
    Ok(())
}
