//! The HTTP front end: an actix-web server over the core. While the core drains,
//! every answer closes its connection.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::web::Data;
use actix_web::{App, HttpServer};
use anyhow::Context;
use futures::FutureExt;
use tracing::info;

use super::routes::{configure, BodyTimeout};
use crate::config::ServerSettings;
use crate::serve::frontend::{FrontEnd, Stopped, ANSWER_GRACE};
use crate::serve::infer::{Infer, Protocol};

/// A running HTTP server.
pub struct HttpFrontEnd {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpFrontEnd {
    /// Binds `server.address:server.port` and starts serving `core`. Call from within
    /// the actix system (or a tokio runtime).
    pub fn start(server: &ServerSettings, core: Arc<Infer>) -> anyhow::Result<Self> {
        let state = Data::from(core);
        let body_timeout = Data::new(BodyTimeout(server.body_timeout));
        let http = HttpServer::new(move || {
            let state = state.clone();
            App::new()
                .app_data(state.clone())
                .app_data(body_timeout.clone())
                .wrap_fn(move |request, service| {
                    let response = service.call(request);
                    let state = state.clone();
                    response.map(move |result| result.map(|r| close_if_draining(r, &state)))
                })
                .configure(configure)
        })
        .workers(server.http_workers)
        // Slow and hostile clients: the head must arrive within header_timeout (408),
        // idle kept-alive connections close after keep_alive, and at most
        // max_connections are open at once (actix counts per worker).
        .max_connections(server.max_connections.div_ceil(server.http_workers.max(1)))
        .client_request_timeout(server.header_timeout)
        .client_disconnect_timeout(std::time::Duration::from_secs(1))
        .keep_alive(server.keep_alive)
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
        info!(%addr, "serving KServe v2 over HTTP");
        Ok(Self {
            addr,
            handle,
            task: Some(task),
        })
    }
}

fn close_if_draining<B>(mut response: ServiceResponse<B>, core: &Infer) -> ServiceResponse<B> {
    if core.drain().is_draining() {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    response
}

impl FrontEnd for HttpFrontEnd {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn begin_stop(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(true).await });
    }

    fn stop_now(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }

    fn take_stopped(&mut self) -> Stopped {
        let task = self.task.take();
        Box::pin(async move {
            let Some(task) = task else {
                anyhow::bail!("the HTTP server's end was already taken");
            };
            task.await
                .context("the HTTP server task failed")?
                .context("the HTTP server failed")
        })
    }
}
