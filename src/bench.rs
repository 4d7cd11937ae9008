//! `mica bench`: the load generator.
//!
//! Closed loop (N clients, each sending its next request when the last is answered) or
//! open loop (Poisson arrivals at a rate, however the service keeps up), for a duration
//! or a number of requests, with a warm-up whose requests are not counted. In process,
//! requests go through the whole service path (dispatcher, policy, unit actors, stream
//! workers, engines); with `--url` they go to a running `mica serve` (or any KServe v2
//! server) over HTTP, binary tensor data, and the same report comes out.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use mica_actors::{InferError, InferRequest};
use std::sync::Arc;

use crate::serve::InferBackend;
use mica_core::{ReportBuilder, RunReport, UnitSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// This many clients, each with one request outstanding.
    Closed {
        /// Clients.
        concurrency: usize,
    },
    /// Poisson arrivals at this many requests per second.
    Open {
        /// Mean arrival rate, requests per second.
        rate: f64,
    },
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long (warm-up excluded).
    After(Duration),
    /// After this many measured requests have been answered.
    Requests(u64),
}

/// A bench run's settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Offered load.
    pub load: Load,
    /// When to stop.
    pub stop: Stop,
    /// Time at the start whose requests are not counted.
    pub warmup: Duration,
    /// Images per request.
    pub images_per_request: u32,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Seed of the arrival process.
    pub seed: u64,
    /// Policy name for the report.
    pub policy: String,
}

/// Clients `mica bench --url` runs when given no load (it does not read the remote
/// server's config, so it cannot size the load to its units).
pub const HTTP_DEFAULT_CONCURRENCY: usize = 16;

/// Full batches in flight per stream that the default load keeps: one running and one
/// formed and waiting, so a stream that finishes starts its next full batch at once.
pub const DEFAULT_BATCHES_PER_STREAM: u32 = 2;

/// The closed-loop clients `mica bench` and `mica simulate` run when given no load:
/// enough to keep every stream of every unit busy at its maximum batch, with the next
/// full batch already waiting — `DEFAULT_BATCHES_PER_STREAM` × Σ over units of
/// streams × max_batch images in flight, in requests of `images_per_request` images
/// (rounded up, at least 1 client).
pub fn saturating_concurrency(units: &[UnitSpec], images_per_request: u32) -> usize {
    let images: u64 = units
        .iter()
        .map(|u| u64::from(u.streams.max(1)) * u64::from(u.max_batch.max(1)))
        .sum::<u64>()
        * u64::from(DEFAULT_BATCHES_PER_STREAM);
    let clients = images.div_ceil(u64::from(images_per_request.max(1))).max(1);
    usize::try_from(clients).unwrap_or(usize::MAX)
}

/// Unit descriptions for the report: (id, kind, engine).
pub type UnitLabels = Vec<(String, String, String)>;

/// The report labels of a service's units, in index order.
pub fn unit_labels(setup: &mica_actors::ServiceSetup) -> UnitLabels {
    setup
        .units
        .iter()
        .map(|u| {
            (
                u.spec.id.to_string(),
                u.spec.kind.as_str().to_string(),
                u.engine.engine.as_str().to_string(),
            )
        })
        .collect()
}

/// Where the load goes: one seam for every target. In process, requests go through
/// the `InferBackend` seam the front ends use (the scheduler's `Service`); remote
/// targets are clients of a running server (`bench_http`).
pub trait LoadTarget {
    /// Sends one request of `images` images and reports how it was answered.
    fn infer(&self, images: u32) -> LocalBoxFuture<'_, Result<Answer, InferError>>;
}

/// A shared target (the generator's clients each hold one).
pub type Target = Rc<dyn LoadTarget>;

/// A backend in this process, driven through the `InferBackend` seam with synthetic
/// requests (no input data).
pub struct InProcess(pub Arc<dyn InferBackend>);

/// The in-process target over `backend`.
pub fn in_process(backend: impl InferBackend) -> Target {
    Rc::new(InProcess(Arc::new(backend)))
}

impl LoadTarget for InProcess {
    fn infer(&self, images: u32) -> LocalBoxFuture<'_, Result<Answer, InferError>> {
        let answer = self.0.submit(InferRequest {
            images,
            data: None,
            priority: 0,
            timeout: None,
        });
        Box::pin(async move {
            let response = answer.await?;
            Ok(Answer {
                unit: response.unit.to_string(),
                unit_index: Some(response.unit_index),
                engine: response.engine.to_string(),
                images: response.images,
                batch_images: response.batch_images,
                queue_wait: response.queue_wait,
            })
        })
    }
}

/// What the generator learns from one answered request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Unit id that ran it.
    pub unit: String,
    /// Its index among the configured units, when known (in process).
    pub unit_index: Option<usize>,
    /// Engine label.
    pub engine: String,
    /// Images answered.
    pub images: u32,
    /// Images in its batch.
    pub batch_images: u32,
    /// Time it waited in the queue.
    pub queue_wait: Duration,
}

struct Shared {
    report: ReportBuilder,
    measuring_since: Option<Instant>,
    measured_requests: u64,
    stop: bool,
}

