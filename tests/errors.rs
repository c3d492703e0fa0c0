//! The error envelope end to end (DESIGN §5): errors the gateway makes from
//! bad input (each naming the field at fault and never reaching the
//! backend), routing errors, limits, and the backend's own errors with their
//! details, unreachable upstreams and deadlines.

mod common;

use std::time::Duration;

use common::testpb::Color;
use common::{api, assert_error, start_test_service, start_test_service_with, violation_fields, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

const INVALID_ARGUMENT: i32 = 3;

/// A gateway-made error: `status`/`code`, a BadRequest naming exactly
/// `field`, and the backend never called.
#[track_caller]
fn assert_rejected(env: &TestGateway, calls_before: u64, reply: &Reply, status: u16, field: &str) -> Value {
    let envelope = assert_error(reply, status, INVALID_ARGUMENT);
    assert_eq!(violation_fields(&envelope), vec![field.to_owned()], "in {envelope}");
    assert_eq!(env.backend_calls(), calls_before, "the backend was called for a rejected request: {envelope}");
    envelope
}

fn message(envelope: &Value) -> &str {
    envelope["message"].as_str().unwrap_or_default()
}

/// POSTs each body to /test/echo and expects 400 naming `field`.
async fn expect_bad_body(env: &TestGateway, cases: &[(&str, &str)]) {
    for (body, field) in cases {
        let before = env.backend_calls();
        let reply = env.post_json("/test/echo", body).await;
        let envelope = assert_error(&reply, 400, INVALID_ARGUMENT);
        assert_eq!(violation_fields(&envelope), vec![(*field).to_owned()], "body {body}: {envelope}");
        assert_eq!(env.backend_calls(), before, "body {body} reached the backend");
    }
}

// ---------------------------------------------------------------------------
// JSON bodies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_reports_line_and_column() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo", "{\n  \"int32Value\": 1,\n  oops\n}").await;
    let envelope = assert_rejected(&env, before, &reply, 400, "");
    assert!(message(&envelope).contains("line 3 column 3"), "{envelope}");

    for body in ["{", "{\"int32Value\": }", "{\"repeatedInt32\": [1,", "{'a': 1}", "nul"] {
        let reply = env.post_json("/test/echo", body).await;
        let envelope = assert_rejected(&env, before, &reply, 400, "");
        let text = message(&envelope);
        assert!(text.contains("line") && text.contains("column"), "{body}: {envelope}");
    }
}

#[tokio::test]
async fn a_body_that_is_not_an_object() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for body in ["[1, 2]", "\"text\"", "12", "null", "true"] {
        let reply = env.post_json("/test/echo", body).await;
        let envelope = assert_rejected(&env, before, &reply, 400, "");
        assert!(message(&envelope).contains("expected"), "{body}: {envelope}");
    }
}

#[tokio::test]
async fn trailing_garbage_after_the_json_value() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for body in [r#"{"int32Value": 1} x"#, "{} {}", "{}]"] {
        let reply = env.post_json("/test/echo", body).await;
        let envelope = assert_rejected(&env, before, &reply, 400, "");
        assert!(message(&envelope).contains("line 1 column"), "{body}: {envelope}");
    }
}

