//! Hot policy swap: on SIGHUP and whenever the config file changes, re-read it, check
//! it, and swap the scheduling policy (and its parameters) in the running service.
//!
//! The swap is a message to the dispatcher (`Service::set_policy`): queued and running
//! requests are untouched and the next decision is the new policy's, so nothing is
//! dropped or stalled. A file that does not load or validate keeps the running config;
//! the reason is logged (`warn!`) and counted (`mica_config_reloads_total{result=
//! "invalid"}`). Only the policy changes live: a reload that changes other keys (units,
//! ports, batching) logs that they need a restart.
//!
//! The folder is watched, not the file, because editors save by writing a new file and
//! renaming it over the old one. Events within `DEBOUNCE` are taken as one save.
//!
//! `PolicyControl` is also what the admin endpoint (`crate::admin`) reads and sets.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use metrics::Counter;
use mica_actors::Service;
use mica_core::ContentionConfig;
use mica_policies::PolicyConfig;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{AdminToken, Config, ResolvedConfig};
use crate::metrics::{CONFIG_RELOADS_TOTAL, RELOAD_RESULTS};
use crate::systemd;

/// Events closer together than this are one save.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Where the running policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The config file (at start or by a reload).
    Config,
    /// `mica serve --policy`.
    CommandLine,
    /// `PUT /v2/admin/policy`.
    Admin,
}

/// The running policy, as written and as given to the dispatcher.
#[derive(Debug, Clone)]
struct Active {
    written: PolicyConfig,
    resolved: PolicyConfig,
    contention: ContentionConfig,
    source: PolicySource,
    config: Config,
    /// The admin token in effect (read at start; a new one needs a restart).
    admin_token: Option<AdminToken>,
}

/// What `GET /v2/admin/policy` answers.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySnapshot {
    /// The policy's name.
    pub name: &'static str,
    /// The policy and its parameters, as written (contention model left out when it
    /// is the platform's).
    pub policy: PolicyConfig,
    /// Where it came from.
    pub source: PolicySource,
}

/// The result of setting a policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    /// The policy running before.
    pub previous: String,
    /// Whether anything changed (false: the same policy and parameters).
    pub changed: bool,
    /// The policy now.
    pub policy: PolicySnapshot,
}

/// Why a policy could not be set.
#[derive(Debug, Error)]
pub enum SetPolicyError {
    /// The policy's parameters are wrong.
    #[error("invalid policy: {0}")]
    Invalid(String),
    /// The service is stopping.
    #[error("the service is stopping: {0}")]
    Stopping(String),
}

/// Reads and swaps the running policy; one swap at a time.
#[derive(Debug)]
pub struct PolicyControl {
    service: Service,
    active: tokio::sync::Mutex<Active>,
}

impl PolicyControl {
    /// Control of `service`, which was started with `resolved` (the config's policy,
    /// or `written` from the command line).
    pub fn new(
        service: Service,
        loaded: &ResolvedConfig,
        written: PolicyConfig,
        resolved: PolicyConfig,
        source: PolicySource,
    ) -> Self {
        Self {
            service,
            active: tokio::sync::Mutex::new(Active {
                written,
                resolved,
                contention: loaded.contention.clone(),
                source,
                config: loaded.config.clone(),
                admin_token: loaded.admin_token.clone(),
            }),
        }
    }

    /// The running policy.
    pub async fn current(&self) -> PolicySnapshot {
        let active = self.active.lock().await;
        snapshot(&active)
    }

    /// Sets `written` (its contention model resolved against the running platform's)
    /// unless it is already running.
    pub async fn set(
        &self,
        written: PolicyConfig,
        source: PolicySource,
    ) -> Result<PolicyChange, SetPolicyError> {
        let mut active = self.active.lock().await;
        let contention = active.contention.clone();
        self.swap(&mut active, written, contention, source).await
    }

    async fn swap(
        &self,
        active: &mut Active,
        written: PolicyConfig,
        contention: ContentionConfig,
        source: PolicySource,
    ) -> Result<PolicyChange, SetPolicyError> {
        written.validate().map_err(SetPolicyError::Invalid)?;
        let mut resolved = written.clone();
        resolved.resolve_contention(&contention);
        resolved.validate().map_err(SetPolicyError::Invalid)?;
        let previous = active.resolved.name().to_string();
        if resolved == active.resolved {
            active.written = written;
            active.source = source;
            return Ok(PolicyChange {
                previous,
                changed: false,
                policy: snapshot(active),
            });
        }
        self.service
            .set_policy(resolved.clone())
            .await
            .map_err(|e| SetPolicyError::Stopping(e.to_string()))?;
        active.written = written;
        active.resolved = resolved;
        active.contention = contention;
        active.source = source;
        Ok(PolicyChange {
            previous,
            changed: true,
            policy: snapshot(active),
        })
    }

