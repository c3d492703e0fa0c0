//! Matches the request against the route table of the current catalog
//! snapshot and puts the result, [`MatchedRoute`], in the request's
//! extensions for the layers after it (policy, rate limit) and the
//! transcoder. No route → 404; the path exists under other methods → 405
//! with `Allow`, both as errors for the respond layer. The catalog is the
//! snapshot the respond layer took. The route's own response headers (a
//! deprecated version's) are added here to whatever the layers below answer,
//! errors included.

use std::fmt::Display;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{ALLOW, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tonic::Code;
use tower::{Layer, Service};

use super::observe::Exchange;
use super::respond::{Refused, Snapshot};
use super::{Body, ResponseFuture};
use crate::catalog::{Catalog, Route};
use crate::error::{Fault, GatewayError};
use crate::routing::Match;
use crate::telemetry::{self, TraceContext};

/// The route a request matched, with the catalog it belongs to.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub catalog: Arc<Catalog>,
    pub route: Arc<Route>,
    /// Path variable values in the template's variable order.
    pub captures: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RouteMatchLayer;

impl<S> Layer<S> for RouteMatchLayer {
    type Service = RouteMatch<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteMatch { inner }
    }
}

#[derive(Clone)]
pub struct RouteMatch<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RouteMatch<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = GatewayError, Future = ResponseFuture>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(Refused(err)) = req.extensions_mut().remove::<Refused>() {
            return Box::pin(std::future::ready(Err(err)));
        }
        let Some(Snapshot(catalog)) = req.extensions_mut().remove::<Snapshot>() else {
            return Box::pin(std::future::ready(Err(GatewayError::internal("no catalog snapshot was taken"))));
        };
        // A WebSocket upgrade finds a streaming route by its path alone;
        // a path without one goes on as an ordinary GET.
        let websocket = match is_websocket_upgrade(&req) {
            true => match catalog.websockets.find(&Method::GET, req.uri().path()) {
                Match::Found { value, captures } => Some((value.clone(), captures)),
                _ => None,
            },
            false => None,
        };
        let found = match websocket {
            Some(found) => Ok(found),
            None => match catalog.table.find(req.method(), req.uri().path()) {
                Match::Found { value, captures } => Ok((value.clone(), captures)),
                Match::MethodNotAllowed { allow } => Err(method_not_allowed(req.method(), req.uri().path(), &allow)),
                Match::NotFound => {
                    Err(GatewayError::not_found(format!("no route for {} {}", req.method(), req.uri().path())))
                }
                // A path variable that is not UTF-8 once percent-decoded.
                Match::Invalid { reason } => Err(GatewayError::bad_field("", reason)),
            },
        };
        // While spans are exported, the request's is named after its route.
        if telemetry::exporting() {
            if let Some(trace) = req.extensions().get::<TraceContext>() {
                let route = found.as_ref().ok().map(|(route, _)| route);
                trace.record_route(req.method(), route.map(|r| (&r.template as &dyn Display, r.grpc_method())));
            }
        }
        match found {
            Ok((route, captures)) => {
                // Added here, around every layer that may answer for the
                // route: a version's `Deprecation` and `Sunset` belong on its
                // 401, 403 and 429 as much as on the backend's answers.
                if let Some(exchange) = req.extensions().get::<Arc<Exchange>>() {
                    exchange.set_route(&route);
                }
                let headers = (!route.response_headers.is_empty()).then(|| route.clone());
                req.extensions_mut().insert(MatchedRoute { catalog, route, captures });
                let call = self.inner.call(req);
                match headers {
                    None => call,
                    Some(route) => Box::pin(async move {
                        match call.await {
                            Ok(mut response) => {
                                let headers = response.headers_mut();
                                for (name, value) in &route.response_headers {
                                    headers.insert(name.clone(), value.clone());
                                }
                                Ok(response)
                            }
                            Err(mut err) => {
                                err.headers.extend(route.response_headers.iter().cloned());
                                Err(err)
                            }
                        }
                    }),
                }
            }
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}

fn method_not_allowed(method: &Method, path: &str, allow: &[Method]) -> GatewayError {
    let list = allow.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let err = GatewayError::new(
        Code::Unimplemented,
        Fault::Client,
        format!("method {method} is not allowed for {path} (allowed: {list})"),
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED);
    match HeaderValue::try_from(list) {
        Ok(value) => err.with_header(ALLOW, value),
        Err(_) => err,
    }
}

/// `GET` with `Upgrade: websocket` (the handler checks the rest of the
/// handshake and answers a bad one with 400).
pub fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET && has_token(req.headers(), UPGRADE, "websocket")
}

/// Whether the comma-separated header `name` lists `token` (any case).
pub fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}
