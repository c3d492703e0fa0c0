//! The OpenAPI 3.1 document of the live catalog (DESIGN §9): admin
//! `/openapi.json` is byte for byte what `protogate openapi` prints, it
//! passes a standard validator (openapi-spec-validator), it follows the
//! catalog's JSON settings, and the gateway's real answers validate against
//! their operation's schemas (jsonschema). Both validators come from the
//! venv of scripts/python-tools.sh, which scripts/test.sh makes; run from
//! there (PROTOGATE_REQUIRE_PYTHON_TOOLS set) a missing venv fails the tests.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::fixtures::repo_path;
use common::{Backend, Descriptors, Reply, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_protogate");

/// A deprecated version's service with bindings OpenAPI has and has not
/// an operation for.
const LEGACY_PROTO: &str = r#"
syntax = "proto3";
package acme.legacy.v1;
import "google/api/annotations.proto";

// The old cache.
service Legacy {
  // Drops a key.
  rpc Purge(Key) returns (Purged) {
    option (google.api.http) = { custom: { kind: "PURGE", path: "/cache/{key}" } };
  }
  // Whether a key is there.
  rpc Peek(Key) returns (Purged) {
    option (google.api.http) = { custom: { kind: "HEAD", path: "/cache/{key}" } };
  }
  rpc Lookup(Key) returns (Purged) {
    option (google.api.http) = { get: "/cache/{key}" };
  }
  // The same OpenAPI path as Lookup's, under another variable name.
  rpc Store(Entry) returns (Purged) {
    option (google.api.http) = { put: "/cache/{entry.key}" body: "value" };
  }
  // A custom verb on the path of Lookup and Store.
  rpc Flush(Key) returns (Purged) {
    option (google.api.http) = { post: "/cache/{key}:flush" };
  }
}
message Key { string key = 1; }
message Entry { Key entry = 1; string value = 2; }
message Purged { int64 purged = 1; }
"#;

/// Everything the document draws on: auth with both kinds of providers, a
/// policy, a deprecated version, a composition. `{backend}`, `{secret}` and
/// `{descriptors}` are filled in.
const CONFIG: &str = r#"
descriptors: {descriptors}
upstreams:
  "*": {backend}
versions:
  v1:
    deprecated: { sunset: 2027-06-30 }
auth:
  jwt:
    - name: corp
      secret: { file: "{secret}" }
  api_keys:
    query: api_key
    keys:
      - { id: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 }
policies:
  default: public
  rules:
    - name: stats
      path_prefix: /test/stream/stats
      scopes: [admin]
    - name: count
      path_prefix: /test/count
      providers: [api_key]
compositions:
  - name: delay-pair
    get: /test/pair/{value}
    calls:
      first:
        method: protogate.test.v1.TestService/Delay
        request: { value: "{path.value}", millis: "{query.millis}", values: [a, b] }
      each:
        method: protogate.test.v1.TestService/Delay
        for_each: "{first.values}"
        request: { value: "{item}" }
"#;

/// The gateway with its admin listener, and the config file it was started
/// from (for `protogate openapi`).
struct Env {
    gw: TestGateway,
    config_file: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(extra_yaml: &str) -> Env {
    let backend = Backend::test_service().await;
    let descriptors = Descriptors::test_service().with("v1/legacy.proto", LEGACY_PROTO);
    let dir = tempfile::tempdir().expect("config folder");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").expect("write secret");
    let yaml = CONFIG
        .replace("{backend}", &backend.url())
        .replace("{secret}", secret.to_str().expect("UTF-8"))
        .replace("{descriptors}", &format!("{:?}", descriptors.path_str()))
        + extra_yaml;
    let config_file = dir.path().join("protogate.yaml");
    std::fs::write(&config_file, &yaml).expect("write config");
    let gw = common::start_with_admin(descriptors, yaml, vec![backend]).await;
    Env { gw, config_file, _dir: dir }
}

impl Env {
    async fn admin_document(&self) -> Reply {
        self.gw.request_url(Method::GET, &self.gw.admin_url("/openapi.json"), &[], None).await
    }

    async fn document(&self) -> Value {
        let reply = self.admin_document().await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// `protogate openapi --config FILE`, from an empty working directory.
    fn cli_document(&self) -> Vec<u8> {
        let cwd = tempfile::tempdir().expect("working directory");
        let config = self.config_file.to_str().expect("UTF-8");
        let output = Command::new(BIN)
            .args(["openapi", "--config", config])
            .current_dir(cwd.path())
            .env_remove("RUST_LOG")
            .output()
            .expect("run protogate openapi");
        assert!(output.status.success(), "protogate openapi: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    }
}

/// The Python of scripts/python-tools.sh's venv; `None` (the check
/// skipped, loudly) only when the tests do not run from scripts/test.sh.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("PROTOGATE_PYTHON_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/python-tools"));
    let venv = if venv.is_absolute() { venv } else { repo_path(venv.to_str().expect("UTF-8")) };
    let python = venv.join("bin").join("python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var_os("PROTOGATE_REQUIRE_PYTHON_TOOLS").is_some() {
        panic!("{} is missing: run scripts/python-tools.sh", python.display());
    }
    eprintln!("SKIPPED validation: {} is missing (run scripts/python-tools.sh)", python.display());
    None
}

/// Validates `document` as OpenAPI 3.1 and each `(pointer, instance)`
/// against the schema at that JSON pointer of the document.
#[track_caller]
fn validate(document: &Value, answers: &[(String, Value)]) {
    let Some(python) = python() else { return };
    let answers: Vec<Value> = answers.iter().map(|(p, i)| json!({"pointer": p, "instance": i})).collect();
    let input = serde_json::to_vec(&json!({"document": document, "answers": answers})).expect("JSON");
    let mut child = Command::new(python)
        .arg(repo_path("tests/fixtures/openapi_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the checker");
    child.stdin.take().expect("stdin").write_all(&input).expect("write to the checker");
    let output = child.wait_with_output().expect("checker output");
    assert!(
        output.status.success(),
        "validation failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `/paths/<path>/<method>` as a JSON pointer.
fn operation_pointer(path: &str, method: &str) -> String {
    format!("/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"))
}

/// The pointer of an operation's 200 JSON schema.
fn ok_schema(path: &str, method: &str) -> String {
    format!("{}/responses/200/content/application~1json/schema", operation_pointer(path, method))
}

fn at<'a>(document: &'a Value, pointer: &str) -> &'a Value {
    document.pointer(pointer).unwrap_or_else(|| panic!("no {pointer} in the document"))
}

fn schema<'a>(document: &'a Value, name: &str) -> &'a Value {
    at(document, &format!("/components/schemas/{}", name.replace('/', "~1")))
}

/// The parameter `name` of an operation.
fn parameter<'a>(document: &'a Value, path: &str, method: &str, name: &str) -> &'a Value {
    let op = at(document, &operation_pointer(path, method));
    op["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no parameter {name} of {method} {path}: {op:#}"))
}

