//! The admin listener (DESIGN §1) over real HTTP: liveness, readiness, the
//! route table and the descriptor status as JSON, read-only.

mod common;

use std::time::{Duration, Instant};

use common::{start_backend, BackendHandle, Reply};
use protogate::config::{Config, UpstreamRule};
use protogate::gateway::Gateway;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The gateway (test service, routed to a real backend) with its public and
/// admin listeners.
struct Admin {
    base: String,
    admin: String,
    client: reqwest::Client,
    dir: TempDir,
    backend: Option<BackendHandle>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Admin {
    async fn start() -> Admin {
        let (backend_addr, backend) = start_backend().await;
        let dir = tempfile::tempdir().expect("descriptor folder");
        std::fs::write(dir.path().join("test.binpb"), common::test_service_descriptor_set()).expect("write test.binpb");
        let config = Config {
            descriptors: dir.path().to_path_buf(),
            upstreams: vec![UpstreamRule {
                pattern: "*".into(),
                url: format!("http://{backend_addr}").parse().expect("backend url"),
            }],
            ..Config::default()
        };
        let gateway = Gateway::load(config).unwrap_or_else(|e| panic!("gateway refused the folder: {e}"));
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let base = format!("http://{}", public.local_addr().expect("gateway addr"));
        let admin_base = format!("http://{}", admin.local_addr().expect("admin addr"));
        let (stop_public, public_stopped) = oneshot::channel::<()>();
        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        let tasks = vec![
            tokio::spawn(gateway.clone().serve(public, async move {
                let _ = public_stopped.await;
            })),
            tokio::spawn(protogate::gateway::admin::serve(gateway, admin, async move {
                let _ = admin_stopped.await;
            })),
        ];
        Admin {
            base,
            admin: admin_base,
            client: common::http_client(),
            dir,
            backend: Some(backend),
            stop: vec![stop_public, stop_admin],
            tasks,
        }
    }

    async fn call(&self, method: reqwest::Method, url: String) -> Reply {
        let response =
            self.client.request(method.clone(), &url).send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        Reply::read(response).await
    }

    /// `GET` on the admin listener; asserts a JSON answer with `status`.
    async fn get_json(&self, path: &str, status: u16) -> Value {
        let reply = self.call(reqwest::Method::GET, format!("{}{path}", self.admin)).await;
        assert_eq!(reply.status.as_u16(), status, "GET {path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"), "GET {path}");
        reply.json()
    }

    async fn shutdown(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.expect("server task panicked").expect("server failed");
        }
        if let Some(backend) = self.backend.take() {
            backend.shutdown().await;
        }
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let admin = Admin::start().await;
    let health = admin.get_json("/healthz", 200).await;
    assert_eq!(health["status"], "ok", "{health}");
    let ready = admin.get_json("/readyz", 200).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["generation"], 1, "{ready}");
    assert!(ready["routes"].as_u64().is_some_and(|n| n > 0), "{ready}");
    // HEAD is a GET without a body.
    let head = admin.call(reqwest::Method::HEAD, format!("{}/healthz", admin.admin)).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    admin.shutdown().await;
}

#[tokio::test]
async fn routes_lists_the_route_table() {
    let admin = Admin::start().await;
    let json = admin.get_json("/routes", 200).await;
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
    let reply = admin.call(reqwest::Method::GET, format!("{}/test/metadata", admin.base)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let readyz = admin.get_json("/readyz", 200).await;
    assert_eq!(readyz["routes"].as_u64(), Some(routes.len() as u64), "{readyz}");
    admin.shutdown().await;
}

#[tokio::test]
async fn descriptors_shows_files_and_digest() {
    let admin = Admin::start().await;
    let json = admin.get_json("/descriptors", 200).await;
    let files = json["files"].as_array().unwrap_or_else(|| panic!("no files array: {json}"));
    assert_eq!(files.len(), 1, "{json}");
    assert_eq!(files[0]["path"], "test.binpb");
    assert_eq!(files[0]["size"], common::test_service_descriptor_set().len());
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
    let admin = Admin::start().await;
    let before = admin.get_json("/descriptors", 200).await;
    std::fs::write(admin.dir.path().join("broken.binpb"), b"\x0a\xff\xff\xff\xff\x0fnot a set").expect("write");
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        let json = admin.get_json("/descriptors", 200).await;
        if !json["last_error"].is_null() {
            break json;
        }
        assert!(Instant::now() < deadline, "no refused reload shown within 15 s: {json}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
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
    let admin = Admin::start().await;
    let missing = admin.get_json("/nope", 404).await;
    assert_eq!(missing["code"], 5, "{missing}");
    assert!(missing["message"].as_str().is_some_and(|m| m.contains("/nope")), "{missing}");
    // Public routes are not on the admin listener.
    admin.get_json("/test/metadata", 404).await;

    for method in [reqwest::Method::POST, reqwest::Method::PUT, reqwest::Method::DELETE] {
        for path in ["/healthz", "/routes", "/descriptors"] {
            let reply = admin.call(method.clone(), format!("{}{path}", admin.admin)).await;
            assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text());
            assert_eq!(reply.json()["code"], 12, "{method} {path}: {}", reply.text());
            // RFC 9110 §15.5.6: a 405 says what is allowed.
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}: {:?}", reply.headers);
        }
    }
    // Nor is the admin API on the public listener.
    let reply = admin.call(reqwest::Method::GET, format!("{}/healthz", admin.base)).await;
    common::assert_error(&reply, 404, 5);
    admin.shutdown().await;
}
