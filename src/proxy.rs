//! The innermost handlers of the request path: what runs once every layer
//! has let a request through. [`Handler`] picks one by the route's call
//! kind and the request: a unary call ([`unary`]), a stream over plain HTTP
//! ([`stream`]) or over a WebSocket ([`websocket`]).

pub mod composition;
pub mod metadata;
pub mod request;
pub mod stream;
pub mod unary;
pub mod websocket;

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};

use tower::Service;

use self::metadata::MetadataRules;
pub use self::request::Ending;
use crate::catalog::{CallKind, Target};
use crate::error::GatewayError;
use crate::http::route_match::is_websocket_upgrade;
use crate::http::{Body, MatchedRoute, RequestBody, ResponseFuture};
use crate::metrics::Metrics;

/// The handler of one connection: what every call on it shares.
#[derive(Clone)]
pub struct Handler(Arc<request::Handler>);

impl Handler {
    /// The handler of one connection from `peer`; streams still open when
    /// `ending` fires end with an in-band UNAVAILABLE.
    pub fn new(metadata: Arc<MetadataRules>, peer: IpAddr, ending: Ending, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(request::Handler { metadata, peer: metadata::peer_value(peer), ending, metrics }))
    }
}

impl Service<Request<RequestBody>> for Handler {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<RequestBody>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let Some(matched) = req.extensions_mut().remove::<MatchedRoute>() else {
                return Err(GatewayError::internal("no route was matched"));
            };
            // A WebSocket session outlives this call: it takes the route.
            if let Target::Method(call) = &matched.route.target {
                if matched.route.kind.streams() && is_websocket_upgrade(&req) {
                    let call = call.clone();
                    return websocket::call(&handler, matched, call, req);
                }
            }
            match (&matched.route.target, matched.route.kind) {
                (Target::Composition(plan), _) => composition::call(&handler, &matched, plan, req).await,
                (Target::Method(call), CallKind::Unary) => unary::call(&handler, &matched, call, req).await,
                (Target::Method(call), _) => stream::call(&handler, &matched, call, req).await,
            }
        })
    }
}
