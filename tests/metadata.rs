//! HTTP headers ↔ gRPC metadata end to end (DESIGN §4): what a client sends
//! and what the backend receives, and what the backend answers and the client
//! sees. The test backend's `Metadata` method (`GET /test/metadata`) reports
//! the request metadata it got and answers with header metadata
//! `x-echo-header`, binary `x-echo-bin` and the trailer `x-echo-trailer`.

mod common;

use std::collections::HashMap;

use base64::Engine as _;
use common::{api, assert_error, start_test_service_with, Reply, TestGateway};
use http::HeaderName;

/// Headers named in `forward_headers` for every test here; the hop-by-hop
/// ones must still never pass.
fn forwarding(config: &mut api::Config) {
    config.forward_headers = ["x-tenant", "x-client-version", "connection", "keep-alive", "te"]
        .into_iter()
        .map(HeaderName::from_static)
        .collect();
}

async fn start() -> TestGateway {
    start_test_service_with(forwarding).await
}

/// Calls `GET /test/metadata` with `headers` and returns the reply and the
/// metadata the backend reported.
async fn seen_by_backend(env: &TestGateway, headers: &[(&str, &str)]) -> (Reply, HashMap<String, String>) {
    let reply = env.request(reqwest::Method::GET, "/test/metadata", headers, None).await;
    assert_eq!(reply.status, 200, "GET /test/metadata: {}", reply.text());
    (reply.clone(), backend_view(&reply))
}

fn backend_view(reply: &Reply) -> HashMap<String, String> {
    let json = reply.json();
    let headers = json["headers"].as_object().unwrap_or_else(|| panic!("no `headers` map in {json}"));
    headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_else(|| panic!("{k} is not a string in {json}")).to_owned()))
        .collect()
}

/// Decodes base64 with or without padding, as gRPC peers accept it.
fn decode_base64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("{text:?} is not base64: {e}"))
}

fn is_request_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn authorization_and_grpc_metadata_headers_reach_the_backend() {
    let env = start().await;
    let (_, seen) = seen_by_backend(
        &env,
        &[
            ("authorization", "Bearer not-checked-here"),
            ("grpc-metadata-foo", "bar"),
            ("grpc-metadata-x-bin-bin", "AQID"),
        ],
    )
    .await;
    // No auth is configured: the token is the backend's to check.
    assert_eq!(seen.get("authorization").map(String::as_str), Some("Bearer not-checked-here"), "{seen:?}");
    assert_eq!(seen.get("foo").map(String::as_str), Some("bar"), "{seen:?}");
    assert!(!seen.contains_key("grpc-metadata-foo"), "the prefix is stripped: {seen:?}");
    let binary = seen.get("x-bin-bin").unwrap_or_else(|| panic!("x-bin-bin missing: {seen:?}"));
    assert_eq!(decode_base64(binary), vec![1, 2, 3], "binary metadata must pass unchanged");
    env.shutdown().await;
}