#[tokio::test]
async fn the_document_validates_and_the_admin_serves_what_the_cli_prints() {
    let env = start("").await;
    let reply = env.admin_document().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let cli = env.cli_document();
    assert!(reply.body[..] == cli[..], "/openapi.json differs from `protogate openapi`");
    // Made once per catalog: the same bytes again.
    assert_eq!(env.admin_document().await.body, reply.body);

    let document = reply.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "protogate");
    validate(&document, &[]);

    // Every route of the table is there, but for the one without an
    // OpenAPI operation, which is listed as omitted.
    let routes = env.gw.route_rows(["METHOD", "PATH"]);
    assert!(routes.len() > 20, "{routes:?}");
    let omitted = document["x-protogate-omitted"].as_array().expect("x-protogate-omitted");
    assert_eq!(omitted.len(), 1, "{omitted:?}");
    assert_eq!(omitted[0]["method"], "PURGE");
    assert_eq!(omitted[0]["path"], "/v1/cache/{key}");
    assert_eq!(omitted[0]["grpc_method"], "acme.legacy.v1.Legacy/Purge");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(operations, routes.len() - 1);
    assert!(document.pointer(&operation_pointer("/v1/cache/{key}", "head")).is_some());

    // Operation ids are unique: the gRPC method, numbered per binding.
    let ids: Vec<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|o| o.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(unique.contains("protogate.test.v1.TestService.EchoPath"));
    assert!(unique.contains("protogate.test.v1.TestService.EchoPath_2"));
    assert!(unique.contains("protogate.test.v1.TestService.EchoPath_3"));
    env.gw.shutdown().await;
}

