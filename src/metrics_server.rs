//! The metrics and admin listener (`[metrics] address:port`, 127.0.0.1:8002 by default,
//! Triton's port layout): `GET /metrics` renders the Prometheus exposition, and the
//! admin routes (`crate::admin`) are added when a token is configured. Its own actix
//! server with one worker, so scrapes never queue behind inference requests.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::web::{self, Data};
use actix_web::{App, HttpResponse, HttpServer};
use anyhow::Context as _;
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin::Admin;
use crate::metrics::MetricsHandle;

/// The running listener.
pub struct MetricsServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    task: JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

async fn render(handle: Data<MetricsHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        ))
        .body(handle.render())
}

/// Starts the listener when there is something to serve (`prometheus` or `admin`);
/// `None` otherwise. Call inside the actix system.
pub fn start(
    address: IpAddr,
    port: u16,
    prometheus: Option<MetricsHandle>,
    admin: Option<Admin>,
) -> anyhow::Result<Option<MetricsServer>> {
    if prometheus.is_none() && admin.is_none() {
        return Ok(None);
    }
    let serves_admin = admin.is_some();
    let prometheus = prometheus.map(Data::new);
    let admin = admin.map(Data::new);
    let http = HttpServer::new(move || {
        let mut app = App::new();
        if let Some(handle) = &prometheus {
            app = app
                .app_data(handle.clone())
                .route("/metrics", web::get().to(render));
        }
        if let Some(admin) = &admin {
            let admin = admin.clone();
            app = app.configure(move |cfg| crate::admin::configure(cfg, admin));
        }
        app
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind((address, port))
    .with_context(|| format!("cannot listen for metrics on {address}:{port}"))?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .context("the metrics server bound no address")?;
    let running = http.run();
    let handle = running.handle();
    let task = tokio::spawn(running);
    info!(%addr, admin = serves_admin, "serving /metrics");
    Ok(Some(MetricsServer { addr, handle, task }))
}

impl MetricsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}
