//! CORS end to end (DESIGN §10): preflights answered before the route
//! match's 404/405, exact and wildcard-subdomain origins, per-route
//! policies through the one route selector, the headers on actual answers
//! (error envelopes included), nothing for origins that are not allowed,
//! and `*` with credentials refused at load.

mod common;

use std::path::Path;

use common::{api, assert_error, start, Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;

const APP: &str = "https://app.example.com";

/// The test service behind a gateway with this `cors` section.
async fn gateway(cors: &str) -> TestGateway {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams: {{ \"*\": \"{}\" }}\ncors:\n{cors}", backend.url());
    start(Descriptors::test_service(), yaml, vec![backend]).await
}

const GLOBAL: &str = "
  allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]
  allow_headers: [content-type, authorization]
  max_age: 2m
  routes:
    - match: { path_prefix: /test/query }
      allow_origins: [\"https://reports.example.net\"]
      allow_credentials: true
      expose_headers: [x-request-id]
";

async fn preflight(gw: &TestGateway, path: &str, origin: &str, method: &str) -> Reply {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", method),
        ("access-control-request-headers", "content-type"),
    ];
    gw.request(Method::OPTIONS, path, &headers, None).await
}

fn vary(reply: &Reply) -> String {
    reply.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ")
}

#[track_caller]
fn assert_allowed_preflight(reply: &Reply, origin: &str) {
    assert_eq!(reply.status.as_u16(), 204, "{}", reply.text());
    assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
    assert_eq!(reply.header("access-control-allow-methods"), Some("GET, HEAD, POST, PUT, PATCH, DELETE"));
    assert_eq!(reply.header("access-control-allow-headers"), Some("content-type, authorization"));
    assert_eq!(reply.header("access-control-max-age"), Some("120"));
    assert!(reply.header("access-control-allow-credentials").is_none());
    let vary = vary(reply);
    assert!(vary.contains("origin") && vary.contains("access-control-request-method"), "vary: {vary}");
}

#[tokio::test]
async fn preflight_for_an_exact_origin_is_answered() {
    let gw = gateway(GLOBAL).await;
    let reply = preflight(&gw, "/test/echo", APP, "POST").await;
    assert_allowed_preflight(&reply, APP);
    assert!(reply.body.is_empty());
    assert_eq!(gw.backend_calls(), 0, "a preflight never reaches the backend");
}

#[tokio::test]
async fn preflight_for_a_wildcard_subdomain_is_answered() {
    let gw = gateway(GLOBAL).await;
    for origin in ["https://a.example.org", "https://a.b.example.org"] {
        assert_allowed_preflight(&preflight(&gw, "/test/echo", origin, "POST").await, origin);
    }
    for origin in ["https://example.org", "http://a.example.org", "https://example.org.evil.com"] {
        let reply = preflight(&gw, "/test/echo", origin, "POST").await;
        assert_eq!(reply.status.as_u16(), 204);
        assert!(reply.header("access-control-allow-origin").is_none(), "{origin} was allowed");
    }
}

#[tokio::test]
async fn preflight_is_answered_before_405_and_404() {
    let gw = gateway(GLOBAL).await;
    // `/test/echo` exists for POST only: a PUT there would be 405.
    assert_allowed_preflight(&preflight(&gw, "/test/echo", APP, "PUT").await, APP);
    // No route at all: the global policy answers, so the page sees the 404.
    assert_allowed_preflight(&preflight(&gw, "/nowhere", APP, "GET").await, APP);
    // A plain OPTIONS (no preflight) is still routed: 405, with CORS headers.
    let reply = gw.request(Method::OPTIONS, "/test/echo", &[("origin", APP)], None).await;
    assert_error(&reply, 405, 12);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[tokio::test]
async fn a_denied_origin_gets_no_cors_headers() {
    let gw = gateway(GLOBAL).await;
    let reply = preflight(&gw, "/test/echo", "https://evil.example.com", "POST").await;
    assert_eq!(reply.status.as_u16(), 204);
    let cors: Vec<_> = reply.headers.keys().filter(|name| name.as_str().starts_with("access-control-")).collect();
    assert!(cors.is_empty(), "{cors:?}");

    // The actual request is served on its own merits, without CORS headers.
    let reply = gw.request(Method::GET, "/test/query", &[("origin", "https://evil.example.com")], None).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert!(reply.header("access-control-allow-origin").is_none());
    assert!(vary(&reply).contains("origin"));
}

#[tokio::test]
async fn actual_requests_and_error_envelopes_carry_the_headers() {
    let gw = gateway(GLOBAL).await;
    let reply = gw
        .request(
            Method::POST,
            "/test/echo",
            &[("origin", APP), ("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert!(vary(&reply).contains("origin"));
    let exposed = reply.header("access-control-expose-headers").unwrap_or_default();
    for name in ["grpc-status", "grpc-message", "x-request-id", "ratelimit-remaining", "retry-after"] {
        assert!(exposed.contains(name), "{name} not in {exposed}");
    }

    // The 404 envelope too, so the page can read it.
    let reply = gw.request(Method::GET, "/nowhere", &[("origin", APP)], None).await;
    assert_error(&reply, 404, 5);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
    assert!(reply.header("access-control-expose-headers").is_some());
    assert!(vary(&reply).contains("origin"));

    // No Origin: no CORS headers, but caches are told the answer varies.
    let reply = gw.get("/test/query").await;
    assert!(reply.header("access-control-allow-origin").is_none());
    assert!(vary(&reply).contains("origin"));
}

#[tokio::test]
async fn a_route_entry_overrides_the_global_policy() {
    let gw = gateway(GLOBAL).await;
    let reports = "https://reports.example.net";
    let reply = preflight(&gw, "/test/query", reports, "GET").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some(reports));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    // Inherited from the global keys.
    assert_eq!(reply.header("access-control-max-age"), Some("120"));
    // The global origin is not the route's.
    let reply = preflight(&gw, "/test/query", APP, "GET").await;
    assert!(reply.header("access-control-allow-origin").is_none());
    // Other routes keep the global policy.
    let reply = preflight(&gw, "/test/echo", reports, "POST").await;
    assert!(reply.header("access-control-allow-origin").is_none());

    let reply = gw.request(Method::GET, "/test/query", &[("origin", reports)], None).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    assert_eq!(reply.header("access-control-allow-origin"), Some(reports));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("x-request-id"));
}

#[tokio::test]
async fn any_origin_answers_with_a_star_and_echoes_requested_headers() {
    let gw = gateway("  allow_origins: [\"*\"]\n").await;
    let reply = preflight(&gw, "/test/echo", "https://anyone.test", "POST").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    // `allow_headers` unset: the requested ones are allowed.
    assert_eq!(reply.header("access-control-allow-headers"), Some("content-type"));
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
}

#[tokio::test]
async fn http2_preflight_and_actual_request() {
    let gw = gateway(GLOBAL).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().expect("h2 client");
    let response = client
        .request(Method::OPTIONS, gw.url("/test/echo"))
        .header("origin", APP)
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .expect("h2 preflight");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let reply = Reply::read(response).await;
    assert_eq!(reply.status.as_u16(), 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));

    let response = client.get(gw.url("/nowhere")).header("origin", APP).send().await.expect("h2 get");
    let reply = Reply::read(response).await;
    assert_error(&reply, 404, 5);
    assert_eq!(reply.header("access-control-allow-origin"), Some(APP));
}

#[test]
fn star_with_credentials_is_refused_at_load_with_key_and_line() {
    let yaml = "cors:\n  allow_origins: [\"*\"]\n  allow_credentials: true\n";
    let err = api::from_yaml(yaml, Path::new("protogate.yaml")).expect_err("accepted").to_string();
    assert!(err.contains("cors.allow_credentials") && err.contains("line 3"), "{err}");

    // Inherited `*` with a route entry's credentials: the entry's key.
    let yaml = "cors:\n  allow_origins: [\"*\"]\n  routes:\n    - match: { path_prefix: /v1 }\n      allow_credentials: true\n";
    let err = api::from_yaml(yaml, Path::new("protogate.yaml")).expect_err("accepted").to_string();
    assert!(err.contains("cors.routes[0].allow_credentials") && err.contains("line 5"), "{err}");
}

#[test]
fn bad_origins_and_selectors_are_refused_at_load() {
    for (yaml, expected) in [
        ("cors:\n  allow_origins: [\"https://app.example.com/\"]\n", "must have no path"),
        ("cors:\n  allow_origins: [\"app.example.com\"]\n", "needs a scheme"),
        ("cors:\n  allow_origins: [\"https://a.*.example.com\"]\n", "first label"),
        ("cors:\n  routes:\n    - match: { path_prefx: /v1 }\n      max_age: 5\n", "path_prefx"),
        ("cors:\n  routes:\n    - match: { path_prefix: /v1 }\n", "changes nothing"),
    ] {
        let err = api::from_yaml(yaml, Path::new("protogate.yaml")).expect_err(yaml).to_string();
        assert!(err.contains(expected) && err.contains("line "), "{yaml}: {err}");
    }
}