#[tokio::test]
async fn schemas_follow_the_proto3_json_mapping() {
    let env = start("").await;
    let doc = env.document().await;
    let all = schema(&doc, "protogate.test.v1.AllTypes");
    let p = &all["properties"];
    // lowerCamelCase names, json_name honoured.
    assert!(p.get("int64Value").is_some() && p.get("int64_value").is_none(), "{all:#}");
    assert!(p.get("customName").is_some());
    // 64-bit integers as strings, 32-bit as numbers.
    assert_eq!(p["int64Value"]["type"], "string");
    assert_eq!(p["uint64Value"]["type"], "string");
    assert_eq!(p["fixed64Value"]["type"], "string");
    assert_eq!(p["int32Value"]["type"], "integer");
    assert_eq!(p["repeatedInt64"]["items"]["type"], "string");
    // Bytes as base64, enums by name.
    assert_eq!(p["bytesValue"]["contentEncoding"], "base64");
    assert_eq!(p["color"]["$ref"], "#/components/schemas/protogate.test.v1.Color");
    assert_eq!(schema(&doc, "protogate.test.v1.Color")["enum"], json!(["COLOR_UNSPECIFIED", "RED", "GREEN"]));
    // Well-known types in their JSON forms.
    assert_eq!(p["timestamp"]["format"], "date-time");
    assert_eq!(p["duration"]["type"], "string");
    assert!(p["duration"]["pattern"].as_str().is_some_and(|s| s.ends_with("s$")));
    assert_eq!(p["fieldMask"]["type"], "string");
    assert_eq!(p["structValue"]["type"], "object");
    assert!(p["value"].get("type").is_none(), "Value is any JSON: {}", p["value"]);
    assert_eq!(p["listValue"]["type"], "array");
    assert_eq!(p["any"]["required"], json!(["@type"]));
    assert_eq!(p["empty"]["type"], "object");
    assert_eq!(p["int64Wrapper"]["type"], json!(["string", "null"]));
    assert_eq!(p["boolWrapper"]["type"], json!(["boolean", "null"]));
    assert_eq!(p["repeatedTimestamp"]["items"]["format"], "date-time");
    // Maps as objects; keys of integer maps are digits.
    assert_eq!(p["mapStringInt32"]["type"], "object");
    assert_eq!(p["mapStringInt32"]["additionalProperties"]["type"], "integer");
    assert_eq!(p["mapStringNested"]["additionalProperties"]["$ref"], "#/components/schemas/protogate.test.v1.Nested");
    assert_eq!(p["mapInt64String"]["propertyNames"]["pattern"], "^-?[0-9]+$");
    // The oneof: every member optional, documented.
    assert_eq!(all["x-protogate-oneofs"]["choice"], json!(["text", "number", "item"]));
    assert!(p["text"]["description"].as_str().is_some_and(|d| d.contains("oneof `choice`")), "{}", p["text"]);
    assert!(all.get("required").is_none());
    // Unknown fields are refused (json.unknown_fields: reject, the default).
    assert_eq!(all["additionalProperties"], false);
    // A proto3 `optional` field is no oneof.
    assert!(all["x-protogate-oneofs"].get("_optional_int32").is_none());
    // Recursion through $ref.
    let nested = schema(&doc, "protogate.test.v1.Nested");
    assert_eq!(nested["properties"]["child"]["$ref"], "#/components/schemas/protogate.test.v1.Nested");
    // Comments of the protos as descriptions.
    assert!(all["description"].as_str().is_some_and(|d| d.starts_with("One field of every kind")), "{all:#}");
    let echo = at(&doc, &operation_pointer("/test/echo", "post"));
    assert_eq!(echo["summary"], "Returns the request unchanged: the whole message comes from the body.");
    assert_eq!(echo["x-protogate-grpc-method"], "protogate.test.v1.TestService/Echo");
    env.gw.shutdown().await;
}

