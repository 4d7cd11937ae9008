//! The KServe v2 / Triton endpoints over HTTP: each handler reads the path and body,
//! calls the core, and writes JSON.
//!
//! Every model path also exists under `/versions/{version}`. Handlers return
//! `Result<HttpResponse, ServeError>`; `ServeError` alone turns failures into statuses
//! and `{"error": "..."}` bodies, unknown paths and methods included.

use std::time::Instant;

use actix_web::http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::web::{self, Data};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};
use serde::Serialize;

use super::binary::{header_length, HEADER_LENGTH};
use super::body::{read_body, BodyLimits};
use super::json::{encode, parse};
use crate::serve::error::ServeError;
use crate::serve::infer::{Call, Infer, Parse, Protocol};

type Core = Data<Infer>;

/// Registers every endpoint on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v2", Method::GET, server_metadata))
        .service(endpoint("/v2/health/live", Method::GET, live).route(web::head().to(live)))
        .service(endpoint("/v2/health/ready", Method::GET, ready).route(web::head().to(ready)))
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

/// 200 when ready: an empty body when every unit loaded, else a JSON body naming the
/// units left out (`{"ready": true, "missing": ["unit dla0: ..."]}`); 503 naming why not.
async fn ready(core: Core) -> Result<HttpResponse, ServeError> {
    let missing = core.server_ready()?;
    if missing.is_empty() {
        return Ok(HttpResponse::Ok().finish());
    }
    json(&serde_json::json!({ "ready": true, "missing": missing }))
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

/// `[server] body_timeout`, shared with the handlers.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

async fn infer(
    core: Core,
    body_timeout: Data<BodyTimeout>,
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
    let limits = BodyLimits {
        max_bytes: core.max_request_bytes(),
        timeout: body_timeout.0,
        budget: core.budget().clone(),
    };
    // The body's bytes stay held on the budget until the answer is written: the
    // tensor decoded from them is queued until then.
    let mut held = None;
    let receive = async {
        if let Some(encoding) = request.headers().get(CONTENT_ENCODING) {
            if encoding.as_bytes() != b"identity" {
                return Err(ServeError::bad_request(format!(
                    "unsupported Content-Encoding {encoding:?}; send the body uncompressed"
                )));
            }
        }
        let header_length = header_length(request.headers().get(HEADER_LENGTH))?;
        let announced = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let (body, permit) = read_body(announced, payload, &limits).await?;
        held = Some(permit);
        let size = body.len();
        let parse: Parse = Box::new(move |model| parse(model, body, header_length));
        Ok((size, parse))
    };
    let answer = core.infer(call, receive, encode).await;
    drop(held);
    answer
}
