//! Protos written for grpc-gateway, Envoy's transcoder and ESPv2 served
//! unchanged (docs/migrating.md): bindings that break http.proto refuse the
//! load with a message that quotes the rule (`routes.invalid_bindings:
//! reject`, the default) or are left out and listed (`skip`), while the
//! method's other bindings serve; gRPC API Service Config files
//! (`type: google.api.Service`) in the descriptor folder bind methods, and
//! reload with it.
//!
//! The fixture is written in the style of grpc-gateway's
//! `a_bit_of_everything.proto`, but declares the test service's package and
//! methods (with a subset of `AllTypes`, wire-compatible), so that the real
//! test backend answers every binding: its Echo methods return the request.

mod common;

use std::time::Duration;

use common::api::{from_yaml, Gateway};
use common::{assert_error, Backend, Descriptors, TestGateway};

const DEADLINE: Duration = Duration::from_secs(15);

/// Three bindings grpc-gateway accepts and http.proto does not, next to
/// good ones: a second `:verb` after a variable, a nested body field, a path
/// variable on a repeated field (the method's only binding).
const EVERYTHING_PROTO: &str = r#"
syntax = "proto3";
package protogate.test.v1;
import "google/api/annotations.proto";

message Nested {
  string name = 1;
  repeated int32 values = 2;
  Nested child = 3;
}

message AllTypes {
  int64 int64_value = 4;
  string string_value = 14;
  Nested nested = 17;
  repeated string repeated_string = 25;
}

service TestService {
  rpc EchoPath(AllTypes) returns (AllTypes) {
    option (google.api.http) = {
      get: "/v1/example/a_bit_of_everything/{string_value}"
      additional_bindings { get: "/v1/example/a_bit_of_everything/{string_value}:custom:custom" }
    };
  }
  rpc EchoBodyField(AllTypes) returns (AllTypes) {
    option (google.api.http) = {
      put: "/v1/example/a_bit_of_everything/{string_value}"
      body: "nested"
      additional_bindings { post: "/v2/example/a_bit_of_everything/{string_value}" body: "nested.child" }
    };
  }
  rpc EchoQuery(AllTypes) returns (AllTypes) {
    option (google.api.http) = { get: "/v1/example/a_bit_of_everything/tags/{repeated_string}" };
  }
  rpc EchoVerb(AllTypes) returns (AllTypes) {
    option (google.api.http) = { post: "/v1/example/a_bit_of_everything/{string_value}:frobnicate" body: "*" };
  }
  rpc Echo(AllTypes) returns (AllTypes);
}
"#;

/// The fixture's services without a single annotation, as a proto meant
/// for a service config looks.
const UNANNOTATED_PROTO: &str = r#"
syntax = "proto3";
package protogate.test.v1;

message Nested { string name = 1; }
message AllTypes {
  int64 int64_value = 4;
  string string_value = 14;
  Nested nested = 17;
}

service TestService {
  rpc Echo(AllTypes) returns (AllTypes);
  rpc EchoQuery(AllTypes) returns (AllTypes);
  rpc EchoPath(AllTypes) returns (AllTypes);
}
"#;

/// grpc-gateway's `unannotated_echo_service.yaml`, in the fixture's names:
/// a rule for an unannotated method with an additional binding, and a rule
/// that replaces `EchoVerb`'s annotation.
const ECHO_SERVICE_YAML: &str = r#"type: google.api.Service
config_version: 3
name: everything.example.com
http:
  rules:
  - selector: protogate.test.v1.TestService.Echo
    post: /v1/example/echo/{string_value}
    body: "*"
    additional_bindings:
    - get: /v1/example/echo/{string_value}/{int64_value}
  - selector: protogate.test.v1.TestService.EchoVerb
    post: /v1/example/verb/{string_value}:run
    body: nested
"#;

fn config(backend: &Backend, invalid_bindings: &str) -> String {
    format!("upstreams: {{ \"*\": \"{}\" }}\nroutes: {{ invalid_bindings: {invalid_bindings} }}\n", backend.url())
}

