//! Compositions (DESIGN §8) end to end: routes defined in config that call
//! several methods of a real tonic backend (the test service) through the
//! gateway, over real HTTP on loopback.
//!
//! What the backend saw comes from its own counters: `Delay` calls can be
//! told to wait until others are in flight or have finished, and
//! `DelayStats` reports how many were in flight at most, which were
//! cancelled and the order they finished in; each answer carries the
//! numbers of its arrival and its end on the backend's event counter. So
//! overlap, order and cancellation are asserted by counters and order,
//! never by a clock. Every test is bounded ([`bounded`]).
//!
//! Covered: parallel and dependent calls; every kind of request value
//! (literals by the proto3 JSON mapping, path, query, body, earlier
//! answers whole and in part, `for_each` items, interpolation, dotted
//! keys); `for_each` order, empty lists and `max_concurrency`; partial
//! answers, required failures cancelling the rest, `on_error: fail`;
//! per-call and route deadlines; `response:` shaping; load errors through
//! `protogate check` and a refused reload; policies and rate limits that
//! select a composition; the route table; forwarded metadata; bad input.

mod common;

use std::future::Future;
use std::process::{Command, Output};
use std::time::Duration;

use common::code::{
    DEADLINE_EXCEEDED, FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
    UNAUTHENTICATED, UNIMPLEMENTED,
};
use common::fixtures::{compile_source, test_service_descriptor_set, OTHER_PROTO};
use common::jwt::sha256_hex;
use common::pb::protogate::test::v1::DelayStatsResponse;
use common::{assert_error, metrics, violation_fields, Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

const PARTIAL: &str = "x-protogate-partial";

/// The longest any test may take, waits for the backend included.
const LIMIT: Duration = Duration::from_secs(60);

/// How long a descriptor change may take to be picked up (or refused).
const RELOAD_DEADLINE: Duration = Duration::from_secs(15);

/// Runs a test body, failing it if it has not finished within [`LIMIT`].
async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, test).await.unwrap_or_else(|_| panic!("the test did not finish within {LIMIT:?}"))
}

/// Config text with `svc/Method` standing for the test service's methods.
fn methods(yaml: &str) -> String {
    yaml.replace("svc/", "protogate.test.v1.TestService/")
}

/// The gateway in front of a fresh test service, with `config` (YAML
/// sections other than `upstreams`, which routes everything to it; see
/// [`methods`]).
async fn gateway(config: &str) -> TestGateway {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams:\n  \"*\": {}\n{}", backend.url(), methods(config));
    common::start(Descriptors::test_service(), yaml, vec![backend]).await
}

/// [`gateway`] with the admin listener.
async fn gateway_with_admin(config: &str) -> TestGateway {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams:\n  \"*\": {}\n{}", backend.url(), methods(config));
    common::start_with_admin(Descriptors::test_service(), yaml, vec![backend]).await
}

