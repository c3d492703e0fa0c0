//! Distributed tracing (DESIGN §9): the W3C trace context of every request
//! and the spans exported over OTLP.
//!
//! Every request gets a [`TraceContext`] — the client's `traceparent`, or
//! a new trace when it sent none or an invalid one — and every upstream
//! call carries it on with a span id of its own ([`CallSpan`]), so a
//! backend always sees a trace. That much is always on and costs a header
//! parse and two short header values per call.
//!
//! Spans exist only when `tracing.otlp_endpoint` is set ([`Exporter`]):
//! then the request has a server span and each upstream call a client span,
//! made with `tracing` and turned into OpenTelemetry spans by
//! `tracing-opentelemetry`. Without an endpoint no span is ever made on the
//! request path ([`exporting`] is false).
//!
//! Below the HTTP layers and the handlers, which use it; it knows neither.

pub mod context;
pub mod export;
pub mod span;

use std::sync::atomic::{AtomicBool, Ordering};

pub use self::context::TraceContext;
pub use self::export::Exporter;
pub use self::span::{CallSpan, Carrier};

/// The `tracing` target of the gateway's spans: only the OTLP layer sees
/// it, the log output never does.
pub const SPAN_TARGET: &str = "protogate_otel";

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported, i.e. whether the request path makes any.
#[inline]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Called once the subscriber with the OTLP layer is installed: from now
/// on requests and upstream calls make spans.
pub fn start_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}
