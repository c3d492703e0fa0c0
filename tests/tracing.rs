//! W3C trace context and OTLP span export end to end (DESIGN §9).
//!
//! Propagation: what the backend receives as `traceparent`/`tracestate`
//! (the test service's `Metadata` method, `GET /test/metadata`, reports
//! its request metadata) for a client trace, none, an invalid one and a
//! repeated one, and for each call of a composition.
//!
//! Export: the `protogate` binary with `tracing.otlp_endpoint` pointing at
//! a real OTLP/gRPC receiver started here (the collector's `TraceService`
//! from `opentelemetry-proto`), stopped with SIGTERM; the spans it sent
//! are then read back: the request's and the upstream call's, in the
//! client's trace, child and parent.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{start_test_service, Backend, Descriptors, Reply, TestGateway};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use reqwest::Method;
use tonic::service::Routes;

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// A traceparent as its parts: (trace id, parent id, flags).
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "not a traceparent: {traceparent:?}");
    assert_eq!(fields[0], "00", "{traceparent:?}");
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let id = |s: &str, len: usize| hex(s, len) && s.bytes().any(|b| b != b'0');
    assert!(id(fields[1], 32) && id(fields[2], 16) && hex(fields[3], 2), "invalid traceparent {traceparent:?}");
    (fields[1].to_owned(), fields[2].to_owned(), fields[3].to_owned())
}

/// The metadata a backend reported in the `Metadata` answer `json`.
fn metadata_of(json: &serde_json::Value) -> HashMap<String, String> {
    let headers = json["headers"].as_object().unwrap_or_else(|| panic!("no `headers` map in {json}"));
    headers.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
}

/// What the backend saw of `GET /test/metadata` sent with `headers`.
async fn seen_by_backend(env: &TestGateway, headers: &[(&str, &str)]) -> HashMap<String, String> {
    let reply = env.request(Method::GET, "/test/metadata", headers, None).await;
    assert_eq!(reply.status, 200, "GET /test/metadata: {}", reply.text());
    metadata_of(&reply.json())
}

fn traceparent_seen(seen: &HashMap<String, String>) -> (String, String, String) {
    parts(seen.get("traceparent").unwrap_or_else(|| panic!("the backend got no traceparent: {seen:?}")))
}

#[tokio::test]
async fn the_backend_continues_the_clients_trace_from_a_span_of_the_gateway() {
    let env = start_test_service().await;
    let seen = seen_by_backend(&env, &[("traceparent", TRACEPARENT), ("tracestate", "congo=t61rcWkgMzE,rojo=1")]).await;
    let (trace, parent, flags) = traceparent_seen(&seen);
    assert_eq!(trace, CLIENT_TRACE, "{seen:?}");
    assert_ne!(parent, CLIENT_SPAN, "the backend's parent is the gateway's span, not the client's: {seen:?}");
    assert_eq!(flags, "01", "{seen:?}");
    assert_eq!(seen.get("tracestate").map(String::as_str), Some("congo=t61rcWkgMzE,rojo=1"), "{seen:?}");

    // Every call has a span of its own.
    let again = seen_by_backend(&env, &[("traceparent", TRACEPARENT)]).await;
    let (trace_again, parent_again, _) = traceparent_seen(&again);
    assert_eq!(trace_again, CLIENT_TRACE);
    assert_ne!(parent_again, parent);
    assert!(!again.contains_key("tracestate"), "no tracestate was sent: {again:?}");

    // An unsampled trace stays unsampled.
    let unsampled = TRACEPARENT.replace("-01", "-00");
    let (_, _, flags) = traceparent_seen(&seen_by_backend(&env, &[("traceparent", &unsampled)]).await);
    assert_eq!(flags, "00");
    env.shutdown().await;
}

