//! The limits a request meets before any work (DESIGN §10):
//! `limits.max_concurrent_requests` sheds with a 503 envelope, code 14 and
//! `Retry-After`, freeing up as requests end; an oversized request target
//! (414) or header block (`limits.max_header_bytes`, 431) is refused in the
//! envelope over HTTP/1.1 and HTTP/2 alike.

mod common;

use common::{assert_error, metrics, start, Backend, Descriptors};
use reqwest::Method;

#[tokio::test]
async fn requests_over_the_limit_are_shed_and_the_rest_served() {
    let backend = Backend::test_service().await;
    let yaml = format!(
        "upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ max_concurrent_requests: 2 }}\n\
         cors: {{ allow_origins: [\"https://app.example.com\"] }}\n",
        backend.url()
    );
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;
    // Six at once, each held by the backend far longer than it takes to
    // send the others: two are served, four shed.
    let origin = [("origin", "https://app.example.com")];
    let replies =
        futures_util::future::join_all((0..6).map(|_| gateway.request(Method::GET, "/test/sleep/1500", &origin, None)))
            .await;
    let served = replies.iter().filter(|reply| reply.status == 200).count();
    let shed: Vec<_> = replies.iter().filter(|reply| reply.status == 503).collect();
    assert_eq!((served, shed.len()), (2, 4), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in shed {
        let envelope = assert_error(reply, 503, 14);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("2 concurrent")), "{envelope}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        // A page can read why it was refused.
        assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    }
    // The two backend calls were the only ones made.
    assert_eq!(gateway.backend_calls(), 2);
    // Nothing is held once they have ended.
    let samples = metrics::samples(&gateway.gateway);
    assert_eq!(metrics::sample(&samples, "protogate_inflight_requests"), 0.0);
    let shed_count = r#"protogate_http_requests_total{method="GET",route="unmatched",status="503"}"#;
    assert_eq!(metrics::sample(&samples, shed_count), 4.0, "{samples:?}");
    assert_eq!(gateway.get("/test/metadata").await.status, 200);
    gateway.shutdown().await;
}

/// An HTTP/2 client (prior knowledge) to the gateway.
fn h2_client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().expect("h2 client")
}

#[tokio::test]
async fn an_oversized_target_or_header_block_is_refused_in_the_envelope() {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ max_header_bytes: 8KiB }}\n", backend.url());
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;
    let long_target = format!("/test/query?string_value={}", "a".repeat(9000));
    let big_header = "b".repeat(10_000);
    for (name, client) in [("HTTP/1.1", common::http_client()), ("HTTP/2", h2_client())] {
        let reply = common::Reply::read(client.get(gateway.url(&long_target)).send().await.expect("send")).await;
        let envelope = assert_error(&reply, 414, 8);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("request target")), "{name}: {envelope}");

        let request = client.get(gateway.url("/test/metadata")).header("x-big", &big_header);
        let reply = common::Reply::read(request.send().await.expect("send")).await;
        let envelope = assert_error(&reply, 431, 8);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("max_header_bytes")), "{name}: {envelope}");

        // Under the limits, served as usual.
        let request = client.get(gateway.url("/test/metadata")).header("x-small", "c".repeat(1000));
        assert_eq!(common::Reply::read(request.send().await.expect("send")).await.status, 200, "{name}");
    }
    // Neither refusal reached the backend.
    assert_eq!(gateway.backend_calls(), 2);
    gateway.shutdown().await;
}