/// Loads `descriptors` with `routes.invalid_bindings: reject`: the problems.
fn refused(descriptors: &Descriptors) -> String {
    let yaml = format!("descriptors: {:?}\nupstreams: {{ \"*\": \"http://127.0.0.1:1\" }}\n", descriptors.path_str());
    let config = from_yaml(&yaml, &descriptors.join("protogate.yaml")).expect("config");
    match Gateway::load(config) {
        Ok(_) => panic!("the load should be refused"),
        Err(err) => err.problems.join("\n"),
    }
}

async fn skip_gateway(descriptors: Descriptors) -> TestGateway {
    let backend = Backend::test_service().await;
    common::start_with_admin(descriptors, config(&backend, "skip"), vec![backend]).await
}

async fn put_json(gw: &TestGateway, path: &str, body: &str) -> common::Reply {
    let headers = [("content-type", "application/json")];
    gw.request(reqwest::Method::PUT, path, &headers, Some(body.as_bytes().to_vec())).await
}

#[tokio::test]
async fn reject_refuses_the_load_quoting_the_rule_each_binding_breaks() {
    let descriptors = Descriptors::empty().with("examplepb/everything.proto", EVERYTHING_PROTO);
    let problems = refused(&descriptors);
    let lines: Vec<&str> = problems.lines().collect();
    assert_eq!(lines.len(), 3, "{problems}");
    let line = |needle: &str| *lines.iter().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{problems}"));

    let verb = line(":custom:custom");
    assert!(verb.starts_with("examplepb/everything.proto: protogate.test.v1.TestService.EchoPath: GET "), "{verb}");
    assert!(verb.contains("a variable must be a whole segment (http.proto"), "{verb}");

    let body = line("nested.child");
    assert!(
        body.contains("body must name a top-level field of the request message, or be \"*\" (http.proto)")
            && body.contains("grpc-gateway accepts nested paths, protogate does not"),
        "{body}"
    );

    let repeated = line("{repeated_string}");
    assert!(repeated.contains("path variables must not refer to any repeated or mapped field"), "{repeated}");

    for line in lines {
        assert!(line.contains("routes.invalid_bindings: skip"), "{line}");
    }
}