/// A 200 answer's JSON; panics with the reply otherwise.
#[track_caller]
fn ok(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// A complete (not partial) 200 answer's JSON.
#[track_caller]
fn complete(reply: &Reply) -> Value {
    let json = ok(reply);
    assert_eq!(reply.header(PARTIAL), None, "a complete answer is marked partial: {json}");
    assert!(json.get("errors").is_none(), "a complete answer has errors: {json}");
    json
}

/// An int64 of an answer: the JSON mapping writes it as a string.
#[track_caller]
fn int(value: &Value) -> i64 {
    match value {
        Value::String(text) => text.parse().unwrap_or_else(|e| panic!("{value} is no int64: {e}")),
        Value::Number(n) => n.as_i64().unwrap_or_else(|| panic!("{value} is no int64")),
        other => panic!("{other} is no int64"),
    }
}

/// A Delay answer without its event numbers (which depend on timing).
fn without_events(answer: &Value) -> Value {
    let mut answer = answer.clone();
    if let Some(object) = answer.as_object_mut() {
        object.remove("arrived");
        object.remove("finished");
    }
    answer
}

async fn delay_stats(gw: &TestGateway) -> DelayStatsResponse {
    gw.backend().delay_stats().await
}

// ---- parallelism and order ------------------------------------------------

#[tokio::test]
async fn independent_calls_are_in_flight_at_once() {
    bounded(async {
        // Each call waits (at most 5 s) until two Delay calls are in flight:
        // made one after the other, neither would see the other.
        let gw = gateway(
            r#"
compositions:
  - name: pair
    get: /c/pair
    calls:
      left:
        method: svc/Delay
        request: { value: left, await_in_flight: 2 }
      right:
        method: svc/Delay
        request: { value: right, await_in_flight: 2 }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/pair").await);
        let (left, right) = (&answer["left"], &answer["right"]);
        assert_eq!(left["value"], "left", "{answer}");
        assert_eq!(right["value"], "right", "{answer}");
        assert!(
            int(&left["arrived"]) < int(&right["finished"]) && int(&right["arrived"]) < int(&left["finished"]),
            "each call arrived before the other ended: {answer}"
        );
        let stats = delay_stats(&gw).await;
        assert_eq!(stats.max_in_flight, 2, "{stats:?}");
        assert_eq!((stats.started, stats.completed, stats.cancelled), (2, 2, 0), "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_dependent_call_starts_after_the_answer_it_reads() {
    bounded(async {
        // `second` reads `first`; `aside` reads nothing and runs beside
        // `first` (it waits for two calls in flight); `third` reads both.
        let gw = gateway(
            r#"
compositions:
  - name: chain
    get: /c/chain/{id}
    calls:
      third:
        method: svc/Delay
        request: { value: "{second.value}+{aside.value}" }
      second:
        method: svc/Delay
        request: { value: "{first.value}-then", previous: "{first}" }
      first:
        method: svc/Delay
        request: { value: "first-{path.id}", millis: 20, await_in_flight: 2 }
      aside:
        method: svc/Delay
        request: { value: aside, await_in_flight: 2 }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/chain/7").await);
        let (first, second, third, aside) = (&answer["first"], &answer["second"], &answer["third"], &answer["aside"]);
        assert_eq!(first["value"], "first-7", "{answer}");
        assert_eq!(second["value"], "first-7-then", "the value from the answer it read: {answer}");
        assert_eq!(second["previous"], *first, "the whole earlier answer: {answer}");
        assert_eq!(third["value"], "first-7-then+aside", "{answer}");
        assert!(int(&second["arrived"]) > int(&first["finished"]), "second started before first answered: {answer}");
        assert!(int(&third["arrived"]) > int(&second["finished"]), "{answer}");
        assert!(int(&third["arrived"]) > int(&aside["finished"]), "{answer}");
        assert!(int(&aside["arrived"]) < int(&first["finished"]), "aside waited for first: {answer}");
        let keys: Vec<&String> = answer.as_object().expect("an object").keys().collect();
        assert_eq!(keys.len(), 4, "{answer}");
        let stats = delay_stats(&gw).await;
        let at = |value: &str| stats.finished.iter().position(|v| v == value);
        assert!(at("first-7") < at("first-7-then") && at("first-7-then") < at("first-7-then+aside"), "{stats:?}");
        assert_eq!(stats.max_in_flight, 2, "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

// ---- values ----------------------------------------------------------------

const KINDS: &str = r#"
compositions:
  - name: kinds
    get: /c/kinds/{id}
    calls:
      lit:
        method: svc/Echo
        request:
          int64_value: "9007199254740993"
          sint64_value: -42
          uint64_value: "18446744073709551615"
          fixed64_value: 12345
          int32_value: 7
          double_value: 1.5
          bool_value: true
          string_value: plain
          renamed: "77"
          bytes_value: aGVsbG8=
          color: GREEN
          repeated_string: [a, b]
          repeated_int32: [3, 4]
          repeated_int64: ["1", 2]
          repeated_color: [RED, GREEN]
          map_string_int32: { one: 1, two: 2 }
          map_int64_string: { "5": five }
          nested: { name: inner, values: [1, 2] }
          nested.child.name: deep
          timestamp: "2024-05-06T07:08:09Z"
          duration: 1.500s
          int64_wrapper: "12"
          struct_value: { k: [x, true] }
      refs:
        method: svc/Echo
        request:
          string_value: "{path.id}"
          int64_value: "{path.id}"
          nested.name: "{query.name}"
          nested.child: "{lit.nested.child}"
          int32_value: "{query.n}"
          color: "{query.color}"
          renamed: "users/{path.id}/{lit.int64_value}/{lit.int32_value}"
          text: "{lit.int64_value}"
          sfixed64_value: "{lit.renamed}"
          uint64_value: "{lit.fixed64_value}"
          repeated_string: "{lit.repeated_string}"
          repeated_int64: "{lit.repeated_int32}"
          map_string_int32: "{lit.map_string_int32}"
          timestamp: "{lit.timestamp}"
      named:
        method: svc/Delay
        request: { value: "{lit.color}", color: "{lit.color}" }
      interpolated:
        method: svc/Delay
        request: { value: "is-{lit.color}" }
      whole:
        method: svc/Delay
        request: { value: whole, previous: "{named}" }
"#;

#[tokio::test]
async fn literals_follow_the_proto3_json_mapping() {
    bounded(async {
        let gw = gateway(KINDS).await;
        let answer = complete(&gw.get("/c/kinds/42").await);
        assert_eq!(
            answer["lit"],
            json!({
                "int64Value": "9007199254740993",
                "sint64Value": "-42",
                "uint64Value": "18446744073709551615",
                "fixed64Value": "12345",
                "int32Value": 7,
                "doubleValue": 1.5,
                "boolValue": true,
                "stringValue": "plain",
                "customName": "77",
                "bytesValue": "aGVsbG8=",
                "color": "GREEN",
                "repeatedString": ["a", "b"],
                "repeatedInt32": [3, 4],
                "repeatedInt64": ["1", "2"],
                "repeatedColor": ["RED", "GREEN"],
                "mapStringInt32": {"one": 1, "two": 2},
                "mapInt64String": {"5": "five"},
                "nested": {"name": "inner", "values": [1, 2], "child": {"name": "deep"}},
                "timestamp": "2024-05-06T07:08:09Z",
                "duration": "1.500s",
                "int64Wrapper": "12",
                "structValue": {"k": ["x", true]},
            }),
            "{answer}"
        );
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn references_read_the_path_the_query_and_earlier_answers() {
    bounded(async {
        let gw = gateway(KINDS).await;
        let answer = complete(&gw.get("/c/kinds/42?name=from%20query&color=RED").await);
        assert_eq!(
            answer["refs"],
            json!({
                // Text into a string and into an int64.
                "stringValue": "42",
                "int64Value": "42",
                // Dotted keys: one from the query, one a message from an
                // earlier answer (`{CALL.a.b}`).
                "nested": {"name": "from query", "child": {"name": "deep"}},
                // An enum by name from text.
                "color": "RED",
                // Interpolation, with an int64 and an int32 inside.
                "customName": "users/42/9007199254740993/7",
                // An int64 into a string; a string into an sfixed64; a
                // fixed64 into a uint64.
                "text": "9007199254740993",
                "sfixed64Value": "77",
                "uint64Value": "12345",
                // Repeated into repeated, of the same and of a wider kind.
                "repeatedString": ["a", "b"],
                "repeatedInt64": ["3", "4"],
                "mapStringInt32": {"one": 1, "two": 2},
                "timestamp": "2024-05-06T07:08:09Z",
            }),
            "{answer}"
        );
        // An enum into a string (its name) and into the same enum.
        assert_eq!(without_events(&answer["named"]), json!({"value": "GREEN", "color": "GREEN"}), "{answer}");
        // Interpolated, an enum is its name too.
        assert_eq!(answer["interpolated"]["value"], "is-GREEN", "{answer}");
        // `{CALL}`: the whole answer into a field of its type.
        assert_eq!(answer["whole"]["previous"], answer["named"], "{answer}");

        // Absent query parameters leave their fields unset; present, set.
        let answer = complete(&gw.get("/c/kinds/42?n=5").await);
        let refs = &answer["refs"];
        assert_eq!(refs["int32Value"], 5, "{answer}");
        assert!(refs.get("color").is_none(), "{answer}");
        assert_eq!(refs["nested"], json!({"child": {"name": "deep"}}), "{answer}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn references_read_the_request_body() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: body
    post: /c/body/{id}
    calls:
      whole:
        method: svc/Echo
        request: { struct_value: "{body}", string_value: "{path.id}" }
      parts:
        method: svc/Echo
        request:
          string_value: "{body.name}"
          int64_value: "{body.count}"
          repeated_string: "{body.tags}"
          nested: "{body.inner}"
          nested.child.name: "{body.inner.name}"
          renamed: "{body.missing}"
          text: "id {path.id}: {body.name} x{body.count}"
"#,
        )
        .await;
        // No numbers in it: a Struct holds doubles, written back as `7.0`.
        let body = json!({"name": "n", "count": "7", "tags": ["x", "y"], "inner": {"name": "deep"}});
        let answer = complete(&gw.post_json("/c/body/9", &body.to_string()).await);
        assert_eq!(answer["whole"], json!({"structValue": body, "stringValue": "9"}), "{answer}");
        assert_eq!(
            answer["parts"],
            json!({
                "stringValue": "n",
                "int64Value": "7",
                "repeatedString": ["x", "y"],
                "nested": {"name": "deep", "child": {"name": "deep"}},
                "text": "id 9: n x7",
            }),
            "{answer}"
        );
        // An int64 as a JSON number is read the same.
        let answer = complete(&gw.post_json("/c/body/9", r#"{"count": 8}"#).await);
        assert_eq!(answer["parts"]["int64Value"], "8", "{answer}");
        gw.shutdown().await;
    })
    .await;
}

// ---- for_each -------------------------------------------------------------

#[tokio::test]
async fn for_each_answers_in_the_order_of_the_list() {
    bounded(async {
        // `slow` waits until `quick` and `middle` have finished, `middle`
        // until `quick` has: they finish in the opposite order to the list's.
        let gw = gateway(
            r#"
compositions:
  - name: fan
    get: /c/fan
    calls:
      plan:
        method: svc/Delay
        request:
          value: plan
          values: [a, b, c]
          then:
            - { value: slow, after: [quick, middle] }
            - { value: middle, after: [quick] }
            - { value: quick }
      each:
        method: svc/Delay
        for_each: "{plan.then}"
        request: { value: "{item.value}", after: "{item.after}" }
      names:
        method: svc/Delay
        for_each: "{plan.values}"
        request: { value: "name-{item}", values: ["fixed"], color: RED }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/fan").await);
        let values = |key: &str| -> Vec<Value> {
            answer[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is no list: {answer}"))
                .iter()
                .map(without_events)
                .collect()
        };
        assert_eq!(values("each"), [json!({"value": "slow"}), json!({"value": "middle"}), json!({"value": "quick"})]);
        assert_eq!(
            values("names"),
            ["a", "b", "c"].map(|v| json!({"value": format!("name-{v}"), "values": ["fixed"], "color": "RED"}))
        );
        let stats = delay_stats(&gw).await;
        let finished: Vec<&str> =
            stats.finished.iter().map(String::as_str).filter(|v| ["slow", "middle", "quick"].contains(v)).collect();
        assert_eq!(finished, ["quick", "middle", "slow"], "the calls did finish out of order: {stats:?}");
        assert_eq!(stats.cancelled, 0, "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn for_each_over_an_empty_or_absent_list_answers_an_empty_list() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: nothing
    get: /c/nothing
    calls:
      src:
        method: svc/Echo
        request: { string_value: x }
      empty:
        method: svc/Delay
        for_each: "{src.repeated_string}"
        request: { value: "{item}" }
      absent:
        method: svc/Delay
        for_each: "{src.nested.values}"
        request: { value: "n{item}" }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/nothing").await);
        assert_eq!(answer["empty"], json!([]), "{answer}");
        assert_eq!(answer["absent"], json!([]), "{answer}");
        assert_eq!(answer["src"], json!({"stringValue": "x"}), "{answer}");
        assert_eq!(delay_stats(&gw).await.started, 0, "no call was made for no element");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn for_each_keeps_at_most_max_concurrency_calls_in_flight() {
    bounded(async {
        // `a` and `b` wait for each other (so two are in flight at once);
        // with no limit all six would start together.
        let gw = gateway(
            r#"
compositions:
  - name: limited
    get: /c/limited
    calls:
      plan:
        method: svc/Delay
        request:
          then:
            - { value: a, await_in_flight: 2 }
            - { value: b, await_in_flight: 2 }
            - { value: c, millis: 10 }
            - { value: d, millis: 10 }
            - { value: e, millis: 10 }
            - { value: f, millis: 10 }
      each:
        method: svc/Delay
        for_each: "{plan.then}"
        max_concurrency: 2
        request: { value: "{item.value}", millis: "{item.millis}", await_in_flight: "{item.await_in_flight}" }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/limited").await);
        let each: Vec<Value> = answer["each"].as_array().expect("a list").iter().map(|a| a["value"].clone()).collect();
        assert_eq!(each, ["a", "b", "c", "d", "e", "f"], "{answer}");
        let stats = delay_stats(&gw).await;
        assert_eq!(stats.max_in_flight, 2, "{stats:?}");
        assert_eq!(stats.completed, 7, "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn for_each_starts_the_next_element_as_soon_as_any_call_ends() {
    bounded(async {
        // With two in flight, `slow` (first in the list) waits until `later`
        // (third) has finished: `later` must start when `quick` ends, not
        // only once `slow`, the head of the list, has answered.
        let gw = gateway(
            r#"
compositions:
  - name: window
    get: /c/window
    calls:
      plan:
        method: svc/Delay
        request:
          then:
            - { value: slow, after: [later] }
            - { value: quick }
            - { value: later }
      each:
        method: svc/Delay
        for_each: "{plan.then}"
        max_concurrency: 2
        request: { value: "{item.value}", after: "{item.after}" }
"#,
        )
        .await;
        let answer = complete(&gw.get("/c/window").await);
        let each: Vec<Value> = answer["each"].as_array().expect("a list").iter().map(|a| a["value"].clone()).collect();
        assert_eq!(each, ["slow", "quick", "later"], "{answer}");
        let stats = delay_stats(&gw).await;
        assert_eq!(stats.finished, ["", "quick", "later", "slow"], "{stats:?}");
        assert_eq!(stats.max_in_flight, 2, "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

// ---- failures -------------------------------------------------------------

const FAILURES: &str = r#"
compositions:
  - name: partial
    get: /c/partial
    calls:
      fine:
        method: svc/Delay
        request: { value: fine }
      broken:
        method: svc/Fail
        request: { code: "{query.code}", message: no such thing, with_details: true }
        optional: true
      after_broken:
        method: svc/Echo
        request: { empty: "{broken}", string_value: after }
        optional: true
  - name: strict
    get: /c/strict
    on_error: fail
    calls:
      fine:
        method: svc/Delay
        request: { value: fine }
      broken:
        method: svc/Fail
        request: { code: "{query.code}", message: no such thing }
        optional: true
  - name: needs-optional
    get: /c/needs-optional
    calls:
      broken:
        method: svc/Fail
        request: { code: "{query.code}", message: no such thing }
        optional: true
      required:
        method: svc/Echo
        request: { empty: "{broken}", string_value: after }
"#;

#[tokio::test]
async fn a_required_call_that_cannot_run_fails_with_the_status_that_stopped_it() {
    bounded(async {
        let gw = gateway(FAILURES).await;
        let answer = complete(&gw.get("/c/needs-optional").await);
        assert_eq!(answer["required"]["stringValue"], "after", "{answer}");
        // The optional call it needs fails: the route fails with that
        // call's own status, not a made-up one.
        let reply = gw.get(&format!("/c/needs-optional?code={NOT_FOUND}")).await;
        let envelope = assert_error(&reply, 404, NOT_FOUND);
        assert_eq!(envelope["message"], "no such thing", "{envelope}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_optional_failure_makes_a_partial_answer() {
    bounded(async {
        let gw = gateway(FAILURES).await;

        // Complete: no header, every call by name.
        let answer = complete(&gw.get("/c/partial").await);
        assert_eq!(answer["broken"], json!({}), "{answer}");
        assert_eq!(answer["after_broken"], json!({"empty": {}, "stringValue": "after"}), "{answer}");

        // NOT_FOUND from an optional call: 200, marked partial, its key
        // out, its Status (details resolved) under `errors`, and the call
        // that needed it skipped and listed too.
        let reply = gw.get(&format!("/c/partial?code={NOT_FOUND}")).await;
        let answer = ok(&reply);
        assert_eq!(reply.header(PARTIAL), Some("true"), "{answer}");
        assert_eq!(answer["fine"]["value"], "fine", "{answer}");
        assert!(answer.get("broken").is_none(), "{answer}");
        assert!(answer.get("after_broken").is_none(), "{answer}");
        let errors = answer["errors"].as_object().unwrap_or_else(|| panic!("no errors in {answer}"));
        assert_eq!(errors.len(), 2, "{answer}");
        let broken = &errors["broken"];
        assert_eq!(broken["code"], NOT_FOUND, "{answer}");
        assert_eq!(broken["message"], "no such thing", "{answer}");
        let types: Vec<&str> =
            broken["details"].as_array().expect("details").iter().filter_map(|d| d["@type"].as_str()).collect();
        assert!(types.contains(&"type.googleapis.com/google.rpc.ErrorInfo"), "{answer}");
        assert!(types.contains(&"type.googleapis.com/protogate.test.v1.CustomDetail"), "{answer}");
        let skipped = &errors["after_broken"];
        assert_eq!(skipped["code"], FAILED_PRECONDITION, "{answer}");
        let message = skipped["message"].as_str().unwrap_or_default();
        assert!(message.contains("broken"), "the skipped call's error names the call it needed: {answer}");
        assert!(skipped["details"].is_array(), "{answer}");
        // The skipped call was never made: one Fail, no Echo.
        assert_eq!(gw.backend_calls(), 2 + 3, "{answer}");

        // Each call of both requests counted by its outcome.
        let samples = metrics::samples(&gw.gateway);
        let calls = |call: &str, outcome: &str| {
            let series = format!(
                r#"protogate_composition_calls_total{{composition="partial",call="{call}",outcome="{outcome}"}}"#
            );
            metrics::sample(&samples, &series)
        };
        assert_eq!((calls("fine", "ok"), calls("fine", "error")), (2.0, 0.0), "{samples:?}");
        assert_eq!((calls("broken", "ok"), calls("broken", "error")), (1.0, 1.0), "{samples:?}");
        assert_eq!((calls("after_broken", "ok"), calls("after_broken", "skipped")), (1.0, 1.0), "{samples:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn on_error_fail_makes_an_optional_failure_fail_the_route() {
    bounded(async {
        let gw = gateway(FAILURES).await;
        let answer = complete(&gw.get("/c/strict").await);
        assert_eq!(answer["fine"]["value"], "fine", "{answer}");
        let reply = gw.get(&format!("/c/strict?code={NOT_FOUND}")).await;
        let envelope = assert_error(&reply, 404, NOT_FOUND);
        assert_eq!(envelope["message"], "no such thing", "{envelope}");
        assert_eq!(reply.header(PARTIAL), None);
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_required_failure_ends_the_route_and_cancels_the_calls_still_running() {
    bounded(async {
        // `fails` fails only once `hangs` is in flight on the backend;
        // `hangs` would take far longer than the test may.
        let gw = gateway(
            r#"
compositions:
  - name: doomed
    get: /c/doomed
    calls:
      hangs:
        method: svc/Delay
        request: { value: hangs, millis: 600000 }
      fails:
        method: svc/Delay
        request: { value: fails, await_in_flight: 2, fail_code: 5, fail_message: "no such user" }
      never:
        method: svc/Delay
        request: { value: "{fails.value}" }
"#,
        )
        .await;
        let reply = gw.get("/c/doomed").await;
        let envelope = assert_error(&reply, 404, NOT_FOUND);
        assert_eq!(envelope["message"], "no such user", "{envelope}");
        let stats = gw
            .backend()
            .delay_stats_until("the hanging call is cancelled", |s| s.cancelled == 1 && s.in_flight == 0)
            .await;
        assert_eq!((stats.started, stats.completed, stats.max_in_flight), (2, 1, 2), "{stats:?}");
        assert_eq!(stats.finished, ["fails"], "{stats:?}");

        // And the gateway serves on.
        let again = assert_error(&gw.get("/c/doomed").await, 404, NOT_FOUND);
        assert_eq!(again["message"], "no such user");
        gw.backend().delay_stats_until("both hanging calls are cancelled", |s| s.cancelled == 2).await;
        gw.shutdown().await;
    })
    .await;
}

// ---- deadlines ------------------------------------------------------------

#[tokio::test]
async fn deadlines_of_a_call_and_of_the_route() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: call-deadline
    get: /c/call-deadline
    calls:
      slow:
        method: svc/Delay
        request: { value: slow, millis: 600000 }
        timeout: 200ms
  - name: optional-deadline
    get: /c/optional-deadline
    calls:
      slow:
        method: svc/Delay
        request: { value: slow, millis: 600000 }
        timeout: 200ms
        optional: true
      fine:
        method: svc/Delay
        request: { value: fine }
  - name: backend-deadline
    get: /c/backend-deadline
    calls:
      late:
        method: svc/Fail
        request: { code: 4, message: the backend's own deadline }
        optional: true
      fine:
        method: svc/Delay
        request: { value: fine }
  - name: route-deadline
    get: /c/route-deadline
    timeout: 300ms
    calls:
      fine:
        method: svc/Delay
        request: { value: fine }
      slow:
        method: svc/Delay
        request: { value: slow, millis: 600000 }
        optional: true
"#,
        )
        .await;
        assert_error(&gw.get("/c/call-deadline").await, 504, DEADLINE_EXCEEDED);

        let reply = gw.get("/c/optional-deadline").await;
        let answer = ok(&reply);
        assert_eq!(reply.header(PARTIAL), Some("true"), "{answer}");
        assert_eq!(answer["fine"]["value"], "fine", "{answer}");
        assert!(answer.get("slow").is_none(), "{answer}");
        assert_eq!(answer["errors"]["slow"]["code"], DEADLINE_EXCEEDED, "{answer}");

        // A DEADLINE_EXCEEDED the backend answers on its own, within the
        // route's time, is an optional call's failure like any other.
        let reply = gw.get("/c/backend-deadline").await;
        let answer = ok(&reply);
        assert_eq!(reply.header(PARTIAL), Some("true"), "{answer}");
        assert_eq!(answer["errors"]["late"]["code"], DEADLINE_EXCEEDED, "{answer}");
        assert_eq!(answer["errors"]["late"]["message"], "the backend's own deadline", "{answer}");

        // The route's own deadline ends it, optional calls or not.
        assert_error(&gw.get("/c/route-deadline").await, 504, DEADLINE_EXCEEDED);

        let stats = gw
            .backend()
            .delay_stats_until("the slow calls are cancelled", |s| s.cancelled == 3 && s.in_flight == 0)
            .await;
        assert_eq!(stats.completed, 3, "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

// ---- shaping --------------------------------------------------------------

#[tokio::test]
async fn response_shapes_the_answer() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: shaped
    get: /c/shaped/{id}
    calls:
      user:
        method: svc/Echo
        request: { string_value: "{path.id}", repeated_string: [x, y], nested: { name: n }, int64_value: 5 }
      each:
        method: svc/Delay
        for_each: "{user.repeated_string}"
        request: { value: "{item}" }
      hidden:
        method: svc/Delay
        request: { value: hidden }
    response:
      id: "{user.string_value}"
      count: "{user.int64_value}"
      tags: "{user.repeated_string}"
      inner: "{user.nested}"
      user: "{user}"
      fanned: "{each}"
      kind: overview
      version: 2
      meta: { source: gateway, list: [1, two] }
"#,
        )
        .await;
        let reply = gw.get("/c/shaped/u1").await;
        let mut answer = complete(&reply);
        let fanned: Vec<Value> = answer["fanned"].as_array().expect("a list").iter().map(without_events).collect();
        answer["fanned"] = Value::Array(fanned);
        assert_eq!(
            answer,
            json!({
                "id": "u1",
                "count": "5",
                "tags": ["x", "y"],
                "inner": {"name": "n"},
                "user": {"stringValue": "u1", "repeatedString": ["x", "y"], "nested": {"name": "n"}, "int64Value": "5"},
                "fanned": [{"value": "x"}, {"value": "y"}],
                "kind": "overview",
                "version": 2,
                "meta": {"source": "gateway", "list": [1, "two"]},
            })
        );
        // The keys in the order written.
        let text = reply.text();
        let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("no {key} in {text}"));
        let order = ["id", "count", "tags", "inner", "user", "fanned", "kind", "version", "meta"].map(at);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "keys out of order: {text}");
        // A call left out of the answer still runs.
        assert!(delay_stats(&gw).await.finished.contains(&"hidden".to_owned()));
        gw.shutdown().await;
    })
    .await;
}

// ---- load errors ----------------------------------------------------------

/// `protogate check` of the test service's folder with `yaml` (see
/// [`methods`]) as its config.
fn check(yaml: &str) -> Output {
    let cwd = tempfile::tempdir().expect("working directory");
    let descriptors = Descriptors::test_service();
    let config = cwd.path().join("gateway.yaml");
    std::fs::write(&config, methods(yaml)).expect("write the config");
    Command::new(env!("CARGO_BIN_EXE_protogate"))
        .args(["check", "--config", config.to_str().expect("UTF-8"), "--descriptors", descriptors.path_str()])
        .args(["--upstream", "*=http://127.0.0.1:1"])
        .current_dir(cwd.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run protogate check")
}

/// A composition `name` with `calls` (and the rest of its keys), as YAML.
fn one_composition(name: &str, route: &str, body: &str) -> String {
    format!("compositions:\n  - name: {name}\n    {route}\n{body}")
}

#[test]
fn check_accepts_the_compositions_of_these_tests() {
    for yaml in [KINDS, FAILURES] {
        let output = check(yaml);
        assert_eq!(output.status.code(), Some(0), "{}{}", text(&output.stdout), text(&output.stderr));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_names_the_composition_the_call_and_the_field_of_each_problem() {
    // (what is wrong, the `calls:` (and more) of a composition `broken` on
    // `GET /c/broken/{id}`, the words the error must hold besides its name).
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "an unknown method",
            "    calls:\n      src:\n        method: svc/Nope\n",
            &["src", "protogate.test.v1.TestService/Nope"],
        ),
        (
            "an unknown service",
            "    calls:\n      src:\n        method: nope.v1.Nope/Get\n",
            &["src", "nope.v1.Nope"],
        ),
        (
            "a streaming method",
            "    calls:\n      src:\n        method: svc/StreamItems\n",
            &["src", "StreamItems"],
        ),
        (
            "an unknown request field",
            "    calls:\n      src:\n        method: svc/Echo\n        request: { nope_field: 1 }\n",
            &["src", "nope_field"],
        ),
        (
            "an unknown field under a dotted key",
            "    calls:\n      src:\n        method: svc/Echo\n        request: { nested.nope_field: x }\n",
            &["src", "nested.nope_field"],
        ),
        (
            "a literal that does not fit its field",
            "    calls:\n      src:\n        method: svc/Echo\n        request: { string_value: ok, int32_value: abc }\n",
            &["src", "int32_value"],
        ),
        (
            "a message into a string",
            "    calls:\n      src:\n        method: svc/Echo\n      dst:\n        method: svc/Echo\n        request: { string_value: \"{src.nested}\" }\n",
            &["dst", "string_value", "protogate.test.v1.Nested"],
        ),
        (
            "a message into a message of another type",
            "    calls:\n      src:\n        method: svc/Delay\n      dst:\n        method: svc/Echo\n        request: { nested: \"{src}\" }\n",
            &["dst", "nested", "protogate.test.v1.DelayResponse"],
        ),
        (
            "a repeated value into a singular field",
            "    calls:\n      src:\n        method: svc/Echo\n      dst:\n        method: svc/Echo\n        request: { string_value: \"{src.repeated_string}\" }\n",
            &["dst", "string_value", "repeated"],
        ),
        (
            "a single value into a repeated field",
            "    calls:\n      src:\n        method: svc/Echo\n      dst:\n        method: svc/Echo\n        request: { repeated_string: \"{src.string_value}\" }\n",
            &["dst", "repeated_string"],
        ),
        (
            "an int32 into a string (the JSON mapping writes it as a number)",
            "    calls:\n      src:\n        method: svc/Echo\n      dst:\n        method: svc/Echo\n        request: { string_value: \"{src.int32_value}\" }\n",
            &["dst", "string_value", "int32"],
        ),
        (
            "an unknown field in an earlier answer",
            "    calls:\n      src:\n        method: svc/Echo\n      dst:\n        method: svc/Echo\n        request: { string_value: \"{src.nope_field}\" }\n",
            &["dst", "string_value", "nope_field"],
        ),
        (
            "a cycle",
            "    calls:\n      one:\n        method: svc/Delay\n        request: { value: \"{two.value}\" }\n      two:\n        method: svc/Delay\n        request: { value: \"{one.value}\" }\n",
            &["one", "two", "cycle"],
        ),
        (
            "an unknown call name",
            "    calls:\n      src:\n        method: svc/Delay\n        request: { value: \"{nobody.value}\" }\n",
            &["src", "value", "nobody"],
        ),
        (
            "an unknown path variable",
            "    calls:\n      src:\n        method: svc/Delay\n        request: { value: \"{path.nope_var}\" }\n",
            &["src", "value", "nope_var"],
        ),
        (
            "{body} on a get",
            "    calls:\n      src:\n        method: svc/Echo\n        request: { string_value: \"{body.name}\" }\n",
            &["src", "string_value", "body"],
        ),
        (
            "{item} without for_each",
            "    calls:\n      src:\n        method: svc/Delay\n        request: { value: \"{item}\" }\n",
            &["src", "value", "item"],
        ),
        (
            "for_each over a singular field",
            "    calls:\n      src:\n        method: svc/Echo\n      each:\n        method: svc/Delay\n        for_each: \"{src.string_value}\"\n        request: { value: \"{item}\" }\n",
            &["each", "for_each", "string_value"],
        ),
        (
            "an unknown field in the response",
            "    calls:\n      src:\n        method: svc/Delay\n    response:\n      out: \"{src.nope_field}\"\n",
            &["out", "nope_field"],
        ),
    ];
    for (what, calls, needles) in cases {
        let output = check(&one_composition("broken", "get: /c/broken/{id}", calls));
        let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{what}: expected exit 1\n{said}");
        for needle in ["broken"].iter().chain(needles.iter()) {
            assert!(said.contains(needle), "{what}: the error does not name {needle:?}:\n{said}");
        }
    }
}

#[test]
fn check_refuses_a_reference_inside_a_list_at_its_line() {
    // Not sent as text: refused while the file is read, at the key and
    // line of the string (the composition by its place in the list).
    let calls = "    calls:\n      src:\n        method: svc/Delay\n      dst:\n        method: svc/Delay\n        request: { values: [\"{src.value}\", x] }\n";
    let output = check(&one_composition("broken", "get: /c/broken/{id}", calls));
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{said}");
    for needle in ["compositions[0].calls.dst.request.values[0]", "{src.value}", "line 9"] {
        assert!(said.contains(needle), "the error does not name {needle:?}:\n{said}");
    }
}

#[test]
fn check_refuses_a_composition_that_collides_with_a_descriptor_route() {
    let output =
        check(&one_composition("shadow", "post: /test/echo", "    calls:\n      src:\n        method: svc/Delay\n"));
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{said}");
    for needle in ["shadow", "/test/echo", "protogate.test.v1.TestService/Echo"] {
        assert!(said.contains(needle), "the collision error does not name {needle:?}:\n{said}");
    }
}

#[tokio::test]
async fn a_reload_that_breaks_a_composition_is_refused_and_the_old_catalog_serves() {
    bounded(async {
        let backend = Backend::test_service().await;
        let yaml = format!(
            "upstreams:\n  \"*\": {}\n{}",
            backend.url(),
            methods(
                r#"
compositions:
  - name: survivor
    get: /c/survivor
    calls:
      echo:
        method: svc/Echo
        request: { string_value: still here }
"#
            )
        );
        let descriptors = Descriptors::test_service().with("other.binpb", compile_source("other.proto", OTHER_PROTO));
        let gw = common::start(descriptors, yaml, vec![backend]).await;
        assert_eq!(complete(&gw.get("/c/survivor").await)["echo"]["stringValue"], "still here");

        // A reload that keeps the composition valid goes live with it.
        let before = gw.status();
        gw.descriptors.write("more.proto", OTHER_PROTO.replace("other.v1", "more.v1").replace("/other/", "/more/"));
        let reloaded = gw
            .status_until("the new file goes live", RELOAD_DEADLINE, |s| {
                s.generation > before.generation && s.last_error.is_none()
            })
            .await;
        assert_eq!(complete(&gw.get("/c/survivor").await)["echo"]["stringValue"], "still here");

        // Without the test service's descriptors the composition's method
        // is gone: refused, naming the composition, its call and the method.
        gw.descriptors.remove("test.binpb");
        let refused = gw
            .status_until("the reload is refused", RELOAD_DEADLINE, |s| {
                s.last_error.as_ref().is_some_and(|e| e.problems.iter().any(|p| p.contains("survivor")))
            })
            .await;
        let problems = refused.last_error.as_ref().map(|e| e.problems.join("\n")).unwrap_or_default();
        for needle in ["survivor", "echo", "protogate.test.v1.TestService"] {
            assert!(problems.contains(needle), "the refusal does not name {needle:?}: {problems}");
        }
        assert_eq!(refused.generation, reloaded.generation, "a refused reload went live: {refused:?}");
        assert_eq!(complete(&gw.get("/c/survivor").await)["echo"]["stringValue"], "still here");
        assert_eq!(gw.post_json("/test/echo", r#"{"stringValue": "old"}"#).await.status, 200);

        // Put back, it goes live again.
        gw.descriptors.write("test.binpb", test_service_descriptor_set());
        gw.status_until("the restored folder goes live", RELOAD_DEADLINE, |s| {
            s.generation > reloaded.generation && s.last_error.is_none()
        })
        .await;
        assert_eq!(complete(&gw.get("/c/survivor").await)["echo"]["stringValue"], "still here");
        gw.shutdown().await;
    })
    .await;
}

// ---- policies, rate limits, the route table ------------------------------

/// Three compositions, each answering the metadata its one call received.
const GUARDED: &str = r#"
compositions:
  - name: open-one
    get: /c/open
    calls:
      seen: { method: svc/Metadata }
  - name: closed-one
    get: /c/closed
    calls:
      seen: { method: svc/Metadata }
  - name: admin-one
    get: /c/admin/stats
    calls:
      seen: { method: svc/Metadata }
"#;

#[tokio::test]
async fn policies_select_a_composition_by_name_and_by_path_prefix() {
    bounded(async {
        let config = format!(
            r#"{GUARDED}
auth:
  api_keys:
    keys:
      - {{ id: reader, sha256: {}, scopes: [read] }}
      - {{ id: boss, sha256: {}, scopes: [read, admin] }}
policies:
  rules:
    - {{ name: open, composition: open-one, allow: public }}
    - {{ name: admin, path_prefix: /c/admin, scopes: [admin] }}
"#,
            sha256_hex("reader-key"),
            sha256_hex("boss-key")
        );
        let gw = gateway(&config).await;
        let reader = [("x-api-key", "reader-key")];

        complete(&gw.get("/c/open").await);
        let calls = gw.backend_calls();
        assert_error(&gw.get("/c/closed").await, 401, UNAUTHENTICATED);
        assert_eq!(gw.backend_calls(), calls, "a refused composition made calls");
        let answer = complete(&gw.request(Method::GET, "/c/closed", &reader, None).await);
        assert_eq!(answer["seen"]["headers"]["x-consumer-id"], "reader", "the identity reaches the call: {answer}");

        assert_error(&gw.request(Method::GET, "/c/admin/stats", &reader, None).await, 403, PERMISSION_DENIED);
        let boss = [("x-api-key", "boss-key")];
        complete(&gw.request(Method::GET, "/c/admin/stats", &boss, None).await);
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limits_select_a_composition_by_name_and_by_path_prefix() {
    bounded(async {
        let config = format!(
            r#"{GUARDED}
rate_limits:
  rules:
    - name: by-name
      match: {{ composition: open-one }}
      key: route
      rate: 1/h
      burst: 2
    - name: by-prefix
      match: {{ path_prefix: /c/admin }}
      key: route
      rate: 1/h
      burst: 1
"#
        );
        let gw = gateway(&config).await;
        complete(&gw.get("/c/open").await);
        complete(&gw.get("/c/open").await);
        let calls = gw.backend_calls();
        let refused = gw.get("/c/open").await;
        let envelope = assert_error(&refused, 429, RESOURCE_EXHAUSTED);
        assert!(refused.header("retry-after").is_some(), "{:?}", refused.headers);
        assert!(envelope["message"].as_str().unwrap_or_default().contains("by-name"), "{envelope}");
        assert_eq!(gw.backend_calls(), calls, "a refused composition made calls");

        complete(&gw.get("/c/admin/stats").await);
        assert_error(&gw.get("/c/admin/stats").await, 429, RESOURCE_EXHAUSTED);
        // A composition neither rule selects.
        for _ in 0..3 {
            complete(&gw.get("/c/closed").await);
        }
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_route_table_lists_a_composition_with_its_calls() {
    bounded(async {
        let gw = gateway_with_admin(
            r#"
compositions:
  - name: listed
    get: /c/listed/{id}
    timeout: 2s
    calls:
      user:
        method: svc/Echo
        request: { string_value: "{path.id}" }
      more:
        method: svc/Delay
        request: { value: "{user.string_value}" }
        optional: true
"#,
        )
        .await;
        let rows = gw.route_rows(["METHOD", "PATH", "GRPC METHOD", "KIND"]);
        let row = rows.iter().find(|r| r[1] == "/c/listed/{id}").unwrap_or_else(|| panic!("{}", gw.route_table()));
        assert_eq!(row[0], "GET");
        assert_eq!(row[3], "composition");
        assert!(row[2].contains("listed"), "{}", gw.route_table());

        let reply = gw.request_url(Method::GET, &gw.admin_url("/routes"), &[], None).await;
        let table = ok(&reply);
        let routes = table["routes"].as_array().expect("routes");
        let route = routes.iter().find(|r| r["path"] == "/c/listed/{id}").unwrap_or_else(|| panic!("{table}"));
        assert_eq!(route["kind"], "composition", "{route}");
        assert_eq!(route["method"], "GET", "{route}");
        assert_eq!(route["timeout_ms"], 2000, "{route}");
        assert_eq!(route["composition"]["name"], "listed", "{route}");
        let calls = route["composition"]["calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 2, "{route}");
        assert_eq!(calls[1]["name"], "more", "{route}");
        assert_eq!(calls[1]["method"], "protogate.test.v1.TestService/Delay", "{route}");
        assert_eq!(calls[1]["optional"], true, "{route}");
        assert_eq!(calls[1]["needs"], json!(["user"]), "{route}");
        // The test service's own routes are still listed as methods.
        let echo = routes.iter().find(|r| r["path"] == "/test/echo").unwrap_or_else(|| panic!("{table}"));
        assert_eq!(echo["kind"], "unary", "{echo}");
        gw.shutdown().await;
    })
    .await;
}

// ---- metadata and bad input ----------------------------------------------

#[tokio::test]
async fn every_call_gets_the_forwarded_metadata() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: meta
    get: /c/meta
    calls:
      src:
        method: svc/Echo
        request: { repeated_string: [a, b] }
      one: { method: svc/Metadata }
      two: { method: svc/Metadata, request: {} }
      each:
        method: svc/Metadata
        for_each: "{src.repeated_string}"
"#,
        )
        .await;
        for request_id in [None, Some("chosen-id-1")] {
            let mut headers = vec![("authorization", "Bearer t0k3n"), ("grpc-metadata-x-tenant", "acme")];
            headers.extend(request_id.map(|id| ("x-request-id", id)));
            let reply = gw.request(Method::GET, "/c/meta", &headers, None).await;
            let answer = complete(&reply);
            let id = reply.header("x-request-id").unwrap_or_else(|| panic!("no request id: {:?}", reply.headers));
            if let Some(chosen) = request_id {
                assert_eq!(id, chosen);
            }
            let each = answer["each"].as_array().expect("a list");
            assert_eq!(each.len(), 2, "{answer}");
            for seen in [&answer["one"], &answer["two"], &each[0], &each[1]] {
                let seen = &seen["headers"];
                assert_eq!(seen["x-request-id"], id, "{answer}");
                assert_eq!(seen["authorization"], "Bearer t0k3n", "{answer}");
                assert_eq!(seen["x-tenant"], "acme", "{answer}");
            }
        }
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_400_and_the_gateway_serves_on() {
    bounded(async {
        let gw = gateway(
            r#"
compositions:
  - name: strict-input
    post: /c/input/{id}
    calls:
      echo:
        method: svc/Echo
        request: { int64_value: "{path.id}", int32_value: "{body.n}", string_value: "{query.s}" }
"#,
        )
        .await;
        let calls = gw.backend_calls();
        let envelope = assert_error(&gw.post_json("/c/input/1", r#"{"n": 1"#).await, 400, INVALID_ARGUMENT);
        assert!(envelope["message"].as_str().unwrap_or_default().contains("line"), "{envelope}");

        let envelope = assert_error(&gw.post_json("/c/input/abc", r#"{"n": 1}"#).await, 400, INVALID_ARGUMENT);
        assert_eq!(violation_fields(&envelope), ["int64_value"], "{envelope}");

        let envelope = assert_error(&gw.post_json("/c/input/1", r#"{"n": "many"}"#).await, 400, INVALID_ARGUMENT);
        assert_eq!(violation_fields(&envelope), ["int32_value"], "{envelope}");
        // The route exists under another HTTP method.
        let wrong = gw.get("/c/input/1").await;
        assert_error(&wrong, 405, UNIMPLEMENTED);
        assert_eq!(wrong.header("allow"), Some("POST"), "{:?}", wrong.headers);
        assert_eq!(gw.backend_calls(), calls, "bad input reached the backend");

        let answer = complete(&gw.post_json("/c/input/12?s=fine", r#"{"n": 3}"#).await);
        assert_eq!(answer["echo"], json!({"int64Value": "12", "int32Value": 3, "stringValue": "fine"}));
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_client_value_that_fits_no_call_is_a_400_even_for_an_optional_call() {
    bounded(async {
        let config = r#"
compositions:
  - name: strict-input
    get: /c/strict-input
    calls:
      fine:
        method: svc/Delay
        request: { value: fine }
      sized:
        method: svc/Delay
        request: { value: sized, millis: "{query.millis}" }
        optional: true
"#;
        let gw = gateway(config).await;
        let answer = complete(&gw.get("/c/strict-input?millis=1").await);
        assert_eq!(answer["sized"]["value"], "sized", "{answer}");
        let reply = gw.get("/c/strict-input?millis=soon").await;
        let envelope = assert_error(&reply, 400, 3);
        assert!(envelope["message"].as_str().unwrap_or_default().contains("millis"), "{envelope}");
        gw.shutdown().await;
    })
    .await;
}
