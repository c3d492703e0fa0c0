//! Rate limiting end to end: the Redis script against a real redis-server,
//! two gateway replicas sharing one Redis, Redis killed and restarted under
//! traffic, spoofed forwarding headers over real HTTP, and the local
//! store's memory bound under a million keys.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::api::ratelimit::{
    compile, Check, ManualClock, RateLimiter, RateLimitsConfig, ResolvedLimit, RouteLimits, Verdict,
};
use common::api::{Config, GatewayError};
use common::redis::RedisServer;
use common::{config_for, metrics, Backend, Descriptors, TestGateway};
use http::{HeaderMap, StatusCode};
use tonic::service::Routes;

const PROTO: &str = r#"
syntax = "proto3";
package rl.v1;
import "google/api/annotations.proto";
message GetThing { string id = 1; }
message Thing { string id = 1; }
service Things {
  rpc Get(GetThing) returns (Thing) { option (google.api.http) = { get: "/v1/things/{id}" }; }
  rpc Free(GetThing) returns (Thing) { option (google.api.http) = { get: "/v1/free/{id}" }; }
}
"#;

/// `rl.v1.Things`, answering every call with an empty message: enough for
/// the gateway to complete a request, nothing to maintain.
#[derive(Clone)]
struct Things;

impl tonic::server::NamedService for Things {
    const NAME: &'static str = "rl.v1.Things";
}

impl tower::Service<http::Request<tonic::body::Body>> for Things {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            // `()` decodes any request by skipping its fields.
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Empty, req).await)
        })
    }
}

struct Empty;