/// Runs the load against `service` and reports. Must be called inside the actix
/// system that runs the service.
pub async fn run(target: &Target, units: UnitLabels, options: &BenchOptions) -> RunReport {
    let simulated = units.iter().any(|(_, _, engine)| engine == "sim");
    let shared = Rc::new(RefCell::new(Shared {
        report: ReportBuilder::new(units),
        measuring_since: None,
        measured_requests: 0,
        stop: false,
    }));
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let bar = progress_bar(options);
    let deadline = match options.stop {
        Stop::After(duration) => Some(measure_from + duration),
        Stop::Requests(_) => None,
    };

    let clients: Vec<_> = match options.load {
        Load::Closed { concurrency } => (0..concurrency.max(1))
            .map(|_| {
                let target = target.clone();
                let shared = shared.clone();
                let options = options.clone();
                actix_rt::spawn(async move {
                    while !shared.borrow().stop {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        let outcome = one_request(&target, &options, measure_from, &shared).await;
                        if let Err(InferError::Overloaded { retry_after }) = outcome {
                            actix_rt::time::sleep(retry_after.min(Duration::from_millis(10))).await;
                        }
                    }
                })
            })
            .collect(),
        Load::Open { rate } => {
            let target = target.clone();
            let shared = shared.clone();
            let options = options.clone();
            vec![actix_rt::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
                let mut next = Instant::now();
                loop {
                    if shared.borrow().stop || deadline.is_some_and(|d| next >= d) {
                        break;
                    }
                    let now = Instant::now();
                    if next > now {
                        actix_rt::time::sleep(next - now).await;
                    }
                    // Exponential gaps; every arrival that is due is sent, so a coarse
                    // timer does not lower the offered rate.
                    while next <= Instant::now() {
                        let target = target.clone();
                        let shared = shared.clone();
                        let options = options.clone();
                        actix_rt::spawn(async move {
                            let _ = one_request(&target, &options, measure_from, &shared).await;
                        });
                        let u: f64 = rng.random_range(f64::EPSILON..1.0);
                        next += mica_core::time::secs(-u.ln() / rate.max(1e-9));
                    }
                }
            })]
        }
    };

    // Progress and stop conditions.
    loop {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let now = Instant::now();
        let (done, measured) = {
            let s = shared.borrow();
            let done = match options.stop {
                Stop::After(_) => deadline.is_some_and(|d| now >= d),
                Stop::Requests(n) => s.measured_requests >= n,
            };
            (done, s.measured_requests)
        };
        if let Some(bar) = &bar {
            match options.stop {
                Stop::After(_) => bar.set_position(now.duration_since(started).as_millis() as u64),
                Stop::Requests(_) => bar.set_position(measured),
            }
        }
        if done {
            break;
        }
    }
    let ended = Instant::now();
    shared.borrow_mut().stop = true;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // Closed-loop clients finish their outstanding request; nothing after `ended` counts.
    for client in clients {
        let _ = actix_rt::time::timeout(Duration::from_secs(30), client).await;
    }
    let s = shared.borrow();
    let window = match s.measuring_since {
        Some(since) => ended.saturating_duration_since(since.max(measure_from)),
        None => Duration::ZERO,
    };
    s.report.finish("bench", &options.policy, simulated, window)
}

async fn one_request(
    target: &Target,
    options: &BenchOptions,
    measure_from: Instant,
    shared: &Rc<RefCell<Shared>>,
) -> Result<(), InferError> {
    let sent = Instant::now();
    let outcome = target.infer(options.images_per_request).await;
    let answered = Instant::now();
    let mut s = shared.borrow_mut();
    // Count what is answered inside the measured window, whenever it was sent.
    if answered < measure_from || s.stop {
        return outcome.map(|_| ());
    }
    s.measuring_since.get_or_insert(measure_from);
    match &outcome {
        Ok(answer) => {
            s.measured_requests += 1;
            let unit = match answer.unit_index {
                Some(index) => index,
                None => s.report.unit_index(&answer.unit, "", &answer.engine),
            };
            let latency = answered.duration_since(sent);
            s.report
                .record_request(unit, answer.images, latency, answer.queue_wait);
            // Each request counts as its share of the batch it ran in.
            s.report
                .record_batch_share(unit, answer.images, answer.batch_images);
        }
        Err(InferError::Overloaded { .. }) => s.report.record_rejection(),
        Err(_) => s.report.record_failure(),
    }
    outcome.map(|_| ())
}

fn progress_bar(options: &BenchOptions) -> Option<ProgressBar> {
    if !options.progress {
        return None;
    }
    let bar = match options.stop {
        Stop::After(duration) => ProgressBar::new((duration + options.warmup).as_millis() as u64),
        Stop::Requests(n) => ProgressBar::new(n),
    };
    let template = match options.stop {
        Stop::After(_) => "{spinner} bench [{bar:40}] {elapsed_precise} / {duration_precise}",
        Stop::Requests(_) => "{spinner} bench [{bar:40}] {pos}/{len} requests",
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("constant template is valid; this is a bug")
            .progress_chars("=> "),
    );
    Some(bar)
}
