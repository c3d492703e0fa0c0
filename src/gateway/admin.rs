//! The admin listener (its own port, loopback by default): liveness,
//! readiness, the route table and the descriptor status as JSON. Kept off
//! the public listener so that nothing operational is exposed to clients.

use std::future::Future;

use axum::extract::State;
use axum::http::Uri;
use axum::response::IntoResponse as _;
use axum::routing::get;
use axum::{Json, Router};
use http::header::{ACCEPT, ALLOW};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::Code;

use super::listener::{accept_loop, Drain};
use super::Gateway;
use crate::catalog::Target;
use crate::error::{Fault, GatewayError};
use crate::http::respond::error_response;
use crate::metrics::UpstreamSnapshot;
use crate::upstream::cluster::EndpointState;

type Reply = axum::response::Response;

/// Serves the admin endpoints of `gateway` until `shutdown`.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Through the public listener's accept loop, not `axum::serve`: the
    // admin port keeps the header-read timeout, HTTP/2 keep-alive and the
    // drain deadline, so a stuck client can neither hold a connection nor
    // stall shutdown.
    let timeouts = gateway.timeouts();
    let drain = Drain::new(gateway.shutdown_timeout());
    let router = router(gateway);
    accept_loop(listener, None, timeouts, drain, shutdown, move |_peer| router.clone()).await
}

/// The admin endpoints, apart from any socket so tests can drive them
/// in-process. Every endpoint is read-only (GET, and HEAD with it).
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/routes", get(|State(gateway): State<Gateway>| async move { Json(routes_json(&gateway)) }))
        .route("/descriptors", get(descriptors))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(read_only)
        .with_state(gateway)
}

/// Ready when the catalog is loaded (it is, or the gateway would not
/// serve) and the last background probe reached every routed upstream;
/// otherwise 503 naming each upstream that did not answer.
async fn readyz(State(gateway): State<Gateway>) -> Reply {
    let status = gateway.reloader().status();
    match gateway.readiness().check() {
        Ok(()) => {
            Json(json!({"status": "ready", "generation": status.generation, "routes": status.routes})).into_response()
        }
        Err(reasons) => {
            let err =
                GatewayError::new(Code::Unavailable, Fault::Upstream, format!("not ready: {}", reasons.join("; ")))
                    .with_status(StatusCode::SERVICE_UNAVAILABLE);
            envelope(&gateway, &err)
        }
    }
}

/// Prometheus text, or OpenMetrics when the scraper asks for it.
async fn metrics(State(gateway): State<Gateway>, headers: HeaderMap) -> Reply {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"));
    let content_type = match openmetrics {
        true => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        false => "text/plain; version=0.0.4; charset=utf-8",
    };
    gateway.metrics().upstreams(&upstream_snapshots(&gateway.catalog()));
    let mut reply = Reply::new(axum::body::Body::from(gateway.metrics().render(openmetrics)));
    reply.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

async fn descriptors(State(gateway): State<Gateway>) -> Json<serde_json::Value> {
    let status = gateway.reloader().status();
    Json(serde_json::to_value(&*status).unwrap_or_default())
}

/// Byte for byte what `protogate openapi` prints for the same inputs.
async fn openapi(State(gateway): State<Gateway>) -> Reply {
    let mut reply = Reply::new(axum::body::Body::from(gateway.openapi()));
    reply.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

async fn not_found(State(gateway): State<Gateway>, uri: Uri) -> Reply {
    let err = GatewayError::not_found(format!("no admin endpoint {}", uri.path()));
    envelope(&gateway, &err)
}

async fn read_only(State(gateway): State<Gateway>) -> Reply {
    // RFC 9110 §15.5.6: a 405 must say which methods are allowed.
    let err = GatewayError::new(Code::Unimplemented, Fault::Client, "admin endpoints are read-only")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
        .with_header(ALLOW, HeaderValue::from_static("GET, HEAD"));
    envelope(&gateway, &err)
}

/// Admin refusals are rendered like every other: one envelope.
fn envelope(gateway: &Gateway, err: &GatewayError) -> Reply {
    error_response(&gateway.catalog(), err).map(axum::body::Body::new)
}

/// The route table as JSON, the same content as `protogate routes`.
pub fn routes_json(gateway: &Gateway) -> serde_json::Value {
    let catalog = gateway.catalog();
    let routes: Vec<_> = catalog
        .routes
        .iter()
        .map(|route| {
            json!({
                "method": route.http_method.as_str(),
                "path": route.template.to_string(),
                "grpc_method": route.call().map(|call| call.grpc_method()),
                "composition": composition_json(route),
                "kind": route.kind.as_str(),
                "upstream": route.call().map(|call| call.upstream.url.to_string()),
                "version": route.version,
                "source": route.call().map_or_else(|| "config".to_owned(), |call| call.origin.to_string()),
                "auto_mapped": route.call().is_some_and(|call| call.auto_mapped),
                "timeout_ms": route.timeout.as_millis() as u64,
                "max_body": route.max_body,
            })
        })
        .collect();
    let unrouted: Vec<_> = catalog.unrouted.iter().map(|u| json!({"name": u.name, "reason": u.reason})).collect();
    json!({"routes": routes, "unrouted": unrouted, "upstreams": upstreams_json(&catalog)})
}

/// Each routed upstream's endpoint states and totals, for `/metrics`.
fn upstream_snapshots(catalog: &crate::catalog::Catalog) -> Vec<UpstreamSnapshot> {
    use std::sync::atomic::Ordering::Relaxed;
    catalog
        .upstreams()
        .iter()
        .map(|upstream| {
            let cluster = &upstream.cluster;
            let states = cluster.endpoint_states();
            let endpoints = EndpointState::ALL
                .iter()
                .map(|state| (state.as_str(), states.iter().filter(|(_, s)| s == state).count()))
                .collect();
            UpstreamSnapshot {
                upstream: upstream.label.clone(),
                endpoints,
                in_flight: cluster.in_flight(),
                retries: cluster.retries.load(Relaxed),
                ejections: cluster.ejections.load(Relaxed),
                overloaded: cluster.shed.load(Relaxed),
            }
        })
        .collect()
}

/// Each routed upstream with its endpoints, their states and calls in
/// flight (DESIGN §4b).
fn upstreams_json(catalog: &crate::catalog::Catalog) -> Vec<serde_json::Value> {
    catalog
        .upstreams()
        .iter()
        .map(|upstream| {
            let cluster = &upstream.cluster;
            let endpoints: Vec<_> = cluster
                .endpoint_states()
                .iter()
                .map(|(endpoint, state)| {
                    json!({
                        "address": endpoint.addr.to_string(),
                        "state": state.as_str(),
                        "in_flight": endpoint.in_flight(),
                    })
                })
                .collect();
            json!({
                "upstream": &*upstream.label,
                "balance": cluster.settings.balance.as_str(),
                "in_flight": cluster.in_flight(),
                "endpoints": endpoints,
            })
        })
        .collect()
}

/// A composition route's name and calls, for `/routes`.
fn composition_json(route: &crate::catalog::Route) -> serde_json::Value {
    let Target::Composition(plan) = &route.target else {
        return serde_json::Value::Null;
    };
    let calls: Vec<_> = plan
        .calls
        .iter()
        .map(|call| {
            json!({
                "name": &*call.name,
                "method": call.grpc_method(),
                "upstream": call.upstream.url.to_string(),
                "optional": call.optional,
                "for_each": call.for_each.is_some(),
                "needs": call.needs.iter().map(|&i| &*plan.calls[i].name).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"name": &*plan.name, "calls": calls})
}
