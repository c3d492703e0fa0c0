//! Tests of the whole limiter: config → rules → keys → decisions →
//! headers, on a manual clock (exact counts, no sleeping).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::local::ManualClock;
use super::rule::{compile, ResolvedLimit, RouteLimits};
use super::*;
use crate::config::rate_limits::RateLimitsConfig;

fn config(yaml: &str) -> RateLimitsConfig {
    serde_yaml_ng::from_str(yaml).expect("rate_limits yaml")
}

struct Fixture {
    limiter: RateLimiter,
    clock: Arc<ManualClock>,
    limits: RouteLimits,
}

/// Every rule of `yaml` applied to one route, with the rule's own cost.
fn fixture(yaml: &str) -> Fixture {
    let config = config(yaml);
    let rules = compile(&config).expect("valid rules");
    let clock = Arc::new(ManualClock::default());
    let limiter = RateLimiter::with_clock(&config, clock.clone());
    let limits = rules
        .iter()
        .map(|rule| ResolvedLimit { rule: rule.clone(), cost: config.rules[rule.id as usize].cost })
        .collect();
    Fixture { limiter, clock, limits: RouteLimits::new(limits, "GET /v1/things/{id}".into()) }
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("ip"), 40000)
}

impl Fixture {
    fn check(&self, peer: SocketAddr, headers: &HeaderMap, consumer: Option<&str>) -> Result<Verdict, GatewayError> {
        match self.limiter.check(&self.limits, peer, headers, consumer) {
            Check::Done(result) => result,
            Check::Pending(_) => panic!("local rules never wait"),
        }
    }

    fn allowed(&self, n: usize, peer: SocketAddr, headers: &HeaderMap, consumer: Option<&str>) -> usize {
        (0..n).filter(|_| self.check(peer, headers, consumer).is_ok()).count()
    }
}

const PER_IP: &str = "
rules:
  - name: per-ip
    key: ip
    rate: 10/s
    burst: 5
";

#[test]
fn exact_counts_for_rate_and_burst() {
    let f = fixture(PER_IP);
    let h = HeaderMap::new();
    let p = peer("198.51.100.1");
    assert_eq!(f.allowed(50, p, &h, None), 5);
    // 99 ms: not a whole interval yet.
    f.clock.advance(Duration::from_millis(99));
    assert_eq!(f.allowed(10, p, &h, None), 0);
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(f.allowed(10, p, &h, None), 1);
    // A long pause refills the burst, not more.
    f.clock.advance(Duration::from_secs(60));
    assert_eq!(f.allowed(50, p, &h, None), 5);
    // Steady arrivals at exactly the rate are all allowed.
    for _ in 0..100 {
        f.clock.advance(Duration::from_millis(100));
        assert_eq!(f.allowed(2, p, &h, None), 1);
    }
    assert_eq!(f.limiter.denied(), 45 + 10 + 9 + 45 + 100);
}

#[test]
fn keys_are_kept_apart() {
    let f = fixture(PER_IP);
    let h = HeaderMap::new();
    assert_eq!(f.allowed(10, peer("198.51.100.1"), &h, None), 5);
    assert_eq!(f.allowed(10, peer("198.51.100.2"), &h, None), 5);
    assert_eq!(f.allowed(10, peer("2001:db8::1"), &h, None), 5);

    let f = fixture(
        "
rules:
  - name: per-consumer
    key: consumer
    rate: 1/min
    burst: 2
",
    );
    let p = peer("198.51.100.1");
    assert_eq!(f.allowed(5, p, &h, Some("alice")), 2);
    assert_eq!(f.allowed(5, p, &h, Some("bob")), 2);
    // Anonymous: keyed by IP, not sharing alice's bucket, and not sharing a
    // consumer who is called like the address.
    assert_eq!(f.allowed(5, p, &h, None), 2);
    assert_eq!(f.allowed(5, p, &h, Some("198.51.100.1")), 2);
    // Another anonymous client has its own bucket.
    assert_eq!(f.allowed(5, peer("198.51.100.9"), &h, None), 2);
}

