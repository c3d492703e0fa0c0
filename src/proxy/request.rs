//! What every handler does with a request before its messages: read a
//! whole body within limits, and work out the upstream call's metadata and
//! deadline. Shared by the unary, streaming and WebSocket handlers.

use std::future::Future as _;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;

use tokio::sync::watch;
use tonic::Code;

use super::metadata::MetadataRules;
use crate::catalog::MethodCall;
use crate::error::{Fault, GatewayError};
use crate::http::observe::Exchange;
use crate::http::request_id::{new_request_id, X_REQUEST_ID};
use crate::http::{Identity, RequestBody};
use crate::metrics::Metrics;
use crate::telemetry::TraceContext;
use crate::upstream::CallMetadata;

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// What every handler of one connection shares.
#[derive(Clone)]
pub struct Handler {
    pub metadata: Arc<MetadataRules>,
    /// The connection's peer IP, already an `x-forwarded-for` entry.
    pub peer: HeaderValue,
    /// Fires when the drain deadline has passed: open streams must end.
    pub ending: Ending,
    pub metrics: Arc<Metrics>,
}

/// The signal that the gateway's drain deadline has passed.
#[derive(Debug, Clone)]
pub struct Ending(watch::Receiver<bool>);

impl Ending {
    pub fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    /// Resolves once streams must end; never, if the sender is gone
    /// without saying so.
    pub async fn wait(mut self) {
        if self.0.wait_for(|ending| *ending).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The upstream call's metadata for the request `parts` from `peer`, with
/// the request's trace context (each call then names its own span in it:
/// `telemetry::CallSpan`).
pub fn call_metadata(rules: &MetadataRules, parts: &Parts, peer: &HeaderValue) -> CallMetadata {
    let request_id = parts.headers.get(X_REQUEST_ID).cloned().unwrap_or_else(new_request_id);
    let mut metadata = rules.request_metadata(
        &parts.headers,
        parts.uri.authority().map(|a| a.as_str()),
        peer,
        &request_id,
        parts.extensions.get::<Identity>(),
    );
    if let Some(trace) = parts.extensions.get::<TraceContext>() {
        trace.propagate(&mut metadata);
    }
    metadata
}

/// The call's timeout: the route's `limit`, shortened (never lengthened)
/// by the client's `grpc-timeout`. `None` (no limit) stays `None` unless
/// the client asks for one.
pub fn call_timeout(headers: &HeaderMap, limit: Option<Duration>) -> Result<Option<Duration>, GatewayError> {
    match headers.get(GRPC_TIMEOUT) {
        Some(value) => {
            let asked = parse_grpc_timeout(value)?;
            Ok(Some(limit.map_or(asked, |limit| asked.min(limit))))
        }
        None => Ok(limit),
    }
}

/// The whole body, at most `limit` bytes (413 past it, before reading
/// anything when the client announced its length), within `timeout` (408).
/// A body already here, the usual case, costs no timer.
pub async fn read_whole_body(body: RequestBody, limit: usize, timeout: Duration) -> Result<Bytes, GatewayError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let read = read_body(body, limit);
    tokio::pin!(read);
    match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(body) => body,
        Poll::Pending => tokio::time::timeout(timeout, read).await.map_err(|_| body_timeout(timeout))?,
    }
}

fn body_timeout(limit: Duration) -> GatewayError {
    GatewayError::new(
        Code::DeadlineExceeded,
        Fault::Client,
        format!("the request body did not arrive within {} ms", limit.as_millis()),
    )
    .with_status(StatusCode::REQUEST_TIMEOUT)
}

/// 413: the body, or a streamed body so far, is larger than `limit`.
pub fn too_large(limit: usize) -> GatewayError {
    GatewayError::new(
        Code::ResourceExhausted,
        Fault::Client,
        format!("request body exceeds the limit of {limit} bytes"),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// 400: the client's body broke off.
pub fn body_error(err: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::new(Code::InvalidArgument, Fault::Client, format!("reading request body: {err}"))
}

/// Whether the announced `Content-Length` is already over `limit`.
pub fn announced_too_large(headers: &HeaderMap, limit: usize) -> bool {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
}

async fn read_body(mut body: RequestBody, limit: usize) -> Result<Bytes, GatewayError> {
    // hyper knows the announced length (`Content-Length`): over the limit,
    // nothing is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit));
    }
    // One chunk, the usual case, is the body as it is; more are joined.
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| body_error(&err))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let read = joined.as_ref().map_or(first.len(), BytesMut::len);
        if read + data.len() > limit {
            return Err(too_large(limit));
        }
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                // Room for what the client announced is still to come.
                let rest = usize::try_from(body.size_hint().lower()).unwrap_or(limit).min(limit - read - data.len());
                let mut both = BytesMut::with_capacity(read + data.len() + rest);
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &HeaderValue) -> Result<Duration, GatewayError> {
    let invalid = || GatewayError::bad_field("grpc-timeout", format!("invalid grpc-timeout header {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(invalid());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(invalid()),
    })
}

/// The metrics of one upstream call of a route: recorded once, when it
/// ends. A call dropped unfinished (its client went away) counts as
/// CANCELLED. The route's exchange learns the code the call ended with.
pub struct CallRecord {
    metrics: Arc<Metrics>,
    call: Arc<MethodCall>,
    exchange: Option<Arc<Exchange>>,
    /// Set while the call is open.
    started: Option<Instant>,
}

impl CallRecord {
    pub fn new(metrics: &Arc<Metrics>, call: &Arc<MethodCall>, exchange: Option<&Arc<Exchange>>) -> Self {
        Self { metrics: metrics.clone(), call: call.clone(), exchange: exchange.cloned(), started: None }
    }

    /// The call goes upstream now.
    pub fn begin(&mut self) {
        self.started = Some(Instant::now());
    }

    /// The call is over with `code` (nothing happens if it never began or
    /// already ended).
    pub fn end(&mut self, code: Code) {
        if let Some(started) = self.started.take() {
            self.metrics.upstream_call(
                &self.call.upstream.label,
                &self.call.label,
                &self.call.series,
                code,
                started.elapsed(),
            );
            if let Some(exchange) = &self.exchange {
                exchange.set_code(code);
            }
        }
    }

    /// Moves the open call's record out (to the response body that ends
    /// it), leaving one that records nothing.
    pub fn take(&mut self) -> Self {
        Self {
            metrics: self.metrics.clone(),
            call: self.call.clone(),
            exchange: self.exchange.clone(),
            started: self.started.take(),
        }
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let parse = |s: &str| parse_grpc_timeout(&HeaderValue::from_str(s).expect("value")).ok();
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "10", "10s", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_client_may_shorten_a_deadline_or_set_one() {
        let mut headers = HeaderMap::new();
        assert_eq!(call_timeout(&headers, None).ok(), Some(None));
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("2S"));
        assert_eq!(call_timeout(&headers, None).ok(), Some(Some(Duration::from_secs(2))));
        assert_eq!(call_timeout(&headers, Some(Duration::from_secs(1))).ok(), Some(Some(Duration::from_secs(1))));
        assert_eq!(call_timeout(&headers, Some(Duration::from_secs(9))).ok(), Some(Some(Duration::from_secs(2))));
    }
}