impl tonic::server::UnaryService<()> for Empty {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, _req: tonic::Request<()>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

/// The backend and the config every replica of a test is started with.
struct Env {
    /// Serves until the test ends, behind every replica.
    _backend: Backend,
    config: Config,
}

async fn setup(rate_limits: &str) -> Env {
    let backend = Backend::start(Routes::new(Things)).await;
    let mut config = config_for(&backend);
    config.rate_limits = serde_yaml_ng::from_str(rate_limits).expect("rate_limits yaml");
    Env { _backend: backend, config }
}

/// One gateway replica over its own copy of the descriptors, serving on a
/// loopback port until dropped.
async fn replica(config: &Config) -> TestGateway {
    common::start(Descriptors::empty().with("things.proto", PROTO), config.clone(), vec![]).await
}

async fn get(client: &reqwest::Client, url: String, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.expect("request")
}

fn redis_rules(url: &str, key: &str, burst: u32) -> String {
    format!(
        "
redis: {{ url: '{url}', key_prefix: 'rltest:', timeout: 200ms }}
on_redis_error: allow
rules:
  - name: things
    match: {{ method: rl.v1.Things/Get }}
    key: {key}
    rate: 1/min
    burst: {burst}
    backend: redis
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_global_limit() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let s = setup(&redis_rules(&redis.url(), "ip", 10)).await;
    let a = replica(&s.config).await;
    let b = replica(&s.config).await;
    let client = reqwest::Client::new();

    // Concurrent requests from both replicas: the script is atomic, so the
    // total is exact.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        tasks.push(tokio::spawn(async move { get(&client, format!("{base}/v1/things/{i}"), &[]).await }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for task in tasks {
        let response = task.await.expect("task");
        let headers = response.headers().clone();
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: u64 = headers["retry-after"].to_str().expect("ascii").parse().expect("secs");
                assert!((1..=60).contains(&retry), "retry-after {retry}");
                assert_eq!(headers["ratelimit-remaining"], "0");
                let body: serde_json::Value = response.json().await.expect("json");
                assert_eq!(body["code"], 8, "{body}");
                assert_eq!(body["message"], "rate limit \"things\" exceeded (1 per minute, burst 10)");
            }
            other => panic!("unexpected status {other}"),
        }
        assert_eq!(headers["ratelimit-limit"], "10");
        assert_eq!(headers["ratelimit-policy"], "1;w=60;burst=10");
    }
    assert_eq!((ok, limited), (10, 30));
    // Each replica counts its own decisions; together, every request once.
    let decided = |outcome: &str| {
        let series = format!(r#"protogate_ratelimit_decisions_total{{rule="things",outcome="{outcome}"}}"#);
        [&a, &b].iter().map(|replica| metrics::sample(&metrics::samples(&replica.gateway), &series)).sum::<f64>()
    };
    assert_eq!((decided("allowed"), decided("limited")), (10.0, 30.0));

    // A route no rule selects carries no rate-limit headers.
    let free = get(&client, format!("{}/v1/free/1", a.base), &[]).await;
    assert_eq!(free.status(), StatusCode::OK);
    assert!(free.headers().get("ratelimit-limit").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_fails_open_then_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let s = setup(&redis_rules(&url, "header:x-client", 3)).await;
    let a = replica(&s.config).await;
    let b = replica(&s.config).await;
    let client = reqwest::Client::new();
    let count_ok = |client: reqwest::Client, id: &'static str| {
        let (a, b) = (a.base.clone(), b.base.clone());
        async move {
            let mut per_replica = [0, 0];
            for i in 0..10 {
                let base = if i % 2 == 0 { &a } else { &b };
                let r = get(&client, format!("{base}/v1/things/x"), &[("x-client", id)]).await;
                if r.status() == StatusCode::OK {
                    per_replica[i % 2] += 1;
                }
            }
            per_replica
        }
    };

    let before = count_ok(client.clone(), "c1").await;
    assert_eq!(before[0] + before[1], 3, "global limit before the outage");

    redis.stop();
    // Fail open: each replica decides alone with the same rule meanwhile.
    let during = count_ok(client.clone(), "c2").await;
    assert_eq!(during, [3, 3], "per-replica limit during the outage");
    assert!(a.gateway.rate_limiter().redis_failures() > 0);
    assert!(b.gateway.rate_limiter().redis_failures() > 0);

    let redis = RedisServer::start_on(redis.port);
    // Reconnection happens on its own: wait until both replicas write
    // their buckets to the new server again.
    let check = redis::Client::open(url.as_str()).expect("client");
    let mut conn = check.get_multiplexed_async_connection().await.expect("connect");
    for (n, base) in [&a.base, &b.base].into_iter().enumerate() {
        let mut recovered = false;
        for attempt in 0..100 {
            let id = format!("probe-{n}-{attempt}");
            get(&client, format!("{base}/v1/things/x"), &[("x-client", &id)]).await;
            let key = format!("rltest:things:h={id}");
            let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.expect("exists");
            if exists {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "replica {n} never used redis again");
    }
    let after = count_ok(client.clone(), "c3").await;
    assert_eq!(after[0] + after[1], 3, "global limit after recovery");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_headers_over_http() {
    // Untrusted peer (nothing trusted): headers are ignored.
    let rules = "
rules:
  - name: per-ip
    match: { path_prefix: /v1/things, http_method: GET }
    key: ip
    rate: 1/min
    burst: 2
";
    let s = setup(rules).await;
    let gw = replica(&s.config).await;
    let client = reqwest::Client::new();
    let mut ok = 0;
    for i in 0..10 {
        let spoof = format!("203.0.113.{i}");
        let fwd = format!("for={spoof}");
        let r =
            get(&client, format!("{}/v1/things/1", gw.base), &[("x-forwarded-for", &spoof), ("forwarded", &fwd)]).await;
        if r.status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);

    // Loopback trusted as a proxy: each forwarded client has its bucket,
    // and what a client prepends itself is not read.
    let trusted = format!("trusted_proxies: [127.0.0.1/32]\n{rules}");
    let s = setup(&trusted).await;
    let gw = replica(&s.config).await;
    let mut statuses = Vec::new();
    for chain in ["198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2", "6.6.6.6, 198.51.100.1"] {
        let r = get(&client, format!("{}/v1/things/1", gw.base), &[("x-forwarded-for", chain)]).await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 429]);
    // The rule selects by path prefix: /v1/free is not limited.
    let r = get(&client, format!("{}/v1/free/1", gw.base), &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get("ratelimit-policy").is_none());
}

fn limiter_fixture(yaml: &str, clock: Option<Arc<ManualClock>>) -> (RateLimiter, RouteLimits) {
    let config: RateLimitsConfig = serde_yaml_ng::from_str(yaml).expect("yaml");
    let rules = compile(&config).expect("rules");
    let limits = rules
        .iter()
        .map(|rule| ResolvedLimit { rule: rule.clone(), cost: config.rules[rule.id as usize].cost })
        .collect();
    let limiter = match clock {
        Some(clock) => RateLimiter::with_clock(&config, clock),
        None => RateLimiter::new(&config),
    };
    (limiter, RouteLimits::new(limits, "GET /v1/things/{id}".into()))
}

async fn decide(limiter: &RateLimiter, limits: &RouteLimits, peer: SocketAddr) -> Result<Verdict, GatewayError> {
    match limiter.check(limits, peer, &HeaderMap::new(), None) {
        Check::Done(result) => result,
        Check::Pending(pending) => pending.run(limiter).await,
    }
}

#[tokio::test]
async fn redis_script_counts_costs_and_headers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let yaml = |cost: u32| {
        format!(
            "
redis: {{ url: '{}', timeout: 1s }}
rules:
  - name: shared
    key: ip
    rate: 1/min
    burst: 10
    cost: {cost}
    backend: redis
",
            redis.url()
        )
    };
    let peer: SocketAddr = "198.51.100.1:1000".parse().expect("addr");
    let (a, limits) = limiter_fixture(&yaml(1), None);
    let (b, _) = limiter_fixture(&yaml(1), None);
    let mut remaining = Vec::new();
    for i in 0..20 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        if let Ok(verdict) = decide(limiter, &limits, peer).await {
            let mut headers = HeaderMap::new();
            verdict.apply(&mut headers);
            remaining.push(headers["ratelimit-remaining"].to_str().expect("ascii").to_string());
        }
    }
    // Two limiters, one bucket: exactly the burst, counting down.
    assert_eq!(remaining, ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"]);
    assert_eq!(a.redis_failures() + b.redis_failures(), 0);

    // Cost 4 out of 10 on a fresh key: two requests, then refused.
    let (c, limits) = limiter_fixture(&yaml(4), None);
    let other: SocketAddr = "198.51.100.2:1000".parse().expect("addr");
    let mut outcomes = Vec::new();
    for _ in 0..4 {
        outcomes.push(decide(&c, &limits, other).await.is_ok());
    }
    assert_eq!(outcomes, [true, true, false, false]);
    drop(redis);
}

#[test]
fn a_million_distinct_keys_stay_within_the_cap() {
    let clock = Arc::new(ManualClock::default());
    let (limiter, limits) = limiter_fixture(
        "
max_keys: 50000
rules:
  - name: per-ip
    key: ip
    rate: 10/s
    burst: 10
",
        Some(clock.clone()),
    );
    let cap = limiter.local().capacity();
    assert!((50_000..51_000).contains(&cap), "cap {cap}");
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    let mut peak = 0;
    for n in 0..1_000_000u32 {
        let peer = SocketAddr::from((n.to_be_bytes(), 1000));
        // Every new key is allowed: the cap never refuses a client.
        assert!(rt.block_on(decide(&limiter, &limits, peer)).is_ok());
        if n % 1000 == 0 {
            clock.advance(Duration::from_millis(1));
            let len = limiter.local().len();
            peak = peak.max(len);
            assert!(len <= cap, "{len} keys > cap {cap}");
        }
    }
    assert!(peak > cap / 2, "the store was never under pressure: {peak}");
    assert!(limiter.local().len() <= cap);
}