#[tokio::test]
async fn wrong_json_types_name_the_field() {
    let env = start_test_service().await;
    expect_bad_body(
        &env,
        &[
            (r#"{"int32Value": "abc"}"#, "int32Value"),
            (r#"{"int32Value": 1.5}"#, "int32Value"),
            (r#"{"int32_value": true}"#, "int32_value"),
            (r#"{"stringValue": {}}"#, "stringValue"),
            (r#"{"stringValue": 5}"#, "stringValue"),
            (r#"{"boolValue": "true"}"#, "boolValue"),
            (r#"{"bytesValue": "not base64!"}"#, "bytesValue"),
            (r#"{"nested": "flat"}"#, "nested"),
            (r#"{"nested": {"values": [1, "x"]}}"#, "nested.values[1]"),
            (r#"{"repeatedString": "not a list"}"#, "repeatedString"),
            (r#"{"mapStringInt32": {"k": "v"}}"#, "mapStringInt32.k"),
            (r#"{"timestamp": "yesterday"}"#, "timestamp"),
            (r#"{"duration": "5 minutes"}"#, "duration"),
            (r#"{"color": "PURPLE"}"#, "color"),
            (r#"{"repeatedNested": [{}, {"child": {"name": 1}}]}"#, "repeatedNested[1].child.name"),
        ],
    )
    .await;
}

#[tokio::test]
async fn out_of_range_numbers_name_the_field() {
    let env = start_test_service().await;
    expect_bad_body(
        &env,
        &[
            (r#"{"int32Value": 2147483648}"#, "int32Value"),
            (r#"{"int32Value": -2147483649}"#, "int32Value"),
            (r#"{"int64Value": "9223372036854775808"}"#, "int64Value"),
            (r#"{"int64Value": 9223372036854775808}"#, "int64Value"),
            (r#"{"uint32Value": -1}"#, "uint32Value"),
            (r#"{"uint64Value": "-1"}"#, "uint64Value"),
            (r#"{"uint32Value": 4294967296}"#, "uint32Value"),
            (r#"{"doubleValue": 1e400}"#, "doubleValue"),
            (r#"{"floatValue": 1e39}"#, "floatValue"),
            (r#"{"repeatedInt32": [1, 2147483648]}"#, "repeatedInt32[1]"),
        ],
    )
    .await;
}

/// JSON numbers that an f64 rounds onto an integer field's range (issue 9):
/// refused like their string forms, never clamped.
#[tokio::test]
async fn integer_numbers_past_the_bounds_are_refused_not_clamped() {
    let env = start_test_service().await;
    expect_bad_body(
        &env,
        &[
            (r#"{"uint64Value": 18446744073709551616}"#, "uint64Value"),
            (r#"{"uint64Value": 18446744073709551617}"#, "uint64Value"),
            (r#"{"fixed64Value": 1.8446744073709551616e19}"#, "fixed64Value"),
            (r#"{"int64Value": -9223372036854775809}"#, "int64Value"),
            (r#"{"sint64Value": 9223372036854775808.0}"#, "sint64Value"),
            (r#"{"uint64Wrapper": 18446744073709551616}"#, "uint64Wrapper"),
            (r#"{"int64Wrapper": -9223372036854775809}"#, "int64Wrapper"),
            (r#"{"uint32Value": 4294967295.00000001}"#, "uint32Value"),
            (r#"{"int32Value": 1.0000000000000001}"#, "int32Value"),
            (r#"{"repeatedUint64": [1, 18446744073709551616]}"#, "repeatedUint64[1]"),
            (r#"{"mapStringInt32": {"k": 2147483647.5000000001}}"#, "mapStringInt32.k"),
        ],
    )
    .await;
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo", r#"{"uint64Value": 18446744073709551616}"#).await;
    let envelope = assert_rejected(&env, before, &reply, 400, "uint64Value");
    assert_eq!(message(&envelope), "uint64Value: invalid value for uint64: 18446744073709551616 is out of range");
    // A body bound to one field: the path starts at that field.
    let reply = env
        .request(
            Method::PUT,
            "/test/body-field/abc",
            &[("content-type", "application/json")],
            Some(br#"{"values": [2147483647.0000000001]}"#.to_vec()),
        )
        .await;
    assert_rejected(&env, before, &reply, 400, "nested.values[0]");
}

#[tokio::test]
async fn unknown_json_field_is_named() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo", r#"{"int32Value": 1, "bogusField": 2}"#).await;
    let envelope = assert_rejected(&env, before, &reply, 400, "bogusField");
    assert!(message(&envelope).contains("bogusField"), "{envelope}");

    let reply = env.post_json("/test/echo", r#"{"nested": {"name": "n", "nope": 1}}"#).await;
    let envelope = assert_rejected(&env, before, &reply, 400, "nested.nope");
    assert!(message(&envelope).contains("nope"), "{envelope}");
}

#[tokio::test]
async fn two_members_of_one_oneof_in_the_body() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo", r#"{"text": "a", "number": 1}"#).await;
    assert_error(&reply, 400, INVALID_ARGUMENT);
    assert_eq!(env.backend_calls(), before);
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_crashing() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let depth = 10_000;
    let bodies = [
        format!(r#"{{"value": {}{}}}"#, "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"structValue": {}1{}}}"#, r#"{"a":"#.repeat(depth), "}".repeat(depth)),
        format!("{}{}", r#"{"nested":"#.repeat(depth), "}".repeat(depth)),
        "[".repeat(depth),
        "{".repeat(depth),
    ];
    for body in &bodies {
        let reply = env.post_json("/test/echo", body).await;
        assert_error(&reply, 400, INVALID_ARGUMENT);
        assert_eq!(env.backend_calls(), before);
    }
    // The gateway is still up and serving.
    let reply = env.post_json("/test/echo", r#"{"int32Value": 1}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"int32Value": 1}));
}

// ---------------------------------------------------------------------------
// Query parameters and path variables
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_query_parameter() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (query, field) in
        [("bogus=1", "bogus"), ("nested.bogus=1", "nested.bogus"), ("int32_value.x=1", "int32_value.x")]
    {
        let reply = env.get(&format!("/test/query?{query}")).await;
        assert_rejected(&env, before, &reply, 400, field);
    }
}

#[tokio::test]
async fn query_parameter_colliding_with_a_path_variable() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (query, field) in [
        ("string_value=x", "string_value"),
        ("stringValue=x", "stringValue"),
        ("nested.name=y", "nested.name"),
        ("int64_value=2", "int64_value"),
    ] {
        let reply = env.get(&format!("/test/path/a/1/n/{}?{query}", Color::Red.as_str_name())).await;
        let envelope = assert_rejected(&env, before, &reply, 400, field);
        assert!(message(&envelope).contains("path variable"), "{envelope}");
    }
    // A sibling of a bound nested field is fine.
    let reply = env.get("/test/path/a/1/n/RED?nested.values=3").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["nested"], json!({"name": "n", "values": [3]}));
}

#[tokio::test]
async fn query_parameter_on_a_whole_body_route() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo?int32_value=1", "{}").await;
    assert_rejected(&env, before, &reply, 400, "int32_value");
}

#[tokio::test]
async fn query_parameter_for_the_body_field() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env
        .request(
            Method::PUT,
            "/test/body-field/a?nested.name=x",
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_rejected(&env, before, &reply, 400, "nested.name");
}

#[tokio::test]
async fn non_repeated_query_parameter_given_twice() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (query, field) in [
        ("int32_value=1&int32_value=2", "int32_value"),
        ("int32_value=1&int32Value=2", "int32Value"),
        ("nested.name=a&nested.name=b", "nested.name"),
        ("map_string_int32[k]=1&map_string_int32[k]=2", "map_string_int32[k]"),
        // Two members of one oneof.
        ("text=a&number=1", "number"),
    ] {
        let reply = env.get(&format!("/test/query?{query}")).await;
        assert_rejected(&env, before, &reply, 400, field);
    }
}

#[tokio::test]
async fn bad_query_values_name_the_parameter() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (query, field) in [
        ("color=PURPLE", "color"),
        ("repeated_color=RED&repeated_color=BLUE", "repeated_color"),
        ("int32_value=2147483648", "int32_value"),
        ("int64_value=9223372036854775808", "int64_value"),
        ("uint32_value=-1", "uint32_value"),
        ("double_value=1e400", "double_value"),
        ("bool_value=yes", "bool_value"),
        ("bytes_value=!!", "bytes_value"),
        ("timestamp=noon", "timestamp"),
        ("duration=5", "duration"),
        ("int32_wrapper=x", "int32_wrapper"),
        ("map_int64_string[x]=1", "map_int64_string[x]"),
    ] {
        let reply = env.get(&format!("/test/query?{query}")).await;
        assert_rejected(&env, before, &reply, 400, field);
    }
}

#[tokio::test]
async fn bad_path_variables_name_the_field() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (path, field) in [
        ("/test/path/a/notanumber/n/RED", "int64_value"),
        ("/test/path/a/9223372036854775808/n/RED", "int64_value"),
        ("/test/path/a/1.5/n/RED", "int64_value"),
        ("/test/path/a/1/n/PURPLE", "color"),
        ("/test/sleep/soon", "millis"),
    ] {
        let reply = env.get(path).await;
        assert_rejected(&env, before, &reply, 400, field);
    }
}

/// POSTs `chunks` with `transfer-encoding: chunked` (no content-length) over
/// a raw HTTP/1.1 connection; returns the status and the rest of the reply.
async fn chunked_post(env: &TestGateway, path: &str, chunks: &[&[u8]]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = env.authority();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to gateway");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        .into_bytes();
        for chunk in chunks {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        stream.write_all(&request).await.expect("send request");
        let mut response = Vec::new();
        // The gateway may answer and close before reading everything.
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("gateway answered in time");
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response}"));
    (status, response)
}

#[tokio::test]
async fn percent_escapes_that_are_not_utf8() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    // In a path variable: refused while matching, before the route's fields
    // are known, so the violation names no field.
    let reply = env.get("/test/path/%FF/1/n/RED").await;
    assert_rejected(&env, before, &reply, 400, "");
    // In a query value: names the parameter.
    let reply = env.get("/test/query?string_value=%FF").await;
    assert_rejected(&env, before, &reply, 400, "string_value");
}

// ---------------------------------------------------------------------------
// Routing, content type and size
// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_route_is_404() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for path in ["/", "/nope", "/test", "/test/echo/extra", "/protogate.test.v1.TestService/Missing"] {
        let reply = env.get(path).await;
        let envelope = assert_error(&reply, 404, 5);
        assert!(message(&envelope).contains(path), "{path}: {envelope}");
    }
    assert_eq!(env.backend_calls(), before);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    let reply = env.get("/test/echo").await;
    assert_error(&reply, 405, 12);
    assert_eq!(reply.header("allow"), Some("POST"));

    let reply = env.request(Method::DELETE, "/test/query", &[], None).await;
    assert_error(&reply, 405, 12);
    assert_eq!(reply.header("allow"), Some("GET"));

    let reply = env.request(Method::PATCH, "/test/body-field/x", &[], Some(b"{}".to_vec())).await;
    assert_error(&reply, 405, 12);
    assert_eq!(reply.header("allow"), Some("PUT"));
    assert_eq!(env.backend_calls(), before);
}

#[tokio::test]
async fn body_over_the_global_limit_is_413() {
    let env = start_test_service_with(|config| config.limits.max_body = 64).await;
    let before = env.backend_calls();
    // Exactly at the limit, and one byte over.
    let fits = format!(r#"{{"stringValue": "{}"}}"#, "a".repeat(45));
    let too_big = format!(r#"{{"stringValue": "{}"}}"#, "a".repeat(46));
    assert_eq!((fits.len(), too_big.len()), (64, 65));

    let reply = env.post_json("/test/echo", &fits).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let before = before + 1;
    assert_eq!(env.backend_calls(), before);

    let reply = env.post_json("/test/echo", &too_big).await;
    let envelope = assert_error(&reply, 413, 8);
    assert!(message(&envelope).contains("64"), "{envelope}");
    assert_eq!(env.backend_calls(), before);
    // The body was not read: the HTTP/1 client is told not to reuse the
    // connection (else its next request there would fail), and can go on.
    assert_eq!(reply.header("connection"), Some("close"));
    for _ in 0..3 {
        assert_error(&env.post_json("/test/echo", &too_big).await, 413, 8);
        assert_eq!(env.post_json("/test/echo", &fits).await.status, 200);
    }
    let before = before + 3;
    assert_eq!(env.backend_calls(), before);

    // Without a content-length the limit holds all the same (chunked body).
    let (status, body) =
        chunked_post(&env, "/test/echo", &[&too_big.as_bytes()[..50], &too_big.as_bytes()[50..]]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains(r#""code":8"#), "{body}");
    assert_eq!(env.backend_calls(), before);
    let (status, body) = chunked_post(&env, "/test/echo", &[&fits.as_bytes()[..50], &fits.as_bytes()[50..]]).await;
    assert_eq!(status, 200, "{body}");
    let before = before + 1;
    assert_eq!(env.backend_calls(), before);

    // Raw bodies obey the limit too.
    let reply = env
        .request(Method::POST, "/test/upload", &[("content-type", "application/octet-stream")], Some(vec![0; 65]))
        .await;
    assert_error(&reply, 413, 8);
    assert_eq!(env.backend_calls(), before);
}

#[tokio::test]
async fn body_over_a_per_route_limit_is_413() {
    let env = start_test_service_with(|config| {
        config.routes.overrides.push(api::RouteOverride {
            selector: api::RouteSelector { path_prefix: Some("/test/echo".into()), ..Default::default() },
            timeout: None,
            max_body: Some(32),
            stream_idle_timeout: None,
        });
    })
    .await;
    let body = format!(r#"{{"stringValue": "{}"}}"#, "a".repeat(40));
    let before = env.backend_calls();
    let reply = env.post_json("/test/echo", &body).await;
    let envelope = assert_error(&reply, 413, 8);
    assert!(message(&envelope).contains("32"), "{envelope}");
    assert_eq!(env.backend_calls(), before);

    // Another route keeps the global limit.
    let reply = env.post_json("/protogate.test.v1.TestService/Unannotated", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["stringValue"], json!("a".repeat(40)));
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for (path, method) in [("/test/echo", Method::POST), ("/test/body-field/a", Method::PUT)] {
        let reply = env.request(method, path, &[("content-type", "text/xml")], Some(b"<a>1</a>".to_vec())).await;
        let envelope = assert_error(&reply, 415, INVALID_ARGUMENT);
        assert!(message(&envelope).contains("text/xml"), "{envelope}");
    }
    assert_eq!(env.backend_calls(), before);
}

// ---------------------------------------------------------------------------
// Backend errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn backend_codes_map_to_http_statuses() {
    let env = start_test_service().await;
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, status) in table {
        let before = env.backend_calls();
        let text = format!("failure number {code}");
        let reply = env.post_json("/test/fail", &json!({"code": code, "message": text}).to_string()).await;
        let envelope = assert_error(&reply, status, code);
        assert_eq!(envelope["message"], json!(text));
        assert_eq!(envelope["details"], json!([]), "code {code}");
        assert_eq!(env.backend_calls(), before + 1, "code {code} did not come from the backend");
    }
    // Code 0 succeeds: google.protobuf.Empty is `{}`.
    let reply = env.post_json("/test/fail", r#"{"code": 0}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({}));
}

#[tokio::test]
async fn backend_details_render_through_the_descriptor_pool() {
    let env = start_test_service().await;
    let reply = env
        .post_json("/test/fail", &json!({"code": 9, "message": "with details", "withDetails": true}).to_string())
        .await;
    let envelope = assert_error(&reply, 400, 9);
    assert_eq!(envelope["message"], json!("with details"));
    assert_eq!(
        envelope["details"],
        json!([
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "TEST_REASON",
                "domain": "test.protogate",
                "metadata": {"k": "v"}
            },
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": "message", "description": "asked to fail", "reason": "TEST_VIOLATION"}
                ]
            },
            {
                "@type": "type.googleapis.com/protogate.test.v1.CustomDetail",
                "note": "only the test descriptors know this type"
            }
        ])
    );
}

#[tokio::test]
async fn error_details_follow_the_json_options() {
    let env = start_test_service_with(|config| config.json.use_proto_names = true).await;
    let reply = env.post_json("/test/fail", r#"{"code": 3, "message": "m", "with_details": true}"#).await;
    let envelope = assert_error(&reply, 400, 3);
    assert_eq!(envelope["details"][1]["field_violations"][0]["field"], json!("message"), "{envelope}");
    // Gateway-made violations too.
    let reply = env.post_json("/test/echo", r#"{"int32_value": "x"}"#).await;
    let envelope = assert_error(&reply, 400, 3);
    assert_eq!(envelope["details"][0]["field_violations"][0]["field"], json!("int32_value"), "{envelope}");
}

#[tokio::test]
async fn unreachable_upstream_is_503_without_internals() {
    // A port that was free a moment ago: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let env = start_test_service_with(|config| {
        config.upstreams[0].url = format!("http://{closed}").parse().expect("url");
    })
    .await;
    let reply = env.post_json("/test/echo", r#"{"int32Value": 1}"#).await;
    let envelope = assert_error(&reply, 503, 14);
    let text = message(&envelope).to_ascii_lowercase();
    for leak in [closed.to_string(), closed.port().to_string(), "127.0.0.1".into(), "os error".into(), "tcp".into()] {
        assert!(!text.contains(&leak), "message leaks {leak:?}: {envelope}");
    }
    assert_eq!(envelope["details"], json!([]));
    // Still answering afterwards.
    let reply = env.get("/nope").await;
    assert_error(&reply, 404, 5);
}

#[tokio::test]
async fn route_timeout_is_504() {
    let env = start_test_service_with(|config| config.routes.timeout = Duration::from_millis(200)).await;
    let reply = env.get("/test/sleep/5000").await;
    let envelope = assert_error(&reply, 504, 4);
    assert!(message(&envelope).contains("200ms"), "{envelope}");
}

#[tokio::test]
async fn per_route_timeout_override_is_504() {
    let env = start_test_service_with(|config| {
        config.routes.overrides.push(api::RouteOverride {
            selector: api::RouteSelector {
                method: Some("protogate.test.v1.TestService/Sleep".into()),
                ..Default::default()
            },
            timeout: Some(Duration::from_millis(150)),
            max_body: None,
            stream_idle_timeout: None,
        });
    })
    .await;
    let reply = env.get("/test/sleep/5000").await;
    let envelope = assert_error(&reply, 504, 4);
    assert!(message(&envelope).contains("150ms"), "{envelope}");
}

/// `grpc-timeout` as tonic writes it: up to 8 digits and a unit.
fn parse_grpc_timeout(text: &str) -> Duration {
    let (digits, unit) = text.split_at(text.len() - 1);
    let n: u64 = digits.parse().unwrap_or_else(|e| panic!("grpc-timeout {text:?}: {e}"));
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("grpc-timeout {text:?}: bad unit"),
    }
}

#[tokio::test]
async fn client_grpc_timeout_is_honoured_under_the_cap() {
    let env = start_test_service_with(|config| config.routes.timeout = Duration::from_secs(20)).await;

    // Shorter than the route's: the client's deadline applies.
    let reply = env.request(Method::GET, "/test/sleep/10000", &[("grpc-timeout", "100m")], None).await;
    let envelope = assert_error(&reply, 504, 4);
    assert!(message(&envelope).contains("100ms"), "{envelope}");

    // The backend sees the client's deadline...
    let reply = env.request(Method::GET, "/test/sleep/0", &[("grpc-timeout", "5S")], None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.header("grpc-metadata-x-seen-grpc-timeout").expect("backend saw a grpc-timeout");
    let seen = parse_grpc_timeout(seen);
    assert!(seen > Duration::ZERO && seen <= Duration::from_secs(5), "backend saw {seen:?}");

    // ...capped by the route's when the client asks for more.
    let reply = env.request(Method::GET, "/test/sleep/0", &[("grpc-timeout", "1H")], None).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.header("grpc-metadata-x-seen-grpc-timeout").expect("backend saw a grpc-timeout");
    let seen = parse_grpc_timeout(seen);
    assert!(seen > Duration::from_secs(5) && seen <= Duration::from_secs(20), "backend saw {seen:?}");

    // Without the header the route's timeout is sent.
    let reply = env.get("/test/sleep/0").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.header("grpc-metadata-x-seen-grpc-timeout").expect("backend saw a grpc-timeout");
    let seen = parse_grpc_timeout(seen);
    assert!(seen > Duration::from_secs(5) && seen <= Duration::from_secs(20), "backend saw {seen:?}");
}

#[tokio::test]
async fn bad_grpc_timeout_header_is_400() {
    let env = start_test_service().await;
    let before = env.backend_calls();
    for value in ["soon", "10", "10s", "-1S", "123456789S", "1.5S", "S"] {
        let reply = env.request(Method::GET, "/test/sleep/0", &[("grpc-timeout", value)], None).await;
        assert_rejected(&env, before, &reply, 400, "grpc-timeout");
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_at_the_route_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let env = start_test_service_with(|config| config.routes.timeout = Duration::from_millis(300)).await;
    let before = env.backend_calls();
    let mut stream = tokio::net::TcpStream::connect(env.authority()).await.expect("connect");
    // Announces 100 bytes, sends 10, then waits.
    let head = "POST /test/echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(br#"{"stringV"#).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":4"#) && text.contains("did not arrive"), "{text}");
    assert_eq!(env.backend_calls(), before);
    // A whole body in time is served as ever.
    assert_eq!(env.post_json("/test/echo", r#"{"stringValue": "x"}"#).await.status, 200);
}
