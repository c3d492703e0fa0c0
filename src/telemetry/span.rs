//! The spans the gateway exports: one per request (server kind) and one
//! per upstream call (client kind), named and attributed after the
//! OpenTelemetry HTTP and RPC conventions. They are `tracing` spans of
//! target [`SPAN_TARGET`], which the OTLP layer alone sees; none is made
//! unless [`exporting`].
//!
//! Parents are always explicit, taken from trace contexts rather than from
//! whichever span is current: a WebSocket session or a streamed body runs
//! outside the request's task, and its calls must still hang from the
//! request.

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tonic::Code;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::context::{random_span_id, write_hex, TraceContext, Traceparent, SAMPLED, TRACEPARENT, TRACESTATE};
use super::{exporting, SPAN_TARGET};

/// The metadata of an upstream call, whatever holds it, as the trace
/// context reads and writes it: OpenTelemetry's extractor and injector in
/// one.
pub trait Carrier {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue>;
    /// Sets `name` to `value` alone.
    fn set(&mut self, name: HeaderName, value: HeaderValue);
}

impl Carrier for HeaderMap {
    fn get(&self, name: &HeaderName) -> Option<&HeaderValue> {
        HeaderMap::get(self, name)
    }

    fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.insert(name, value);
    }
}

/// The request's server span, held until its answer is known.
#[derive(Debug)]
pub struct RequestSpan(tracing::Span);

impl RequestSpan {
    /// The answer's status: 5xx marks the span as an error.
    pub fn record_response(&self, status: StatusCode) {
        self.0.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            self.0.record("otel.status_code", "ERROR");
        }
    }
}

impl TraceContext {
    /// Opens the request's server span, child of the client's span when
    /// its traceparent was valid. `None` unless exporting.
    pub fn open_span(&mut self, method: &Method, request_id: Option<&HeaderValue>) -> Option<RequestSpan> {
        if !exporting() {
            return None;
        }
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            parent: None,
            "request",
            otel.name = method.as_str(),
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            http.route = Empty,
            http.response.status_code = Empty,
            rpc.system = Empty,
            rpc.service = Empty,
            rpc.method = Empty,
            request_id = request_id.and_then(|id| id.to_str().ok()).unwrap_or_default(),
        );
        if let Some(client) = self.client {
            let _ = span.set_parent(remote_parent(&self.own.with_parent(client)));
        }
        self.span = Some(span.clone());
        Some(RequestSpan(span))
    }

    /// The trace and the gateway's span of this request, as its upstream
    /// calls name their parent.
    pub fn current(&self) -> Traceparent {
        self.span.as_ref().and_then(ids_of).unwrap_or(self.own)
    }

    /// Puts `traceparent` and the client's `tracestate` into an upstream
    /// call's metadata (which holds neither: the client's never pass).
    ///
    /// The traceparent names the gateway's span of the request. While
    /// exporting, each call then puts its own span there
    /// ([`CallSpan`]); otherwise, that id is the call's (no span
    /// exists), and a request making several calls gives each a copy with
    /// an id of its own ([`with_own_span_id`]).
    pub fn propagate(&self, metadata: &mut impl Carrier) {
        if let Some(value) = self.current().to_header() {
            metadata.set(TRACEPARENT, value);
        }
        if let Some(state) = &self.state {
            metadata.set(TRACESTATE, state.clone());
        }
    }

    /// Names the request's span after the route it matched (`route` the
    /// template and the gRPC method, empty for a composition), or marks
    /// it `unmatched`. Does nothing unless exporting.
    pub fn record_route(&self, method: &Method, route: Option<(&dyn fmt::Display, &str)>) {
        let Some(span) = &self.span else {
            return;
        };
        let Some((template, grpc_method)) = route else {
            span.record("http.route", "unmatched");
            return;
        };
        let template = template.to_string();
        span.record("otel.name", format!("{method} {template}"));
        span.record("http.route", template);
        if let Some((service, method)) = split_grpc_method(grpc_method) {
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", method);
        }
    }
}

/// The ids of an exported span, started if it was not yet.
pub(super) fn ids_of(span: &tracing::Span) -> Option<Traceparent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| Traceparent {
        trace_id: span_context.trace_id().to_bytes(),
        parent_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8() & SAMPLED,
    })
}

fn remote_parent(parent: &Traceparent) -> opentelemetry::Context {
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags & SAMPLED),
        true,
        TraceState::default(),
    ))
}

