//! Fixed-bucket Prometheus histograms for the hot path.
//!
//! The Prometheus exporter behind the `metrics` facade pushes every sample, with a clock
//! read, into a lock-free list of blocks (an epoch pin, an allocation every 64 samples)
//! and folds the samples into buckets only at scrape or upkeep: about 30 ns a sample.
//! The unit actors record up to three histograms per batch and one per request, on the
//! thread the dispatcher shares with them, so that was most of what metrics cost.
//!
//! Here each writer (`LocalHistogram`) owns one shard of its series: per-bucket counts
//! and a sum that only it writes, with plain loads and stores (no read-modify-write, no
//! lock, no clock). A scrape reads every shard and renders true Prometheus histograms,
//! line for line as the exporter renders its own: cumulative `_bucket{le=...}` up to
//! `+Inf`, `_sum` and `_count`, every registered series even before its first sample.
//! A series keeps its shards for the life of the process, so its counts never go back
//! when a service is rebuilt (a later writer of the same series reuses a released shard).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// A histogram's name, help text and bucket upper bounds (ascending, `+Inf` implied).
#[derive(Debug)]
pub struct HistogramSpec {
    /// Metric name (the `_bucket`, `_sum` and `_count` series are derived from it).
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Bucket upper bounds, ascending.
    pub buckets: &'static [f64],
}

/// The series of the process, rendered at scrape time. `install` makes the global one
/// (done with the Prometheus recorder); until then every `LocalHistogram` is a no-op,
/// as the `metrics` handles are without a recorder.
#[derive(Debug, Default)]
pub struct HistogramRegistry {
    series: Mutex<Vec<Series>>,
}

#[derive(Debug)]
struct Series {
    spec: &'static HistogramSpec,
    labels: Vec<(&'static str, String)>,
    shards: Vec<Arc<Shard>>,
}

/// One writer's counts: per bucket (not cumulative; the last is `+Inf`) and the sum.
#[derive(Debug)]
struct Shard {
    claimed: AtomicBool,
    counts: Box<[AtomicU64]>,
    sum_bits: AtomicU64,
}

static GLOBAL: OnceLock<HistogramRegistry> = OnceLock::new();

impl HistogramRegistry {
    /// The global registry, created on first call: from then on `LocalHistogram::new`
    /// records into it. Call once with the Prometheus recorder.
    pub fn install() -> &'static HistogramRegistry {
        GLOBAL.get_or_init(HistogramRegistry::default)
    }

