//! Profile-based cut points: the pipelining paper's starting point, computed from the
//! unit profiles without measuring anything.
//!
//! For every valid cut tuple of an option, each unit's load per image is the isolated
//! time of the stages it runs (fixed part included) divided by the batch and by the
//! number of units sharing the stage; the profile-based cut is the tuple whose busiest
//! unit is least loaded — the balance point of the stage times the paper starts its
//! search from (Kang et al., JEDI, ACM TECS 2022). It ignores contention and hand-offs;
//! measuring is what corrects for them.

use std::collections::HashMap;

use crate::blocks::BlockTable;
use crate::mapping::MappingOption;
use crate::spec::{PipelineUnit, RoleUnits};
use crate::stage_profile::{StageCost, StageProfile};

/// Per-image isolated load of the busiest unit for these cuts, ms.
pub fn bottleneck_ms(
    option: MappingOption,
    cuts: &[usize],
    roles: &RoleUnits,
    units: &[PipelineUnit],
    table: &BlockTable,
    batch: u32,
) -> Result<f64, String> {
    let stages = roles.stages(option, cuts, table, batch, 1)?;
    let mut per_unit: HashMap<usize, f64> = HashMap::new();
    for stage in &stages {
        for &u in &stage.units {
            let unit = units.get(u).ok_or_else(|| format!("no unit {u}"))?;
            let shares = StageProfile::new(table, unit.kind);
            let cost = StageCost::new(&unit.profile, &shares, stage.blocks.clone(), batch);
            *per_unit.entry(u).or_default() +=
                cost.total_ms() / f64::from(batch) / stage.units.len() as f64;
        }
    }
    Ok(per_unit.values().copied().fold(0.0, f64::max))
}

/// The cut tuple of `option` with the least loaded busiest unit (see the module docs).
pub fn profile_cuts(
    option: MappingOption,
    roles: &RoleUnits,
    units: &[PipelineUnit],
    table: &BlockTable,
    batch: u32,
) -> Result<Vec<usize>, String> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for cuts in option.all_cuts(table) {
        let load = bottleneck_ms(option, &cuts, roles, units, table, batch)?;
        if best.as_ref().is_none_or(|(b, _)| load < *b) {
            best = Some((load, cuts));
        }
    }
    best.map(|(_, cuts)| cuts)
        .ok_or_else(|| format!("option {option} has no valid cut points"))
}
