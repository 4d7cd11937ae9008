//! `[[units]]`: the compute units, each with its kind, engine and profile, and the
//! checks that span units (one ONNX Runtime library, one TensorRT cache per unit).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mica_core::{Profile, UnitKind};
use mica_engines::{EngineSettings, UnitFacts};
use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// One `[[units]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// Unit id: the name used in reports, metrics labels and `--units`.
    pub id: String,
    /// Hardware kind: cpu, cuda_fp32, cuda_tf32, tensor_fp16, tensor_bf16, amp, dla.
    pub kind: UnitKind,
    /// What runs it, with that engine's settings: `{ type = "sim", jitter = 0.02 }`
    /// (emulated from its profile), `{ type = "null" }`, `{ type = "torch", model =
    /// "..." }`.
    pub engine: EngineSettings,
    /// DLA core number (kind `dla` only).
    #[serde(default)]
    pub core: Option<u8>,
    /// GPU index (GPU kinds; the GPU a DLA falls back to). Defaults to 0.
    #[serde(default)]
    pub device: Option<u32>,
    /// Stream workers (each its own thread, engine instance and CUDA stream).
    #[serde(default = "default_streams")]
    pub streams: u32,
    /// Largest batch the unit runs. Defaults to the profile's largest point, else 64.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Service-time profile file (required for `sim`; used by policies, `mica
    /// simulate` and `mica tune` for any engine).
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// Set false to keep the entry but not start the unit.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Staggers the streams under dynamic batching: when at least this many waiting
    /// images would all go in one batch, they go as one share per stream, started one
    /// after another a share's run time divided by the streams apart, so that the
    /// shares finish apart and the clients' answer-and-resubmit gap of one overlaps
    /// another's work. 0 (the default): never. For GPU units of two or more streams
    /// whose clients send small requests and wait for each answer; set it above half of
    /// `max_batch`, so that a share's clients coming back alone are not split again.
    #[serde(default)]
    pub stagger_min_images: u32,
}

fn default_streams() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

impl UnitConfig {
    /// The GPU the unit runs on or falls back to: `device`, else 0; `None` for the CPU.
    pub fn gpu_device(&self) -> Option<u32> {
        (self.kind != UnitKind::Cpu).then_some(self.device.unwrap_or(0))
    }
}

/// Largest batch any unit may be configured with.
pub const MAX_BATCH_LIMIT: u32 = 4096;
/// Most stream workers per unit.
pub const MAX_STREAMS: u32 = 64;

/// What loading made of one `[[units]]` entry (same index as `config.units`).
#[derive(Debug, Clone)]
pub struct ResolvedUnit {
    /// Largest batch the unit runs: `max_batch`, else the profile's largest point, else
    /// 64.
    pub max_batch: u32,
    /// The unit's profile, read.
    pub profile: Option<Arc<Profile>>,
}

/// Checks every unit and resolves its paths (against the config file's folder, by
/// `resolve`), its profile and its batch limit; then the checks across units.
pub(super) fn resolve_units(
    units: &mut [UnitConfig],
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Vec<ResolvedUnit>, Invalid> {
    let mut seen = HashSet::new();
    let mut resolved = Vec::with_capacity(units.len());
    for (index, unit) in units.iter_mut().enumerate() {
        if unit.id.is_empty()
            || !unit
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Invalid::new(
                format!("units[{index}].id"),
                format!("{:?}: ids are letters, digits, '.', '_' and '-'", unit.id),
            ));
        }
        if !seen.insert(unit.id.clone()) {
            return Err(Invalid::new(
                unit_key(index, unit, "id"),
                "the same id is used by two units",
            ));
        }
        resolved.push(unit.resolve(index, resolve)?);
    }
    check_onnx_units(units)?;
    if !units.iter().any(|u| u.enabled) {
        return Err(Invalid::new(
            "units",
            "no enabled unit: add at least one [[units]] entry",
        ));
    }
    Ok(resolved)
}

/// The key of `field` of unit `index`: `units[2] (dla0).streams`.
fn unit_key(index: usize, unit: &UnitConfig, field: &str) -> String {
    format!("units[{index}] ({}).{field}", unit.id)
}

