//! Gives every request an `x-request-id` (the client's, if it sent a sane
//! one) before anything else runs, and echoes it on every response, errors
//! included, so one id follows a call through logs and backends.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::server::Body;
use crate::transcode::metadata::{new_request_id, X_REQUEST_ID};

/// Longest client-supplied id we keep; longer ones are replaced.
const MAX_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(id) if is_sane(id) => id.clone(),
            _ => {
                let id = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            response.headers_mut().insert(X_REQUEST_ID, id);
            Ok(response)
        })
    }
}

fn is_sane(id: &HeaderValue) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
}
