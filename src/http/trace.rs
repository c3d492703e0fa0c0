//! Gives every request its W3C trace context ([`TraceContext`]: the
//! client's trace, or a new one) in its extensions, for the handlers to
//! carry to the backends; while spans are exported, also opens the
//! request's span and records its status when the answer is ready.
//!
//! Right after the request id, so the span carries it; above the respond
//! layer, so every answer, errors included, is recorded.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::request_id::X_REQUEST_ID;
use super::Body;
use crate::telemetry::span::RequestSpan;
use crate::telemetry::TraceContext;

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut trace = TraceContext::from_headers(req.headers());
        let span = trace.open_span(req.method(), req.headers().get(X_REQUEST_ID));
        req.extensions_mut().insert(trace);
        TraceFuture { inner: self.inner.call(req), span }
    }
}

pin_project! {
    /// The inner answer; records its status on the request's span, if any.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Option<RequestSpan>,
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let (Some(span), Ok(response)) = (this.span.take(), &result) {
            span.record_response(response.status());
        }
        Poll::Ready(result)
    }
}