/// `package.Service/Method` (or with a leading `/`) as its two halves.
fn split_grpc_method(path: &str) -> Option<(&str, &str)> {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').filter(|(service, method)| !service.is_empty() && !method.is_empty())
}

/// While exporting, one upstream call's client span, ended with the
/// call's gRPC status ([`CallSpan::finish`]; CANCELLED if dropped first).
/// Otherwise nothing at all.
#[derive(Debug, Default)]
pub struct CallSpan(Option<tracing::Span>);

impl CallSpan {
    /// Opens the span of the call `grpc_path` to `server`, child of the
    /// request's span named by the `traceparent` in `metadata` (see
    /// [`TraceContext::propagate`]), and puts the call's own span id in
    /// that `traceparent`. Does nothing unless exporting, or without a
    /// traceparent.
    pub fn start(metadata: &mut impl Carrier, server: &Uri, grpc_path: &str) -> Self {
        if !exporting() {
            return Self(None);
        }
        let Some(parent) = metadata.get(&TRACEPARENT).and_then(|v| Traceparent::parse(v.as_bytes())) else {
            return Self(None);
        };
        let span = client_span(&parent, server, grpc_path);
        let own = ids_of(&span).unwrap_or_else(|| parent.with_parent(random_span_id()));
        if let Some(value) = own.to_header() {
            metadata.set(TRACEPARENT, value);
        }
        Self(Some(span))
    }

    /// Ends the span with the call's status.
    pub fn finish(&mut self, code: Code) {
        if let Some(span) = self.0.take() {
            span.record("rpc.grpc.status_code", code as i64);
            if code != Code::Ok {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
}

/// `metadata` for one of several calls sent with copies of one request's
/// metadata (a composition's): a span id of the call's own in its
/// `traceparent`. While exporting, [`CallSpan::start`] does that instead.
pub fn with_own_span_id<C: Carrier>(mut metadata: C) -> C {
    if exporting() {
        return metadata;
    }
    if let Some(mut value) = metadata.get(&TRACEPARENT).and_then(|v| <[u8; 55]>::try_from(v.as_bytes()).ok()) {
        write_hex(&mut value[36..52], &random_span_id());
        if let Ok(mut value) = HeaderValue::from_bytes(&value) {
            value.set_sensitive(true);
            metadata.set(TRACEPARENT, value);
        }
    }
    metadata
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn client_span(parent: &Traceparent, server: &Uri, grpc_path: &str) -> tracing::Span {
    let (service, method) = split_grpc_method(grpc_path).unwrap_or_default();
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        parent: None,
        "upstream call",
        otel.name = grpc_path.strip_prefix('/').unwrap_or(grpc_path),
        otel.kind = "client",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        server.address = server.host().unwrap_or_default(),
        server.port = Empty,
    );
    if let Some(port) = server.port_u16() {
        span.record("server.port", i64::from(port));
    }
    let _ = span.set_parent(remote_parent(parent));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_methods_split_into_service_and_method() {
        assert_eq!(split_grpc_method("/pkg.Svc/Get"), Some(("pkg.Svc", "Get")));
        assert_eq!(split_grpc_method("pkg.Svc/Get"), Some(("pkg.Svc", "Get")));
        assert_eq!(split_grpc_method(""), None);
        assert_eq!(split_grpc_method("/pkg.Svc/"), None);
    }

    #[test]
    fn each_call_of_several_gets_its_own_span_id_in_the_same_trace() {
        let ctx = TraceContext::new_trace();
        let mut metadata = http::HeaderMap::new();
        ctx.propagate(&mut metadata);
        let sent = |md: HeaderMap| {
            let md = with_own_span_id(md);
            Traceparent::parse(md.get("traceparent").expect("traceparent").as_bytes()).expect("valid")
        };
        let (a, b) = (sent(metadata.clone()), sent(metadata));
        assert_eq!(a.trace_id, ctx.current().trace_id);
        assert_eq!(b.trace_id, ctx.current().trace_id);
        assert_eq!(a.flags, ctx.current().flags);
        assert_ne!(a.parent_id, b.parent_id);
        assert_ne!(a.parent_id, ctx.current().parent_id);

        // Not exporting, a call's span is nothing and leaves the metadata be.
        let mut md = HeaderMap::new();
        let server: Uri = "http://backend:50051".parse().expect("uri");
        let span = CallSpan::start(&mut md, &server, "/pkg.Svc/Get");
        assert!(span.0.is_none());
        assert!(with_own_span_id(md).get("traceparent").is_none(), "a call without a trace context gets none");
    }
}
