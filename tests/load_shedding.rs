//! `limits.max_concurrent_requests` (DESIGN §10): requests over the limit
//! are shed before any work with a 503 envelope, code 14 and
//! `Retry-After`; the limit frees up as requests end.

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