#[tokio::test]
async fn names_and_integers_follow_the_json_settings() {
    let env =
        start("json: { use_proto_names: true, int64_as_numbers: true, enums_as_ints: true, unknown_fields: ignore }\n")
            .await;
    let doc = env.document().await;
    let all = schema(&doc, "protogate.test.v1.AllTypes");
    // Unknown fields ignored: any other property is fine.
    assert!(all.get("additionalProperties").is_none(), "{all:#}");
    let p = &all["properties"];
    assert!(p.get("int64_value").is_some() && p.get("int64Value").is_none());
    assert!(p.get("renamed").is_some());
    assert_eq!(p["int64_value"]["type"], "integer");
    assert_eq!(p["int64_wrapper"]["type"], json!(["integer", "null"]));
    assert_eq!(schema(&doc, "protogate.test.v1.Color")["enum"], json!([0, 1, 2]));
    // Query parameters take the same names.
    parameter(&doc, "/test/query", "get", "int64_value");
    validate(&doc, &[]);
    env.gw.shutdown().await;
}

#[tokio::test]
async fn parameters_and_bodies_follow_the_bindings() {
    let env = start("").await;
    let doc = env.document().await;
    // Path variables: typed by their field; `{x=pattern}` keeps its literals.
    let path = "/test/path/{string_value}/{int64_value}/{nested_name}/{color}";
    assert_eq!(parameter(&doc, path, "get", "int64_value")["schema"]["type"], "integer");
    // Enums by name or number.
    let color = &parameter(&doc, path, "get", "color")["schema"]["anyOf"];
    assert_eq!(color[0]["enum"], json!(["COLOR_UNSPECIFIED", "RED", "GREEN"]));
    assert_eq!(color[1]["enum"], json!([0, 1, 2]));
    // A dotted field path names its parameter with underscores.
    let nested = parameter(&doc, path, "get", "nested_name");
    assert_eq!(nested["in"], "path");
    assert_eq!(nested["description"], "The field `nested.name`.");
    // The path's own fields are no query parameters; their siblings are.
    let op = at(&doc, &operation_pointer(path, "get"));
    let query_names = |op: &Value| -> Vec<String> {
        let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
        parameters.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str().map(str::to_owned)).collect()
    };
    let names = query_names(op);
    assert!(
        !names.iter().any(|n| n == "stringValue" || n == "string_value" || n.starts_with("nested.name")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "nested.values"), "{names:?}");
    let things = "/test/things/shelves/{string_value_1}/books/{string_value_2}";
    let first = parameter(&doc, things, "get", "string_value_1");
    assert!(first["description"]
        .as_str()
        .is_some_and(|d| d.contains("shelves/{string_value_1}/books/{string_value_2}")));
    assert!(doc.pointer(&operation_pointer("/test/files/{string_value}", "get")).is_some());
    assert!(doc.pointer(&operation_pointer("/test/things/{string_value}:frobnicate", "post")).is_some());

    // Query parameters: nested, repeated (exploded), enums, maps, WKTs.
    let q = |name: &str| parameter(&doc, "/test/query", "get", name).clone();
    assert_eq!(q("int64Value")["in"], "query");
    assert_eq!(q("nested.name")["schema"]["type"], "string");
    assert_eq!(q("repeatedInt32")["schema"]["type"], "array");
    assert_eq!(q("repeatedInt32")["explode"], true);
    assert_eq!(q("repeatedColor")["schema"]["items"]["anyOf"][0]["enum"], json!(["COLOR_UNSPECIFIED", "RED", "GREEN"]));
    assert_eq!(q("mapStringInt32")["style"], "deepObject");
    assert_eq!(q("timestamp")["schema"]["format"], "date-time");
    assert_eq!(q("int64Wrapper")["schema"]["type"], "integer");
    let query_op = at(&doc, &operation_pointer("/test/query", "get"));
    assert!(query_op.get("requestBody").is_none());
    // Messages only reachable through a list or a map are not.
    let names = query_names(query_op);
    assert!(!names.iter().any(|n| n.starts_with("repeatedNested") || n.starts_with("mapStringNested")), "{names:?}");
    // A message type is entered once per name: `nested.child.…` would never end.
    assert!(!names.iter().any(|n| n.starts_with("nested.child")), "{names:?}");

    // Bodies: `*` the message with no query parameters, a field the field,
    // both as the gateway reads them (`-Input`).
    let echo = at(&doc, &operation_pointer("/test/echo", "post"));
    assert_eq!(
        echo["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/protogate.test.v1.AllTypes-Input"
    );
    assert!(echo.get("parameters").is_none(), "{echo:#}");
    let body_field = at(&doc, &operation_pointer("/test/body-field/{string_value}", "put"));
    assert_eq!(
        body_field["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/protogate.test.v1.Nested-Input"
    );
    let names = query_names(body_field);
    assert!(names.iter().any(|n| n == "int64Value") && !names.iter().any(|n| n.starts_with("nested")), "{names:?}");
    // Well-known types are not addressed by their fields.
    let names = query_names(at(&doc, &operation_pointer("/test/query", "get")));
    assert!(!names.iter().any(|n| n.starts_with("any.") || n.starts_with("value.")), "{names:?}");
    // response_body: the field alone.
    let field = at(&doc, &ok_schema("/test/response-field", "post"));
    assert_eq!(field["$ref"], "#/components/schemas/protogate.test.v1.Nested");
    // HttpBody: any content.
    assert!(doc.pointer(&format!("{}/requestBody/content/*~1*", operation_pointer("/test/upload", "post"))).is_some());
    assert!(doc
        .pointer(&format!("{}/responses/200/content/*~1*", operation_pointer("/test/download/{name}", "get")))
        .is_some());
    env.gw.shutdown().await;
}

#[tokio::test]
async fn errors_security_versions_streams_and_compositions() {
    let env = start("").await;
    let doc = env.document().await;
    // The error envelope is every operation's default answer.
    for item in doc["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("path item").values() {
            assert_eq!(op["responses"]["default"]["$ref"], "#/components/responses/Status", "{op:#}");
        }
    }
    let status = schema(&doc, "google.rpc.Status");
    assert_eq!(status["required"], json!(["code", "message", "details"]));

    // Security schemes from `auth`, requirements from the policies.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["corp"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "JWT of provider `corp`."})
    );
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "x-api-key");
    assert_eq!(schemes["api_key_query"]["in"], "query");
    assert_eq!(schemes["api_key_query"]["name"], "api_key");
    assert_eq!(at(&doc, &operation_pointer("/test/echo", "post"))["security"], json!([]));
    assert_eq!(
        at(&doc, &operation_pointer("/test/stream/stats", "get"))["security"],
        json!([{"corp": ["admin"]}, {"api_key": ["admin"]}, {"api_key_query": ["admin"]}])
    );
    assert_eq!(
        at(&doc, &operation_pointer("/test/count", "get"))["security"],
        json!([{"api_key": []}, {"api_key_query": []}])
    );

    // A deprecated version's routes.
    let legacy = at(&doc, &operation_pointer("/v1/cache/{key}", "get"));
    assert_eq!(legacy["deprecated"], true);
    assert!(legacy["responses"]["200"]["headers"].get("sunset").is_some(), "{legacy:#}");
    assert!(at(&doc, &operation_pointer("/test/echo", "post")).get("deprecated").is_none());
    // One OpenAPI path for `/v1/cache/{key}` and `/v1/cache/{entry.key}`.
    let store = parameter(&doc, "/v1/cache/{key}", "put", "key");
    assert_eq!(store["description"], "The field `entry.key`.");
    assert!(doc["paths"].as_object().expect("paths").keys().all(|k| !k.contains("entry")));

    // Streams: the framings a server stream answers in, and what a client
    // stream takes.
    let items = &at(&doc, &operation_pointer("/test/stream/items", "get"))["responses"]["200"]["content"];
    for media in ["application/x-ndjson", "application/jsonl", "text/event-stream", "application/json"] {
        assert!(items.get(media).is_some(), "{media}: {items:#}");
    }
    assert_eq!(items["application/json"]["schema"]["type"], "array");
    let collect = &at(&doc, &operation_pointer("/test/collect/{tag}", "post"))["requestBody"]["content"];
    assert_eq!(collect["application/x-ndjson"]["schema"]["$ref"], "#/components/schemas/protogate.test.v1.Item-Input");
    assert_eq!(collect["application/json"]["schema"]["type"], "array");
    let wrapped = &at(&doc, &operation_pointer("/test/stream/wrapped", "get"))["responses"]["200"]["content"];
    assert_eq!(
        wrapped["application/x-ndjson"]["schema"]["anyOf"][0]["$ref"],
        "#/components/schemas/protogate.test.v1.Item"
    );

    // The composition: its path and query parameters and its answer.
    let pair = at(&doc, &operation_pointer("/test/pair/{value}", "get"));
    assert_eq!(pair["x-protogate-composition"], "delay-pair");
    assert_eq!(parameter(&doc, "/test/pair/{value}", "get", "millis")["schema"]["type"], "integer");
    assert_eq!(parameter(&doc, "/test/pair/{value}", "get", "value")["in"], "path");
    let answer = &pair["responses"]["200"]["content"]["application/json"]["schema"]["properties"];
    assert_eq!(answer["first"]["$ref"], "#/components/schemas/protogate.test.v1.DelayResponse");
    assert_eq!(answer["each"]["type"], "array");
    env.gw.shutdown().await;
}

