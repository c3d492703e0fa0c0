//! The cost of one rate-limit decision per request: local (hash the key,
//! one shard lock, GCRA) and Redis (one EVALSHA round trip over loopback).
//! The Redis half runs only when a `redis-server` binary is available.

#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use protogate::config::rate_limits::RateLimitsConfig;
use protogate::ratelimit::rule::{compile, ResolvedLimit, RouteLimits};
use protogate::ratelimit::{Check, RateLimiter};

fn fixture(yaml: &str) -> (Arc<RateLimiter>, RouteLimits) {
    let config: RateLimitsConfig = serde_yaml_ng::from_str(yaml).expect("yaml");
    let rules = compile(&config).expect("rules");
    let limits = rules.iter().map(|rule| ResolvedLimit { rule: rule.clone(), cost: 1 }).collect();
    (Arc::new(RateLimiter::new(&config)), RouteLimits::new(limits, "GET /v1/things/{id}".into()))
}

/// 10 000 clients, so the map is realistically populated.
fn peers() -> Vec<SocketAddr> {
    (0..10_000u32).map(|n| SocketAddr::from(((0x0a00_0000 + n).to_be_bytes(), 40000))).collect()
}

fn local(c: &mut Criterion) {
    let (limiter, limits) = fixture(
        "
rules:
  - name: per-ip
    key: ip
    rate: 1000000/s
    burst: 1000
",
    );
    let peers = peers();
    let headers = HeaderMap::new();
    let mut i = 0;
    c.bench_function("ratelimit/local decision", |b| {
        b.iter(|| {
            i = (i + 1) % peers.len();
            match limiter.check(&limits, peers[i], &headers, None) {
                Check::Done(result) => black_box(result.is_ok()),
                Check::Pending(_) => unreachable!("local rule"),
            }
        })
    });
    let (limiter, limits) = fixture(
        "
rules:
  - name: per-consumer-ip
    key: [consumer, ip]
    rate: 1000000/s
    burst: 1000
  - name: per-route
    key: route
    rate: 1000000/s
    burst: 1000
",
    );
    c.bench_function("ratelimit/local two rules", |b| {
        b.iter(|| {
            i = (i + 1) % peers.len();
            match limiter.check(&limits, peers[i], &headers, Some("alice")) {
                Check::Done(result) => black_box(result.is_ok()),
                Check::Pending(_) => unreachable!("local rules"),
            }
        })
    });
}

fn redis(c: &mut Criterion) {
    let Some(server) = redis_server::RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (limiter, limits) = fixture(&format!(
        "
redis: {{ url: '{}', timeout: 1s }}
rules:
  - name: per-ip
    key: ip
    rate: 1000000/s
    burst: 1000
    backend: redis
",
        server.url()
    ));
    let peers = peers();
    let headers = HeaderMap::new();
    let mut i = 0;
    c.bench_function("ratelimit/redis decision", |b| {
        b.iter(|| {
            i = (i + 1) % peers.len();
            let check = limiter.check(&limits, peers[i], &headers, None);
            let Check::Pending(pending) = check else { unreachable!("redis rule") };
            black_box(rt.block_on(pending.run(&limiter)).is_ok())
        })
    });
    assert_eq!(limiter.redis_failures(), 0, "redis decisions fell back");
    drop(server);
}

criterion_group!(benches, local, redis);
criterion_main!(benches);