#[test]
fn header_route_and_combined_keys() {
    let f = fixture(
        "
rules:
  - name: per-tenant-ip
    key: [header:x-tenant, ip]
    rate: 1/min
    burst: 1
",
    );
    let tenant = |t: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-tenant", t.parse().expect("value"));
        h
    };
    let p = peer("198.51.100.1");
    assert_eq!(f.allowed(3, p, &tenant("a"), None), 1);
    assert_eq!(f.allowed(3, p, &tenant("b"), None), 1);
    assert_eq!(f.allowed(3, peer("198.51.100.2"), &tenant("a"), None), 1);
    // No header: keyed by IP alone, apart from any tenant.
    assert_eq!(f.allowed(3, p, &HeaderMap::new(), None), 1);

    let f = fixture(
        "
rules:
  - name: per-route
    key: route
    rate: 1/min
    burst: 3
",
    );
    // Everyone shares the route's bucket.
    assert_eq!(f.allowed(2, peer("198.51.100.1"), &HeaderMap::new(), None), 2);
    assert_eq!(f.allowed(2, peer("198.51.100.2"), &HeaderMap::new(), Some("x")), 1);
}

#[test]
fn cost_is_spent_per_request() {
    let f = fixture(
        "
rules:
  - name: expensive
    key: ip
    rate: 10/s
    burst: 10
    cost: 3
",
    );
    let h = HeaderMap::new();
    let p = peer("198.51.100.1");
    assert_eq!(f.allowed(10, p, &h, None), 3);
    // One unit was left over; two more intervals make a request's worth.
    f.clock.advance(Duration::from_millis(100));
    assert_eq!(f.allowed(10, p, &h, None), 0);
    f.clock.advance(Duration::from_millis(100));
    assert_eq!(f.allowed(10, p, &h, None), 1);
}

#[test]
fn headers_on_allowed_and_refused_requests() {
    let f = fixture(PER_IP);
    let h = HeaderMap::new();
    let p = peer("198.51.100.1");
    let verdict = f.check(p, &h, None).expect("allowed");
    let mut headers = HeaderMap::new();
    verdict.apply(&mut headers);
    assert_eq!(headers[&RATELIMIT_LIMIT], "5");
    assert_eq!(headers[&RATELIMIT_REMAINING], "4");
    assert_eq!(headers[&RATELIMIT_RESET], "1");
    assert_eq!(headers[&RATELIMIT_POLICY], "10;w=1;burst=5");
    for _ in 0..4 {
        f.check(p, &h, None).expect("allowed");
    }
    let err = f.check(p, &h, None).expect_err("refused");
    assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(err.code, Code::ResourceExhausted);
    assert_eq!(err.message, "rate limit \"per-ip\" exceeded (10 per second, burst 5)");
    let header = |name: &HeaderName| {
        err.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().expect("ascii").to_string())
    };
    // 100 ms to wait, rounded up to a whole second, never 0.
    assert_eq!(header(&RETRY_AFTER).as_deref(), Some("1"));
    assert_eq!(header(&RATELIMIT_REMAINING).as_deref(), Some("0"));
    assert_eq!(header(&RATELIMIT_LIMIT).as_deref(), Some("5"));
    assert_eq!(header(&RATELIMIT_POLICY).as_deref(), Some("10;w=1;burst=5"));

    // A slow rate: Retry-After counts whole seconds up.
    let f = fixture(
        "
rules:
  - name: slow
    key: ip
    rate: 2/min
    burst: 1
",
    );
    f.check(p, &h, None).expect("allowed");
    f.clock.advance(Duration::from_millis(500));
    let err = f.check(p, &h, None).expect_err("refused");
    let retry = err.headers.iter().find(|(n, _)| n == RETRY_AFTER).map(|(_, v)| v.clone());
    assert_eq!(retry, Some(HeaderValue::from_static("30")));
}