    /// Applies a freshly loaded config: its policy, resolved against its platform.
    async fn apply(&self, loaded: &ResolvedConfig) -> Result<PolicyChange, SetPolicyError> {
        let mut active = self.active.lock().await;
        let restart = restart_keys(
            &active.config,
            active.admin_token.as_ref().map(AdminToken::secret),
            &loaded.config,
            loaded.admin_token.as_ref().map(AdminToken::secret),
        );
        if !restart.is_empty() {
            warn!(
                keys = %restart.join(", "),
                "config reload: these changes take effect at the next restart"
            );
        }
        active.config = loaded.config.clone();
        let written = loaded.config.scheduler.policy.clone();
        self.swap(
            &mut active,
            written,
            loaded.contention.clone(),
            PolicySource::Config,
        )
        .await
    }
}

fn snapshot(active: &Active) -> PolicySnapshot {
    PolicySnapshot {
        name: active.written.name(),
        policy: active.written.clone(),
        source: active.source,
    }
}

/// What a reload from `old` (whose admin token was `old_token`) to `new` (`new_token`)
/// cannot apply live: the differing keys, and `admin.token` when the token in effect
/// changed. The token is compared resolved, because it may live in a file whose
/// contents changed under the same config, and it is never serialised (so never shown).
fn restart_keys(
    old: &Config,
    old_token: Option<&str>,
    new: &Config,
    new_token: Option<&str>,
) -> Vec<String> {
    let mut keys = keys_needing_restart(old, new);
    if old_token != new_token && !keys.iter().any(|k| k == "admin.token") {
        keys.push("admin.token".into());
    }
    keys
}

/// Sections (and scheduler keys) that differ and are not applied live.
fn keys_needing_restart(old: &Config, new: &Config) -> Vec<String> {
    let as_json = |config: &Config| {
        let mut value = serde_json::to_value(config).unwrap_or_default();
        if let Some(scheduler) = value.get_mut("scheduler").and_then(|s| s.as_object_mut()) {
            scheduler.remove("policy");
        }
        value
    };
    let (old, new) = (as_json(old), as_json(new));
    let (Some(old), Some(new)) = (old.as_object(), new.as_object()) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (section, value) in new {
        match (old.get(section), value) {
            (Some(serde_json::Value::Object(before)), serde_json::Value::Object(after)) => {
                for (key, v) in after {
                    if before.get(key) != Some(v) {
                        keys.push(format!("{section}.{key}"));
                    }
                }
            }
            (before, after) if before != Some(after) => keys.push(section.clone()),
            _ => {}
        }
    }
    keys
}

/// Counts of reloads by result (also exported as `mica_config_reloads_total`).
#[derive(Debug)]
pub struct ReloadStats {
    counts: [AtomicU64; 4],
    counters: Vec<Counter>,
}

impl Default for ReloadStats {
    fn default() -> Self {
        Self {
            counts: Default::default(),
            counters: RELOAD_RESULTS
                .iter()
                .map(|result| {
                    let counter = metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => *result);
                    counter.increment(0);
                    counter
                })
                .collect(),
        }
    }
}

/// What one reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The policy changed.
    Applied,
    /// The file loaded; the policy was already running.
    Unchanged,
    /// The file did not load or validate; the running config stays.
    Invalid,
    /// The service would not take the policy (stopping).
    Failed,
}

impl ReloadResult {
    fn index(self) -> usize {
        match self {
            ReloadResult::Applied => 0,
            ReloadResult::Unchanged => 1,
            ReloadResult::Invalid => 2,
            ReloadResult::Failed => 3,
        }
    }
}

impl ReloadStats {
    fn record(&self, result: ReloadResult) {
        self.counts[result.index()].fetch_add(1, Ordering::Relaxed);
        self.counters[result.index()].increment(1);
    }

    /// Reloads that ended with `result`.
    pub fn count(&self, result: ReloadResult) -> u64 {
        self.counts[result.index()].load(Ordering::Relaxed)
    }
}

/// What triggers a reload.
#[derive(Debug, Clone, Copy)]
pub struct ReloadOptions {
    /// Reload on SIGHUP.
    pub on_sighup: bool,
    /// Reload when the config file changes.
    pub on_file_change: bool,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        Self {
            on_sighup: true,
            on_file_change: true,
        }
    }
}

