//! The admin listener (its own port, loopback by default): liveness,
//! readiness, the route table and the descriptor status as JSON. Kept off
//! the public listener so that nothing operational is exposed to clients.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;

use super::listener::accept_loop;
use super::Gateway;
use crate::http::Body;

/// Serves the admin endpoints of `gateway` until `shutdown`.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    accept_loop(listener, shutdown, move |_peer| {
        let gateway = gateway.clone();
        tower::service_fn(move |req: Request<Incoming>| {
            let response = respond(&gateway, req.method(), req.uri().path());
            std::future::ready(Ok::<_, Infallible>(response))
        })
    })
    .await
}

fn respond(gateway: &Gateway, method: &Method, path: &str) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"code": 12, "message": "admin endpoints are read-only", "details": []}),
        );
        // RFC 9110 §15.5.6: a 405 must say which methods are allowed.
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => reply(StatusCode::OK, &json!({"status": "ok"})),
        "/readyz" => {
            let status = gateway.reloader().status();
            reply(StatusCode::OK, &json!({"status": "ready", "generation": status.generation, "routes": status.routes}))
        }
        "/routes" => reply(StatusCode::OK, &routes_json(gateway)),
        "/descriptors" => {
            let status = gateway.reloader().status();
            reply(StatusCode::OK, &serde_json::to_value(&*status).unwrap_or_default())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"code": 5, "message": format!("no admin endpoint {path}"), "details": []}),
        ),
    }
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
                "grpc_method": route.grpc_method(),
                "upstream": route.upstream.url.to_string(),
                "version": route.version,
                "source": route.origin.to_string(),
                "auto_mapped": route.auto_mapped,
                "timeout_ms": route.timeout.as_millis() as u64,
                "max_body": route.max_body,
            })
        })
        .collect();
    let unrouted: Vec<_> = catalog.unrouted.iter().map(|u| json!({"name": u.name, "reason": u.reason})).collect();
    json!({"routes": routes, "unrouted": unrouted})
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