#[tokio::test]
async fn skip_serves_the_good_bindings_and_lists_the_bad_ones() {
    let descriptors = Descriptors::empty().with("examplepb/everything.proto", EVERYTHING_PROTO);
    let gw = skip_gateway(descriptors).await;

    // The good bindings of the methods that lost one.
    let reply = gw.get("/v1/example/a_bit_of_everything/abc?int64_value=7").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "7"}));
    let reply = put_json(&gw, "/v1/example/a_bit_of_everything/abc", r#"{"name": "n", "child": {"name": "c"}}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"stringValue": "abc", "nested": {"name": "n", "child": {"name": "c"}}})
    );
    let reply = gw.post_json("/v1/example/a_bit_of_everything/abc:frobnicate", r#"{"int64Value": "3"}"#).await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "3"}));
    // The nested-body binding is not served.
    assert_error(&gw.post_json("/v2/example/a_bit_of_everything/abc", "{}").await, 404, 5);

    // A method left without bindings is auto-mapped.
    let reply = gw.post_json("/protogate.test.v1.TestService/EchoQuery", r#"{"repeatedString": ["a", "b"]}"#).await;
    assert_eq!(reply.json(), serde_json::json!({"repeatedString": ["a", "b"]}));
    assert_error(&gw.get("/v1/example/a_bit_of_everything/tags/a").await, 404, 5);

    // Listed with their reasons: the route table (`protogate routes`)...
    let table = gw.route_table();
    let skipped = table.split("skipped bindings (routes.invalid_bindings: skip):\n").nth(1).expect(&table);
    let skipped: Vec<&str> = skipped.lines().collect();
    assert_eq!(skipped.len(), 3, "{table}");
    assert!(skipped.iter().any(|l| l.starts_with(
        "  protogate.test.v1.TestService/EchoPath GET /v1/example/a_bit_of_everything/{string_value}:custom:custom \
         (examplepb/everything.proto): a variable must be a whole segment"
    )));

    // ...and admin /descriptors.
    let status = gw.request_url(reqwest::Method::GET, &gw.admin_url("/descriptors"), &[], None).await.json();
    let listed = status["skipped_bindings"].as_array().expect("skipped_bindings").clone();
    assert_eq!(listed.len(), 3, "{status}");
    let body = listed.iter().find(|s| s["method"] == "protogate.test.v1.TestService/EchoBodyField").expect("body");
    assert_eq!(body["binding"], "POST /v2/example/a_bit_of_everything/{string_value}");
    assert_eq!(body["source"], "examplepb/everything.proto");
    assert!(body["reason"].as_str().unwrap_or_default().contains("top-level field"), "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn collisions_stay_errors_under_skip() {
    let clash = EVERYTHING_PROTO.replace(
        "rpc Echo(AllTypes) returns (AllTypes);",
        r#"rpc Echo(AllTypes) returns (AllTypes) { option (google.api.http) = { get: "/v1/example/a_bit_of_everything/{int64_value}" }; }"#,
    );
    let descriptors = Descriptors::empty().with("everything.proto", clash);
    let yaml = format!(
        "descriptors: {:?}\nupstreams: {{ \"*\": \"http://127.0.0.1:1\" }}\nroutes: {{ invalid_bindings: skip }}\n",
        descriptors.path_str()
    );
    let config = from_yaml(&yaml, &descriptors.join("protogate.yaml")).expect("config");
    let err = Gateway::load(config).err().expect("a collision refuses the load");
    let problems = err.problems.join("\n");
    assert!(
        problems.starts_with("route collision: GET /v1/example/a_bit_of_everything/{int64_value} is bound by both"),
        "{problems}"
    );
}

#[tokio::test]
async fn a_service_config_binds_unannotated_methods_and_replaces_annotations() {
    let descriptors = Descriptors::empty()
        .with("examplepb/everything.proto", EVERYTHING_PROTO)
        .with("examplepb/echo_service.yaml", ECHO_SERVICE_YAML)
        // Not a service config: ignored.
        .with("examplepb/openapi.yaml", "openapiOptions:\n  file: []\n");
    let gw = skip_gateway(descriptors).await;

    let reply = gw.post_json("/v1/example/echo/abc", r#"{"int64Value": "5"}"#).await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "5"}));
    let reply = gw.get("/v1/example/echo/abc/9").await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "9"}));
    // The rule replaced the auto-mapped route...
    assert_error(&gw.post_json("/protogate.test.v1.TestService/Echo", "{}").await, 404, 5);
    // ...and EchoVerb's annotation.
    let reply = gw.post_json("/v1/example/verb/abc:run", r#"{"name": "n"}"#).await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "nested": {"name": "n"}}));
    // (The path is still GET and PUT's `{string_value}`, with a colon in it.)
    assert_error(&gw.post_json("/v1/example/a_bit_of_everything/abc:frobnicate", "{}").await, 405, 12);

    let files: Vec<String> = gw.status().files.iter().map(|f| f.path.display().to_string()).collect();
    assert_eq!(files, ["examplepb/echo_service.yaml", "examplepb/everything.proto"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn wildcard_selectors_and_the_last_rule_wins() {
    let proto = UNANNOTATED_PROTO.replace("  rpc EchoPath(AllTypes) returns (AllTypes);\n", "");
    // `*` selects both methods: one template for two methods collides.
    let every = "type: google.api.Service\nhttp:\n  rules:\n  - selector: \"*\"\n    post: /v1/any/{string_value}\n";
    let colliding = Descriptors::empty().with("svc.proto", proto.as_str()).with("api.yaml", every);
    let problems = refused(&colliding);
    assert!(problems.starts_with("route collision: POST /v1/any/{string_value} is bound by both"), "{problems}");

    // A package wildcard for both, then a rule of its own for one of them.
    let yaml = r#"type: google.api.Service
http:
  rules:
  - selector: protogate.test.v1.*
    post: /v1/any/{string_value}
    body: "*"
  - selector: protogate.test.v1.TestService.EchoQuery
    get: /v1/query/{string_value}
"#;
    let descriptors = Descriptors::empty().with("svc.proto", proto.as_str()).with("api.yaml", yaml);
    let gw = skip_gateway(descriptors).await;
    let mut rows = gw.route_rows(["METHOD", "PATH", "GRPC METHOD"]);
    rows.sort();
    assert_eq!(
        rows,
        [
            ["GET", "/v1/query/{string_value}", "protogate.test.v1.TestService/EchoQuery"].map(String::from),
            ["POST", "/v1/any/{string_value}", "protogate.test.v1.TestService/Echo"].map(String::from),
        ]
    );
    let reply = gw.get("/v1/query/abc?int64_value=2").await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "2"}));
    let reply = gw.post_json("/v1/any/abc", r#"{"int64Value": "4"}"#).await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc", "int64Value": "4"}));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_selector_that_selects_nothing_is_a_load_error_with_file_and_line() {
    let yaml =
        "type: google.api.Service\nhttp:\n  rules:\n  - get: /v1/x\n    selector: protogate.test.v1.TestService.Nope\n";
    let descriptors = Descriptors::empty().with("svc.proto", UNANNOTATED_PROTO).with("conf/api.yaml", yaml);
    let problems = refused(&descriptors);
    assert!(
        problems.starts_with(
            "conf/api.yaml:5: http.rules[0].selector: `protogate.test.v1.TestService.Nope` selects no method"
        ),
        "{problems}"
    );

    let bad =
        "type: google.api.Service\nhttp:\n  rules:\n  - selector: protogate.test.v1.TestService.Echo\n    got: /x\n";
    let descriptors = Descriptors::empty().with("svc.proto", UNANNOTATED_PROTO).with("api.yml", bad);
    let problems = refused(&descriptors);
    assert!(problems.starts_with("api.yml:5: http.rules[0]: unknown field `got`"), "{problems}");
}

#[tokio::test]
async fn a_service_config_applies_to_its_own_version_folder() {
    let yaml = "type: google.api.Service\nhttp:\n  rules:\n  - selector: protogate.test.v1.TestService.Echo\n    post: /example/echo/{string_value}\n    body: \"*\"\n";
    let descriptors = Descriptors::empty().with("v1/svc.proto", UNANNOTATED_PROTO).with("v1/api.yaml", yaml);
    let gw = skip_gateway(descriptors).await;
    let reply = gw.post_json("/v1/example/echo/abc", "{}").await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "abc"}));
    gw.shutdown().await;

    // At the root, it selects nothing: the method is mounted under v1/.
    let descriptors = Descriptors::empty().with("v1/svc.proto", UNANNOTATED_PROTO).with("api.yaml", yaml);
    let problems = refused(&descriptors);
    assert!(problems.contains("is mounted under v1/") && problems.contains("move the file to v1/"), "{problems}");
}

