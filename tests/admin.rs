//! The admin listener (DESIGN §1) over real HTTP: liveness, readiness, the
//! route table and the descriptor status as JSON, read-only.

mod common;

use std::time::Duration;

use common::fixtures::{test_service_descriptor_set, CORRUPT_SET};
use common::{assert_error, config_for, eventually, start_with_admin, Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;
use serde_json::Value;

/// The gateway (test service, routed to a real backend) with its public and
/// admin listeners.
async fn start() -> TestGateway {
    let backend = Backend::test_service().await;
    start_with_admin(Descriptors::test_service(), config_for(&backend), vec![backend]).await
}

/// `method` on the admin listener.
async fn call(admin: &TestGateway, method: Method, path: &str) -> Reply {
    admin.request_url(method, &admin.admin_url(path), &[], None).await
}

/// `GET` on the admin listener; asserts a JSON answer with `status`.
async fn get_json(admin: &TestGateway, path: &str, status: u16) -> Value {
    let reply = call(admin, Method::GET, path).await;
    assert_eq!(reply.status.as_u16(), status, "GET {path}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"), "GET {path}");
    reply.json()
}

/// `/readyz` once the background probe has reached the backend.
async fn ready_json(admin: &TestGateway) -> Value {
    eventually("/readyz 200", Duration::from_secs(10), || async {
        let reply = call(admin, Method::GET, "/readyz").await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(reply.text())
        }
    })
    .await;
    get_json(admin, "/readyz", 200).await
}

#[tokio::test]
async fn health_and_readiness() {
    let admin = start().await;
    let health = get_json(&admin, "/healthz", 200).await;
    assert_eq!(health["status"], "ok", "{health}");
    let ready = ready_json(&admin).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["generation"], 1, "{ready}");
    assert!(ready["routes"].as_u64().is_some_and(|n| n > 0), "{ready}");
    // HEAD is a GET without a body.
    let head = call(&admin, Method::HEAD, "/healthz").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    admin.shutdown().await;
}

#[tokio::test]
async fn routes_lists_the_route_table() {
    let admin = start().await;
    let json = get_json(&admin, "/routes", 200).await;
    let routes = json["routes"].as_array().unwrap_or_else(|| panic!("no routes array: {json}"));
    let find = |method: &str, path: &str| {
        routes
            .iter()
            .find(|r| r["method"] == method && r["path"] == path)
            .unwrap_or_else(|| panic!("no {method} {path} in {json}"))
    };
    let metadata = find("GET", "/test/metadata");
    assert_eq!(metadata["grpc_method"], "protogate.test.v1.TestService/Metadata");
    assert_eq!(metadata["source"], "test.binpb");
    assert_eq!(metadata["auto_mapped"], false);
    assert!(metadata["upstream"].as_str().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{metadata}");
    assert_eq!(find("POST", "/test/echo")["grpc_method"], "protogate.test.v1.TestService/Echo");
    assert_eq!(find("GET", "/test/files/{string_value=**}")["grpc_method"], "protogate.test.v1.TestService/EchoPath");
    let auto = find("POST", "/protogate.test.v1.TestService/Unannotated");
    assert_eq!(auto["auto_mapped"], true);
    assert_eq!(json["unrouted"], serde_json::json!([]), "{json}");

    // The table is the one the public listener serves.
    let reply = admin.get("/test/metadata").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let readyz = ready_json(&admin).await;
    assert_eq!(readyz["routes"].as_u64(), Some(routes.len() as u64), "{readyz}");
    admin.shutdown().await;
}

#[tokio::test]
async fn descriptors_shows_files_and_digest() {
    let admin = start().await;
    let json = get_json(&admin, "/descriptors", 200).await;
    let files = json["files"].as_array().unwrap_or_else(|| panic!("no files array: {json}"));
    assert_eq!(files.len(), 1, "{json}");
    assert_eq!(files[0]["path"], "test.binpb");
    assert_eq!(files[0]["size"], test_service_descriptor_set().len());
    let digest = json["digest"].as_str().unwrap_or_else(|| panic!("no digest: {json}"));
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{json}");
    assert_eq!(json["generation"], 1, "{json}");
    assert_eq!(json["last_error"], Value::Null, "{json}");
    assert_eq!(json["reloads_failed"], 0, "{json}");
    assert!(json["routes"].as_u64().is_some_and(|n| n > 0), "{json}");
    admin.shutdown().await;
}

#[tokio::test]
async fn descriptors_reports_a_refused_reload() {
    let admin = start().await;
    let before = get_json(&admin, "/descriptors", 200).await;
    admin.descriptors.write("broken.binpb", CORRUPT_SET);
    let refused = eventually("a refused reload is shown", Duration::from_secs(15), || async {
        let json = get_json(&admin, "/descriptors", 200).await;
        if json["last_error"].is_null() {
            Err(json.to_string())
        } else {
            Ok(json)
        }
    })
    .await;
    let problems = refused["last_error"]["problems"].as_array().unwrap_or_else(|| panic!("{refused}"));
    assert!(problems.iter().any(|p| p.as_str().is_some_and(|p| p.contains("broken.binpb"))), "{refused}");
    assert!(refused["last_error"]["at"].as_u64().is_some(), "{refused}");
    assert_eq!(refused["reloads_failed"], 1, "{refused}");
    // What serves is unchanged.
    for key in ["generation", "digest", "files", "routes"] {
        assert_eq!(refused[key], before[key], "{key} changed by a refused reload: {refused}");
    }
    admin.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_writes_are_refused() {
    let admin = start().await;
    let missing = get_json(&admin, "/nope", 404).await;
    assert_eq!(missing["code"], 5, "{missing}");
    assert!(missing["message"].as_str().is_some_and(|m| m.contains("/nope")), "{missing}");
    // Public routes are not on the admin listener.
    get_json(&admin, "/test/metadata", 404).await;

    for method in [Method::POST, Method::PUT, Method::DELETE] {
        for path in ["/healthz", "/routes", "/descriptors"] {
            let reply = call(&admin, method.clone(), path).await;
            assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
            assert_eq!(reply.json()["code"], 12, "{method} {path}: {}", reply.text());
            // RFC 9110 §15.5.6: a 405 says what is allowed.
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}: {:?}", reply.headers);
        }
    }
    // Nor is the admin API on the public listener.
    let reply = admin.get("/healthz").await;
    assert_error(&reply, 404, 5);
    admin.shutdown().await;
}
