//! The KServe v2 / Triton endpoints and their handlers.
//!
//! Every model path also exists under `/versions/{version}`. Handlers return
//! `Result<HttpResponse, ServeError>`; `ServeError` alone turns failures into statuses
//! and `{"error": "..."}` bodies, unknown paths and methods included.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::web::{self, Bytes, BytesMut, Data};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};
use futures::StreamExt;
use serde::Serialize;
use tracing::{debug, warn};

use super::backend::{InferBackend, InferRequest};
use super::binary::{header_length, HEADER_LENGTH};
use super::error::ServeError;
use super::metrics;
use super::model::ServedModel;
use super::pool::PreprocessPool;
use super::request::decode;
use super::response::encode;
use super::server::Drain;
use super::stats::{ModelStats, Phases, StatsResponse};

/// Extensions reported in the server metadata.
const EXTENSIONS: &[&str] = &[
    "classification",
    "binary_tensor_data",
    "model_configuration",
    "statistics",
];

/// What every handler shares.
pub struct AppState {
    /// The model served.
    pub model: ServedModel,
    /// Where requests go.
    pub backend: Arc<dyn InferBackend>,
    /// Body parsing and image preprocessing.
    pub pool: PreprocessPool,
    /// Triton statistics.
    pub stats: ModelStats,
    /// The model's Prometheus series.
    pub series: metrics::ModelSeries,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Shutdown progress.
    pub drain: Drain,
}

/// Registers every endpoint on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v2", Method::GET, server_metadata))
        .service(endpoint("/v2/health/live", Method::GET, live))
        .service(endpoint("/v2/health/ready", Method::GET, ready))
        .service(endpoint(
            "/v2/repository/index",
            Method::POST,
            repository_index,
        ))
        .service(endpoint("/v2/models/stats", Method::GET, all_stats));
    for base in [
        "/v2/models/{model}",
        "/v2/models/{model}/versions/{version}",
    ] {
        cfg.service(endpoint(base, Method::GET, model_metadata))
            .service(endpoint(&format!("{base}/ready"), Method::GET, model_ready))
            .service(endpoint(
                &format!("{base}/config"),
                Method::GET,
                model_config,
            ))
            .service(endpoint(&format!("{base}/stats"), Method::GET, model_stats))
            .service(endpoint(&format!("{base}/infer"), Method::POST, infer));
    }
    cfg.default_service(web::to(not_found));
}

