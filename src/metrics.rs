//! The Prometheus recorder behind the `metrics` facade: installed once per process,
//! with every histogram's buckets declared here (names and buckets come from the crates
//! that record them).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the global Prometheus recorder and registers every metric description.
/// Returns the handle that renders the exposition text.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            mica_actors::metrics::SECONDS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(mica_actors::metrics::BATCH_SIZE.to_string()),
            mica_actors::metrics::BATCH_SIZE_BUCKETS,
        )?;
    let handle = builder.install_recorder()?;
    mica_actors::metrics::describe();
    Ok(handle)
}
