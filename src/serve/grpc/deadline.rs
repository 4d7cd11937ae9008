//! A gRPC client's deadline (the `grpc-timeout` header) as the request's timeout.
//!
//! tonic's server cancels a unary call whose `grpc-timeout` passes (CANCELLED, the
//! handler dropped, nothing counted) and leaves streams unbounded. mica instead hands
//! the deadline to the core as the request's timeout, as the KServe `timeout`
//! parameter is on HTTP, so the scheduler drops a request whose client has given up
//! and the answer is DEADLINE_EXCEEDED, counted as a timeout.
//!
//! The deadline is taken in [`mark`], a layer around the routes that tonic calls just
//! before it starts its own timer, and set one timer tick ([`AHEAD`]) earlier than
//! the client's: mica's timer always fires first (the runtime fires timers in
//! deadline order), and tonic polls the handler before it looks at its own timer, so
//! mica's answer is the one sent.

use std::time::Duration;

use tokio::time::Instant;
use tonic::codegen::http;

/// The header a gRPC client sends its deadline in.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// How much earlier than the client's deadline mica answers: one tick of tokio's
/// timer.
pub const AHEAD: Duration = Duration::from_millis(1);

/// When the client of a call gives up, less [`AHEAD`] (a request extension set by
/// [`mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientDeadline(pub Instant);

/// Marks a request with its client's deadline, if it sent a valid `grpc-timeout`
/// (an invalid one is ignored, as tonic ignores it).
pub fn mark<B>(mut request: http::Request<B>) -> http::Request<B> {
    let timeout = request
        .headers()
        .get(GRPC_TIMEOUT)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_timeout);
    if let Some(timeout) = timeout {
        let deadline = Instant::now()
            .checked_add(timeout.saturating_sub(AHEAD))
            .unwrap_or_else(far_future);
        request.extensions_mut().insert(ClientDeadline(deadline));
    }
    request
}

/// A deadline no request reaches (a timeout too large for the clock).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// A `grpc-timeout` value: at most 8 digits then a unit, `H`, `M`, `S`, `m`
/// (milliseconds), `u` (microseconds) or `n` (nanoseconds), as the gRPC over HTTP/2
/// protocol defines it.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let unit_at = value.len().checked_sub(1)?;
    if !value.is_char_boundary(unit_at) {
        return None;
    }
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit() {
        assert_eq!(parse_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_timeout("4S"), Some(Duration::from_secs(4)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout("0n"), Some(Duration::ZERO));
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for bad in [
            "",
            "m",
            "100",
            "100x",
            "123456789m",
            "-1S",
            "1.5S",
            "1 S",
            "1é",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_request_is_marked_with_its_deadline() {
        let before = Instant::now();
        let request = http::Request::builder()
            .header(GRPC_TIMEOUT, "500m")
            .body(())
            .unwrap();
        let ClientDeadline(deadline) = *mark(request).extensions().get().unwrap();
        let ahead_of_client = Duration::from_millis(500) - AHEAD;
        assert!(deadline >= before + ahead_of_client);
        assert!(deadline <= Instant::now() + ahead_of_client);
        let unmarked = mark(http::Request::new(()));
        assert!(unmarked.extensions().get::<ClientDeadline>().is_none());
        let invalid = http::Request::builder()
            .header(GRPC_TIMEOUT, "soon")
            .body(())
            .unwrap();
        assert!(mark(invalid).extensions().get::<ClientDeadline>().is_none());
    }
}
