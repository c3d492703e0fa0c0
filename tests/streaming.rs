//! Streaming over plain HTTP (DESIGN §6), end to end: the test service's
//! streaming methods behind the gateway, real HTTP/1.1 (reqwest, or by hand
//! where the test must choose when each byte goes) and HTTP/2 (the h2
//! crate) clients on loopback.
//!
//! Server streaming: the framing `Accept` picks (NDJSON, JSON Lines, SSE,
//! one JSON array; q-values), errors before the first message (an ordinary
//! error response) and after it (the framing's in-band record, and HTTP/2
//! trailers), `response_body` per message, raw `HttpBody` downloads,
//! messages delivered as they come, cancellation when the client goes away,
//! backpressure from a client that stops reading, SSE keep-alives, the idle
//! timeout and a configured total deadline. Client streaming: NDJSON lines
//! sent upstream as each completes, a JSON array body, path values in every
//! message, a bad message (400 naming its index, upstream cancelled), the
//! body and message limits (413), raw uploads.
//!
//! What the backend saw comes from its own counters (`StreamStats`: calls
//! started, cancelled by the client going away, completed, messages sent
//! and received), asked over gRPC directly. Every wait is bounded
//! ([`WAIT`], [`common::eventually`]); no assertion is about speed.

mod common;

use std::time::Duration;

use common::code::{
    CANCELLED, DEADLINE_EXCEEDED, FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED,
    RESOURCE_EXHAUSTED, UNAVAILABLE,
};
use common::pb::protogate::test::v1::StreamStatsResponse;
use common::stream::{within, H2Client, RawHttp1, SseEvent, Streamed};
use common::{assert_error, violation_fields, Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpSocket;

const NDJSON: &str = "application/x-ndjson";
const JSONL: &str = "application/jsonl";
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

/// The gateway in front of a fresh test service, with `config` (YAML
/// sections other than `upstreams`, which routes everything to it).
async fn gateway(config: &str) -> TestGateway {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams:\n  \"*\": {}\n{config}", backend.url());
    common::start(Descriptors::test_service(), yaml, vec![backend]).await
}

/// `StreamItems` with the query `query`.
fn items(query: &str) -> String {
    format!("/test/stream/items?{query}")
}

/// A whole exchange over HTTP/1.1 (reqwest), bounded by [`WAIT`].
async fn request(
    gw: &TestGateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    within(&format!("{method} {path}"), gw.request(method.clone(), path, headers, body)).await
}

/// `GET path` over HTTP/1.1 with `Accept: accept` when given.
async fn get(gw: &TestGateway, path: &str, accept: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    request(gw, Method::GET, path, &headers, None).await
}

/// The backend saw exactly one call more end because the client (the
/// gateway) went away, and none more complete.
async fn assert_cancelled_upstream(gw: &TestGateway, before: &StreamStatsResponse, what: &str) {
    let stats = gw
        .stream_stats_until(&format!("{what}: the backend sees the call cancelled"), |s| {
            s.cancelled == before.cancelled + 1
        })
        .await;
    assert_eq!(stats.completed, before.completed, "{what}: the backend finished the call itself: {stats:?}");
}

/// An NDJSON body as its JSON lines: every line JSON, none blank, the last
/// one ended by `\n`.
#[track_caller]
fn json_lines(body: &str) -> Vec<Value> {
    if body.is_empty() {
        return Vec::new();
    }
    assert!(body.ends_with('\n'), "the last line has no newline: {body:?}");
    body.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line:?} in {body:?}"))
        })
        .collect()
}

/// An SSE body as its events (blank-line separated), each its lines.
#[track_caller]
fn sse_events(body: &str) -> Vec<Vec<&str>> {
    if body.is_empty() {
        return Vec::new();
    }
    assert!(body.ends_with("\n\n"), "the last event is not ended by a blank line: {body:?}");
    body.trim_end_matches('\n').split("\n\n").map(|event| event.lines().collect()).collect()
}

/// The message events of an SSE body: each exactly `id: N` and
/// `data: <json>`, ids consecutive; their data.
#[track_caller]
fn sse_messages(body: &str) -> Vec<Value> {
    let mut ids = Vec::new();
    let messages = sse_events(body)
        .into_iter()
        .map(|lines| {
            let [id, data] = lines[..] else { panic!("an event is not `id` + `data`: {lines:?} in {body:?}") };
            let id: u64 = id
                .strip_prefix("id: ")
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("not an `id: N` line: {id:?}"));
            ids.push(id);
            let data = data.strip_prefix("data: ").unwrap_or_else(|| panic!("not a `data:` line: {data:?}"));
            serde_json::from_str(data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data:?}"))
        })
        .collect();
    if let Some(first) = ids.first() {
        assert!(*first <= 1, "SSE ids start at {first}: {ids:?}");
        let consecutive: Vec<u64> = (*first..).take(ids.len()).collect();
        assert_eq!(ids, consecutive, "SSE ids are not consecutive message numbers");
    }
    messages
}

/// `value` is the `index`-th Item of a StreamItems answer with `tag`
/// (fields at their default, such as `index` 0, are omitted).
#[track_caller]
fn assert_item(value: &Value, index: usize, tag: &str) {
    assert_eq!(value["name"], json!(format!("item-{index}")), "message {index}: {value}");
    if index > 0 {
        assert_eq!(value["index"], json!(index), "message {index}: {value}");
    }
    if !tag.is_empty() {
        assert_eq!(value["tag"], json!(tag), "message {index}: {value}");
    }
}

/// `record` is `{"error": Status}` with `code` and `message`.
#[track_caller]
fn assert_error_record(record: &Value, code: i32, message: &str) {
    let status = &record["error"];
    assert_eq!(status["code"], json!(code), "error record {record}");
    assert_eq!(status["message"], json!(message), "error record {record}");
    assert!(status["details"].is_array(), "error record without a details array: {record}");
    assert_eq!(record.as_object().map(|o| o.len()), Some(1), "error record with more than `error`: {record}");
}