    /// The global registry, if installed.
    pub fn global() -> Option<&'static HistogramRegistry> {
        GLOBAL.get()
    }

    /// A writer for the series `spec` with these labels (registered at zero if new).
    pub fn histogram(
        &self,
        spec: &'static HistogramSpec,
        labels: &[(&'static str, String)],
    ) -> LocalHistogram {
        let mut all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match all
            .iter()
            .position(|s| std::ptr::eq(s.spec, spec) && s.labels == labels)
        {
            Some(index) => index,
            None => {
                all.push(Series {
                    spec,
                    labels: labels.to_vec(),
                    shards: Vec::new(),
                });
                all.len() - 1
            }
        };
        let series = &mut all[index];
        // Acquire: a reused shard's counts are those its last writer released.
        let free = series.shards.iter().find(|shard| {
            shard
                .claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        let shard = match free {
            Some(shard) => shard.clone(),
            None => {
                let shard = Arc::new(Shard {
                    claimed: AtomicBool::new(true),
                    counts: (0..=spec.buckets.len())
                        .map(|_| AtomicU64::new(0))
                        .collect(),
                    sum_bits: AtomicU64::new(0f64.to_bits()),
                });
                series.shards.push(shard.clone());
                shard
            }
        };
        LocalHistogram {
            target: Some((shard, spec.buckets)),
        }
    }

    /// Appends every series in the Prometheus text format, one family per name.
    pub fn render(&self, out: &mut String) {
        let all = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&'static HistogramSpec> = Vec::new();
        for series in all.iter() {
            if !names.iter().any(|spec| std::ptr::eq(*spec, series.spec)) {
                names.push(series.spec);
            }
        }
        for spec in names {
            let _ = writeln!(out, "# HELP {} {}", spec.name, spec.help);
            let _ = writeln!(out, "# TYPE {} histogram", spec.name);
            for series in all.iter().filter(|s| std::ptr::eq(s.spec, spec)) {
                series.render(out);
            }
            out.push('\n');
        }
    }
}

impl Series {
    fn render(&self, out: &mut String) {
        let mut counts = vec![0u64; self.spec.buckets.len() + 1];
        let mut sum = 0.0;
        for shard in &self.shards {
            for (total, count) in counts.iter_mut().zip(shard.counts.iter()) {
                *total += count.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(shard.sum_bits.load(Ordering::Relaxed));
        }
        let labels = render_labels(&self.labels);
        let separator = if labels.is_empty() { "" } else { "," };
        let name = self.spec.name;
        let mut cumulative = 0;
        for (bound, count) in self.spec.buckets.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += counts.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {cumulative}"
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// `key="value",...` with values escaped as the text format requires.
fn render_labels(labels: &[(&'static str, String)]) -> String {
    let mut text = String::new();
    for (index, (key, value)) in labels.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(key);
        text.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text
}

/// One writer of one series. `record` takes `&mut self`: its shard has one writer, so
/// a sample costs a bucket search and plain stores. Releases the shard when dropped.
#[derive(Debug)]
pub struct LocalHistogram {
    target: Option<(Arc<Shard>, &'static [f64])>,
}

impl LocalHistogram {
    /// A writer into the global registry, or a no-op one when none is installed.
    pub fn new(spec: &'static HistogramSpec, labels: &[(&'static str, String)]) -> Self {
        match HistogramRegistry::global() {
            Some(registry) => registry.histogram(spec, labels),
            None => Self::noop(),
        }
    }

    /// A writer that records nothing.
    pub fn noop() -> Self {
        Self { target: None }
    }

    /// Records one sample (Prometheus `le`: a sample equal to a bound counts in it; NaN
    /// counts only in `+Inf`, as the exporter does).
    #[inline]
    pub fn record(&mut self, value: f64) {
        let Some((shard, bounds)) = &self.target else {
            return;
        };
        // The bounds below the value, counted without branches (a binary search
        // mispredicts on every other step and costs more than these few compares).
        let index: usize = if value.is_nan() {
            bounds.len()
        } else {
            bounds.iter().map(|bound| usize::from(*bound < value)).sum()
        };
        // One writer (`&mut self`): load and store need no read-modify-write.
        let count = &shard.counts[index];
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = f64::from_bits(shard.sum_bits.load(Ordering::Relaxed)) + value;
        shard.sum_bits.store(sum.to_bits(), Ordering::Relaxed);
    }
}

impl Drop for LocalHistogram {
    fn drop(&mut self) {
        if let Some((shard, _)) = &self.target {
            // Release: the next writer of this shard sees every count recorded here.
            shard.claimed.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static WAIT: HistogramSpec = HistogramSpec {
        name: "test_wait_seconds",
        help: "Test wait",
        buckets: &[0.001, 0.01, 0.1],
    };

    fn labels(unit: &str) -> Vec<(&'static str, String)> {
        vec![("unit", unit.to_string()), ("engine", "null".to_string())]
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let registry = HistogramRegistry::default();
        let mut wait = registry.histogram(&WAIT, &labels("u0"));
        for value in [0.0005, 0.001, 0.005, 0.05, 0.5, 7.0] {
            wait.record(value);
        }
        let mut text = String::new();
        registry.render(&mut text);
        assert_eq!(
            text,
            "# HELP test_wait_seconds Test wait\n\
             # TYPE test_wait_seconds histogram\n\
             test_wait_seconds_bucket{unit=\"u0\",engine=\"null\",le=\"0.001\"} 2\n\
             test_wait_seconds_bucket{unit=\"u0\",engine=\"null\",le=\"0.01\"} 3\n\
             test_wait_seconds_bucket{unit=\"u0\",engine=\"null\",le=\"0.1\"} 4\n\
             test_wait_seconds_bucket{unit=\"u0\",engine=\"null\",le=\"+Inf\"} 6\n\
             test_wait_seconds_sum{unit=\"u0\",engine=\"null\"} 7.5565\n\
             test_wait_seconds_count{unit=\"u0\",engine=\"null\"} 6\n\n"
        );
    }

    #[test]
    fn writers_of_one_series_add_up_and_counts_survive_their_writers() {
        let registry = HistogramRegistry::default();
        let mut first = registry.histogram(&WAIT, &labels("u0"));
        let mut second = registry.histogram(&WAIT, &labels("u0"));
        let mut other = registry.histogram(&WAIT, &labels("u1"));
        first.record(0.002);
        second.record(0.002);
        other.record(0.2);
        drop(first);
        // A rebuilt writer reuses the released shard and goes on from its counts.
        let mut again = registry.histogram(&WAIT, &labels("u0"));
        again.record(0.002);
        let mut text = String::new();
        registry.render(&mut text);
        assert!(text.contains("test_wait_seconds_count{unit=\"u0\",engine=\"null\"} 3\n"));
        assert!(text.contains("test_wait_seconds_count{unit=\"u1\",engine=\"null\"} 1\n"));
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
        assert_eq!(registry.series.lock().unwrap()[0].shards.len(), 2);
    }

    #[test]
    fn a_registered_series_renders_at_zero_and_noop_records_nothing() {
        let registry = HistogramRegistry::default();
        let _idle = registry.histogram(&WAIT, &[]);
        let mut noop = LocalHistogram::noop();
        noop.record(1.0);
        let mut text = String::new();
        registry.render(&mut text);
        assert!(
            text.contains("test_wait_seconds_bucket{le=\"+Inf\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("test_wait_seconds_sum 0\n"), "{text}");
        assert!(text.contains("test_wait_seconds_count 0\n"), "{text}");
    }
}