#[test]
fn tightest_rule_reports_and_any_rule_refuses() {
    let f = fixture(
        "
rules:
  - name: per-ip
    key: ip
    rate: 100/s
    burst: 100
  - name: per-route
    key: route
    rate: 1/min
    burst: 3
",
    );
    let h = HeaderMap::new();
    let verdict = f.check(peer("198.51.100.1"), &h, None).expect("allowed");
    let mut headers = HeaderMap::new();
    verdict.apply(&mut headers);
    assert_eq!(headers[&RATELIMIT_LIMIT], "3");
    assert_eq!(headers[&RATELIMIT_REMAINING], "2");
    assert_eq!(headers[&RATELIMIT_POLICY], "100;w=1;burst=100, 1;w=60;burst=3");
    assert_eq!(f.allowed(10, peer("198.51.100.2"), &h, None), 2);
    let err = f.check(peer("198.51.100.3"), &h, None).expect_err("route exhausted");
    assert!(err.message.contains("per-route"), "{}", err.message);
}

#[test]
fn spoofed_forwarding_headers_do_not_pick_the_key() {
    let f = fixture(
        "
trusted_proxies: [10.0.0.0/8]
rules:
  - name: per-ip
    key: ip
    rate: 1/min
    burst: 2
",
    );
    // An untrusted client rotating x-forwarded-for and forwarded values
    // stays in its own single bucket.
    let attacker = peer("203.0.113.66");
    let allowed = (0..20)
        .filter(|i| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", format!("192.0.2.{i}").parse().expect("value"));
            h.insert("forwarded", format!("for=192.0.2.{i}").parse().expect("value"));
            f.check(attacker, &h, None).is_ok()
        })
        .count();
    assert_eq!(allowed, 2);
    // Behind a trusted proxy, each real client has its own bucket, and a
    // client's own prefix to the header changes nothing.
    let proxy = peer("10.0.0.7");
    let via = |chain: &str| {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", chain.parse().expect("value"));
        h
    };
    assert_eq!(f.allowed(5, proxy, &via("198.51.100.1"), None), 2);
    assert_eq!(f.allowed(5, proxy, &via("198.51.100.2"), None), 2);
    assert_eq!(f.allowed(5, proxy, &via("1.1.1.1, 198.51.100.1"), None), 0);
}

#[test]
fn config_errors_name_the_rule() {
    // The config file refuses these with key and line (config::tests); a
    // section built without the file's checks still cannot compile.
    let bad = config(
        "
rules:
  - name: a
    key: ip
    rate: 1/s
  - name: a
    key: ip
    rate: 1/s
    burst: 2
    cost: 3
  - key: ip
    rate: 1/s
    backend: redis
",
    );
    let problems = compile(&bad).expect_err("invalid");
    let all = problems.join("\n");
    for expected in [
        "rules[1] (a): name: another rule has the same name",
        "rules[1] (a): cost 3 exceeds the burst 2",
        "rules[2] (rule-3): backend: redis needs a rate_limits.redis section",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in\n{all}");
    }
    for (yaml, fragment) in [
        ("rules: [{key: ip, rate: 10/week}]", "invalid rate"),
        ("rules: [{key: ip, rate: 0/s}]", "invalid rate"),
        ("rules: [{key: ip, rate: 1/s, bogus: 1}]", "unknown field"),
        ("rules: [{key: [ip, ip], rate: 1/s}]", "\"ip\" appears twice"),
        ("rules: [{key: nonsense, rate: 1/s}]", "unknown key part \"nonsense\""),
        ("rules: [{key: 'header:bad header', rate: 1/s}]", "invalid header name"),
        ("rules: [{key: [], rate: 1/s}]", "at least one part"),
        ("rules: [{key: ip, rate: 1/s, burst: 0}]", "at least 1"),
        ("rules: [{name: '', key: ip, rate: 1/s}]", "must not be empty"),
        ("max_keys: 0", "at least 1"),
        ("redis: {url: 'http://x'}", "not a Redis URL"),
        ("trusted_proxies: [10.0.0.0/33]", "invalid network"),
        ("redis: {url: 'redis://x', timeout: soon}", "invalid duration"),
        ("on_redis_error: maybe", "unknown variant"),
    ] {
        let err = serde_yaml_ng::from_str::<RateLimitsConfig>(yaml).expect_err(yaml);
        assert!(err.to_string().contains(fragment), "{yaml}: {err}");
    }
    let ok = config(
        "
trusted_proxies: [10.0.0.0/8, 127.0.0.1, '::1']
redis: { url: 'redis://127.0.0.1:6379', key_prefix: 'pg:', timeout: 20ms }
on_redis_error: deny
rules:
  - name: users
    match: { path_prefix: /v1/users, http_method: get, version: v1 }
    key: [consumer, ip]
    rate: 6000/min
    burst: 20
    backend: redis
",
    );
    assert_eq!(ok.redis.as_ref().map(|r| r.timeout), Some(Duration::from_millis(20)));
    let rules = compile(&ok).expect("valid");
    assert_eq!(rules[0].redis_prefix, "pg:users");
    assert_eq!(rules[0].policy, "6000;w=60;burst=20");
}

