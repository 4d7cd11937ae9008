//! `engine = { type = "torch", model = ..., ... }`: the TorchScript engine's settings.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::engine_settings::SettingsError;

/// Settings of a unit run by libtorch (feature `torch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchEngineConfig {
    /// The TorchScript file; in a pipeline, the folder of its `block_<i>.pt` files
    /// (`scripts/export_model.py --stages`). Relative to the config file.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Capture CUDA graphs per batch size where the model allows.
    #[serde(default)]
    pub cuda_graphs: bool,
    /// Batches run at load before the unit reports ready.
    #[serde(default = "default_warmup_batches")]
    pub warmup_batches: u32,
}

pub(super) fn default_warmup_batches() -> u32 {
    3
}

impl TorchEngineConfig {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.model.is_none() {
            return Err(SettingsError::new(
                "engine.model",
                "a torch unit needs a TorchScript model file (`model = \"...\"`)",
            ));
        }
        Ok(())
    }

    /// The model file, for a whole network.
    pub fn model(&self) -> Option<&Path> {
        self.model.as_deref()
    }

    /// The block files of a pipeline stage running `blocks`: `<model>/block_<i>.pt`.
    pub fn stage_models(&self, blocks: Range<usize>) -> Result<Vec<PathBuf>, String> {
        let dir = self.model.as_ref().ok_or_else(|| {
            "a torch unit of a pipeline needs `engine.model`, the folder of block_<i>.pt \
             files (scripts/export_model.py --stages)"
                .to_string()
        })?;
        Ok(blocks.map(|b| dir.join(format!("block_{b}.pt"))).collect())
    }
}