/// The gateway still serves a server stream and a client stream.
async fn assert_serving(gw: &TestGateway, after: &str) {
    let reply = get(gw, &items("count=2&tag=ok"), None).await;
    assert_eq!(reply.status, 200, "after {after}: {}", reply.text());
    assert_eq!(json_lines(&reply.text()).len(), 2, "after {after}: {}", reply.text());
    let reply = request(
        gw,
        Method::POST,
        "/test/collect/ok",
        &[("content-type", JSON)],
        Some(br#"[{"name":"a"},{"name":"b"}]"#.to_vec()),
    )
    .await;
    assert_eq!(reply.status, 200, "after {after}: {}", reply.text());
    assert_eq!(reply.json()["names"], json!(["a", "b"]), "after {after}");
}

/// A GET body read to the end as NDJSON, SSE or array messages, by the
/// framing its content type says.
#[track_caller]
fn messages_of(reply: &Reply) -> Vec<Value> {
    let text = reply.text();
    match reply.header("content-type").unwrap_or_default() {
        NDJSON | JSONL => json_lines(&text),
        SSE => sse_messages(&text),
        JSON => reply.json().as_array().cloned().unwrap_or_else(|| panic!("not a JSON array: {text}")),
        other => panic!("not a streaming content type: {other:?}; body {text:?}"),
    }
}

// ---------------------------------------------------------------------------
// Framings
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_framing_carries_zero_one_and_many_messages() {
    let gw = gateway("").await;
    let framings = [(None, NDJSON), (Some(NDJSON), NDJSON), (Some(JSONL), JSONL), (Some(SSE), SSE), (Some(JSON), JSON)];
    let mut calls = 0;
    for (accept, content_type) in framings {
        for count in [0usize, 1, 3] {
            let reply = get(&gw, &items(&format!("count={count}&tag=t")), accept).await;
            calls += 1;
            let case = format!("Accept {accept:?}, {count} messages");
            assert_eq!(reply.status, 200, "{case}: {}", reply.text());
            assert_eq!(reply.header("content-type"), Some(content_type), "{case}");
            let text = reply.text();
            match content_type {
                NDJSON | JSONL => {
                    let lines = json_lines(&text);
                    assert_eq!(lines.len(), count, "{case}: {text:?}");
                    for (i, line) in lines.iter().enumerate() {
                        assert_item(line, i, "t");
                    }
                }
                SSE => {
                    let messages = sse_messages(&text);
                    assert_eq!(messages.len(), count, "{case}: {text:?}");
                    for (i, message) in messages.iter().enumerate() {
                        assert_item(message, i, "t");
                    }
                }
                _ => {
                    assert!(text.starts_with('['), "{case}: {text:?}");
                    let array = reply.json();
                    let array = array.as_array().unwrap_or_else(|| panic!("{case}: not an array: {text}"));
                    assert_eq!(array.len(), count, "{case}: {text:?}");
                    for (i, message) in array.iter().enumerate() {
                        assert_item(message, i, "t");
                    }
                }
            }
        }
    }
    let stats = gw.stream_stats().await;
    assert_eq!((stats.started, stats.completed, stats.cancelled), (calls, calls, 0), "{stats:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn pretty_json_never_breaks_a_message_over_lines() {
    let gw = gateway("json:\n  pretty: true\n").await;
    for accept in [NDJSON, SSE, JSON] {
        let reply = get(&gw, &items("count=3&tag=p"), Some(accept)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let messages = messages_of(&reply);
        assert_eq!(messages.len(), 3, "{accept}: {}", reply.text());
        assert_item(&messages[2], 2, "p");
    }
    // The in-band error record too.
    let reply = get(&gw, &items("count=3&fail_after=1&fail_code=9&fail_message=x"), Some(NDJSON)).await;
    let lines = json_lines(&reply.text());
    assert_eq!(lines.len(), 2, "{}", reply.text());
    assert_error_record(&lines[1], FAILED_PRECONDITION, "x");
    gw.shutdown().await;
}

#[tokio::test]
async fn accept_is_read_with_q_values() {
    let gw = gateway("").await;
    let cases = [
        (None, NDJSON),
        (Some("*/*"), NDJSON),
        (Some("text/html, image/png"), NDJSON),
        (Some("application/json;q=0.5, text/event-stream"), SSE),
        (Some("text/event-stream;q=0.2, application/json;q=0.9"), JSON),
        (Some("application/jsonl"), JSONL),
        (Some("application/json;q=0, */*"), NDJSON),
        (Some("text/html;q=0.9, text/event-stream;q=0.1"), SSE),
        (Some("application/x-ndjson;q=0.3, application/json"), JSON),
    ];
    for (accept, content_type) in cases {
        let reply = get(&gw, &items("count=2"), accept).await;
        assert_eq!(reply.status, 200, "Accept {accept:?}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some(content_type), "Accept {accept:?}: {}", reply.text());
        let messages = messages_of(&reply);
        assert_eq!(messages.len(), 2, "Accept {accept:?}: {}", reply.text());
        assert_item(&messages[1], 1, "");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_with_a_path_variable_and_a_body_streams_too() {
    // The POST binding of StreamItems: `tag` from the path wins over the body's.
    let gw = gateway("").await;
    let reply = request(
        &gw,
        Method::POST,
        "/test/stream/items/from-path",
        &[("content-type", JSON), ("accept", SSE)],
        Some(br#"{"count": 2, "tag": "from-body"}"#.to_vec()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let messages = messages_of(&reply);
    assert_eq!(messages.len(), 2, "{}", reply.text());
    for (i, message) in messages.iter().enumerate() {
        assert_item(message, i, "from-path");
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_error_before_the_first_message_is_an_ordinary_error_response() {
    let gw = gateway("").await;
    let cases = [(NOT_FOUND, 404), (PERMISSION_DENIED, 403), (UNAVAILABLE, 503), (CANCELLED, 499)];
    for (code, status) in cases {
        for accept in [None, Some(SSE), Some(JSON), Some(NDJSON)] {
            let path = items(&format!("count=3&fail_code={code}&fail_after=0&fail_message=no%20stream%20today"));
            let reply = get(&gw, &path, accept).await;
            let envelope = assert_error(&reply, status, code);
            assert_eq!(envelope["message"], json!("no stream today"), "code {code}, Accept {accept:?}");
        }
    }
    // Response headers from the backend first, then the failure, still
    // before any message.
    let reply = get(&gw, &items("count=3&fail_code=5&fail_after=0&interval_ms=100&fail_message=late"), None).await;
    let envelope = assert_error(&reply, 404, NOT_FOUND);
    assert_eq!(envelope["message"], json!("late"));
    // HTTP/2 alike.
    let mut h2 = H2Client::connect(&gw).await;
    let mut response = h2.get(&items("count=3&fail_code=5&fail_message=gone"), &[("accept", SSE)]).await;
    assert_eq!(response.status, 404);
    assert!(response.content_type().starts_with(JSON), "{:?}", response.headers);
    let envelope: Value = serde_json::from_slice(&response.rest().await).expect("an error envelope");
    assert_eq!((envelope["code"].clone(), envelope["message"].clone()), (json!(NOT_FOUND), json!("gone")));
    assert!(envelope["details"].is_array(), "{envelope}");
    // The status goes out as trailers too, as at the end of any stream.
    let trailers = response.trailers().await.expect("grpc-status trailers after the envelope");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"5"[..]), "{trailers:?}");
    assert_eq!(trailers.get("grpc-message").map(|v| v.as_bytes()), Some(&b"gone"[..]), "{trailers:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_error_after_the_first_message_is_the_framings_last_record() {
    let gw = gateway("").await;
    let path = items("count=5&fail_after=2&fail_code=9&fail_message=broke%20after%20two&tag=t");
    let message = "broke after two";

    for accept in [NDJSON, JSONL] {
        let reply = get(&gw, &path, Some(accept)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let lines = json_lines(&reply.text());
        assert_eq!(lines.len(), 3, "two messages and the error: {}", reply.text());
        assert_item(&lines[0], 0, "t");
        assert_item(&lines[1], 1, "t");
        assert_error_record(&lines[2], FAILED_PRECONDITION, message);
    }

    let reply = get(&gw, &path, Some(SSE)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let events = sse_events(&text);
    assert_eq!(events.len(), 3, "two messages and the error: {text:?}");
    let messages = sse_messages(&format!("{}\n\n{}\n\n", events[0].join("\n"), events[1].join("\n")));
    assert_item(&messages[1], 1, "t");
    let [event, data] = events[2][..] else { panic!("the error event is not `event` + `data`: {:?}", events[2]) };
    assert_eq!(event, "event: error", "{text:?}");
    let status: Value = serde_json::from_str(data.strip_prefix("data: ").expect("a data line")).expect("Status JSON");
    // The bare Status, not wrapped.
    assert_error_record(&json!({ "error": status }), FAILED_PRECONDITION, message);

    let reply = get(&gw, &path, Some(JSON)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let array = reply.json();
    let array = array.as_array().unwrap_or_else(|| panic!("not an array: {}", reply.text()));
    assert_eq!(array.len(), 3, "two messages and the error: {}", reply.text());
    assert_item(&array[1], 1, "t");
    assert_error_record(&array[2], FAILED_PRECONDITION, message);

    // The backend failed the calls itself: nothing was cancelled.
    let stats = gw.stream_stats().await;
    assert_eq!((stats.completed, stats.cancelled), (stats.started, 0), "{stats:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn over_http2_the_final_status_goes_out_as_trailers() {
    let gw = gateway("").await;
    let mut h2 = H2Client::connect(&gw).await;

    // An error after the first message: in band, and in the trailers,
    // grpc-message percent-encoded as gRPC does.
    let mut response = h2.get(&items("count=5&fail_after=1&fail_code=9&fail_message=na%C3%AFve%20100%25"), &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), NDJSON);
    let lines = json_lines(&response.rest_text().await);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_error_record(&lines[1], FAILED_PRECONDITION, "naïve 100%");
    let trailers = response.trailers().await.expect("trailers after an error");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"9"[..]), "{trailers:?}");
    assert_eq!(trailers.get("grpc-message").map(|v| v.as_bytes()), Some(&b"na%C3%AFve 100%25"[..]), "{trailers:?}");

    // SSE alike.
    let mut response = h2.get(&items("count=5&fail_after=2&fail_code=14&fail_message=away"), &[("accept", SSE)]).await;
    assert_eq!(response.content_type(), SSE);
    let mut events = Vec::new();
    while let Some(event) = response.event().await {
        events.push(event);
    }
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[2].event.as_deref(), Some("error"), "{events:?}");
    assert_eq!(events[2].json()["code"], json!(UNAVAILABLE), "{events:?}");
    let trailers = response.trailers().await.expect("trailers after an error");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]), "{trailers:?}");

    // A stream that ends well ends with grpc-status 0.
    let mut response = h2.get(&items("count=3"), &[("accept", JSON)]).await;
    let array: Value = serde_json::from_slice(&response.rest().await).expect("a JSON array");
    assert_eq!(array.as_array().map(Vec::len), Some(3), "{array}");
    let trailers = response.trailers().await.expect("trailers after a clean end");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// response_body and HttpBody
// ---------------------------------------------------------------------------

#[tokio::test]
async fn response_body_applies_to_each_message() {
    let gw = gateway("").await;
    for accept in [NDJSON, SSE, JSON] {
        let reply = get(&gw, "/test/stream/wrapped?count=3&tag=w", Some(accept)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let messages = messages_of(&reply);
        assert_eq!(messages.len(), 3, "{}", reply.text());
        for (i, message) in messages.iter().enumerate() {
            assert_item(message, i, "w");
            assert!(message.get("item").is_none() && message.get("ignored").is_none(), "not unwrapped: {message}");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http_body_stream_is_a_raw_download_with_the_first_content_type() {
    let gw = gateway("").await;
    // Whatever Accept says: raw bytes, no framing.
    for accept in [None, Some(SSE), Some(JSON)] {
        let reply = get(&gw, "/test/stream/download?count=3&tag=text/csv", accept).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("content-type"), Some("text/csv"), "Accept {accept:?}");
        assert_eq!(reply.text(), "chunk-0\nchunk-1\nchunk-2\n", "Accept {accept:?}");
    }
    let reply = get(&gw, "/test/stream/download?count=2", None).await;
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.text(), "chunk-0\nchunk-1\n");

    // Chunked over HTTP/1.1, each chunk as it comes: the first is here
    // before the backend has made the last.
    let before = gw.stream_stats().await;
    let mut download = RawHttp1::get(&gw, "/test/stream/download?count=3&interval_ms=400&tag=text/csv", &[]).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.header("transfer-encoding"), Some("chunked"), "{:?}", download.headers);
    assert!(download.header("content-length").is_none(), "{:?}", download.headers);
    assert_eq!(download.line().await.as_deref(), Some("chunk-0"));
    let stats = gw.stream_stats().await;
    assert!(
        stats.sent - before.sent < 3 && stats.completed == before.completed,
        "the first chunk waited for the whole stream: {before:?} then {stats:?}"
    );
    assert_eq!(download.rest_text().await, "chunk-1\nchunk-2\n");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_raw_download_cut_by_an_error_does_not_end_like_a_whole_file() {
    let gw = gateway("").await;
    let path = "/test/stream/download?count=4&fail_after=2&fail_code=14&fail_message=disk%20gone";
    // HTTP/1.1 has no trailers: the transfer must break off, not end cleanly.
    let mut download = RawHttp1::get(&gw, path, &[]).await;
    assert_eq!(download.status, 200);
    let (body, error) = download.try_rest().await;
    assert!(body.starts_with(b"chunk-0\nchunk-1\n"), "{body:?}");
    assert!(error.is_some(), "a download cut by an error ended like a whole file: {body:?}");
    // HTTP/2: the status in the trailers (or the stream reset).
    let mut h2 = H2Client::connect(&gw).await;
    let mut download = h2.get(path, &[]).await;
    let (body, error) = download.try_rest().await;
    assert!(body.starts_with(b"chunk-0\nchunk-1\n"), "{body:?}");
    if error.is_none() {
        let trailers = download.trailers().await.expect("trailers after a cut download");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]), "{trailers:?}");
    }
    assert_serving(&gw, "a cut download").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Delivery as it happens
// ---------------------------------------------------------------------------

/// Reads the first message of a stream of 4, 400 ms apart, and checks the
/// backend had not yet sent the last one: the gateway passed the first on
/// at once, not at the end.
async fn assert_first_before_last(gw: &TestGateway, response: &mut Streamed, what: &str) {
    let before = gw.stream_stats().await;
    let first = match response.content_type() {
        SSE => response.event().await.map(|event| event.json()),
        JSON => {
            let chunk = response.chunk().await.expect("a first chunk");
            assert!(chunk.starts_with(b"["), "{what}: {chunk:?}");
            Some(Value::Null)
        }
        _ => response.json_line().await,
    };
    assert!(first.is_some(), "{what}: the body ended at once");
    let stats = gw.stream_stats().await;
    assert!(
        stats.sent - before.sent < 4 && stats.completed == before.completed,
        "{what}: the first message came only after the backend had sent them all: {stats:?}"
    );
    if let Some(first) = first.filter(|first| !first.is_null()) {
        assert_item(&first, 0, "");
    }
}

#[tokio::test]
async fn messages_reach_the_client_as_the_backend_sends_them() {
    let gw = gateway("").await;
    let path = items("count=4&interval_ms=400");
    for accept in [NDJSON, SSE, JSON] {
        let mut response = gw.open(&path, &[("accept", accept)]).await;
        assert_first_before_last(&gw, &mut response, &format!("HTTP/1.1, {accept}")).await;
        // The rest follows and ends well.
        let (rest, error) = response.try_rest().await;
        assert!(error.is_none(), "{accept}: {error:?} after {rest:?}");
    }
    let mut h2 = H2Client::connect(&gw).await;
    let mut response = h2.get(&path, &[]).await;
    assert_first_before_last(&gw, &mut response, "HTTP/2").await;
    assert_eq!(json_lines(&response.rest_text().await).len(), 3);
    let stats = gw.stream_stats().await;
    assert_eq!((stats.started, stats.completed, stats.cancelled), (4, 4, 0), "{stats:?}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_dropped_http1_connection_cancels_the_upstream_call() {
    let gw = gateway("").await;
    // A stream that goes silent after its first message (the gateway has
    // nothing to write when the client leaves), then one still sending.
    for path in [items("count=1&hold=true"), items("count=1000&interval_ms=50")] {
        let before = gw.stream_stats().await;
        let mut response = RawHttp1::get(&gw, &path, &[]).await;
        assert_eq!(response.status, 200);
        assert_item(&response.json_line().await.expect("a first message"), 0, "");
        drop(response);
        assert_cancelled_upstream(&gw, &before, &format!("HTTP/1.1 dropped on {path}")).await;
    }
    assert_serving(&gw, "dropped connections").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reset_http2_stream_cancels_the_upstream_call_and_the_connection_lives_on() {
    let gw = gateway("").await;
    let mut h2 = H2Client::connect(&gw).await;
    for accept in [NDJSON, SSE] {
        let before = gw.stream_stats().await;
        let mut response = h2.get(&items("count=1&hold=true"), &[("accept", accept)]).await;
        assert_eq!(response.status, 200);
        assert!(response.chunk().await.is_some(), "no first message");
        response.reset();
        assert_cancelled_upstream(&gw, &before, &format!("HTTP/2 reset, {accept}")).await;
    }
    // Dropping every handle of a stream resets it too.
    let before = gw.stream_stats().await;
    let mut response = h2.get(&items("count=1000&interval_ms=50"), &[]).await;
    assert!(response.chunk().await.is_some(), "no first message");
    drop(response);
    assert_cancelled_upstream(&gw, &before, "HTTP/2 stream dropped").await;
    // The same connection still serves.
    let mut response = h2.get(&items("count=2"), &[]).await;
    assert_eq!(json_lines(&response.rest_text().await).len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_gone_before_the_first_message_cancels_the_upstream_call() {
    // NDJSON has no keep-alive, so the answer waits for a first message
    // that never comes; the client leaves before any response header.
    let gw = gateway("").await;
    let path = items("count=0&hold=true");

    let before = gw.stream_stats().await;
    let raw = RawHttp1::open(&gw, "GET", &path, &[], false).await;
    gw.stream_stats_until("the call reaches the backend", |s| s.started == before.started + 1).await;
    drop(raw);
    assert_cancelled_upstream(&gw, &before, "HTTP/1.1 closed before the answer").await;

    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut request = h2.open("GET", &path, &[]).await;
    request.finish();
    gw.stream_stats_until("the call reaches the backend", |s| s.started == before.started + 1).await;
    request.reset();
    assert_cancelled_upstream(&gw, &before, "HTTP/2 reset before the answer").await;
    assert_serving(&gw, "clients gone before the answer").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_gone_mid_request_body_cancels_the_upstream_call() {
    let gw = gateway("").await;

    let before = gw.stream_stats().await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/collect/t", &[("content-type", NDJSON)], true).await;
    upload.send(b"{\"name\": \"a\"}\n").await;
    received(&gw, &before, 1, "the first line reaches the backend").await;
    drop(upload);
    assert_cancelled_upstream(&gw, &before, "HTTP/1.1 closed mid-body").await;

    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    upload.send(b"{\"name\": \"a\"}\n");
    received(&gw, &before, 1, "the first line reaches the backend").await;
    upload.reset();
    assert_cancelled_upstream(&gw, &before, "HTTP/2 reset mid-body").await;
    assert_serving(&gw, "clients gone mid-body").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_backends_early_answer_ends_a_client_stream_whose_body_is_still_open() {
    let gw = gateway("").await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    upload.send(b"{\"name\": \"a\"}\n{\"fail_code\": 9, \"fail_message\": \"enough\"}\n");
    // The body is never finished: the answer must not wait for its end.
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    let envelope = assert_error(&reply, 400, FAILED_PRECONDITION);
    assert_eq!(envelope["message"], json!("enough"));
    assert_serving(&gw, "an early answer").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------

/// Payload bytes per message in the backpressure tests.
const PAYLOAD: usize = 4096;

/// Waits until the backend's `sent` count stops growing (the same in three
/// readings in a row), then returns it.
async fn sent_when_stalled(gw: &TestGateway, what: &str) -> i64 {
    let stalled = async {
        let (mut last, mut same) = (-1, 0);
        loop {
            let sent = gw.stream_stats().await.sent;
            if sent == last && sent > 0 {
                same += 1;
                if same == 2 {
                    return sent;
                }
            } else {
                same = 0;
                last = sent;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), stalled)
        .await
        .unwrap_or_else(|_| panic!("{what}: the backend never stopped sending to a client that does not read"))
}

#[tokio::test]
async fn a_client_that_stops_reading_over_http2_holds_the_upstream_back() {
    let gw = gateway("").await;
    // 16 MiB of messages to a client whose stream window is 4 KiB and who
    // reads nothing.
    let total = 4096;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(4096);
    let mut h2 = H2Client::connect_with(&gw, builder).await;
    let mut response = h2.get(&items(&format!("count={total}&payload_size={PAYLOAD}")), &[]).await;
    assert_eq!(response.status, 200);
    let stalled = sent_when_stalled(&gw, "HTTP/2").await;
    let buffered = usize::try_from(stalled).expect("a count") * PAYLOAD;
    assert!(
        buffered <= 4 << 20,
        "{stalled} messages ({} MiB) of {total} left the backend for a client that reads nothing",
        buffered >> 20
    );
    // Reading lets the stream go on from where it stalled.
    for i in 0..300 {
        assert_item(&response.json_line().await.expect("more messages"), i, "");
    }
    gw.stream_stats_until("the stream moves on once read", |s| s.sent > stalled).await;
    let before = gw.stream_stats().await;
    response.reset();
    assert_cancelled_upstream(&gw, &before, "HTTP/2 reset").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_never_reads_again_loses_its_upstream_call_at_the_idle_limit() {
    // The connection stops pulling from a stream whose client keeps its
    // window shut, so the stream's own idle clock is not polled: the
    // upstream call must end anyway (idle limit plus a second of grace).
    let gw = gateway("routes:\n  stream_idle_timeout: 300ms\n").await;
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(4096);
    let mut h2 = H2Client::connect_with(&gw, builder).await;
    let before = gw.stream_stats().await;
    let mut response = h2.get(&items(&format!("count=4096&payload_size={PAYLOAD}")), &[]).await;
    assert_eq!(response.status, 200);
    assert_cancelled_upstream(&gw, &before, "a stream whose client stopped reading").await;
    // Reading again, the client gets what was on its way, then the record.
    let mut read = 0;
    let last = loop {
        let line = response.json_line().await.expect("the stream to end with a record");
        if line.get("error").is_some() {
            break line;
        }
        assert_item(&line, read, "");
        read += 1;
    };
    assert_eq!(last["error"]["code"], 4, "{last}");
    assert!(read < 4096, "the whole stream arrived after all");
    assert_eq!(response.json_line().await, None);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_over_http1_holds_the_upstream_back() {
    let gw = gateway("").await;
    // 32 MiB of messages to a connection whose receive buffer is 4 KiB and
    // which reads nothing past the headers. The gateway's socket send
    // buffer (up to 4 MiB here) and its upstream window (1 MiB) may fill;
    // no more.
    let total = 8192;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp =
        within("connect", socket.connect(gw.authority().parse().expect("gateway address"))).await.expect("connect");
    let path = items(&format!("count={total}&payload_size={PAYLOAD}"));
    let response = RawHttp1::open_on(tcp, &gw, "GET", &path, &[], false).await.response().await;
    assert_eq!(response.status, 200);
    let stalled = sent_when_stalled(&gw, "HTTP/1.1").await;
    let buffered = usize::try_from(stalled).expect("a count") * PAYLOAD;
    assert!(
        buffered <= 12 << 20,
        "{stalled} messages ({} MiB) of {total} left the backend for a client that reads nothing",
        buffered >> 20
    );
    let before = gw.stream_stats().await;
    drop(response);
    assert_cancelled_upstream(&gw, &before, "HTTP/1.1 slow reader dropped").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Silence: keep-alive, idle timeout, deadline
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sse_sends_keep_alive_comments_while_the_stream_is_silent() {
    let gw = gateway("routes:\n  sse_keep_alive: 200ms\n").await;

    // Two messages 1.2 s apart: comments in between, none in the events.
    let mut response = gw.open(&items("count=2&interval_ms=1200"), &[("accept", SSE)]).await;
    assert_eq!(response.content_type(), SSE);
    let mut events: Vec<SseEvent> = Vec::new();
    while let Some(event) = response.event().await {
        events.push(event);
    }
    let shape: Vec<&str> = events.iter().map(|e| if e.is_comment() { "comment" } else { "message" }).collect();
    assert_eq!(shape.first(), Some(&"message"), "{events:?}");
    assert_eq!(shape.last(), Some(&"message"), "{events:?}");
    let comments = shape.iter().filter(|s| **s == "comment").count();
    assert!(comments >= 2, "{comments} keep-alive comments in 1.2 s of silence at a 200 ms interval: {events:?}");
    assert_eq!(shape.len(), comments + 2, "{events:?}");
    let ids: Vec<Option<&str>> = events.iter().filter(|e| !e.is_comment()).map(|e| e.id.as_deref()).collect();
    assert!(
        ids == [Some("0"), Some("1")] || ids == [Some("1"), Some("2")],
        "keep-alives changed the message numbers: {events:?}"
    );
    assert!(events.iter().filter(|e| !e.is_comment()).all(|e| e.data.len() == 1), "{events:?}");

    // A stream silent from the start still starts, with comments.
    let before = gw.stream_stats().await;
    let mut response = gw.open(&items("count=0&hold=true"), &[("accept", SSE)]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), SSE);
    for _ in 0..2 {
        let event = response.event().await.expect("a keep-alive");
        assert!(event.is_comment(), "{event:?}");
    }
    drop(response);
    assert_cancelled_upstream(&gw, &before, "silent SSE dropped").await;

    // NDJSON has no comment: the same silence sends nothing.
    let reply = get(&gw, &items("count=2&interval_ms=1200"), Some(NDJSON)).await;
    assert_eq!(json_lines(&reply.text()).len(), 2, "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_error_after_a_silence_but_before_any_message_is_still_an_ordinary_error_response() {
    // DESIGN §6: an error before the first message is an ordinary error
    // response. Only SSE has a keep-alive to send during the silence, so
    // only SSE has a reason to start its answer before a message.
    let gw = gateway("routes:\n  sse_keep_alive: 200ms\n").await;
    let path = items("count=3&fail_code=5&fail_after=0&interval_ms=700&fail_message=late");
    for accept in [NDJSON, JSON] {
        let reply = get(&gw, &path, Some(accept)).await;
        let envelope = assert_error(&reply, 404, NOT_FOUND);
        assert_eq!(envelope["message"], json!("late"), "{accept}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn keep_alive_comments_do_not_keep_an_idle_stream_open() {
    let gw = gateway("routes:\n  stream_idle_timeout: 700ms\n  sse_keep_alive: 150ms\n").await;
    let before = gw.stream_stats().await;
    let mut response = gw.open(&items("count=1&hold=true"), &[("accept", SSE)]).await;
    let mut events = Vec::new();
    while let Some(event) = response.event().await {
        events.push(event);
    }
    let (last, earlier) = events.split_last().expect("events");
    assert!(earlier.iter().any(SseEvent::is_comment), "no keep-alive before the timeout: {events:?}");
    assert_eq!(last.event.as_deref(), Some("error"), "the stream did not end with an error event: {events:?}");
    assert_eq!(last.json()["code"], json!(DEADLINE_EXCEEDED), "{events:?}");
    assert_cancelled_upstream(&gw, &before, "idle SSE stream").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stream_silent_past_the_idle_timeout_ends_with_an_in_band_error() {
    let gw = gateway(
        "routes:\n  stream_idle_timeout: 500ms\n  overrides:\n    - match: { path_prefix: /test/stream/wrapped }\n      stream_idle_timeout: 5s\n",
    )
    .await;

    let before = gw.stream_stats().await;
    let mut response = gw.open(&items("count=1&hold=true"), &[]).await;
    assert_eq!(response.status, 200);
    let lines = json_lines(&response.rest_text().await);
    assert_eq!(lines.len(), 2, "the message and the error: {lines:?}");
    assert_item(&lines[0], 0, "");
    assert_eq!(lines[1]["error"]["code"], json!(DEADLINE_EXCEEDED), "{lines:?}");
    assert_cancelled_upstream(&gw, &before, "idle stream").await;

    // A stream that keeps moving outlives the idle timeout: 6 messages
    // 200 ms apart.
    let reply = get(&gw, &items("count=6&interval_ms=200"), None).await;
    let lines = json_lines(&reply.text());
    assert_eq!(lines.len(), 6, "{}", reply.text());
    assert!(lines.iter().all(|line| line.get("error").is_none()), "{}", reply.text());

    // A route's own idle timeout: 1 s of silence is fine under its 5 s.
    let reply = get(&gw, "/test/stream/wrapped?count=2&interval_ms=1000", None).await;
    let lines = json_lines(&reply.text());
    assert_eq!(lines.len(), 2, "{}", reply.text());
    assert!(lines.iter().all(|line| line.get("error").is_none()), "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_stream_is_idle_only_when_silent_both_ways() {
    let gw = gateway("routes:\n  stream_idle_timeout: 600ms\n").await;
    let mut h2 = H2Client::connect(&gw).await;

    // Lines every 150 ms for over a second: the request side keeps it alive.
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    for i in 0..8 {
        upload.send(format!("{{\"name\": \"n{i}\"}}\n").as_bytes());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    upload.finish();
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let collected: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(collected["count"], json!(8), "{collected}");

    // One line, then silence: an error answer, the backend cancelled.
    let before = gw.stream_stats().await;
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    upload.send(b"{\"name\": \"a\"}\n");
    received(&gw, &before, 1, "the line reaches the backend").await;
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    assert_error(&reply, 504, DEADLINE_EXCEEDED);
    assert_cancelled_upstream(&gw, &before, "idle client stream").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_streaming_route_has_a_total_deadline_only_when_configured() {
    let gw = gateway(
        "routes:\n  timeout: 300ms\n  overrides:\n    - match: { path_prefix: /test/stream/wrapped }\n      timeout: 800ms\n",
    )
    .await;

    // The unary timeout does not cut a stream: 1 s of messages.
    let reply = get(&gw, &items("count=5&interval_ms=250"), None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let lines = json_lines(&reply.text());
    assert_eq!(lines.len(), 5, "{}", reply.text());
    assert!(lines.iter().all(|line| line.get("error").is_none()), "{}", reply.text());

    // The override is the stream's total deadline: 2 s of messages cut.
    let before = gw.stream_stats().await;
    let reply = get(&gw, "/test/stream/wrapped?count=20&interval_ms=100", None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let lines = json_lines(&reply.text());
    let (last, messages) = lines.split_last().expect("lines");
    assert!(!messages.is_empty() && messages.len() < 20, "{}", reply.text());
    assert_eq!(last["error"]["code"], json!(DEADLINE_EXCEEDED), "{}", reply.text());
    assert_cancelled_upstream(&gw, &before, "deadline").await;

    // The client's grpc-timeout is a deadline of its own.
    let before = gw.stream_stats().await;
    let reply = request(&gw, Method::GET, &items("count=20&interval_ms=100"), &[("grpc-timeout", "500m")], None).await;
    let lines = json_lines(&reply.text());
    let (last, messages) = lines.split_last().expect("lines");
    assert!(!messages.is_empty() && messages.len() < 20, "{}", reply.text());
    assert_eq!(last["error"]["code"], json!(DEADLINE_EXCEEDED), "{}", reply.text());
    assert_cancelled_upstream(&gw, &before, "grpc-timeout").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Client streaming
// ---------------------------------------------------------------------------

/// The backend has received `n` messages more than `before`.
async fn received(gw: &TestGateway, before: &StreamStatsResponse, n: i64, what: &str) {
    gw.stream_stats_until(what, |s| s.received >= before.received + n).await;
}

#[tokio::test]
async fn ndjson_request_lines_go_upstream_as_each_completes() {
    let gw = gateway("").await;
    let before = gw.stream_stats().await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/collect/path-tag", &[("content-type", NDJSON)], true).await;
    upload.send(b"{\"name\": \"a\", \"tag\": \"body-tag\"}\n").await;
    received(&gw, &before, 1, "the first line reaches the backend while the body is still open").await;
    // A line in two pieces, then two lines in one.
    upload.send(b"{\"na").await;
    upload.send(b"me\": \"b\"}\n{\"name\": \"c\"}\n").await;
    received(&gw, &before, 3, "the lines reach the backend").await;
    upload.send(b"{\"name\": \"d\"}").await;
    upload.finish().await;
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let collected: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(collected["count"], json!(4), "{collected}");
    assert_eq!(collected["names"], json!(["a", "b", "c", "d"]), "{collected}");
    // The path value binds into every message and wins over the body's.
    assert_eq!(collected["tags"], json!(["path-tag", "path-tag", "path-tag", "path-tag"]), "{collected}");

    // HTTP/2, JSON Lines.
    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/collect/h2", &[("content-type", JSONL)]).await;
    upload.send(b"{\"name\": \"x\"}\n");
    received(&gw, &before, 1, "HTTP/2: the first line reaches the backend while the body is open").await;
    upload.send(b"{\"name\": \"y\"}\n");
    upload.finish();
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let collected: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(collected["names"], json!(["x", "y"]), "{collected}");
    assert_eq!(collected["tags"], json!(["h2", "h2"]), "{collected}");
    let stats = gw.stream_stats().await;
    assert_eq!((stats.completed, stats.cancelled), (2, 0), "{stats:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_json_array_body_is_a_stream_of_messages() {
    let gw = gateway("").await;
    let body = br#"[{"name": "a"}, {"name": "b", "tag": "body-tag"}, {"name": "c"}]"#.to_vec();
    let reply = request(&gw, Method::POST, "/test/collect/t1", &[("content-type", JSON)], Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let collected = reply.json();
    assert_eq!(collected["count"], json!(3), "{collected}");
    assert_eq!(collected["names"], json!(["a", "b", "c"]), "{collected}");
    assert_eq!(collected["tags"], json!(["t1", "t1", "t1"]), "{collected}");

    // No messages.
    let reply = request(&gw, Method::POST, "/test/collect/t1", &[("content-type", JSON)], Some(b"[]".to_vec())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["count"], Value::Null, "{}", reply.text());

    // A whole NDJSON body (reqwest sends it at once, with a length).
    let body = b"{\"name\": \"p\"}\n{\"name\": \"q\"}\n".to_vec();
    let reply = request(&gw, Method::POST, "/test/collect/t2", &[("content-type", NDJSON)], Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["names"], json!(["p", "q"]), "{}", reply.text());

    // The backend's own error after the body, as a unary one would be.
    let body = br#"[{"name": "a"}, {"fail_code": 9, "fail_message": "no more"}]"#.to_vec();
    let reply = request(&gw, Method::POST, "/test/collect/t3", &[("content-type", JSON)], Some(body)).await;
    let envelope = assert_error(&reply, 400, FAILED_PRECONDITION);
    assert_eq!(envelope["message"], json!("no more"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_json_array_body_is_cut_into_messages_wherever_its_pieces_break() {
    let gw = gateway("").await;
    let before = gw.stream_stats().await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/collect/t", &[("content-type", JSON)], true).await;
    upload.send(b" [ {\"name\": \"a\"} ,").await;
    received(&gw, &before, 1, "the first element reaches the backend before the array is closed").await;
    // Strings holding the array's own punctuation, escapes, nesting, and
    // pieces of 3 bytes.
    let rest = br#" {"name": "b,]\"}[", "payload": "{\"x\": [1, 2]}"},
        {"name": "c\\"}, {"name": "\u00e9]"} ]"#;
    for piece in rest.chunks(3) {
        upload.send(piece).await;
    }
    upload.finish().await;
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let collected: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(collected["names"], json!(["a", "b,]\"}[", "c\\", "é]"]), "{collected}");

    // NDJSON with CRLF line ends, as a Windows client writes it.
    let body = b"{\"name\": \"p\"}\r\n{\"name\": \"q\"}\r\n".to_vec();
    let reply = request(&gw, Method::POST, "/test/collect/t", &[("content-type", NDJSON)], Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["names"], json!(["p", "q"]), "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_message_mid_stream_is_400_naming_its_index_and_cancels_the_upstream() {
    let gw = gateway("").await;

    // HTTP/1.1: two good lines, seen by the backend, then a wrong type.
    let before = gw.stream_stats().await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/collect/t", &[("content-type", NDJSON)], true).await;
    upload.send(b"{\"name\": \"a\"}\n{\"name\": \"b\"}\n").await;
    received(&gw, &before, 2, "the good lines reach the backend").await;
    upload.send(b"{\"name\": 12}\n").await;
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    let envelope = assert_error(&reply, 400, INVALID_ARGUMENT);
    let fields = violation_fields(&envelope);
    assert!(fields.iter().any(|f| f.starts_with("[2]")), "the violation does not name message [2]: {envelope}");
    assert_cancelled_upstream(&gw, &before, "bad message [2] over HTTP/1.1").await;
    let stats = gw.stream_stats().await;
    assert_eq!(stats.received - before.received, 2, "the bad message reached the backend: {stats:?}");
    assert_serving(&gw, "a bad message over HTTP/1.1").await;

    // HTTP/2: a line that is not JSON.
    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    upload.send(b"{\"name\": \"a\"}\n");
    received(&gw, &before, 1, "the good line reaches the backend").await;
    upload.send(b"{\"name\": \n");
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    let envelope = assert_error(&reply, 400, INVALID_ARGUMENT);
    let fields = violation_fields(&envelope);
    assert!(fields.iter().any(|f| f.starts_with("[1]")), "the violation does not name message [1]: {envelope}");
    assert_cancelled_upstream(&gw, &before, "bad message [1] over HTTP/2").await;
    let stats = gw.stream_stats().await;
    assert_eq!(stats.received - before.received, 1, "the bad message reached the backend: {stats:?}");
    assert_serving(&gw, "a bad message over HTTP/2").await;

    // A JSON array with an unknown field in element [1].
    let body = br#"[{"name": "a"}, {"nope": 1}, {"name": "c"}]"#.to_vec();
    let reply = request(&gw, Method::POST, "/test/collect/t", &[("content-type", JSON)], Some(body)).await;
    let envelope = assert_error(&reply, 400, INVALID_ARGUMENT);
    let fields = violation_fields(&envelope);
    assert!(fields.iter().any(|f| f.starts_with("[1]")), "the violation does not name message [1]: {envelope}");
    assert_serving(&gw, "a bad array element").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_over_max_body_is_413() {
    let gw = gateway("limits:\n  max_body: 1KiB\n").await;
    let line = format!("{{\"name\": \"{}\"}}\n", "n".repeat(84));
    assert_eq!(line.len(), 97);

    // Announced: refused before the backend is called.
    let calls = gw.backend_calls();
    let body = line.repeat(12).into_bytes();
    let reply = request(&gw, Method::POST, "/test/collect/t", &[("content-type", NDJSON)], Some(body)).await;
    assert_error(&reply, 413, RESOURCE_EXHAUSTED);
    assert_eq!(gw.backend_calls(), calls, "an announced oversized body reached the backend");
    assert_serving(&gw, "an announced oversized body").await;

    // Streamed over HTTP/2 without a length: cut when it passes the limit.
    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/collect/t", &[("content-type", NDJSON)]).await;
    upload.send(line.as_bytes());
    received(&gw, &before, 1, "the first line reaches the backend").await;
    upload.send(line.repeat(10).as_bytes());
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    assert_error(&reply, 413, RESOURCE_EXHAUSTED);
    assert_cancelled_upstream(&gw, &before, "body over max_body over HTTP/2").await;

    // Streamed over HTTP/1.1, chunked.
    let before = gw.stream_stats().await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/collect/t", &[("content-type", NDJSON)], true).await;
    upload.send(line.as_bytes()).await;
    received(&gw, &before, 1, "the first line reaches the backend").await;
    upload.send(line.repeat(10).as_bytes()).await;
    let mut response = upload.response().await;
    let reply = Reply { status: response.status, headers: response.headers.clone(), body: response.rest().await };
    assert_error(&reply, 413, RESOURCE_EXHAUSTED);
    assert_cancelled_upstream(&gw, &before, "body over max_body over HTTP/1.1").await;
    assert_serving(&gw, "a streamed oversized body").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_message_over_max_message_is_413() {
    let gw = gateway("limits:\n  max_message: 256\n").await;
    let big = format!("{{\"name\": \"{}\"}}", "n".repeat(600));
    for (content_type, body) in
        [(NDJSON, format!("{{\"name\": \"a\"}}\n{big}\n")), (JSON, format!("[{{\"name\": \"a\"}}, {big}]"))]
    {
        let reply =
            request(&gw, Method::POST, "/test/collect/t", &[("content-type", content_type)], Some(body.into_bytes()))
                .await;
        assert_error(&reply, 413, RESOURCE_EXHAUSTED);
        assert_serving(&gw, &format!("a message over max_message ({content_type})")).await;
    }
    // Below the limit, the same route is fine.
    let body = format!("{{\"name\": \"{}\"}}\n", "n".repeat(200)).into_bytes();
    let reply = request(&gw, Method::POST, "/test/collect/t", &[("content-type", NDJSON)], Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http_body_upload_streams_its_chunks() {
    let gw = gateway("").await;

    // HTTP/2: each DATA frame a chunk, sent on as it arrives.
    let before = gw.stream_stats().await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/stream/upload", &[("content-type", "image/png")]).await;
    for (i, size) in [1000, 2000, 3000].into_iter().enumerate() {
        upload.send(&vec![b'p'; size]);
        let n = i64::try_from(i).expect("index") + 1;
        received(&gw, &before, n, &format!("chunk {i} reaches the backend while the body is open")).await;
    }
    upload.finish();
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let stats: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(stats, json!({"size": "6000", "chunks": 3, "contentType": "image/png"}));

    // HTTP/1.1, chunked.
    let before = gw.stream_stats().await;
    let mut upload =
        RawHttp1::open(&gw, "POST", "/test/stream/upload", &[("content-type", "application/octet-stream")], true).await;
    upload.send(&[7u8; 500]).await;
    received(&gw, &before, 1, "the first chunk reaches the backend while the body is open").await;
    upload.send(&[8u8; 700]).await;
    upload.finish().await;
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let stats: Value = serde_json::from_slice(&response.rest().await).expect("JSON");
    assert_eq!(stats["size"], json!("1200"), "{stats}");
    assert_eq!(stats["contentType"], json!("application/octet-stream"), "{stats}");
    // Two chunks sent apart arrive apart (a chunk may come in pieces).
    assert!(stats["chunks"].as_i64().is_some_and(|n| n >= 2), "{stats}");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn shutdown_drains_streams_then_ends_them_in_band_with_unavailable() {
    let gw = gateway("shutdown_timeout: 600ms\n").await;
    // One stream that finishes within the drain, one that never would.
    let mut finishing = gw.open(&items("count=3&interval_ms=150"), &[]).await;
    let mut held = gw.open(&items("count=1&hold=true"), &[]).await;
    assert_item(&held.json_line().await.expect("a first message"), 0, "");
    assert_item(&finishing.json_line().await.expect("a first message"), 0, "");

    let stopping = tokio::spawn(gw.shutdown());
    // The drain lets the finishing stream end cleanly...
    let rest: Vec<Value> = [finishing.json_line().await, finishing.json_line().await].into_iter().flatten().collect();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert_eq!(finishing.json_line().await, None, "a drained stream ends without a record");
    // ...and ends the one still open at the deadline, in band.
    let last = held.json_line().await.expect("an in-band record at the drain deadline");
    assert_eq!(last["error"]["code"], 14, "{last}");
    assert_eq!(held.json_line().await, None);
    within("the gateway to stop after its drain", stopping).await.expect("shutdown task");
}

// ---------------------------------------------------------------------------
// Bidirectional over plain HTTP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_bidi_call_over_http2_answers_each_line_while_the_body_is_still_open() {
    let gw = gateway("").await;
    let mut h2 = H2Client::connect(&gw).await;
    let mut upload = h2.open("POST", "/test/chat/room", &[("content-type", NDJSON)]).await;
    upload.send(b"{\"name\": \"first\"}\n");
    // The answer starts with the first reply, the request body still open.
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.content_type(), NDJSON);
    let first = response.json_line().await.expect("the first reply");
    assert_eq!((first["name"].clone(), first["tag"].clone()), (json!("first"), json!("room")), "{first}");
    // Each further line is answered before the next is sent.
    for (i, name) in ["second", "third"].into_iter().enumerate() {
        response.send(format!("{{\"name\": \"{name}\"}}\n").as_bytes(), false);
        let reply = response.json_line().await.expect("a reply");
        assert_eq!(reply["name"], json!(name), "{reply}");
        assert_eq!(reply["index"], json!(i + 1), "{reply}");
    }
    // The end of the body half-closes the call: the backend ends it.
    response.send(b"", true);
    assert_eq!(response.json_line().await, None);
    let trailers = response.trailers().await.expect("trailers");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    let stats = gw.stream_stats_until("the chat completed", |s| s.completed >= 1).await;
    assert_eq!((stats.received, stats.cancelled), (3, 0), "{stats:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_bidi_call_over_http1_streams_both_ways() {
    let gw = gateway("").await;
    let mut upload = RawHttp1::open(&gw, "POST", "/test/chat/t", &[("content-type", NDJSON)], true).await;
    upload.send(b"{\"name\": \"a\"}\n{\"name\": \"b\"}\n").await;
    upload.finish().await;
    let mut response = upload.response().await;
    assert_eq!(response.status, 200);
    let names: Vec<Value> = [response.json_line().await, response.json_line().await]
        .into_iter()
        .map(|line| line.expect("a reply")["name"].clone())
        .collect();
    assert_eq!(names, [json!("a"), json!("b")]);
    assert_eq!(response.json_line().await, None);
    gw.shutdown().await;
}
