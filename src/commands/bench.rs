//! `mica bench`: start the service in-process and offer it load.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use mica_actors::{Service, ServiceSetup};
use mica_core::UnitSpec;
use mica_policies::PolicyConfig;

use crate::bench::{self, BenchOptions, Load, Stop, Target};
use crate::bench_context::{Context, Setting, Source};
use crate::bench_http::HttpTarget;
use crate::cli::RunArgs;
use crate::config::ResolvedConfig;
use crate::experiment::run::RunPlan;
use crate::wiring::{self, RunOverrides};
use mica_core::RunReport;

/// Overrides from the shared run arguments.
pub fn overrides(run: &RunArgs) -> anyhow::Result<RunOverrides> {
    let policy = match &run.policy {
        Some(name) => {
            Some(PolicyConfig::from_name(name).map_err(|m| anyhow::anyhow!("--policy: {m}"))?)
        }
        None => None,
    };
    Ok(RunOverrides {
        policy,
        units: run.units.clone(),
        batch_size: run.batch_size,
    })
}

/// The offered load (`None` when the arguments give none: the caller applies its
/// default) and stop rule from the shared run arguments.
pub fn load_and_stop(run: &RunArgs) -> anyhow::Result<(Option<Load>, Stop)> {
    let load = match (run.concurrency, run.rate) {
        (_, Some(rate)) if !(rate.is_finite() && rate > 0.0) => {
            anyhow::bail!("--rate must be a positive number of requests per second, got {rate}")
        }
        (_, Some(rate)) => Some(Load::Open { rate }),
        (Some(0), None) => anyhow::bail!("--concurrency must be at least 1"),
        (Some(concurrency), None) => Some(Load::Closed { concurrency }),
        (None, None) => None,
    };
    let stop = match (run.duration, run.requests) {
        (_, Some(0)) => anyhow::bail!("--requests must be at least 1"),
        (_, Some(n)) => Stop::Requests(n),
        (Some(d), None) if d.is_zero() => anyhow::bail!("--duration must be longer than 0"),
        (Some(d), None) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    Ok((load, stop))
}

/// The run's load: the one given, else the default that keeps every unit of `setup`
/// busy at its maximum batch (`bench::saturating_concurrency`).
pub fn load_or_default(load: Option<Load>, setup: &ServiceSetup, run: &RunArgs) -> Load {
    load.unwrap_or_else(|| {
        let specs: Vec<UnitSpec> = setup.units.iter().map(|u| u.spec.clone()).collect();
        Load::Closed {
            concurrency: bench::saturating_concurrency(&specs, run.batch_size.unwrap_or(1)),
        }
    })
}

/// How `mica bench` runs, beyond the shared run arguments.
#[derive(Debug, Clone)]
pub struct How {
    /// Time at the start whose requests are not counted.
    pub warmup: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// Record metrics.
    pub metrics: bool,
    /// Drive this server over HTTP instead of an in-process service.
    pub url: Option<String>,
    /// Model to request over HTTP.
    pub model: String,
    /// Concurrency levels to run one after the other.
    pub sweep: Option<Vec<usize>>,
    /// Measure the static baseline and the single units (a few seconds each) instead
    /// of predicting them with the simulator.
    pub compare: bool,
}

/// Runs the command.
pub fn run(config: &Path, run: &RunArgs, how: &How) -> anyhow::Result<()> {
    let (load, stop) = load_and_stop(run)?;
    if how.sweep.as_ref().is_some_and(|levels| levels.contains(&0)) {
        anyhow::bail!("--sweep: concurrency levels must be at least 1");
    }
    let loads = |load: Load| -> Vec<Load> {
        match &how.sweep {
            Some(levels) => levels
                .iter()
                .map(|c| Load::Closed { concurrency: *c })
                .collect(),
            None => vec![load],
        }
    };
    match &how.url {
        Some(url) => {
            if how.compare {
                anyhow::bail!("--compare runs the config's units in-process; with --url the server's config decides");
            }
            let loads = loads(load.unwrap_or(Load::Closed {
                concurrency: bench::HTTP_DEFAULT_CONCURRENCY,
            }));
            let reports = run_http(url, &how.model, run, how, &loads, stop)?;
            print_reports(run.json, &loads, &reports, None)
        }
        None => run_in_process(config, run, how, load, loads, stop),
    }
}

fn options(
    run: &RunArgs,
    how: &How,
    load: Load,
    stop: Stop,
    seed: u64,
    policy: &str,
) -> BenchOptions {
    BenchOptions {
        load,
        stop,
        warmup: how.warmup,
        images_per_request: run.batch_size.unwrap_or(1),
        progress: how.progress,
        seed,
        policy: policy.to_string(),
    }
}

fn run_in_process(
    config: &Path,
    run: &RunArgs,
    how: &How,
    load: Option<Load>,
    loads: impl FnOnce(Load) -> Vec<Load>,
    stop: Stop,
) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(config)?;
    let overrides = overrides(run)?;
    let setup = wiring::service_setup(&loaded, &overrides)?;
    let loads = loads(load_or_default(load, &setup, run));
    let labels = bench::unit_labels(&setup);
    let seed = loaded.config.scheduler.seed;
    let policy = setup.policy.name().to_string();
    let _metrics = if how.metrics && loaded.config.metrics.enabled {
        Some(crate::metrics::install_recorder().context("installing the metrics recorder")?)
    } else {
        None
    };
    let all: Vec<BenchOptions> = loads
        .iter()
        .map(|load| options(run, how, *load, stop, seed, &policy))
        .collect();
    let ids: Vec<String> = labels.iter().map(|(id, _, _)| id.clone()).collect();
    let service_ids = ids.clone();
    let (reports, search) = actix::System::new().block_on(async move {
        let service = Service::start(setup)?;
        if let Err(error) = service.wait_settled().await {
            // Measure the units that loaded; the table marks the others offline.
            let status = service.status().await?;
            if status.units.iter().all(|u| u.offline) {
                return Err(error.into());
            }
            eprintln!("warning: {error}; measuring the other units (the table marks it offline)");
        }
        let target = bench::in_process(service.clone());
        let mut reports = Vec::new();
        let mut search = None;
        for options in &all {
            let mut report = bench::run(&target, labels.clone(), options).await;
            let status = service.status().await?;
            report.explain_idle(service_ids.iter().map(String::as_str).zip(status.units));
            search = status.search;
            reports.push(report);
        }
        service.shutdown(Duration::from_secs(5)).await;
        Ok::<_, anyhow::Error>((reports, search))
    })?;
    // The references run over the run's measured window (a run stopped after a
    // number of requests has one only once it ran).
    let context = match (&reports[..], &loads[..]) {
        ([report], [load]) => {
            let plan = RunPlan {
                load: *load,
                duration: Duration::from_secs_f64(report.duration_s.max(1e-3)),
                warmup: how.warmup,
                images_per_request: run.batch_size.unwrap_or(1),
                timeout: None,
            };
            let setting = Setting {
                loaded: &loaded,
                overrides: &overrides,
                plan,
                units: ids,
            };
            let source = if how.compare {
                Source::Measured
            } else {
                Source::Predicted
            };
            Some(Context::build(&setting, source, search))
        }
        _ => None,
    };
    print_reports(run.json, &loads, &reports, context.as_ref())
}

