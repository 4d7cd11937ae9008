//! Reading a request body against a deadline, a size limit and the byte budget.
//!
//! The buffer grows as data arrives (never allocated from `Content-Length`), every
//! byte of its capacity is held on the shared `ByteBudget`, and the whole body must
//! arrive within `[server] body_timeout` (else 408): a client that announces a body and
//! sends it slowly, or never finishes it, holds neither memory nor its connection for
//! longer than that.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes, BytesMut};
use futures::StreamExt;
use tokio::time::Instant;

use crate::serve::budget::{ByteBudget, BytePermit};
use crate::serve::error::ServeError;

/// The first allocation for a body of unknown or announced size; it doubles from
/// there as data arrives.
const FIRST_CHUNK: usize = 16 * 1024;

/// What a body read is bounded by.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    /// Largest body, bytes (413 beyond, announced or received).
    pub max_bytes: usize,
    /// Longest the whole body may take to arrive (408 beyond).
    pub timeout: Duration,
    /// Where its bytes are counted.
    pub budget: Arc<ByteBudget>,
}

/// Reads the whole body; the permit holds its bytes until the caller drops it.
pub async fn read_body(
    announced: Option<usize>,
    mut payload: web::Payload,
    limits: &BodyLimits,
) -> Result<(Bytes, BytePermit), ServeError> {
    if let Some(size) = announced.filter(|&size| size > limits.max_bytes) {
        return Err(ServeError::PayloadTooLarge {
            size,
            limit: limits.max_bytes,
        });
    }
    let deadline = Instant::now() + limits.timeout;
    let mut permit = limits.budget.permit();
    let mut body = BytesMut::new();
    loop {
        let next = tokio::time::timeout_at(deadline, payload.next())
            .await
            .map_err(|_| ServeError::BodyTimeout {
                received: body.len(),
                timeout: limits.timeout,
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|error| {
            ServeError::bad_request(format!("cannot read the request body: {error}"))
        })?;
        let size = body.len() + chunk.len();
        if size > limits.max_bytes {
            return Err(ServeError::PayloadTooLarge {
                size,
                limit: limits.max_bytes,
            });
        }
        if size > body.capacity() {
            // Grow by doubling (as `BytesMut` would), capped at the limit, and hold the
            // new capacity on the budget before allocating it.
            let capacity = size
                .max(body.capacity().saturating_mul(2))
                .max(FIRST_CHUNK)
                .min(limits.max_bytes);
            permit.hold(capacity)?;
            body.reserve(capacity - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), permit))
}
