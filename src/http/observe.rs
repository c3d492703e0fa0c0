//! What an operator sees of each request (DESIGN §9): the facts the
//! layers learn about it ([`Exchange`]), its metrics and its access-log
//! event, both recorded by the respond layer.
//!
//! The respond layer puts an [`Exchange`] in the request's extensions; the
//! route match, the auth layer and the handlers fill in what only they
//! know (route, consumer, gRPC code, body bytes read). A unary answer is
//! recorded when its head is ready (its body is already whole); a streamed
//! one is logged when its body ends, so the log has its bytes and its
//! final gRPC code.

use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body::{Frame, SizeHint};
use tonic::Code;

use super::body::BoxError;
use super::Body;
use crate::catalog::{Route, Target};
use crate::logging::{self, AccessLine};
use crate::metrics::{code_name, InFlight, UNMATCHED};

/// What the layers learn about one request.
#[derive(Debug)]
pub struct Exchange {
    route: OnceLock<Arc<Route>>,
    consumer: OnceLock<Box<str>>,
    /// The gRPC code the call ended with, or `NO_CODE`.
    code: AtomicI32,
    bytes_in: AtomicU64,
}

const NO_CODE: i32 = -1;

impl Default for Exchange {
    fn default() -> Self {
        Self {
            route: OnceLock::new(),
            consumer: OnceLock::new(),
            code: AtomicI32::new(NO_CODE),
            bytes_in: AtomicU64::new(0),
        }
    }
}

impl Exchange {
    pub fn set_route(&self, route: &Arc<Route>) {
        let _ = self.route.set(route.clone());
    }

    pub fn route(&self) -> Option<&Arc<Route>> {
        self.route.get()
    }

    pub fn set_consumer(&self, consumer: &str) {
        let _ = self.consumer.set(consumer.into());
    }

    /// The gRPC code the call ended with (the last one set wins).
    pub fn set_code(&self, code: Code) {
        self.code.store(code as i32, Ordering::Relaxed);
    }

    pub fn add_bytes_in(&self, bytes: usize) {
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn code(&self) -> Option<Code> {
        match self.code.load(Ordering::Relaxed) {
            NO_CODE => None,
            code => Some(Code::from_i32(code)),
        }
    }
}

/// One request's access-log event, waiting for its body to end.
#[derive(Debug)]
pub struct AccessRecord {
    pub exchange: Arc<Exchange>,
    pub start: Instant,
    pub request_id: Option<HeaderValue>,
    /// The connection's peer, `ip:port`, formatted once per connection.
    pub peer: Arc<str>,
    pub method: Method,
    pub status: StatusCode,
}

impl AccessRecord {
    /// Writes the event: one line, every field present, no secret (the
    /// consumer id is the only thing told about the caller).
    pub fn write(&self, bytes_out: u64) {
        let exchange = &self.exchange;
        let route = exchange.route();
        let (grpc_method, upstream) = match route.map(|route| &route.target) {
            Some(Target::Method(call)) => (&*call.label, &*call.upstream.label),
            Some(Target::Composition(plan)) => (&*plan.name, ""),
            None => ("", ""),
        };
        logging::access(&AccessLine {
            request_id: self.request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or(""),
            peer: &self.peer,
            method: self.method.as_str(),
            route: route.map_or(UNMATCHED, |route| &*route.label),
            grpc_method,
            status: self.status.as_u16(),
            grpc_code: exchange.code().map_or("", code_name),
            latency_ms: self.start.elapsed().as_secs_f64() * 1000.0,
            upstream,
            consumer: exchange.consumer.get().map_or("", |c| &**c),
            bytes_in: exchange.bytes_in.load(Ordering::Relaxed),
            bytes_out,
        });
    }
}

/// A streamed response body that counts its bytes and, when it ends (or
/// the client goes away), writes the access event and stops counting the
/// request as in flight.
pub struct Observed {
    inner: Body,
    bytes_out: u64,
    record: Option<AccessRecord>,
    _in_flight: Option<InFlight>,
}

impl Observed {
    pub fn new(inner: Body, record: Option<AccessRecord>, in_flight: Option<InFlight>) -> Self {
        Self { inner, bytes_out: 0, record, _in_flight: in_flight }
    }

    fn finish(&mut self) {
        if let Some(record) = self.record.take() {
            record.write(self.bytes_out);
        }
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        if this.inner.is_end_stream() {
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish();
    }
}
