//! The KServe v2 / Triton endpoints over HTTP: each handler reads the path and body,
//! calls the core, and writes JSON.
//!
//! Every model path also exists under `/versions/{version}`. Handlers return
//! `Result<HttpResponse, ServeError>`; `ServeError` alone turns failures into statuses
//! and `{"error": "..."}` bodies, unknown paths and methods included.

use std::time::Instant;

use actix_web::http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::web::{self, Bytes, BytesMut, Data};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};
use futures::StreamExt;
use serde::Serialize;

use super::binary::{header_length, HEADER_LENGTH};
use super::json::{encode, parse};
use crate::serve::error::ServeError;
use crate::serve::infer::{Call, Infer, Parse, Protocol};

type Core = Data<Infer>;

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

/// The `{model}` and optional `{version}` of the path.
fn model_of(request: &HttpRequest) -> (&str, Option<&str>) {
    let info = request.match_info();
    (info.get("model").unwrap_or_default(), info.get("version"))
}

async fn server_metadata(core: Core) -> Result<HttpResponse, ServeError> {
    json(&core.server_metadata())
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().finish()
}

async fn ready(core: Core) -> Result<HttpResponse, ServeError> {
    core.server_ready()?;
    Ok(HttpResponse::Ok().finish())
}

async fn repository_index(core: Core) -> Result<HttpResponse, ServeError> {
    json(&core.repository_index())
}

async fn model_metadata(core: Core, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let (model, version) = model_of(&request);
    json(&core.metadata(model, version)?)
}

async fn model_ready(core: Core, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let (model, version) = model_of(&request);
    core.model_ready(model, version)?;
    Ok(HttpResponse::Ok().finish())
}

async fn model_config(core: Core, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let (model, version) = model_of(&request);
    json(&core.config(model, version)?)
}

async fn model_stats(core: Core, request: HttpRequest) -> Result<HttpResponse, ServeError> {
    let (model, version) = model_of(&request);
    json(&core.statistics(Some(model), version)?)
}

async fn all_stats(core: Core) -> Result<HttpResponse, ServeError> {
    json(&core.statistics(None, None)?)
}

async fn infer(
    core: Core,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ServeError> {
    let (model, version) = model_of(&request);
    let call = Call {
        protocol: Protocol::Http,
        start: Instant::now(),
        model,
        version,
    };
    let core = core.into_inner();
    let limit = core.max_request_bytes();
    let receive = async {
        if let Some(encoding) = request.headers().get(CONTENT_ENCODING) {
            if encoding.as_bytes() != b"identity" {
                return Err(ServeError::bad_request(format!(
                    "unsupported Content-Encoding {encoding:?}; send the body uncompressed"
                )));
            }
        }
        let header_length = header_length(request.headers().get(HEADER_LENGTH))?;
        let body = read_body(&request, payload, limit).await?;
        let size = body.len();
        let parse: Parse = Box::new(move |model| parse(model, body, header_length));
        Ok((size, parse))
    };
    core.infer(call, receive, encode).await
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
