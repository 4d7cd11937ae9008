//! Starting the HTTP server and stopping it gracefully.
//!
//! On SIGTERM or SIGINT the server stops accepting connections, reports not ready,
//! closes kept-alive connections after their current response, and lets every accepted
//! request finish. When `server.drain_time` runs out, requests still running are
//! answered 503 ("server is shutting down"); none is left unanswered. A second signal
//! stops at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::web::Data;
use actix_web::{App, HttpServer};
use anyhow::Context;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::backend::InferBackend;
use super::model::ServedModel;
use super::pool::PreprocessPool;
use super::routes::{configure, AppState};
use super::settings::{ModelSettings, ServerSettings};
use super::stats::ModelStats;

/// Time past the drain deadline for the 503 answers to be written.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Shutdown progress, shared with the handlers.
#[derive(Debug)]
pub struct Drain {
    draining: AtomicBool,
    deadline: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            deadline: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    fn deadline_reached(&self) {
        self.deadline.send_replace(true);
    }

    /// Resolves once the drain time is over (never, if no shutdown begins).
    pub async fn deadline_passed(&self) {
        let mut deadline = self.deadline.subscribe();
        if deadline.wait_for(|passed| *passed).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A running HTTP server.
pub struct RunningServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
    state: Data<AppState>,
    drain_time: Duration,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("drain_time", &self.drain_time)
            .finish()
    }
}

/// Binds and starts the server; it serves until `shutdown` (or a signal, with
/// `run_until_signal`). Call from within the actix system (or a tokio runtime).
pub fn start(
    server: &ServerSettings,
    model: &ModelSettings,
    backend: Arc<dyn InferBackend>,
) -> anyhow::Result<RunningServer> {
    let served = ServedModel::new(model, server, backend.as_ref()).map_err(anyhow::Error::msg)?;
    let pool = PreprocessPool::new(server.preprocess_threads, server.preprocess_queue)
        .context("cannot start the preprocessing threads")?;
    let preprocess_threads = pool.threads();
    let series = super::metrics::ModelSeries::new(&served.settings.name, &served.settings.version);
    let state = Data::new(AppState {
        series,
        model: served,
        backend,
        pool,
        stats: ModelStats::default(),
        max_body_bytes: server.max_body_bytes,
        drain: Drain::default(),
    });
    let app_state = state.clone();
    let http = HttpServer::new(move || {
        let state = app_state.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(move |request, service| {
                let response = service.call(request);
                let state = state.clone();
                response.map(move |result| result.map(|r| close_if_draining(r, &state)))
            })
            .configure(configure)
    })
    .workers(server.http_workers)
    .disable_signals()
    .shutdown_timeout((server.drain_time + ANSWER_GRACE).as_secs().max(1))
    .bind((server.address, server.port))
    .with_context(|| format!("cannot listen on {}:{}", server.address, server.port))?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .context("the server bound no address")?;
    let running = http.run();
    let handle = running.handle();
    let task = tokio::spawn(running);
    info!(%addr, model = %model.name, preprocess_threads, "serving KServe v2 over HTTP");
    Ok(RunningServer {
        addr,
        handle,
        task,
        state,
        drain_time: server.drain_time,
    })
}

fn close_if_draining<B>(mut response: ServiceResponse<B>, state: &AppState) -> ServiceResponse<B> {
    if state.drain.is_draining() {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    response
}

impl RunningServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until SIGTERM or SIGINT, or until `stop` resolves (to the reason, e.g.
    /// a dead dispatcher), then shuts down gracefully.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = String>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            ended = &mut self.task => {
                return ended.context("the server task failed")?.context("the server failed");
            }
            signal = stop_signal() => {
                info!(signal = signal?, drain_time = ?self.drain_time, "stopping: draining accepted requests");
            }
            reason = stop => {
                warn!(%reason, drain_time = ?self.drain_time, "stopping: draining accepted requests");
            }
        }
        self.shutdown_with(true).await
    }

    /// Stops accepting, answers every accepted request (503 past the drain time),
    /// then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown_with(false).await
    }

    async fn shutdown_with(self, second_signal_forces: bool) -> anyhow::Result<()> {
        let RunningServer {
            handle,
            mut task,
            state,
            drain_time,
            ..
        } = self;
        state.drain.begin();
        let stopping = tokio::spawn({
            let handle = handle.clone();
            async move { handle.stop(true).await }
        });
        let deadline = tokio::time::sleep(drain_time);
        tokio::pin!(deadline);
        let mut deadline_passed = false;
        let forced = async {
            let listening = second_signal_forces && stop_signal().await.is_ok();
            if !listening {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(forced);
        let mut forced_done = false;
        let ended = loop {
            tokio::select! {
                ended = &mut task => break ended,
                () = &mut deadline, if !deadline_passed => {
                    deadline_passed = true;
                    warn!("drain time is over: answering the requests still running with 503");
                    state.drain.deadline_reached();
                }
                () = &mut forced, if !forced_done => {
                    forced_done = true;
                    warn!("second signal: stopping at once");
                    handle.stop(false).await;
                }
            }
        };
        stopping.abort();
        ended
            .context("the server task failed")?
            .context("the server failed")?;
        info!("HTTP server stopped");
        Ok(())
    }
}

/// Resolves on the first SIGTERM or SIGINT, to its name.
async fn stop_signal() -> anyhow::Result<&'static str> {
    use actix_rt::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Starts the server and serves until SIGTERM/SIGINT, then drains and returns. The
/// caller stops the inference service afterwards.
pub async fn serve(
    server: &ServerSettings,
    model: &ModelSettings,
    backend: Arc<dyn InferBackend>,
) -> anyhow::Result<()> {
    start(server, model, backend)?.run_until_signal().await
}