#[tokio::test]
async fn only_configured_headers_are_forwarded() {
    let env = start().await;
    let (_, seen) = seen_by_backend(
        &env,
        &[("x-tenant", "acme"), ("x-client-version", "1.2.3"), ("cookie", "session=secret"), ("x-random", "nope")],
    )
    .await;
    assert_eq!(seen.get("x-tenant").map(String::as_str), Some("acme"), "{seen:?}");
    assert_eq!(seen.get("x-client-version").map(String::as_str), Some("1.2.3"), "{seen:?}");
    for absent in ["cookie", "x-random"] {
        assert!(!seen.contains_key(absent), "{absent} is not in forward_headers but reached the backend: {seen:?}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_backend() {
    let env = start().await;
    // `connection`, `keep-alive` and `te` are even named in forward_headers.
    let (_, seen) = seen_by_backend(
        &env,
        &[
            // Options named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
            ("connection", "keep-alive, X-Client-Version, grpc-metadata-dropped"),
            ("x-client-version", "9"),
            ("grpc-metadata-dropped", "yes"),
            ("x-tenant", "kept"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("te", "gzip"),
            ("grpc-metadata-connection", "close"),
            ("grpc-metadata-keep-alive", "timeout=1"),
            ("grpc-metadata-grpc-timeout", "1n"),
        ],
    )
    .await;
    for absent in ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "x-client-version", "dropped"]
    {
        assert!(!seen.contains_key(absent), "hop-by-hop {absent} reached the backend: {seen:?}");
    }
    assert_eq!(seen.get("x-tenant").map(String::as_str), Some("kept"), "{seen:?}");
    // The gRPC client itself sends `te: trailers`; the client's value must not
    // replace or join it.
    assert_eq!(seen.get("te").map(String::as_str), Some("trailers"), "{seen:?}");
    // A forged deadline through the metadata prefix is not a deadline.
    assert_ne!(seen.get("grpc-timeout").map(String::as_str), Some("1n"), "{seen:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_kept_when_sent() {
    let env = start().await;
    let (reply, seen) = seen_by_backend(&env, &[]).await;
    let echoed = reply.header("x-request-id").unwrap_or_else(|| panic!("no x-request-id on {:?}", reply.headers));
    assert!(is_request_id(echoed), "generated id {echoed:?} is not 32 hex digits");
    assert_eq!(seen.get("x-request-id").map(String::as_str), Some(echoed), "backend got another id: {seen:?}");

    // Another request gets another id.
    let (again, _) = seen_by_backend(&env, &[]).await;
    assert_ne!(again.header("x-request-id"), Some(echoed), "request ids repeat");

    let (reply, seen) = seen_by_backend(&env, &[("x-request-id", "client-chosen-42")]).await;
    assert_eq!(reply.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(seen.get("x-request-id").map(String::as_str), Some("client-chosen-42"), "{seen:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn error_responses_carry_the_request_id() {
    let env = start().await;
    // Refused by the gateway (no route) …
    let reply = env.get("/test/no-such-route").await;
    assert_error(&reply, 404, 5);
    assert!(reply.header("x-request-id").is_some_and(is_request_id), "404 without a request id: {:?}", reply.headers);
    let reply = env.request(reqwest::Method::GET, "/test/no-such-route", &[("x-request-id", "lost-1")], None).await;
    assert_error(&reply, 404, 5);
    assert_eq!(reply.header("x-request-id"), Some("lost-1"));
    // … wrong method …
    let reply = env.request(reqwest::Method::DELETE, "/test/metadata", &[("x-request-id", "wrong-1")], None).await;
    assert_error(&reply, 405, 12);
    assert_eq!(reply.header("x-request-id"), Some("wrong-1"));
    // … a body the gateway cannot decode …
    let reply = env.post_json("/test/echo", "{not json").await;
    assert_error(&reply, 400, 3);
    assert!(reply.header("x-request-id").is_some_and(is_request_id), "400 without a request id: {:?}", reply.headers);
    // … and an error from the backend.
    let reply = env
        .request(
            reqwest::Method::POST,
            "/test/fail",
            &[("content-type", "application/json"), ("x-request-id", "failing-1")],
            Some(br#"{"code": 5, "message": "gone"}"#.to_vec()),
        )
        .await;
    assert_error(&reply, 404, 5);
    assert_eq!(reply.header("x-request-id"), Some("failing-1"));
    env.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_describe_the_client() {
    let env = start().await;
    // No chain yet: the peer starts it.
    let (_, seen) = seen_by_backend(&env, &[]).await;
    assert_eq!(seen.get("x-forwarded-for").map(String::as_str), Some("127.0.0.1"), "{seen:?}");
    // Host as the client sent it (reqwest: the URL's authority).
    let authority = env.authority();
    assert_eq!(seen.get("x-forwarded-host").map(String::as_str), Some(authority), "{seen:?}");

    // An incoming chain gets the peer appended; an explicit Host is reported.
    let (_, seen) =
        seen_by_backend(&env, &[("x-forwarded-for", "203.0.113.7, 198.51.100.2"), ("host", "api.example.com")]).await;
    assert_eq!(seen.get("x-forwarded-for").map(String::as_str), Some("203.0.113.7, 198.51.100.2, 127.0.0.1"));
    assert_eq!(seen.get("x-forwarded-host").map(String::as_str), Some("api.example.com"), "{seen:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn trace_context_is_carried_on() {
    // The trace goes on from a span of the gateway's (tests/tracing.rs has
    // the rest: new traces, invalid headers, export).
    let env = start().await;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let (_, seen) = seen_by_backend(&env, &[("traceparent", traceparent), ("tracestate", "vendor=opaque")]).await;
    let sent = seen.get("traceparent").map(String::as_str).unwrap_or_default();
    assert!(sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && sent.ends_with("-01"), "{seen:?}");
    assert_ne!(sent, traceparent, "{seen:?}");
    assert_eq!(seen.get("tracestate").map(String::as_str), Some("vendor=opaque"), "{seen:?}");
    env.shutdown().await;
}

/// Backend header metadata and trailers come back prefixed, binary values
/// base64 as on the gRPC wire.
fn assert_backend_metadata_returned(reply: &Reply) {
    assert_eq!(reply.header("grpc-metadata-x-echo-header"), Some("hello"), "{:?}", reply.headers);
    let binary = reply
        .header("grpc-metadata-x-echo-bin")
        .unwrap_or_else(|| panic!("grpc-metadata-x-echo-bin missing: {:?}", reply.headers));
    assert_eq!(decode_base64(binary), vec![1, 2]);
    assert_eq!(reply.header("grpc-trailer-x-echo-trailer"), Some("bye"), "{:?}", reply.headers);
    // gRPC's own headers and trailers stay inside the gateway.
    for name in reply.headers.keys() {
        let name = name.as_str();
        assert!(!name.starts_with("grpc-status") && !name.starts_with("grpc-message"), "leaked {name}");
        assert!(!name.starts_with("grpc-metadata-content-type") && !name.starts_with("grpc-trailer-grpc-"), "{name}");
    }
}

#[tokio::test]
async fn backend_metadata_and_trailers_come_back_as_headers() {
    let env = start().await;
    let (reply, _) = seen_by_backend(&env, &[]).await;
    assert_backend_metadata_returned(&reply);
    env.shutdown().await;
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served() {
    let env = start().await;
    let client = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().expect("h2c client");
    let response = client
        .get(env.url("/test/metadata"))
        .header("grpc-metadata-foo", "over-h2")
        .header("x-tenant", "acme")
        .send()
        .await
        .expect("h2c request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = backend_view(&reply);
    assert_eq!(seen.get("foo").map(String::as_str), Some("over-h2"), "{seen:?}");
    assert_eq!(seen.get("x-tenant").map(String::as_str), Some("acme"), "{seen:?}");
    // HTTP/2 has no Host header: the :authority stands in.
    let authority = env.authority();
    assert_eq!(seen.get("x-forwarded-host").map(String::as_str), Some(authority), "{seen:?}");
    assert!(reply.header("x-request-id").is_some_and(is_request_id));
    assert_backend_metadata_returned(&reply);

    // Errors over HTTP/2 use the same envelope.
    let response = client.get(env.url("/nope")).send().await.expect("h2c request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_error(&Reply::read(response).await, 404, 5);

    // Several streams at once on the one connection.
    let calls = (1..=16).map(|i| {
        let client = client.clone();
        let url = env.url("/test/echo");
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"int32Value": {i}}}"#))
                .send()
                .await
                .expect("h2c echo");
            (i, Reply::read(response).await)
        }
    });
    for (i, reply) in futures_util::future::join_all(calls).await {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["int32Value"], serde_json::json!(i));
    }
    env.shutdown().await;
}