#[test]
fn redis_keys_are_readable_and_escaped() {
    let ok = config(
        "
redis: { url: 'redis://127.0.0.1:6379' }
rules:
  - name: r
    key: [consumer, ip, route, header:x-tenant]
    rate: 1/s
    backend: redis
",
    );
    let rules = compile(&ok).expect("valid");
    let trusted = client_ip::TrustedProxies::default();
    let mut h = HeaderMap::new();
    h.insert("x-tenant", "a:b c%".parse().expect("value"));
    let mut keys = key::KeySource::new(peer("198.51.100.1"), &h, Some("al:ice"), "GET /v1/x", &trusted);
    assert_eq!(keys.text(&rules[0]), "protogate:r:c=al%3Aice:ip=198.51.100.1:r=GET%20/v1/x:h=a%3Ab%20c%25");
    let empty = HeaderMap::new();
    let mut anon = key::KeySource::new(peer("198.51.100.1"), &empty, None, "GET /v1/x", &trusted);
    assert_eq!(anon.text(&rules[0]), "protogate:r:anon=198.51.100.1:ip=198.51.100.1:r=GET%20/v1/x:noh=198.51.100.1");
}

#[test]
fn redis_rules_fall_back_when_redis_is_unreachable() {
    // Port 1 on loopback: nothing listens; the connection is refused.
    let yaml = |on_error: &str| {
        format!(
            "
redis: {{ url: 'redis://127.0.0.1:1', timeout: 200ms }}
on_redis_error: {on_error}
rules:
  - name: shared
    key: ip
    rate: 1/min
    burst: 2
    backend: redis
"
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let f = fixture(&yaml("allow"));
        let h = HeaderMap::new();
        let mut allowed = 0;
        for _ in 0..5 {
            let Check::Pending(pending) = f.limiter.check(&f.limits, peer("198.51.100.1"), &h, None) else {
                panic!("redis rules wait");
            };
            if pending.run(&f.limiter).await.is_ok() {
                allowed += 1;
            }
        }
        // The local fallback enforces the same rule on this replica.
        assert_eq!(allowed, 2);
        assert!(f.limiter.redis_failures() >= 1);

        let f = fixture(&yaml("deny"));
        let Check::Pending(pending) = f.limiter.check(&f.limits, peer("198.51.100.1"), &h, None) else {
            panic!("redis rules wait");
        };
        let err = pending.run(&f.limiter).await.expect_err("fail closed");
        assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!err.message.contains("127.0.0.1"), "{}", err.message);
    });
}
