//! The admin endpoint: `GET /v2/admin/policy` reads the running policy, `PUT` sets one
//! (JSON, the config's policy table: `{"type": "contention_aware"}`). Served on the
//! metrics listener, and only when a bearer token is configured (`[admin] token` or
//! `token_file`); every request must carry `Authorization: Bearer <token>`.
//!
//! A policy set here lasts until the next config reload, which applies the file's.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes, Data};
use actix_web::{HttpRequest, HttpResponse};
use mica_policies::PolicyConfig;
use tracing::info;

use crate::config::AdminToken;
use crate::reload::{PolicyControl, PolicySource, SetPolicyError};

/// Admin endpoint path.
pub const POLICY_PATH: &str = "/v2/admin/policy";

/// What the admin routes need.
pub struct Admin {
    token: AdminToken,
    control: Arc<PolicyControl>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin over `control`, guarded by `token`.
    pub fn new(token: AdminToken, control: Arc<PolicyControl>) -> Self {
        Self { token, control }
    }

    fn authorized(&self, request: &HttpRequest) -> bool {
        let Some(given) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_credentials)
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.token.secret().as_bytes())
    }
}

/// The credentials of an `Authorization` value with the `Bearer` scheme, matched
/// case-insensitively as RFC 7235 says auth schemes are.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
    }
    response.json(serde_json::json!({ "error": message }))
}

/// Adds the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig, admin: Data<Admin>) {
    cfg.app_data(admin).service(
        web::resource(POLICY_PATH)
            .route(web::get().to(get_policy))
            .route(web::put().to(put_policy)),
    );
}

async fn get_policy(admin: Data<Admin>, request: HttpRequest) -> HttpResponse {
    if !admin.authorized(&request) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    HttpResponse::Ok().json(admin.control.current().await)
}

async fn put_policy(admin: Data<Admin>, request: HttpRequest, body: Bytes) -> HttpResponse {
    if !admin.authorized(&request) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let policy: PolicyConfig = match serde_json::from_slice(&body) {
        Ok(policy) => policy,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("body must be a policy table such as {{\"type\": \"least_loaded\"}}: {e}"),
            )
        }
    };
    match admin.control.set(policy, PolicySource::Admin).await {
        Ok(change) => {
            info!(from = %change.previous, to = change.policy.name, changed = change.changed, "policy set through the admin endpoint");
            HttpResponse::Ok().json(change)
        }
        Err(SetPolicyError::Invalid(message)) => error(StatusCode::BAD_REQUEST, &message),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER abc"), Some("abc"));
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearer"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }
}
