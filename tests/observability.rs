//! What an operator sees (DESIGN §9), over real HTTP against real
//! backends: `/metrics` families, labels and exact counts, `/readyz`
//! following an upstream that goes away.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::metrics::{self, sample};
use common::{config_for, eventually, start_with_admin, Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;

async fn start() -> TestGateway {
    let backend = Backend::test_service().await;
    start_with_admin(Descriptors::test_service(), config_for(&backend), vec![backend]).await
}

async fn admin_get(gateway: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    gateway.request_url(Method::GET, &gateway.admin_url(path), headers, None).await
}

/// Every sample of the Prometheus text, by its series (`name{labels}`
/// exactly as printed).
async fn scrape(gateway: &TestGateway) -> HashMap<String, f64> {
    let reply = admin_get(gateway, "/metrics", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    metrics::parse(&reply.text())
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status() {
    let gateway = start().await;
    let before = scrape(&gateway).await;
    for value in ["a", "b", "c"] {
        let reply = gateway.get(&format!("/test/path/{value}/7/n/RED")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let missing = gateway.get("/no/such/route").await;
    assert_eq!(missing.status, 404);
    let failed = gateway.post_json("/test/fail", r#"{"code": 5, "message": "gone"}"#).await;
    assert_eq!(failed.status, 404, "{}", failed.text());

    let after = scrape(&gateway).await;
    let moved = |series: &str| sample(&after, series) - sample(&before, series);
    let path = r#"route="/test/path/{string_value}/{int64_value}/{nested.name}/{color}""#;
    assert_eq!(moved(&format!(r#"protogate_http_requests_total{{method="GET",{path},status="200"}}"#)), 3.0);
    assert_eq!(moved(r#"protogate_http_requests_total{method="GET",route="unmatched",status="404"}"#), 1.0);
    assert_eq!(moved(r#"protogate_http_requests_total{method="POST",route="/test/fail",status="404"}"#), 1.0);
    // Raw paths never become labels.
    assert!(!after.keys().any(|series| series.contains("/test/path/a")), "a raw path became a label");
    assert!(!after.keys().any(|series| series.contains("/no/such/route")), "a raw path became a label");
    assert_eq!(moved(&format!(r#"protogate_http_request_duration_seconds_count{{method="GET",{path}}}"#)), 3.0);
    assert_eq!(
        moved(&format!(r#"protogate_http_request_duration_seconds_bucket{{le="10.0",method="GET",{path}}}"#)),
        3.0
    );

    let upstream = gateway.backend().url();
    let calls = |method: &str, code: &str| {
        moved(&format!(
            r#"protogate_upstream_requests_total{{upstream="{upstream}",grpc_method="protogate.test.v1.TestService/{method}",grpc_code="{code}"}}"#
        ))
    };
    assert_eq!(calls("EchoPath", "OK"), 3.0);
    assert_eq!(calls("Fail", "NOT_FOUND"), 1.0);
    let durations = format!(
        r#"protogate_upstream_request_duration_seconds_count{{upstream="{upstream}",grpc_method="protogate.test.v1.TestService/EchoPath"}}"#
    );
    assert_eq!(moved(&durations), 3.0);
    for phase in ["decode", "upstream", "encode"] {
        let count = moved(&format!(r#"protogate_phase_duration_seconds_count{{phase="{phase}"}}"#));
        // The failed call is decoded and sent, but has nothing to encode.
        let expected = if phase == "encode" { 3.0 } else { 4.0 };
        assert_eq!(count, expected, "phase {phase}");
    }
    assert_eq!(sample(&after, "protogate_inflight_requests"), 0.0);
    let routes = gateway.gateway.catalog().routes.len() as f64;
    assert_eq!(sample(&after, "protogate_catalog_routes"), routes);
    assert_eq!(sample(&after, r#"protogate_reloads_total{result="ok"}"#), 0.0);
    assert!(after.contains_key(r#"protogate_reloads_total{result="refused"}"#));
    gateway.shutdown().await;
}

#[tokio::test]
async fn admin_requests_are_not_counted_and_openmetrics_is_served_on_request() {
    let gateway = start().await;
    for _ in 0..3 {
        admin_get(&gateway, "/routes", &[]).await;
    }
    let samples = scrape(&gateway).await;
    assert!(!samples.keys().any(|series| series.starts_with("protogate_http_requests_total")), "{samples:?}");

    let open = admin_get(&gateway, "/metrics", &[("accept", "application/openmetrics-text; version=1.0.0")]).await;
    assert_eq!(open.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    let text = open.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE protogate_reloads counter"), "{text}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn streamed_messages_are_counted_per_direction() {
    let gateway = start().await;
    let reply = gateway.get("/test/stream/items?count=5").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text().lines().count(), 5, "{}", reply.text());
    let collect = gateway
        .request(
            Method::POST,
            "/test/collect/t",
            &[("content-type", "application/x-ndjson")],
            Some(b"{}\n{}\n{}\n".to_vec()),
        )
        .await;
    assert_eq!(collect.status, 200, "{}", collect.text());

    // The stream's upstream call is recorded when its body has ended.
    let samples = eventually("no request in flight", Duration::from_secs(5), || async {
        let samples = scrape(&gateway).await;
        match sample(&samples, "protogate_inflight_requests") {
            0.0 => Ok(samples),
            n => Err(format!("{n} in flight")),
        }
    })
    .await;
    let out = r#"protogate_stream_messages_total{route="/test/stream/items",direction="out"}"#;
    assert_eq!(sample(&samples, out), 5.0, "{samples:?}");
    let into = r#"protogate_stream_messages_total{route="/test/collect/{tag}",direction="in"}"#;
    assert_eq!(sample(&samples, into), 3.0, "{samples:?}");
    let upstream = gateway.backend().url();
    let stream_calls = format!(
        r#"protogate_upstream_requests_total{{upstream="{upstream}",grpc_method="protogate.test.v1.TestService/StreamItems",grpc_code="OK"}}"#
    );
    assert_eq!(sample(&samples, &stream_calls), 1.0, "{samples:?}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn readiness_follows_the_upstreams() {
    let backend = Backend::test_service().await;
    let url = backend.url();
    let gateway = start_with_admin(Descriptors::test_service(), config_for(&backend), Vec::new()).await;
    let ready = eventually("/readyz 200", Duration::from_secs(10), || async {
        let reply = admin_get(&gateway, "/readyz", &[]).await;
        if reply.status == 200 {
            Ok(reply)
        } else {
            Err(reply.text())
        }
    })
    .await;
    assert_eq!(ready.json()["status"], "ready");

    backend.shutdown().await;
    let down = eventually("/readyz 503", Duration::from_secs(10), || async {
        let reply = admin_get(&gateway, "/readyz", &[]).await;
        if reply.status == 503 {
            Ok(reply)
        } else {
            Err(reply.text())
        }
    })
    .await;
    let body = down.json();
    assert_eq!(body["code"], 14, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(&url), "the 503 names the upstream {url}: {message}");
    // Liveness is not readiness.
    assert_eq!(admin_get(&gateway, "/healthz", &[]).await.status, 200);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_shipped_dashboard_and_docs_use_only_metrics_that_exist() {
    let gateway = start().await;
    let families = gateway.gateway.metrics().families();
    let known = |name: &str| {
        families.iter().any(|family| {
            name == *family
                || ["_total", "_bucket", "_sum", "_count"].iter().any(|suffix| name == format!("{family}{suffix}"))
        })
    };
    for doc in ["docs/grafana-dashboard.json", "docs/observability.md"] {
        let path = common::fixtures::repo_path(doc);
        let contents = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut names: Vec<&str> = contents
            .match_indices("protogate_")
            .map(|(at, _)| {
                let rest = &contents[at..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.dedup();
        assert!(!names.is_empty(), "{doc} names no metric");
        for name in names {
            assert!(known(name), "{doc} uses {name}, which /metrics does not have: {families:?}");
        }
    }
    gateway.shutdown().await;
}
