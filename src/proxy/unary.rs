//! The unary handler: decode the request into the route's input message,
//! call the upstream, encode its answer. Every refusal is returned as a
//! [`GatewayError`] for the respond layer.

use std::sync::Arc;
use std::time::Instant;

use http::header::CONTENT_TYPE;
use http::{Request, Response};

use tonic::Code;

use super::metadata;
use super::request::{call_metadata, call_timeout, read_whole_body, Handler};
use crate::catalog::MethodCall;
use crate::error::{Fault, GatewayError};
use crate::http::observe::Exchange;
use crate::http::{Body, MatchedRoute, RequestBody};
use crate::metrics::Phase;
use crate::transcode::RequestInput;

/// A unary call: decode, call, encode.
pub async fn call(
    handler: &Handler,
    matched: &MatchedRoute,
    call: &MethodCall,
    req: Request<RequestBody>,
) -> Result<Response<Body>, GatewayError> {
    let MatchedRoute { catalog, route, captures } = matched;
    let (parts, body) = req.into_parts();
    let metrics = &handler.metrics;

    // A body sent slowly, or never, must not hold the request for good:
    // reading it gets the route's timeout (the upstream call then gets its
    // own).
    let body = read_whole_body(body, route.max_body, route.timeout).await?;
    let exchange = parts.extensions.get::<Arc<Exchange>>();
    if let Some(exchange) = exchange {
        exchange.add_bytes_in(body.len());
    }
    // The phases time the gateway's own work, not the client's upload.
    let decoding = Instant::now();
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let message = call
        .request
        .build_outgoing(&catalog.json, RequestInput { body, content_type, captures, query: parts.uri.query() })?;

    let metadata = call_metadata(&handler.metadata, &parts, &handler.peer);
    let timeout = call_timeout(&parts.headers, Some(route.timeout))?.unwrap_or(route.timeout);
    let calling = Instant::now();
    metrics.phase(Phase::Decode, calling - decoding);
    let reply = call.upstream.unary(call.grpc_path.clone(), message, metadata, timeout).await;
    let encoding = Instant::now();
    metrics.phase(Phase::Upstream, encoding - calling);
    let code = reply.as_ref().map_or_else(|err| err.code, |_| Code::Ok);
    metrics.upstream_call(&call.upstream.label, &call.label, &call.series, code, encoding - calling);
    let reply = reply?;
    let message = reply.message.ok_or_else(|| {
        GatewayError::new(Code::Internal, Fault::Upstream, "upstream ended the call without a response message")
    })?;
    let rendered = call.response.render_encoded(&catalog.json, message)?;
    metrics.phase(Phase::Encode, encoding.elapsed());
    if let Some(exchange) = exchange {
        exchange.set_code(Code::Ok);
    }

    let mut response = Response::new(Body::full(rendered.body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, rendered.content_type);
    metadata::response_headers(&reply.headers, &reply.trailers, headers);
    Ok(response)
}