#[tokio::test]
async fn without_a_valid_traceparent_the_backend_gets_a_new_trace() {
    let env = start_test_service().await;
    let cases: [&[(&str, &str)]; 8] = [
        &[],
        &[("tracestate", "congo=t61rcWkgMzE")],
        &[("traceparent", "00-00000000000000000000000000000000-b7ad6b7169203331-01"), ("tracestate", "a=1")],
        &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01")],
        &[("traceparent", "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01")],
        &[("traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
        &[("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01")],
        // The same header twice: no copy wins.
        &[("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT), ("tracestate", "congo=t61rcWkgMzE")],
    ];
    let mut traces = Vec::new();
    for headers in cases {
        let seen = seen_by_backend(&env, headers).await;
        let (trace, _, flags) = traceparent_seen(&seen);
        assert_ne!(trace, CLIENT_TRACE, "sent {headers:?}, the backend saw {seen:?}");
        assert_eq!(flags, "01", "the gateway samples the traces it starts: {seen:?}");
        assert!(!seen.contains_key("tracestate"), "a tracestate without its traceparent passed: {seen:?}");
        traces.push(trace);
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), cases.len(), "every new trace has its own id");
    env.shutdown().await;
}

#[tokio::test]
async fn a_client_cannot_smuggle_trace_headers_as_metadata() {
    let env = start_test_service().await;
    let seen = seen_by_backend(
        &env,
        &[
            ("traceparent", TRACEPARENT),
            ("grpc-metadata-traceparent", "00-11111111111111111111111111111111-2222222222222222-01"),
            ("grpc-metadata-tracestate", "evil=1"),
        ],
    )
    .await;
    let (trace, _, _) = traceparent_seen(&seen);
    assert_eq!(trace, CLIENT_TRACE, "{seen:?}");
    assert!(!seen.contains_key("tracestate"), "{seen:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn each_call_of_a_composition_has_its_own_span_in_the_trace() {
    let backend = Backend::test_service().await;
    let yaml = format!(
        r#"upstreams:
  "*": {}
compositions:
  - name: traced
    get: /c/traced
    calls:
      one: {{ method: protogate.test.v1.TestService/Metadata }}
      two: {{ method: protogate.test.v1.TestService/Metadata, request: {{}} }}
"#,
        backend.url()
    );
    let env = common::start(Descriptors::test_service(), yaml, vec![backend]).await;
    let reply = env.request(Method::GET, "/c/traced", &[("traceparent", TRACEPARENT)], None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    let one = traceparent_seen(&metadata_of(&json["one"]));
    let two = traceparent_seen(&metadata_of(&json["two"]));
    assert_eq!(one.0, CLIENT_TRACE, "{json}");
    assert_eq!(two.0, CLIENT_TRACE, "{json}");
    assert_ne!(one.1, two.1, "two calls, one span id: {json}");
    assert_ne!(one.1, CLIENT_SPAN, "{json}");
    env.shutdown().await;
}

/// An OTLP/gRPC receiver keeping every span it is sent, with the
/// `service.name` of its resource.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            let service = string_attribute(&attributes, "service.name").unwrap_or_default();
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key) {
        Some(AnyValue::StringValue(text)) => Some(text.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key) {
        Some(AnyValue::IntValue(n)) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The serving binary; killed if the test fails before it exits.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr")
}

#[tokio::test]
async fn spans_reach_an_otlp_collector_in_the_clients_trace() {
    let backend = Backend::test_service().await;
    let collector = Collector::default();
    let receiver = Backend::start(Routes::new(TraceServiceServer::new(collector.clone()))).await;
    let descriptors = Descriptors::test_service();
    let dir = tempfile::tempdir().expect("working directory");
    let config = dir.path().join("gateway.yaml");
    let yaml = format!(
        "upstreams:\n  \"*\": {}\ntracing:\n  otlp_endpoint: {}\n  service_name: gateway-under-test\n",
        backend.url(),
        receiver.url()
    );
    std::fs::write(&config, yaml).expect("write the config");
    let (listen, admin) = (free_port(), free_port());
    let mut gateway = Gateway(
        Command::new(env!("CARGO_BIN_EXE_protogate"))
            .args(["serve", "--config", config.to_str().expect("UTF-8"), "--descriptors", descriptors.path_str()])
            .args(["--listen", &listen.to_string(), "--admin-listen", &admin.to_string(), "--threads", "1"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn protogate serve"),
    );

    let client = common::http_client();
    let url = format!("http://{listen}/test/metadata");
    let started = Instant::now();
    let reply = loop {
        if let Ok(response) = client.get(&url).header("traceparent", TRACEPARENT).send().await {
            break Reply::read(response).await;
        }
        if let Ok(Some(status)) = gateway.0.try_wait() {
            panic!("protogate exited early with {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the gateway did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, 200, "{}", reply.text());
    let (_, backend_parent, _) = traceparent_seen(&metadata_of(&reply.json()));
    let missing = client.get(format!("http://{listen}/no/such/route")).send().await.expect("GET unmatched");
    assert_eq!(missing.status(), 404);

    // SIGTERM: the gateway drains and sends its last spans before exiting.
    let pid = gateway.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = gateway.0.try_wait().expect("wait for protogate") {
            break status;
        }
        assert!(stopped.elapsed() < Duration::from_secs(20), "protogate did not exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");

    let spans = collector.spans();
    assert!(spans.iter().all(|(service, _)| service == "gateway-under-test"), "service.name: {spans:?}");
    let in_trace: Vec<&Span> =
        spans.iter().map(|(_, span)| span).filter(|s| hex(&s.trace_id) == CLIENT_TRACE).collect();
    let server = in_trace
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span in the client's trace: {spans:?}"));
    assert_eq!(string_attribute(&server.attributes, "http.route").as_deref(), Some("/test/metadata"), "{server:?}");
    assert_eq!(string_attribute(&server.attributes, "http.request.method").as_deref(), Some("GET"), "{server:?}");
    assert_eq!(int_attribute(&server.attributes, "http.response.status_code"), Some(200), "{server:?}");
    assert_eq!(string_attribute(&server.attributes, "rpc.method").as_deref(), Some("Metadata"), "{server:?}");
    assert_eq!(server.name, "GET /test/metadata");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN, "the request span's parent is the client's span");

    let call = in_trace
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("no upstream span in the client's trace: {spans:?}"));
    assert_eq!(string_attribute(&call.attributes, "rpc.system").as_deref(), Some("grpc"), "{call:?}");
    assert_eq!(
        string_attribute(&call.attributes, "rpc.service").as_deref(),
        Some("protogate.test.v1.TestService"),
        "{call:?}"
    );
    assert_eq!(string_attribute(&call.attributes, "rpc.method").as_deref(), Some("Metadata"), "{call:?}");
    assert_eq!(int_attribute(&call.attributes, "rpc.grpc.status_code"), Some(0), "{call:?}");
    assert_eq!(string_attribute(&call.attributes, "server.address").as_deref(), Some("127.0.0.1"), "{call:?}");
    assert_eq!(call.parent_span_id, server.span_id, "the upstream span is the request span's child");
    assert_eq!(hex(&call.span_id), backend_parent, "the backend's parent is the upstream span");

    let unmatched = spans
        .iter()
        .map(|(_, span)| span)
        .find(|s| string_attribute(&s.attributes, "http.route").as_deref() == Some("unmatched"))
        .unwrap_or_else(|| panic!("no span for the unmatched request: {spans:?}"));
    assert_eq!(int_attribute(&unmatched.attributes, "http.response.status_code"), Some(404));
    assert_ne!(hex(&unmatched.trace_id), CLIENT_TRACE, "a request without traceparent starts its own trace");

    receiver.shutdown().await;
    backend.shutdown().await;
}
