//! Gauge handles resolved once per label set, so a sample costs a map lookup on a
//! small map, not a registry lookup.

use std::collections::HashMap;

use metrics::Gauge;

/// A metric name and its label pairs.
type Key = (&'static str, Vec<(&'static str, String)>);

/// Gauges of one source, keyed by metric name and label values.
#[derive(Debug, Default)]
pub struct Gauges {
    cache: HashMap<Key, Gauge>,
}

impl Gauges {
    /// Sets `name{labels}` to `value`.
    pub fn set(&mut self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let key: Vec<(&'static str, String)> =
            labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        self.cache
            .entry((name, key))
            .or_insert_with_key(|(name, labels)| {
                let owned: Vec<(&'static str, String)> = labels.clone();
                metrics::gauge!(*name, owned.as_slice())
            })
            .set(value);
    }
}