#[tokio::test]
async fn real_answers_validate_against_their_schemas() {
    let env = start("").await;
    let doc = env.document().await;
    let gw = &env.gw;
    let mut answers = Vec::new();
    let mut answer = |pointer: String, reply: Reply, status: u16| {
        assert_eq!(reply.status.as_u16(), status, "{pointer}: {}", reply.text());
        answers.push((pointer, reply.json()));
    };

    let query = "/test/query?int64Value=-5&uint64Value=7&color=GREEN&nested.name=n&repeatedInt32=1&repeatedInt32=2\
                 &mapStringInt32[a]=1&timestamp=2024-01-31T12:00:00Z&duration=1.5s&int64Wrapper=3&bytesValue=AQI%3D";
    answer(ok_schema("/test/query", "get"), gw.get(query).await, 200);

    let body = json!({
        "int64Value": "9007199254740993", "uint64Value": "18446744073709551615", "doubleValue": 1.5,
        "boolValue": true, "stringValue": "s", "bytesValue": "AQI=", "color": "RED",
        "nested": {"name": "a", "values": [1], "child": {"name": "b"}},
        "repeatedInt64": ["1"], "repeatedColor": ["GREEN"], "repeatedNested": [{"name": "c"}],
        "mapStringInt32": {"x": 1}, "mapInt64String": {"5": "five"}, "mapBoolString": {"true": "t"},
        "mapStringNested": {"k": {"name": "d"}}, "item": {"name": "e"}, "customName": "r", "optionalInt32": 0,
        "timestamp": "2024-01-31T12:00:00Z", "duration": "3s", "fieldMask": "a.b,c",
        "structValue": {"k": [1, "x", null]}, "value": {"v": 1}, "listValue": [1, "two"],
        "any": {"@type": "type.googleapis.com/protogate.test.v1.Nested", "name": "z"}, "empty": {},
        "repeatedTimestamp": ["2024-01-31T12:00:00Z"], "doubleWrapper": 2.5, "int64Wrapper": "4",
        "uint32Wrapper": 3, "boolWrapper": false, "stringWrapper": "w", "bytesWrapper": "AQ=="
    });
    answer(ok_schema("/test/echo", "post"), gw.post_json("/test/echo", &body.to_string()).await, 200);
    answer(
        ok_schema("/test/response-field", "post"),
        gw.post_json("/test/response-field", &body.to_string()).await,
        200,
    );

    // Errors: a backend's with details, and the gateway's own.
    let default = "/components/responses/Status/content/application~1json/schema".to_owned();
    let failed = gw.post_json("/test/fail", r#"{"code": 5, "message": "gone", "withDetails": true}"#).await;
    answer(default.clone(), failed, 404);
    answer(default.clone(), gw.post_json("/test/echo", r#"{"int32Value": "x"}"#).await, 400);
    answer(default.clone(), gw.get("/test/nothing-here").await, 404);

    // A server stream as one JSON array.
    let stream = gw.request(Method::GET, "/test/stream/items?count=2", &[("accept", "application/json")], None).await;
    answer(ok_schema("/test/stream/items", "get"), stream, 200);

    // The composition.
    answer(ok_schema("/test/pair/{value}", "get"), gw.get("/test/pair/v?millis=1").await, 200);

    validate(&doc, &answers);
    env.gw.shutdown().await;
}

/// Request bodies are documented as the gateway reads them (the proto3 JSON
/// mapping reads more than it prints), so that a fuzzer generating from
/// the document neither sends what the gateway refuses nor finds the
/// gateway taking what the document calls invalid; answers keep the
/// printed forms.
#[tokio::test]
async fn request_bodies_are_documented_as_the_gateway_reads_them() {
    let env = start("").await;
    let doc = env.document().await;
    let gw = &env.gw;
    let input = schema(&doc, "protogate.test.v1.AllTypes-Input");
    let p = &input["properties"];
    let types = |field: &str| -> Vec<String> {
        let alternatives = p[field]["anyOf"].as_array().unwrap_or_else(|| panic!("{field}: {}", p[field]));
        alternatives.iter().map(|a| a["type"].as_str().unwrap_or("$ref").to_owned()).collect()
    };
    // 64-bit integers as numbers too, 32-bit ones and floats as strings too,
    // and `null` (the default) for any field.
    assert_eq!(types("int64Value"), ["integer", "string", "null"]);
    assert_eq!(types("int32Value"), ["integer", "string", "null"]);
    assert_eq!(types("doubleValue"), ["number", "string", "null"]);
    assert_eq!(p["stringValue"]["type"], json!(["string", "null"]));
    assert_eq!(p["repeatedInt64"]["type"], json!(["array", "null"]));
    assert_eq!(p["nested"]["anyOf"][0]["$ref"], "#/components/schemas/protogate.test.v1.Nested-Input");
    // Enums by name or number.
    assert_eq!(p["color"]["anyOf"][0]["$ref"], "#/components/schemas/protogate.test.v1.Color-Input");
    let color = schema(&doc, "protogate.test.v1.Color-Input");
    assert_eq!(color["anyOf"][0]["enum"], json!(["COLOR_UNSPECIFIED", "RED", "GREEN"]));
    assert_eq!(color["anyOf"][1]["enum"], json!([0, 1, 2]));
    // Unknown fields refused, at most one member of the oneof.
    assert_eq!(input["additionalProperties"], false);
    assert!(input["not"]["anyOf"].as_array().is_some_and(|pairs| pairs.len() == 3), "{input:#}");
    // The answers' component keeps the printed forms.
    let output = &schema(&doc, "protogate.test.v1.AllTypes")["properties"];
    assert_eq!(output["int64Value"]["type"], "string");
    assert!(output["color"].get("anyOf").is_none(), "{}", output["color"]);

    // Bodies in every form the document allows are taken, and validate.
    let echo = format!("{}/requestBody/content/application~1json/schema", operation_pointer("/test/echo", "post"));
    let body = json!({
        "int64Value": 9007199254740991_i64, "uint64Value": 7, "int32Value": "-12", "uint32Value": "5",
        "doubleValue": "NaN", "floatValue": "1.5e3", "color": 2, "repeatedColor": ["RED", 0],
        "stringValue": null, "nested": null, "repeatedInt64": null, "mapStringInt32": {"a": "3"},
        "bytesValue": "-_8", "int64Wrapper": 4, "boolWrapper": null, "duration": "1.5s", "empty": {},
        "text": null, "number": 5
    });
    let reply = gw.post_json("/test/echo", &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echoed = reply.json();
    assert_eq!(echoed["int64Value"], "9007199254740991");
    assert_eq!(echoed["int32Value"], -12);
    assert_eq!(echoed["color"], "GREEN");
    assert_eq!(echoed["number"], 5);
    // Two members of one oneof are refused, as the document says.
    let reply = gw.post_json("/test/echo", r#"{"text": "a", "number": 5}"#).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    // A query enum by number.
    let reply = gw.get("/test/query?color=1&repeatedColor=2").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["color"], "RED");
    let query_color = format!("{}/schema", pointer_of_parameter(&doc, "/test/query", "get", "color"));
    validate(&doc, &[(echo, body), (query_color, json!(1)), (ok_schema("/test/echo", "post"), echoed)]);
    env.gw.shutdown().await;
}

/// The JSON pointer of the parameter `name` of an operation.
fn pointer_of_parameter(document: &Value, path: &str, method: &str, name: &str) -> String {
    let op = operation_pointer(path, method);
    let parameters = at(document, &op)["parameters"].as_array().cloned().unwrap_or_default();
    let index = parameters.iter().position(|p| p["name"] == name).unwrap_or_else(|| panic!("no parameter {name}"));
    format!("{op}/parameters/{index}")
}

/// A method the document does not list for a custom verb's path is a 405
/// whose `Allow` names the methods it does list: the verb makes the path
/// the verb route's under every method, not the verb-less route's with
/// `k:flush` as its value.
#[tokio::test]
async fn a_custom_verb_path_allows_the_methods_the_document_lists() {
    let env = start("").await;
    let doc = env.document().await;
    let item = at(&doc, "/paths/~1v1~1cache~1{key}:flush").as_object().expect("path item");
    let documented: Vec<String> = item.keys().map(|m| m.to_ascii_uppercase()).collect();
    assert_eq!(documented, ["POST"]);
    for method in [Method::OPTIONS, Method::GET, Method::PUT, Method::DELETE] {
        let reply = env.gw.request(method.clone(), "/v1/cache/k:flush", &[], None).await;
        common::assert_error(&reply, 405, 12);
        assert_eq!(reply.header("allow"), Some(documented.join(", ").as_str()), "{method}");
    }
    // A verb no route takes stays part of the value: Lookup's route (whose
    // backend does not implement it).
    let reply = env.gw.get("/v1/cache/k:other").await;
    assert_ne!(reply.status, 405, "{}", reply.text());
    assert_ne!(reply.status, 404, "{}", reply.text());
    env.gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_changes_the_document() {
    let env = start("").await;
    let before = env.admin_document().await.body;
    env.gw.descriptors.write(
        "extra.proto",
        r#"
syntax = "proto3";
package acme.extra.v1;
import "google/api/annotations.proto";
service Extra {
  rpc Ping(P) returns (P) { option (google.api.http) = { get: "/extra/ping" }; }
}
message P { string text = 1; }
"#,
    );
    assert!(env.gw.gateway.reloader().reload(true).await.expect("reload"), "the reload went live");
    let after = env.admin_document().await;
    assert_ne!(after.body, before);
    let doc = after.json();
    assert!(doc.pointer(&operation_pointer("/extra/ping", "get")).is_some());
    assert!(serde_json::from_slice::<Value>(&before)
        .expect("JSON")
        .pointer(&operation_pointer("/extra/ping", "get"))
        .is_none());
    assert_eq!(after.body[..], env.cli_document()[..], "after the reload too, the CLI prints what the admin serves");
    env.gw.shutdown().await;
}
