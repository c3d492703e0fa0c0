//! The integration-test harness: one call starts a real tonic backend
//! (`protogate.test.v1.TestService`) and the gateway in process, both on
//! ephemeral ports, with a descriptor folder holding the test service's set;
//! the test then talks plain HTTP/1.1 to the gateway.
//!
//! Every test binary includes this module with `mod common;` and uses a
//! different subset of it.
#![allow(dead_code)]

mod backend;
pub mod redis;
pub mod rpc;

use std::collections::HashSet;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// Re-exported for the test binaries; not every binary uses each one.
#[allow(unused_imports)]
pub use backend::{fail_details, start_backend, BackendHandle, TestBackend};

/// Generated code, nested like the protobuf packages so that the generated
/// `super::...::google::api` paths resolve.
pub mod pb {
    pub mod google {
        pub mod api {
            tonic::include_proto!("google.api");
        }
        pub use super::super::rpc;
    }
    pub mod protogate {
        pub mod test {
            pub mod v1 {
                tonic::include_proto!("protogate.test.v1");
            }
        }
    }
}

// Not every test binary talks to the test service directly.
#[allow(unused_imports)]
pub use pb::protogate::test::v1 as testpb;

/// The file that defines the test service, inside [`test_descriptor_set`].
pub const TEST_PROTO: &str = "protogate/test/v1/test.proto";

/// The `FileDescriptorSet` of every example and test proto (imports and
/// source info included), as built by build.rs.
pub fn test_descriptor_set() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/examples.binpb"))
}

/// The part of [`test_descriptor_set`] that `test.proto` needs (the file and
/// its transitive imports), so that the example services do not add routes
/// to the test gateway. Extension options (google.api.http) are kept.
pub fn test_service_descriptor_set() -> Vec<u8> {
    let all = prost_reflect::DescriptorPool::decode(test_descriptor_set()).expect("examples.binpb decodes");
    let root = all.get_file_by_name(TEST_PROTO).expect("examples.binpb holds test.proto");
    let mut needed = HashSet::new();
    let mut pending = vec![root];
    while let Some(file) = pending.pop() {
        if needed.insert(file.name().to_owned()) {
            pending.extend(file.dependencies());
        }
    }
    // `files()` is in dependency order, which the new pool requires.
    let mut pool = prost_reflect::DescriptorPool::new();
    for file in all.files().filter(|f| needed.contains(f.name())) {
        pool.decode_file_descriptor_proto(file.encode_to_vec().as_slice()).expect("file re-decodes");
    }
    pool.encode_to_vec()
}

/// A plain HTTP/1.1 client that ignores proxy settings of the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().no_proxy().build().expect("build reqwest client")
}

/// The gateway in front of a test backend. Dropping it signals both to stop;
/// [`TestEnv::shutdown`] also waits for them and checks they exited cleanly.
pub struct TestEnv {
    /// `http://127.0.0.1:PORT` of the gateway.
    pub base: String,
    pub client: reqwest::Client,
    pub backend_addr: SocketAddr,
    /// The folder the gateway loads; holds `test.binpb`.
    pub descriptors: tempfile::TempDir,
    /// `None` only while [`TestEnv::shutdown`] runs.
    backend: Option<BackendHandle>,
    gateway_shutdown: Option<oneshot::Sender<()>>,
    gateway_task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestEnv {
    /// Gateway with the default config, every service routed to one backend.
    pub async fn start() -> TestEnv {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestEnv::start`], with `configure` applied to the config last.
    pub async fn start_with(configure: impl FnOnce(&mut protogate::config::Config)) -> TestEnv {
        let (backend_addr, backend) = start_backend().await;
        let descriptors = tempfile::tempdir().expect("create descriptor folder");
        std::fs::write(descriptors.path().join("test.binpb"), test_service_descriptor_set()).expect("write test.binpb");

        let mut config = protogate::config::Config {
            descriptors: descriptors.path().to_path_buf(),
            upstreams: vec![protogate::config::UpstreamRule {
                pattern: "*".into(),
                url: format!("http://{backend_addr}").parse().expect("backend url"),
            }],
            ..protogate::config::Config::default()
        };
        configure(&mut config);
        let gateway = protogate::gateway::Gateway::load(config)
            .unwrap_or_else(|e| panic!("gateway rejected the test descriptors: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway listener");
        let addr = listener.local_addr().expect("gateway local addr");
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(listener, async move {
            let _ = shutdown_rx.await;
        }));

        TestEnv {
            base: format!("http://{addr}"),
            client: http_client(),
            backend_addr,
            descriptors,
            backend: Some(backend),
            gateway_shutdown: Some(shutdown_tx),
            gateway_task: Some(task),
        }
    }

    /// Full URL of `path_and_query` on the gateway.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.request(reqwest::Method::GET, path_and_query, &[], None).await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            reqwest::Method::POST,
            path,
            &[("content-type", "application/json")],
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut builder = self.client.request(method.clone(), self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = builder.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Reply::read(response).await
    }

    /// The backend behind the gateway.
    pub fn backend(&self) -> &BackendHandle {
        self.backend.as_ref().expect("backend runs until shutdown")
    }

    /// What the backend's `Count` answers: calls it received, `Count` excluded.
    pub fn backend_calls(&self) -> u64 {
        self.backend().calls()
    }

    /// Stops the gateway, then the backend, and joins both.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.gateway_shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.gateway_task.take() {
            task.await.expect("gateway task panicked").expect("gateway server failed");
        }
        if let Some(backend) = self.backend.take() {
            backend.shutdown().await;
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(tx) = self.gateway_shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A response read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("read response body");
        Reply { status, headers, body }
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body of a {} reply is not JSON ({e}): {}", self.status, self.text()))
    }

    /// The body as text, lossily, for assertions and panic messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of a header as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Asserts the one error envelope (design §5): the HTTP status, a JSON body
/// with `code` == `grpc_code`, a non-empty `message` and a `details` array.
/// Returns the parsed JSON for further checks.
#[track_caller]
pub fn assert_error(reply: &Reply, http_status: u16, grpc_code: i32) -> serde_json::Value {
    assert_eq!(reply.status.as_u16(), http_status, "unexpected HTTP status; body: {}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content-type is {content_type:?}; body: {}",
        reply.text()
    );
    let json = reply.json();
    assert_eq!(json["code"], serde_json::json!(grpc_code), "unexpected `code` in {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "`message` missing or empty in {json}");
    assert!(json["details"].is_array(), "`details` array missing in {json}");
    json
}
