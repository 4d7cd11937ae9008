//! The actors' histograms (`mica_actors::metrics::HistogramRegistry`) in the exposition:
//! rendered line for line as the Prometheus exporter renders its own histograms, and
//! filled by a running service (every request's queue wait, every batch's size).

use std::collections::BTreeMap;
use std::path::Path;

use metrics_exporter_prometheus::PrometheusBuilder;
use mica::config::ResolvedConfig;
use mica::wiring::{self, RunOverrides};
use mica_actors::metrics::{
    HistogramRegistry, BATCH_DURATION_SECONDS, BATCH_SIZE, BATCH_SIZE_BUCKETS,
    BATCH_SLOWDOWN_RATIO, QUEUE_WAIT, QUEUE_WAIT_SECONDS, SECONDS_BUCKETS,
};
use mica_actors::{InferRequest, Service};

/// The lines of one metric family (from its `# HELP` to the blank line after it).
fn family(exposition: &str, name: &str) -> String {
    let start = exposition
        .find(&format!("# HELP {name} "))
        .unwrap_or_else(|| panic!("no {name} in:\n{exposition}"));
    let rest = &exposition[start..];
    let end = rest.find("\n\n").map_or(rest.len(), |end| end + 2);
    rest[..end].to_string()
}

/// Sample values by series (`name{labels}`), summed over the series that `filter` keeps.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn total(samples: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(prefix))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn actor_histograms_render_as_the_exporter_renders_them() {
    let values = [
        0.0, 0.00002, 0.00005, 0.00007, 0.0003, 0.001, 0.004, 0.2, 0.25, 3.0, 31.0, 1e9,
    ];
    let labels = vec![("unit", "gpu0".to_string()), ("engine", "null".to_string())];

    let recorder = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .unwrap()
        .build_recorder();
    let exporter = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!(QUEUE_WAIT_SECONDS, QUEUE_WAIT.help);
        let histogram = metrics::histogram!(QUEUE_WAIT_SECONDS, &labels);
        for value in values {
            histogram.record(value);
        }
    });

    let registry = HistogramRegistry::default();
    let mut local = registry.histogram(&QUEUE_WAIT, &labels);
    for value in values {
        local.record(value);
    }
    let mut ours = String::new();
    registry.render(&mut ours);

    let expected = family(&exporter.render(), QUEUE_WAIT_SECONDS);
    assert_eq!(ours, expected);
    // And the figures themselves: 12 samples, `le` inclusive, cumulative buckets.
    let figures = samples(&ours);
    let series = |suffix: &str, le: &str| {
        let le = if le.is_empty() {
            String::new()
        } else {
            format!(",le=\"{le}\"")
        };
        figures[&format!("{QUEUE_WAIT_SECONDS}_{suffix}{{unit=\"gpu0\",engine=\"null\"{le}}}")]
    };
    assert_eq!(series("bucket", "0.00005"), 3.0);
    assert_eq!(series("bucket", "0.0005"), 5.0);
    assert_eq!(series("bucket", "30"), 10.0);
    assert_eq!(series("bucket", "+Inf"), 12.0);
    assert_eq!(series("count", ""), 12.0);
    assert_eq!(series("sum", ""), values.iter().sum::<f64>());
}

#[test]
fn a_running_service_records_every_request_and_batch() {
    let metrics = mica::metrics::install_recorder().expect("installing the recorder");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/null.toml");
    let loaded = ResolvedConfig::load(&config).expect("config/null.toml loads");
    let setup = wiring::service_setup(&loaded, &RunOverrides::default()).expect("a setup");
    let requests = 300;
    actix::System::new().block_on(async move {
        let service = Service::start(setup).expect("the service starts");
        service.wait_ready().await.expect("the units load");
        let answers = futures::future::join_all((0..requests).map(|_| {
            service.submit(InferRequest {
                images: 1,
                data: None,
                priority: 0,
                timeout: None,
            })
        }))
        .await;
        assert!(answers.iter().all(Result::is_ok));
        service.shutdown(std::time::Duration::from_secs(5)).await;
    });

    let exposition = metrics.render();
    let figures = samples(&exposition);
    let requests = f64::from(requests);
    assert_eq!(total(&figures, "mica_queue_wait_seconds_count{"), requests);
    assert_eq!(total(&figures, "mica_batch_size_sum{"), requests);
    let batches = total(&figures, "mica_batches_total{");
    assert!(batches >= 1.0 && batches <= requests, "{batches} batches");
    assert_eq!(total(&figures, "mica_batch_size_count{"), batches);
    assert_eq!(
        total(&figures, "mica_batch_duration_seconds_count{"),
        batches
    );
    // The null units have no profile: their slowdown series exist, at zero.
    assert_eq!(total(&figures, "mica_batch_slowdown_ratio_count{"), 0.0);
    for unit in ["null0", "null1"] {
        let labels = format!("unit=\"{unit}\",engine=\"null\"");
        for (name, buckets) in [
            (QUEUE_WAIT_SECONDS, SECONDS_BUCKETS),
            (BATCH_DURATION_SECONDS, SECONDS_BUCKETS),
            (BATCH_SIZE, BATCH_SIZE_BUCKETS),
        ] {
            let mut last = 0.0;
            for le in buckets.iter().map(f64::to_string).chain(["+Inf".into()]) {
                let count = figures[&format!("{name}_bucket{{{labels},le=\"{le}\"}}")];
                assert!(count >= last, "{name} buckets are cumulative");
                last = count;
            }
            assert_eq!(last, figures[&format!("{name}_count{{{labels}}}")]);
        }
        assert!(figures.contains_key(&format!("{BATCH_SLOWDOWN_RATIO}_count{{{labels}}}")));
        // Sampled gauges: at rest after the drain.
        assert_eq!(figures[&format!("mica_in_flight_batches{{{labels}}}")], 0.0);
    }
    assert_eq!(figures["mica_queue_depth"], 0.0);
    assert_eq!(figures["mica_running_batches"], 0.0);
    // One family per name.
    let mut types: Vec<&str> = exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all, "a metric family rendered twice");
}
