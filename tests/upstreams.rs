//! Upstreams that scale out (DESIGN §4b), against several real tonic
//! backends on loopback addresses: calls spread over every endpoint (round
//! robin exactly, least request to all), a stopped endpoint costs no failed
//! request and is ejected, then taken back once it returns; health checks
//! take an endpoint out and back; a name whose addresses change (a test
//! resolver in place of DNS) adds and drains endpoints; the circuit breaker
//! sheds at its limit; retries go elsewhere only for calls no backend
//! processed, counted by the backends themselves.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{api, Backend, Descriptors};
use futures_util::future::BoxFuture;
use protogate::upstream::cluster::Resolve;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A gateway over the test service set with `yaml` (plus the admin
/// listener), names resolved by `resolver` when given.
struct Gw {
    base: String,
    admin: String,
    client: reqwest::Client,
    stops: Vec<oneshot::Sender<()>>,
    _descriptors: Descriptors,
}

impl Gw {
    async fn start(yaml: &str, resolver: Option<Arc<dyn Resolve>>) -> Gw {
        let descriptors = Descriptors::test_service();
        let mut config = api::from_yaml(yaml, &descriptors.join("protogate.yaml")).unwrap_or_else(|e| panic!("{e}"));
        config.descriptors = descriptors.path().to_path_buf();
        let gateway = match resolver {
            Some(resolver) => api::Gateway::load_with_resolver(config, resolver),
            None => api::Gateway::load(config),
        }
        .unwrap_or_else(|e| panic!("gateway refused to start: {e}"));
        let public = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", public.local_addr().expect("addr"));
        let admin_base = format!("http://{}", admin.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(gateway.clone().serve(public, async move {
            let _ = stopped.await;
        }));
        let (stop_admin, admin_stopped) = oneshot::channel::<()>();
        tokio::spawn(api::serve_admin(gateway, admin, async move {
            let _ = admin_stopped.await;
        }));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Gw { base, admin: admin_base, client, stops: vec![stop, stop_admin], _descriptors: descriptors }
    }

    async fn get(&self, path: &str) -> (u16, Option<String>, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.expect("request");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (status, retry_after, response.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.base)).json(&body).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// The state of each endpoint of the one upstream, from admin `/routes`.
    async fn endpoints(&self) -> Vec<(String, String)> {
        let routes: Value =
            self.client.get(format!("{}/routes", self.admin)).send().await.expect("admin").json().await.expect("json");
        routes["upstreams"][0]["endpoints"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (e["address"].as_str().unwrap_or("").to_owned(), e["state"].as_str().unwrap_or("").to_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn state_of(&self, addr: SocketAddr) -> Option<String> {
        let addr = addr.to_string();
        self.endpoints().await.into_iter().find(|(a, _)| *a == addr).map(|(_, state)| state)
    }

    /// Waits (bounded by tries) until `addr`'s state is `state`.
    async fn until_state(&self, addr: SocketAddr, state: &str) {
        for _ in 0..100 {
            if self.state_of(addr).await.as_deref() == Some(state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{addr} never became {state}: {:?}", self.endpoints().await);
    }

    async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.admin)).send().await.expect("metrics").text().await.expect("text")
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Backend::test_service().await);
    }
    out
}

fn endpoints_yaml(backends: &[Backend]) -> String {
    backends.iter().map(|b| format!("\"{}\"", b.url())).collect::<Vec<_>>().join(", ")
}

fn calls(backends: &[Backend]) -> Vec<u64> {
    backends.iter().map(Backend::calls).collect()
}

const CALL: &str = "/test/metadata";

#[tokio::test]
async fn round_robin_spreads_calls_evenly_and_least_request_reaches_every_endpoint() {
    let three = backends(3).await;
    let yaml = format!("upstreams:\n  \"*\": {{ endpoints: [{}], balance: round_robin }}\n", endpoints_yaml(&three));
    let gw = Gw::start(&yaml, None).await;
    for _ in 0..30 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert_eq!(calls(&three), [10, 10, 10]);
    drop(gw);

    let others = backends(3).await;
    let yaml = format!("upstreams:\n  \"*\": {{ endpoints: [{}] }}\n", endpoints_yaml(&others));
    let gw = Gw::start(&yaml, None).await;
    for _ in 0..90 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    let spread = calls(&others);
    assert_eq!(spread.iter().sum::<u64>(), 90);
    assert!(spread.iter().all(|&n| n > 0), "least_request left an endpoint out: {spread:?}");
    let listed: Vec<String> = gw.endpoints().await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
}

#[tokio::test]
async fn a_stopped_endpoint_costs_no_failed_request_is_ejected_and_returns() {
    let mut three = backends(3).await;
    let yaml = format!(
        "upstreams:\n  \"*\":\n    endpoints: [{}]\n    outlier: {{ consecutive_failures: 1, ejection: 1s }}\n",
        endpoints_yaml(&three)
    );
    let gw = Gw::start(&yaml, None).await;
    for _ in 0..9 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    let stopped = three.remove(1);
    let addr = stopped.addr();
    stopped.shutdown().await;
    for i in 0..30 {
        let (status, _, body) = gw.get(CALL).await;
        assert_eq!(status, 200, "call {i} failed with the endpoint down: {body}");
    }
    assert_eq!(gw.state_of(addr).await.as_deref(), Some("ejected"));
    assert!(gw.metrics().await.contains("protogate_upstream_ejections_total"), "no ejection metric");

    // Back on the same address: taken again once its ejection is over.
    let listener = TcpListener::bind(addr).await.expect("rebind the stopped endpoint's address");
    let (back, _health) = Backend::test_service_with_health(listener).await;
    gw.until_state(addr, "healthy").await;
    for _ in 0..100 {
        if back.calls() > 0 {
            break;
        }
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert!(back.calls() > 0, "the endpoint that came back gets no calls");
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_bring_it_back() {
    let (a, a_health) = Backend::test_service_with_health(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await;
    let (b, _b_health) = Backend::test_service_with_health(TcpListener::bind("127.0.0.1:0").await.expect("bind")).await;
    let yaml = format!(
        "upstreams:\n  \"*\":\n    endpoints: [\"{}\", \"{}\"]\n    health_check: {{ interval: 100ms, timeout: 100ms, unhealthy: 1, healthy: 1 }}\n",
        a.url(),
        b.url()
    );
    let gw = Gw::start(&yaml, None).await;
    a_health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    gw.until_state(a.addr(), "unhealthy").await;
    let before = a.calls();
    for _ in 0..20 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert_eq!(a.calls(), before, "an unhealthy endpoint got calls");
    a_health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    gw.until_state(a.addr(), "healthy").await;
    for _ in 0..40 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert!(a.calls() > before, "the endpoint is healthy again but gets no calls");
}

/// Names resolved from a table the test changes, as a DNS server would.
#[derive(Debug, Default)]
struct TestResolver(Mutex<Vec<SocketAddr>>);

impl TestResolver {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.0.lock().expect("lock") = addrs.to_vec();
    }

    fn answer(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        assert_eq!(host, "backends.test");
        Ok(self.0.lock().expect("lock").iter().map(|a| SocketAddr::new(a.ip(), port)).collect())
    }
}

impl Resolve for TestResolver {
    fn resolve_now(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        self.answer(host, port)
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let answer = self.answer(host, port);
        Box::pin(async move { answer })
    }
}

/// Two listeners on one port, at 127.0.0.2 and 127.0.0.3.
async fn twin_listeners() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.2:0").await.expect("bind 127.0.0.2");
        let port = first.local_addr().expect("addr").port();
        if let Ok(second) = TcpListener::bind(("127.0.0.3", port)).await {
            return (first, second);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

#[tokio::test]
async fn a_name_whose_addresses_change_adds_and_drains_endpoints() {
    let (first, second) = twin_listeners().await;
    let port = first.local_addr().expect("addr").port();
    let (a, _) = Backend::test_service_with_health(first).await;
    let (b, _) = Backend::test_service_with_health(second).await;
    let resolver = Arc::new(TestResolver::default());
    resolver.set(&[a.addr()]);
    let yaml = format!("upstreams:\n  \"*\": {{ url: \"http://backends.test:{port}\", dns_refresh: 100ms }}\n");
    let gw = Gw::start(&yaml, Some(resolver.clone())).await;
    for _ in 0..10 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert_eq!((a.calls(), b.calls()), (10, 0));

    resolver.set(&[a.addr(), b.addr()]);
    gw.until_state(b.addr(), "healthy").await;
    for _ in 0..40 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert!(b.calls() > 0, "the added endpoint gets no calls");

    resolver.set(&[b.addr()]);
    for _ in 0..100 {
        if gw.state_of(a.addr()).await.is_none_or(|state| state == "draining") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_before = a.calls();
    for _ in 0..20 {
        assert_eq!(gw.get(CALL).await.0, 200);
    }
    assert_eq!(a.calls(), a_before, "a removed endpoint still gets new calls");
}

#[tokio::test]
async fn the_circuit_breaker_sheds_over_its_limit_with_retry_after() {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams:\n  \"*\": {{ url: \"{}\", max_concurrent_requests: 2 }}\n", backend.url());
    let gw = Arc::new(Gw::start(&yaml, None).await);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.get("/test/sleep/1500").await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        let (status, retry_after, body) = call.await.expect("task");
        match status {
            200 => ok += 1,
            503 => {
                shed += 1;
                assert_eq!(body["code"], 14, "{body}");
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + shed, 6);
    assert!(ok >= 2 && shed >= 1, "ok {ok}, shed {shed}");
    assert!(gw.metrics().await.contains("protogate_upstream_overloaded_total{upstream="), "no breaker metric");
}

#[tokio::test]
async fn only_calls_no_backend_processed_are_retried_and_on_another_endpoint() {
    let two = backends(2).await;
    let yaml = format!("upstreams:\n  \"*\": {{ endpoints: [{}] }}\n", endpoints_yaml(&two));
    let gw = Gw::start(&yaml, None).await;
    let total = |b: &[Backend]| calls(b).iter().sum::<u64>();

    // A trailers-only UNAVAILABLE means "not processed": tried once more,
    // on the other endpoint.
    let (status, body) = gw.post("/test/fail", serde_json::json!({"code": 14, "message": "busy"})).await;
    assert_eq!((status, body["code"].as_i64()), (503, Some(14)), "{body}");
    assert_eq!(calls(&two), [1, 1], "the retry did not go to the other endpoint");

    // Any other answer was processed: never sent again.
    let before = total(&two);
    let (status, _) = gw.post("/test/fail", serde_json::json!({"code": 13, "message": "broken"})).await;
    assert_eq!(status, 500);
    assert_eq!(total(&two), before + 1, "a processed call was replayed");
    let before = total(&two);
    let (status, _) = gw.post("/test/fail", serde_json::json!({"code": 9, "message": "no"})).await;
    assert_eq!(status, 400);
    assert_eq!(total(&two), before + 1, "a processed call was replayed");

    // attempts: 1 turns retries off.
    let single = backends(2).await;
    let yaml =
        format!("upstreams:\n  \"*\": {{ endpoints: [{}], retries: {{ attempts: 1 }} }}\n", endpoints_yaml(&single));
    let gw = Gw::start(&yaml, None).await;
    let (status, _) = gw.post("/test/fail", serde_json::json!({"code": 14})).await;
    assert_eq!(status, 503);
    assert_eq!(total(&single), 1);
    assert!(gw.metrics().await.contains("protogate_upstream_retries_total"), "no retry metric");
}