impl UnitConfig {
    /// Checks this unit (entry `index`), resolves its paths, reads its profile and
    /// settles its batch limit.
    fn resolve(
        &mut self,
        index: usize,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<ResolvedUnit, Invalid> {
        let key = |unit: &Self, field: &str| unit_key(index, unit, field);
        if self.streams == 0 || self.streams > MAX_STREAMS {
            return Err(Invalid::new(
                key(self, "streams"),
                format!("must be between 1 and {MAX_STREAMS}, got {}", self.streams),
            ));
        }
        match (self.kind, self.core) {
            (UnitKind::Dla, None) => {
                return Err(Invalid::new(
                    key(self, "core"),
                    "a dla unit needs `core = 0` or `core = 1`",
                ))
            }
            (UnitKind::Dla, Some(core)) if core > 1 => {
                return Err(Invalid::new(
                    key(self, "core"),
                    format!("DLA cores are 0 and 1, got {core}"),
                ))
            }
            (kind, Some(_)) if kind != UnitKind::Dla => {
                return Err(Invalid::new(
                    key(self, "core"),
                    "only dla units have a core",
                ))
            }
            _ => {}
        }
        if self.kind == UnitKind::Cpu && self.device.is_some() {
            return Err(Invalid::new(
                key(self, "device"),
                "a cpu unit has no GPU device",
            ));
        }
        let profile = match &self.profile {
            Some(p) => {
                let path = resolve(p);
                let profile = Profile::from_file(&path)
                    .map_err(|e| Invalid::new(key(self, "profile"), e.to_string()))?;
                self.profile = Some(path);
                Some(Arc::new(profile))
            }
            None => None,
        };
        let facts = UnitFacts {
            kind: self.kind,
            dla_core: self.core,
            has_profile: profile.is_some(),
        };
        self.engine
            .validate(&facts)
            .map_err(|e| Invalid::new(key(self, &e.key), e.message))?;
        self.engine.resolve_paths(resolve, &self.id);
        let max_batch = self
            .max_batch
            .unwrap_or_else(|| profile.as_ref().map_or(64, |p| p.max_batch().max(1)));
        if max_batch == 0 || max_batch > MAX_BATCH_LIMIT {
            return Err(Invalid::new(
                key(self, "max_batch"),
                format!("must be between 1 and {MAX_BATCH_LIMIT}, got {max_batch}"),
            ));
        }
        if self.stagger_min_images > 0 {
            if self.streams < 2 {
                return Err(Invalid::new(
                    key(self, "stagger_min_images"),
                    format!(
                        "staggers a batch over the unit's streams, but this unit has {} \
                         stream; give it `streams = 2` or more, or remove the key",
                        self.streams
                    ),
                ));
            }
            if self.stagger_min_images < self.streams || self.stagger_min_images > max_batch {
                return Err(Invalid::new(
                    key(self, "stagger_min_images"),
                    format!(
                        "must be between the unit's streams ({}) and its max_batch \
                         ({max_batch}), or 0 for never, got {}",
                        self.streams, self.stagger_min_images
                    ),
                ));
            }
        }
        Ok(ResolvedUnit { max_batch, profile })
    }
}

/// What onnx units must agree on across the config: one ONNX Runtime library per
/// process, and a TensorRT engine cache folder of each unit's own (ONNX Runtime issue
/// #26680: an engine cached for DLA core 1 was loaded for core 0 from a shared folder).
fn check_onnx_units(units: &[UnitConfig]) -> Result<(), Invalid> {
    let mut library: Option<(usize, &Path)> = None;
    let mut caches: Vec<(usize, &Path)> = Vec::new();
    for (index, unit) in units.iter().enumerate().filter(|(_, u)| u.enabled) {
        let EngineSettings::Onnx(onnx) = &unit.engine else {
            continue;
        };
        let key = |field: &str| unit_key(index, unit, &format!("engine.{field}"));
        if let Some(model) = onnx.model() {
            if !model.exists() {
                return Err(Invalid::new(
                    key("model"),
                    format!(
                        "{} does not exist (scripts/export_model.py --onnx writes ONNX models)",
                        model.display()
                    ),
                ));
            }
        }
        if let Some(path) = onnx.library.as_deref() {
            match library {
                Some((first, other)) if other != path => {
                    return Err(Invalid::new(
                        key("library"),
                        format!(
                            "{} differs from units[{first}]'s {}: a process loads one ONNX \
                             Runtime library, give every onnx unit the same one",
                            path.display(),
                            other.display()
                        ),
                    ))
                }
                Some(_) => {}
                None => library = Some((index, path)),
            }
        }
        if let Some(cache) = onnx.engine_cache.as_deref() {
            if let Some((first, _)) = caches.iter().find(|(_, c)| *c == cache) {
                return Err(Invalid::new(
                    key("engine_cache"),
                    format!(
                        "{} is also units[{first}]'s engine cache: each TensorRT unit needs a \
                         folder of its own (ONNX Runtime issue #26680 loads an engine built \
                         for one DLA core on the other from a shared cache)",
                        cache.display()
                    ),
                ));
            }
            caches.push((index, cache));
        }
    }
    Ok(())
}
