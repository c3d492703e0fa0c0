//! The tower layer: after route match (it reads [`MatchedRoute`]) and
//! after authentication (it reads [`Identity`] when present), before the
//! transcoder, so a refused request costs no JSON parsing and no upstream
//! call. Routes without limits pass straight through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::rule::RouteLimits;
use super::{Check, RateLimiter};
use crate::error::GatewayError;
use crate::http::{Body, Identity, MatchedRoute, ResponseFuture};

/// Built per connection: `peer` is the TCP peer the client IP starts from.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    peer: SocketAddr,
}

impl RateLimitLayer {
    pub fn new(limiter: Arc<RateLimiter>, peer: SocketAddr) -> Self {
        Self { limiter, peer }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { limiter: self.limiter.clone(), peer: self.peer, inner }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    limiter: Arc<RateLimiter>,
    peer: SocketAddr,
    inner: S,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = GatewayError, Future = ResponseFuture>
        + Clone
        + Send
        + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(matched) = req.extensions().get::<MatchedRoute>() else {
            return self.inner.call(req);
        };
        let Some(limits) = matched.route.extensions.get::<RouteLimits>() else {
            return self.inner.call(req);
        };
        let consumer = req.extensions().get::<Identity>().map(|identity| identity.consumer.as_str());
        let check = self.limiter.check(limits, self.peer, req.headers(), consumer);
        match check {
            Check::Done(Ok(verdict)) => {
                let response = self.inner.call(req);
                Box::pin(async move {
                    let mut response = response.await?;
                    verdict.apply(response.headers_mut());
                    Ok(response)
                })
            }
            Check::Done(Err(err)) => Box::pin(std::future::ready(Err(err))),
            Check::Pending(pending) => {
                let limiter = self.limiter.clone();
                // The inner service was made ready for this call; the clone
                // stays behind for the next one.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move {
                    let verdict = pending.run(&limiter).await?;
                    let mut response = inner.call(req).await?;
                    verdict.apply(response.headers_mut());
                    Ok(response)
                })
            }
        }
    }
}