#[tokio::test]
async fn a_changed_service_config_reloads_and_a_bad_one_is_refused() {
    let rule = |path: &str| {
        format!("type: google.api.Service\nhttp:\n  rules:\n  - selector: protogate.test.v1.TestService.Echo\n    post: {path}\n    body: \"*\"\n")
    };
    let descriptors = Descriptors::empty().with("svc.proto", UNANNOTATED_PROTO).with("api.yaml", rule("/v1/first"));
    let gw = skip_gateway(descriptors).await;
    assert_eq!(gw.post_json("/v1/first", r#"{"stringValue": "a"}"#).await.status, 200);

    gw.descriptors.write("api.yaml", rule("/v1/second"));
    let reply = common::eventually("the new rule serves", DEADLINE, || async {
        let reply = gw.post_json("/v1/second", r#"{"stringValue": "b"}"#).await;
        match reply.status.as_u16() {
            200 => Ok(reply),
            other => Err(format!("{other}: {}", reply.text())),
        }
    })
    .await;
    assert_eq!(reply.json(), serde_json::json!({"stringValue": "b"}));
    assert_error(&gw.post_json("/v1/first", "{}").await, 404, 5);

    // A broken file keeps the live catalog serving, and says where.
    gw.descriptors.write("api.yaml", rule("/v1/third").replace("post:", "pots:"));
    let refused = gw.status_until("the reload is refused", DEADLINE, |s| s.last_error.is_some()).await;
    let problems = refused.last_error.as_ref().map(|e| e.problems.join("\n")).unwrap_or_default();
    assert!(problems.starts_with("api.yaml:5: http.rules[0]: unknown field `pots`"), "{problems}");
    assert_eq!(gw.post_json("/v1/second", "{}").await.status, 200);
    gw.shutdown().await;
}
