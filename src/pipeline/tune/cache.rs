//! Measured points, cached: every measurement goes through an `Evaluator`, which
//! answers repeated points from memory, counts distinct points measured, keeps them in
//! order for the report, and persists them to `DIR/cache.json` so that `--resume`
//! picks a search up where it stopped (and a second search over the same space is
//! free).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::pipeline::tune::measure::{Backend, Measured};
use crate::pipeline::tune::space::Point;

/// One cached measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The point.
    pub point: Point,
    /// What it measured.
    pub measured: Measured,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    /// Backend that measured the entries.
    backend: String,
    /// Fingerprint of the config the entries belong to.
    fingerprint: String,
    entries: Vec<Entry>,
}

/// Measures through a backend, with the cache in front.
pub struct Evaluator<'a> {
    backend: &'a mut dyn Backend,
    known: HashMap<String, Entry>,
    asked: HashSet<String>,
    /// Points this search asked for, in first-asked order.
    pub evaluated: Vec<Entry>,
    file: Option<PathBuf>,
    fingerprint: String,
    progress: ProgressBar,
    unsaved: usize,
    /// Points answered by the backend (not from the cache) in this run.
    pub measured_now: usize,
    /// Time spent in the backend.
    pub backend_seconds: f64,
}

impl<'a> Evaluator<'a> {
    /// An evaluator persisting to `file` (read first when `resume`).
    pub fn new(
        backend: &'a mut dyn Backend,
        file: Option<&Path>,
        resume: bool,
        fingerprint: String,
        progress: ProgressBar,
    ) -> anyhow::Result<Self> {
        let mut known = HashMap::new();
        if let (Some(path), true) = (file, resume) {
            if path.is_file() {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let cache: CacheFile = serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                if cache.backend == backend.name() && cache.fingerprint == fingerprint {
                    for entry in cache.entries {
                        known.insert(entry.point.key(), entry);
                    }
                } else {
                    tracing::warn!(
                        file = %path.display(),
                        "cache belongs to another backend or config; starting afresh"
                    );
                }
            }
        }
        Ok(Self {
            backend,
            known,
            asked: HashSet::new(),
            evaluated: Vec::new(),
            file: file.map(Path::to_path_buf),
            fingerprint,
            progress,
            unsaved: 0,
            measured_now: 0,
            backend_seconds: 0.0,
        })
    }

    /// The measurement of `point`: from the cache, or measured now.
    pub fn eval(&mut self, point: &Point) -> anyhow::Result<Measured> {
        let key = point.key();
        let measured = match self.known.get(&key) {
            Some(entry) => entry.measured.clone(),
            None => {
                let started = Instant::now();
                let m = self
                    .backend
                    .measure(point)
                    .with_context(|| format!("measuring {key}"))?;
                self.backend_seconds += started.elapsed().as_secs_f64();
                self.measured_now += 1;
                self.known.insert(
                    key.clone(),
                    Entry {
                        point: point.clone(),
                        measured: m.clone(),
                    },
                );
                self.unsaved += 1;
                if self.unsaved >= 2000 {
                    self.save()?;
                }
                m
            }
        };
        if self.asked.insert(key) {
            self.evaluated.push(Entry {
                point: point.clone(),
                measured: measured.clone(),
            });
            self.progress.inc(1);
        }
        Ok(measured)
    }

    /// Whether `point` was evaluated by this search already.
    pub fn seen(&self, point: &Point) -> bool {
        self.asked.contains(&point.key())
    }

    /// Writes the cache file.
    pub fn save(&mut self) -> anyhow::Result<()> {
        self.unsaved = 0;
        let Some(path) = &self.file else {
            return Ok(());
        };
        let mut entries: Vec<Entry> = self.known.values().cloned().collect();
        entries.sort_by(|a, b| a.point.cmp(&b.point));
        let file = CacheFile {
            backend: self.backend.name().to_string(),
            fingerprint: self.fingerprint.clone(),
            entries,
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&file)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Finishes the progress bar.
    pub fn finish(&self) {
        self.progress.finish_and_clear();
    }
}