fn endpoint<F, Args>(path: &str, method: Method, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::method(method).to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, ServeError> {
    Err(ServeError::RouteNotFound(request.path().to_string()))
}

async fn method_not_allowed(request: HttpRequest) -> Result<HttpResponse, ServeError> {
    Err(ServeError::MethodNotAllowed(request.method().to_string()))
}

fn json<T: Serialize>(value: &T) -> Result<HttpResponse, ServeError> {
    let body = serde_json::to_vec(value)
        .map_err(|error| ServeError::Internal(format!("cannot encode the response: {error}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(body))
}

/// Checks the `{model}` and optional `{version}` of the path.
fn resolve_model(state: &AppState, request: &HttpRequest) -> Result<(), ServeError> {
    let info = request.match_info();
    let name = info.get("model").unwrap_or_default();
    state.model.resolve(name, info.get("version"))
}

fn is_ready(state: &AppState) -> bool {
    state.backend.is_ready() && !state.drain.is_draining()
}

#[derive(Serialize)]
struct ServerMetadata {
    name: &'static str,
    version: &'static str,
    extensions: &'static [&'static str],
}

async fn server_metadata() -> Result<HttpResponse, ServeError> {
    json(&ServerMetadata {
        name: "mica",
        version: env!("CARGO_PKG_VERSION"),
        extensions: EXTENSIONS,
    })
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn ready(state: Data<AppState>) -> Result<HttpResponse, ServeError> {
    if is_ready(&state) {
        Ok(HttpResponse::Ok().finish())
    } else if state.drain.is_draining() {
        Err(ServeError::ShuttingDown)
    } else {
        Err(ServeError::Unavailable(
            "units are still loading".to_string(),
        ))
    }
}

#[derive(Serialize)]
struct IndexEntry<'a> {
    name: &'a str,
    version: &'a str,
    state: &'static str,
    reason: &'static str,
}

async fn repository_index(state: Data<AppState>) -> Result<HttpResponse, ServeError> {
    let settings = &state.model.settings;
    json(&[IndexEntry {
        name: &settings.name,
        version: &settings.version,
        state: if is_ready(&state) {
            "READY"
        } else {
            "UNAVAILABLE"
        },
        reason: "",
    }])
}

async fn model_metadata(
    state: Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ServeError> {
    resolve_model(&state, &request)?;
    json(&state.model.metadata())
}

async fn model_ready(
    state: Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ServeError> {
    resolve_model(&state, &request)?;
    if is_ready(&state) {
        Ok(HttpResponse::Ok().finish())
    } else {
        Err(ServeError::NotReady(state.model.settings.name.clone()))
    }
}

async fn model_config(
    state: Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ServeError> {
    resolve_model(&state, &request)?;
    json(&state.model.config())
}

async fn model_stats(
    state: Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ServeError> {
    resolve_model(&state, &request)?;
    stats_response(&state)
}

async fn all_stats(state: Data<AppState>) -> Result<HttpResponse, ServeError> {
    stats_response(&state)
}

fn stats_response(state: &AppState) -> Result<HttpResponse, ServeError> {
    let settings = &state.model.settings;
    json(&StatsResponse {
        model_stats: vec![state.stats.snapshot(&settings.name, &settings.version)],
    })
}

/// Bodies up to this size are decoded inline rather than on the preprocessing pool.
const INLINE_DECODE_BYTES: usize = 16 * 1024;

async fn infer(
    state: Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let start = Instant::now();
    resolve_model(&state, &request)?;
    let result = tokio::select! {
        result = run_inference(&state, &request, payload, start) => result,
        () = state.drain.deadline_passed() => Err(ServeError::ShuttingDown),
    };
    match &result {
        Ok(_) => {}
        Err(error) => {
            let settings = &state.model.settings;
            state.stats.record_failure(start.elapsed());
            metrics::record_failure(&settings.name, &settings.version, error);
            if error.status().is_server_error() {
                warn!(reason = error.reason(), %error, "inference request failed");
            } else {
                debug!(reason = error.reason(), %error, "inference request refused");
            }
        }
    }
    result
}

async fn run_inference(
    state: &Data<AppState>,
    request: &HttpRequest,
    payload: web::Payload,
    start: Instant,
) -> Result<HttpResponse, ServeError> {
    if !state.backend.is_ready() {
        return Err(ServeError::NotReady(state.model.settings.name.clone()));
    }
    if let Some(encoding) = request.headers().get(CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(ServeError::bad_request(format!(
                "unsupported Content-Encoding {encoding:?}; send the body uncompressed"
            )));
        }
    }
    let header_length = header_length(request.headers().get(HEADER_LENGTH))?;
    let body = read_body(request, payload, state.max_body_bytes).await?;

    // Small bodies are decoded on the HTTP worker: a hop to the pool and back costs more
    // than parsing them. Large ones (images, big tensors) go to the preprocessing pool
    // so they never block the async executor.
    let prepared = if body.len() <= INLINE_DECODE_BYTES {
        decode(&state.model, body, header_length)?
    } else {
        let shared = Data::clone(state);
        state
            .pool
            .spawn(move || decode(&shared.model, body, header_length))?
            .await?
    };
    let input_done = Instant::now();

    let timeout = match prepared.timeout {
        Some(timeout) => Some(
            timeout
                .checked_sub(start.elapsed())
                .filter(|left| !left.is_zero())
                .ok_or(ServeError::TimedOut)?,
        ),
        None => None,
    };
    let answer = state
        .backend
        .submit(InferRequest {
            images: prepared.images,
            data: Some(prepared.data),
            priority: prepared.priority,
            timeout,
        })
        .await?;
    let infer_done = Instant::now();

    let response = encode(
        &state.model,
        prepared.output,
        prepared.id,
        prepared.images,
        &answer,
    )?;
    let end = Instant::now();
    let phases = Phases {
        total: end - start,
        input: input_done - start,
        queue: answer.queue_wait,
        infer: answer.latency.saturating_sub(answer.queue_wait),
        output: end - infer_done,
    };
    state.stats.record_success(prepared.images, phases);
    state.series.record_success(prepared.images, &phases);
    Ok(response)
}

/// Reads the whole body, refusing more than `limit` bytes (announced or received).
async fn read_body(
    request: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ServeError> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = announced.filter(|&size| size > limit) {
        return Err(ServeError::PayloadTooLarge { size, limit });
    }
    let mut body = BytesMut::with_capacity(announced.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ServeError::bad_request(format!("cannot read the request body: {error}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ServeError::PayloadTooLarge {
                size: body.len() + chunk.len(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
