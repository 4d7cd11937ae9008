//! Front ends (HTTP, gRPC) behind one small trait, started together over one
//! [`Infer`] core and drained together.
//!
//! On SIGTERM or SIGINT every front end stops accepting connections, readiness says no
//! on both protocols, kept-alive connections close after their current answer, and
//! every accepted request finishes. When `server.drain_time` runs out, requests still
//! running are answered "server is shutting down" (HTTP 503, gRPC UNAVAILABLE); none
//! is left unanswered. A second signal stops at once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::{join_all, select_all};
use tracing::{info, warn};

use super::infer::{Infer, Protocol};

/// A server's own end: `Ok` once it stopped after a stop, an error if it failed.
pub type Stopped = Pin<Box<dyn Future<Output = anyhow::Result<()>>>>;

/// One transport serving the core.
pub trait FrontEnd {
    /// Its protocol.
    fn protocol(&self) -> Protocol;

    /// The address it listens on.
    fn local_addr(&self) -> SocketAddr;

    /// Stops accepting; accepted requests and open connections finish.
    fn begin_stop(&self);

    /// Stops at once, dropping connections.
    fn stop_now(&self);

    /// The server task's end (taken once, by [`FrontEnds`]).
    fn take_stopped(&mut self) -> Stopped;
}

/// The running front ends of one core.
pub struct FrontEnds {
    core: Arc<Infer>,
    ends: Vec<Box<dyn FrontEnd>>,
    stopped: Vec<Stopped>,
    drain_time: Duration,
}

impl std::fmt::Debug for FrontEnds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<(Protocol, SocketAddr)> = self
            .ends
            .iter()
            .map(|e| (e.protocol(), e.local_addr()))
            .collect();
        f.debug_struct("FrontEnds")
            .field("listening", &addrs)
            .field("drain_time", &self.drain_time)
            .finish()
    }
}

/// Time past the drain deadline for the "shutting down" answers to be written.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

impl FrontEnds {
    /// Front ends already started over `core`.
    pub fn new(core: Arc<Infer>, ends: Vec<Box<dyn FrontEnd>>, drain_time: Duration) -> Self {
        let mut ends = ends;
        let stopped = ends.iter_mut().map(|e| e.take_stopped()).collect();
        Self {
            core,
            ends,
            stopped,
            drain_time,
        }
    }

    /// The core they serve.
    pub fn core(&self) -> &Arc<Infer> {
        &self.core
    }

    /// Where the front end of `protocol` listens, if it runs.
    pub fn addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.ends
            .iter()
            .find(|e| e.protocol() == protocol)
            .map(|e| e.local_addr())
    }

    /// Serves until SIGTERM or SIGINT, then drains every front end.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves until SIGTERM or SIGINT, or until `stop` resolves (to the reason, e.g.
    /// a dead dispatcher), then drains every front end.
    pub async fn run_until(mut self, stop: impl Future<Output = String>) -> anyhow::Result<()> {
        if self.stopped.is_empty() {
            anyhow::bail!("no front end is configured");
        }
        tokio::select! {
            (ended, index, _) = select_all(self.stopped.iter_mut()) => {
                let protocol = self.ends[index].protocol().as_str();
                ended.with_context(|| format!("the {protocol} server failed"))?;
                anyhow::bail!("the {protocol} server stopped by itself");
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

    /// Stops accepting, answers every accepted request (refused past the drain
    /// time), then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown_with(false).await
    }

    async fn shutdown_with(self, second_signal_forces: bool) -> anyhow::Result<()> {
        let FrontEnds {
            core,
            ends,
            mut stopped,
            drain_time,
        } = self;
        core.drain().begin();
        for end in &ends {
            end.begin_stop();
        }
        let all = join_all(stopped.iter_mut());
        tokio::pin!(all);
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
                ended = &mut all => break ended,
                () = &mut deadline, if !deadline_passed => {
                    deadline_passed = true;
                    warn!("drain time is over: answering the requests still running as shutting down");
                    core.drain().deadline_reached();
                }
                () = &mut forced, if !forced_done => {
                    forced_done = true;
                    warn!("second signal: stopping at once");
                    for end in &ends {
                        end.stop_now();
                    }
                }
            }
        };
        for (end, result) in ends.iter().zip(ended) {
            let protocol = end.protocol().as_str();
            result.with_context(|| format!("the {protocol} server failed"))?;
            info!(protocol, "server stopped");
        }
        Ok(())
    }
}

/// Resolves on the first SIGTERM or SIGINT, to its name.
pub async fn stop_signal() -> anyhow::Result<&'static str> {
    use actix_rt::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}
