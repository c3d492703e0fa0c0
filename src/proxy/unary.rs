//! The unary handler: decode the request into the route's input message,
//! call the upstream, encode its answer. Every refusal is returned as a
//! [`GatewayError`] for the respond layer.

use std::future::Future as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use tonic::Code;
use tower::Service;

use super::metadata::{self, MetadataRules};
use crate::error::{Fault, GatewayError};
use crate::http::request_id::{new_request_id, X_REQUEST_ID};
use crate::http::{Body, Identity, MatchedRoute, ResponseFuture};
use crate::transcode::RequestInput;

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Decodes the request into the route's input message, calls the upstream
/// and encodes its answer.
#[derive(Clone)]
pub struct Transcoder {
    metadata: Arc<MetadataRules>,
    /// The connection's peer IP, already an `x-forwarded-for` entry.
    peer: HeaderValue,
}

impl Transcoder {
    /// The handler of one connection from `peer`.
    pub fn new(metadata: Arc<MetadataRules>, peer: IpAddr) -> Self {
        Self { metadata, peer: metadata::peer_value(peer) }
    }
}

impl Service<Request<Incoming>> for Transcoder {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(matched) = req.extensions_mut().remove::<MatchedRoute>() else {
                return Err(GatewayError::internal("no route was matched"));
            };
            this.unary(&matched, req).await
        })
    }
}

impl Transcoder {
    /// A unary call: decode, call, encode.
    async fn unary(&self, matched: &MatchedRoute, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        let MatchedRoute { catalog, route, captures } = matched;
        let (parts, body) = req.into_parts();

        // A body sent slowly, or never, must not hold the request for good:
        // reading it gets the route's timeout (the upstream call then gets
        // its own). A body already here, the usual case, costs no timer.
        let body = if body.is_end_stream() {
            Bytes::new()
        } else {
            let read = read_body(body, &parts.headers, route.max_body);
            tokio::pin!(read);
            match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
                Poll::Ready(body) => body?,
                Poll::Pending => {
                    tokio::time::timeout(route.timeout, read).await.map_err(|_| body_timeout(route.timeout))??
                }
            }
        };
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let message = route
            .request
            .build(&catalog.json, RequestInput { body, content_type, captures, query: parts.uri.query() })?;

        let request_id = parts.headers.get(X_REQUEST_ID).cloned().unwrap_or_else(new_request_id);
        let metadata = self.metadata.request_metadata(
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            &self.peer,
            &request_id,
            parts.extensions.get::<Identity>(),
        );
        let timeout = match parts.headers.get(GRPC_TIMEOUT) {
            Some(value) => parse_grpc_timeout(value)?.min(route.timeout),
            None => route.timeout,
        };
        let reply =
            route.upstream.unary(route.grpc_path.clone(), route.codec.clone(), message, metadata, timeout).await?;
        let message = reply.message.ok_or_else(|| {
            GatewayError::new(Code::Internal, Fault::Upstream, "upstream ended the call without a response message")
        })?;
        let rendered = route.response.render(&catalog.json, &message)?;

        let mut response = Response::new(Body::full(rendered.body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, rendered.content_type);
        metadata::response_headers(&reply.headers, &reply.trailers, headers);
        Ok(response)
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

/// Reads the whole body, refusing more than `limit` bytes (413) before
/// reading them when the client announced its length.
async fn read_body(body: Incoming, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            Code::ResourceExhausted,
            Fault::Client,
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let announced = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => {
            Err(GatewayError::new(Code::InvalidArgument, Fault::Client, format!("reading request body: {err}")))
        }
    }
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
}