/// The running reloader; stops watching when dropped.
pub struct Reloader {
    stats: Arc<ReloadStats>,
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("stats", &self.stats)
            .finish()
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reloader {
    /// Reload counts so far.
    pub fn stats(&self) -> &ReloadStats {
        &self.stats
    }
}

/// Starts reloading `path` into `control`. Call inside the actix system (or a tokio
/// runtime with signal and time drivers).
pub fn spawn(
    path: &Path,
    control: Arc<PolicyControl>,
    options: ReloadOptions,
) -> anyhow::Result<Reloader> {
    let path = path.to_path_buf();
    let (trigger, mut triggers) = mpsc::channel::<&'static str>(1);
    let watcher = if options.on_file_change {
        Some(watch_file(&path, trigger.clone())?)
    } else {
        None
    };
    let mut hangup = if options.on_sighup {
        Some(
            actix_rt::signal::unix::signal(actix_rt::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?,
        )
    } else {
        None
    };
    let stats = Arc::new(ReloadStats::default());
    let counting = stats.clone();
    let task = actix_rt::spawn(async move {
        loop {
            let cause = tokio::select! {
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                // Closed when no file is watched: the branch is then disabled.
                Some(cause) = triggers.recv() => cause,
                else => break,
            };
            // One save is often several events (write, rename, chmod): wait them out.
            tokio::time::sleep(DEBOUNCE).await;
            while triggers.try_recv().is_ok() {}
            let result = reload_once(&path, &control, cause).await;
            counting.record(result);
        }
    });
    drop(trigger);
    Ok(Reloader {
        stats,
        _watcher: watcher,
        task,
    })
}

fn watch_file(
    path: &Path,
    trigger: mpsc::Sender<&'static str>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let folder = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = absolute.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        let relevant = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_))
            && event
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
        if relevant {
            // Full: a reload is already pending, which will read this save too.
            let _ = trigger.try_send("file change");
        }
    })
    .context("cannot start the config file watcher")?;
    watcher
        .watch(&folder, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", folder.display()))?;
    info!(folder = %folder.display(), "watching the config file for changes");
    Ok(watcher)
}

async fn reload_once(path: &Path, control: &PolicyControl, cause: &str) -> ReloadResult {
    systemd::reloading();
    let owned = path.to_path_buf();
    let loaded = match tokio::task::spawn_blocking(move || ResolvedConfig::load(&owned)).await {
        Ok(loaded) => loaded,
        Err(join) => {
            warn!(error = %join, "config reload: the loading task failed");
            systemd::ready();
            return ReloadResult::Failed;
        }
    };
    let result = match loaded {
        Err(error) => {
            warn!(%cause, %error, "config reload: invalid config; keeping the running one");
            ReloadResult::Invalid
        }
        Ok(loaded) => match control.apply(&loaded).await {
            Ok(change) if change.changed => {
                info!(%cause, from = %change.previous, to = change.policy.name, "config reload: policy swapped");
                ReloadResult::Applied
            }
            Ok(change) => {
                debug!(%cause, policy = change.policy.name, "config reload: policy unchanged");
                ReloadResult::Unchanged
            }
            Err(SetPolicyError::Invalid(message)) => {
                warn!(%cause, error = %message, "config reload: invalid policy; keeping the running one");
                ReloadResult::Invalid
            }
            Err(error) => {
                warn!(%cause, %error, "config reload failed");
                ReloadResult::Failed
            }
        },
    };
    systemd::ready();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_name_what_changed_beside_the_policy() {
        let old: Config =
            toml::from_str("[scheduler]\npolicy = { type = \"round_robin\" }\n").unwrap();
        let mut new = old.clone();
        new.scheduler.policy = PolicyConfig::LeastLoaded;
        assert!(keys_needing_restart(&old, &new).is_empty());
        new.scheduler.max_queue_delay_us += 1;
        new.server.port += 1;
        let keys = keys_needing_restart(&old, &new);
        assert!(
            keys.contains(&"scheduler.max_queue_delay_us".to_string()),
            "{keys:?}"
        );
        assert!(keys.contains(&"server.port".to_string()), "{keys:?}");
    }

    #[test]
    fn a_changed_admin_token_needs_a_restart_and_its_value_is_never_named() {
        let old: Config =
            toml::from_str("[admin]\ntoken = \"old-secret-0123456789abcdef\"\n").unwrap();
        let new: Config =
            toml::from_str("[admin]\ntoken = \"new-secret-fedcba9876543210\"\n").unwrap();
        let (old_token, new_token) = (old.admin.token.clone(), new.admin.token.clone());
        let keys = restart_keys(&old, old_token.as_deref(), &new, new_token.as_deref());
        assert_eq!(keys, ["admin.token"], "{keys:?}");
        let logged = serde_json::to_string(&new).unwrap();
        assert!(
            !logged.contains("secret"),
            "the token is never serialised: {logged}"
        );
        // The same token (here: the same file contents) is no change.
        assert!(restart_keys(&old, old_token.as_deref(), &old, old_token.as_deref()).is_empty());
    }
}