fn run_http(
    url: &str,
    model: &str,
    run: &RunArgs,
    how: &How,
    loads: &[Load],
    stop: Stop,
) -> anyhow::Result<Vec<RunReport>> {
    if run.policy.is_some() || run.units.is_some() {
        anyhow::bail!("--policy and --units configure an in-process service; with --url the server's config decides");
    }
    let all: Vec<BenchOptions> = loads
        .iter()
        .map(|load| options(run, how, *load, stop, 42, "server's"))
        .collect();
    actix::System::new().block_on(async move {
        let target: Target = if crate::bench_grpc::is_grpc(url) {
            std::rc::Rc::new(crate::bench_grpc::GrpcTarget::connect(url, model).await?)
        } else {
            std::rc::Rc::new(HttpTarget::connect(url, model).await?)
        };
        let mut reports = Vec::new();
        for options in &all {
            let mut report = bench::run(&target, Vec::new(), options).await;
            report.mode = format!("bench --url {url}");
            reports.push(report);
        }
        Ok::<_, anyhow::Error>(reports)
    })
}

fn print_reports(
    json: bool,
    loads: &[Load],
    reports: &[RunReport],
    context: Option<&Context>,
) -> anyhow::Result<()> {
    if let [report] = reports {
        if json {
            let mut value = serde_json::to_value(report)?;
            if let (Some(context), Some(object)) = (context, value.as_object_mut()) {
                object.insert("context".into(), context.to_json());
            }
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print!("{}", report.render_table());
            match loads {
                [Load::Closed { concurrency }] => {
                    println!("load: closed loop, {concurrency} clients")
                }
                [Load::Open { rate }] => println!("load: Poisson arrivals, {rate} requests/s"),
                _ => {}
            }
            if let Some(context) = context {
                print!(
                    "{}",
                    context.render(&report.policy, report.total.throughput_img_s)
                );
            }
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(reports)?);
        return Ok(());
    }
    println!(
        "{:>12} {:>12} {:>12} {:>9} {:>9} {:>9} {:>8}",
        "concurrency", "requests/s", "img/s", "p50 ms", "p95 ms", "p99 ms", "failed"
    );
    for (load, report) in loads.iter().zip(reports) {
        let level = match load {
            Load::Closed { concurrency } => concurrency.to_string(),
            Load::Open { rate } => format!("{rate}/s"),
        };
        let t = &report.total;
        let seconds = report.duration_s.max(1e-9);
        println!(
            "{:>12} {:>12.1} {:>12.1} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            level,
            t.requests as f64 / seconds,
            t.throughput_img_s,
            t.p50_ms,
            t.p95_ms,
            t.p99_ms,
            report.failed_requests + report.rejected_requests
        );
    }
    Ok(())
}
