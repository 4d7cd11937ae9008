//! Loading: from the file to a [`ResolvedConfig`], the one function every command
//! uses (`serve`, `check`, `bench`, `simulate`, `profile`, `calibrate`, `tune`,
//! `experiment`, `units`, the hot reload).
//!
//! The file is read through the `config` crate, so that
//! `MICA__SCHEDULER__QUEUE_CAPACITY=128` overrides `[scheduler] queue_capacity`; then
//! every section is validated, relative paths (profiles, model files, label and token
//! files, contention files) are resolved against the config file's folder, the
//! profiles and contention models are read, each unit's batch limit is settled, the
//! admin token is read and the pipeline is built and checked. What `mica serve` would
//! refuse at start, loading refuses, with the same [`ConfigError`].

use std::path::{Path, PathBuf};

use mica_core::ContentionConfig;

use super::admin::AdminToken;
use super::error::{parse_error, ConfigError, Invalid};
use super::file::Config;
use super::pipeline::ResolvedPipeline;
use super::serve::Labels;
use super::units::{resolve_units, ResolvedUnit};

/// A config loaded from a file, validated, with everything it names read.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The config as written, its relative paths resolved.
    pub config: Config,
    /// What loading made of each unit: its batch limit and profile (same order as
    /// `config.units`).
    pub units: Vec<ResolvedUnit>,
    /// The platform's contention model.
    pub contention: ContentionConfig,
    /// The model sim units emulate, when it differs (`emulated_contention_file`).
    pub emulated_contention: Option<ContentionConfig>,
    /// The admin endpoint's token (`None`: no admin endpoint).
    pub admin_token: Option<AdminToken>,
    /// The `[pipeline]`, built over the units.
    pub pipeline: Option<ResolvedPipeline>,
}

impl ResolvedConfig {
    /// Reads, overrides from `MICA__*` variables, resolves and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(Invalid::new("(file)", "no such config file").in_file(path));
        }
        let config: Config = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("MICA")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| parse_error(&e).in_file(path))?;
        Self::from_config(path, config)
    }

    /// Resolves and validates an already parsed config as if read from `path`.
    pub fn from_config(path: &Path, config: Config) -> Result<Self, ConfigError> {
        resolve(path, config).map_err(|e| e.in_file(path))
    }

    /// The model the sim engine and the simulator emulate.
    pub fn emulated_contention(&self) -> &ContentionConfig {
        self.emulated_contention
            .as_ref()
            .unwrap_or(&self.contention)
    }
}

fn resolve(path: &Path, mut config: Config) -> Result<ResolvedConfig, Invalid> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve_path = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    config.scheduler.validate()?;
    config.server.validate()?;
    config.model.validate()?;

    let platform = &config.platform;
    let contention = match (&platform.contention, &platform.contention_file) {
        (Some(_), Some(_)) => {
            return Err(Invalid::new(
                "platform",
                "give either contention or contention_file, not both",
            ))
        }
        (Some(c), None) => {
            c.validate()
                .map_err(|m| Invalid::under("platform.contention", &m))?;
            c.clone()
        }
        (None, Some(f)) => read_contention(&resolve_path(f), "platform.contention_file")?,
        (None, None) => ContentionConfig::None,
    };
    let emulated_contention = match &platform.emulated_contention_file {
        Some(f) => Some(read_contention(
            &resolve_path(f),
            "platform.emulated_contention_file",
        )?),
        None => None,
    };
    let admin_token = config.admin.resolve_token(path)?;

    if let Some(labels) = &config.server.label_file {
        let labels = resolve_path(labels);
        Labels::load(&labels)?;
        config.server.label_file = Some(labels);
    }
    let units = resolve_units(&mut config.units, &resolve_path)?;
    let pipeline = match &config.pipeline {
        Some(pipeline) => {
            Some(pipeline.resolve(&config.units, &units, &contention, &config.model)?)
        }
        None => None,
    };
    Ok(ResolvedConfig {
        path: path.to_path_buf(),
        config,
        units,
        contention,
        emulated_contention,
        admin_token,
        pipeline,
    })
}

/// A contention model from a file, validated; the error is `key`'s.
fn read_contention(path: &Path, key: &str) -> Result<ContentionConfig, Invalid> {
    let at = |m: String| Invalid::new(key, format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let contention: ContentionConfig = toml::from_str(&text).map_err(|e| at(e.to_string()))?;
    contention.validate().map_err(at)?;
    Ok(contention)
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn syntax_errors_do_not_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[admin]\ntoken = \"s3cr3t-value\n",
            "[admin]\ntoken = s3cr3t-value\n",
            "[admin]\ntoken = 12345678901234567890\n",
        ] {
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, text).unwrap();
            let error = ResolvedConfig::load(&path).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(!error.contains("1234567890"), "{error}");
        }
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[admin]\ntoken = \"s3cr3t-value\n").unwrap();
        let error = ResolvedConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "the position stays: {error}");
    }

    #[test]
    fn a_short_token_is_refused_without_being_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.toml");
        std::fs::write(&path, "[admin]\ntoken = \"s3cr3t\"\n").unwrap();
        let error = ResolvedConfig::load(&path).unwrap_err();
        assert_eq!(error.key, "admin.token");
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }
}
