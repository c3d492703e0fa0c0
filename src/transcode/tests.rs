//! Unit tests of the transcoding rules against a test schema compiled from
//! inline proto text (with the built-in google/api and google/rpc files).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, SerializeOptions, Value};
use serde_json::json;
use tonic::Code;

use super::*;
use crate::config::{JsonOptions, Strictness};
use crate::error::GatewayError;

const TEST_PROTO: &str = r#"
syntax = "proto3";
package t;

import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/any.proto";
import "google/api/httpbody.proto";
import "google/protobuf/empty.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }

message Deep { string id = 1; int64 n = 2; }

message Inner {
  string name = 1;
  repeated int32 values = 2;
  Deep deep = 3;
  map<string, string> labels = 4;
}

message All {
  double f_double = 1;
  float f_float = 2;
  int32 f_int32 = 3;
  int64 f_int64 = 4;
  uint32 f_uint32 = 5;
  uint64 f_uint64 = 6;
  sint32 f_sint32 = 7;
  sint64 f_sint64 = 8;
  fixed32 f_fixed32 = 9;
  fixed64 f_fixed64 = 10;
  sfixed32 f_sfixed32 = 11;
  sfixed64 f_sfixed64 = 12;
  bool f_bool = 13;
  string f_string = 14;
  bytes f_bytes = 15;
  Color color = 16;
  Inner inner = 17;
  repeated Inner inners = 18;
  repeated string tags = 19;
  map<string, int64> counts = 20;
  map<int32, Inner> by_id = 21;
  google.protobuf.Timestamp ts = 22;
  google.protobuf.Duration dur = 23;
  google.protobuf.FieldMask mask = 24;
  google.protobuf.Int64Value w_int64 = 25;
  google.protobuf.BoolValue w_bool = 26;
  google.protobuf.StringValue w_string = 27;
  oneof choice {
    string c_text = 28;
    int32 c_num = 29;
    Inner c_inner = 30;
  }
  repeated Color colors = 31;
  google.protobuf.Struct meta = 32;
  google.protobuf.Any any = 33;
  string renamed = 34 [json_name = "customName"];
  repeated google.protobuf.Timestamp stamps = 35;
  google.protobuf.DoubleValue w_double = 36;
  map<bool, string> by_flag = 37;
}

message Node { Node child = 1; string name = 2; }

message More {
  optional int32 o_int = 1;
  optional string o_text = 2;
  repeated Color colors = 3;
  map<string, Color> color_by = 4;
  map<int64, string> by_i64 = 5;
  map<uint32, Deep> by_u32 = 6;
  map<sint32, double> by_s32 = 7;
  google.protobuf.NullValue nothing = 8;
  repeated double ratios = 9;
  repeated fixed32 f32s = 10;
  repeated sint64 s64s = 11;
  Node node = 12;
  repeated bytes blobs = 13;
  google.protobuf.Value value = 14;
  google.protobuf.ListValue list = 15;
  google.protobuf.Empty empty = 16;
  repeated google.protobuf.Any anys = 17;
  map<string, google.protobuf.Timestamp> stamps = 18;
  uint64 big = 100;
  bool last = 300;
  oneof pick { Deep p_deep = 301; bool p_flag = 302; }
}

message Upload { string name = 1; google.api.HttpBody file = 2; }

message Download { string name = 1; google.api.HttpBody file = 2; }
"#;

pub(super) fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        compile(
            &[("t.proto", TEST_PROTO)],
            &["google/rpc/status.proto", "google/rpc/error_details.proto", "protogate/test/v1/test.proto"],
        )
    })
}

/// The pool of test `files` (name, text), which may import the repository's
/// `proto/` folder, together with `also` from that folder.
pub(crate) fn compile(files: &[(&str, &str)], also: &[&str]) -> DescriptorPool {
    let dir = tempfile::TempDir::new().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([dir.path().to_path_buf(), proto]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(files.iter().map(|(name, _)| *name).chain(also.iter().copied())).unwrap();
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
}

fn msg(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn all() -> MessageDescriptor {
    msg("t.All")
}

fn vars(paths: &[&str]) -> Vec<Vec<String>> {
    paths.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect()
}

fn plan(body: &str, variables: &[&str]) -> RequestPlan {
    RequestPlan::new(&all(), body, &vars(variables)).unwrap()
}

fn input<'a>(body: &str, captures: &'a [String], query: Option<&'a str>) -> RequestInput<'a> {
    RequestInput { body: Bytes::copy_from_slice(body.as_bytes()), content_type: None, captures, query }
}

fn build(plan: &RequestPlan, body: &str, query: Option<&str>) -> Result<DynamicMessage, GatewayError> {
    plan.build(&JsonSettings::default(), input(body, &[], query))
}

/// The message as proto3 JSON with default options, for comparisons.
fn as_json(m: &DynamicMessage) -> serde_json::Value {
    m.serialize_with_options(serde_json::value::Serializer, &Default::default()).unwrap()
}

fn body_json(body: &str) -> DynamicMessage {
    build(&plan("*", &[]), body, None).unwrap()
}

/// Asserts a 400 whose single violation names `field`.
#[track_caller]
fn assert_bad(result: Result<DynamicMessage, GatewayError>, field: &str) -> GatewayError {
    // Not expect_err: the Debug form of a message of a recursive type never ends.
    let err = match result {
        Ok(m) => panic!("expected a client error for {field}, got {}", as_json(&m)),
        Err(err) => err,
    };
    assert_eq!(err.code, Code::InvalidArgument, "{err}");
    assert_eq!(err.status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err.violations.len(), 1, "{err}");
    assert_eq!(err.violations[0].field, field, "{err}");
    err
}

fn query(q: &str) -> Result<DynamicMessage, GatewayError> {
    build(&plan("", &[]), "", Some(q))
}

fn query_json(q: &str) -> serde_json::Value {
    as_json(&query(q).unwrap())
}

// ---------------------------------------------------------------- body

#[test]
fn whole_body_accepts_json_and_proto_names() {
    let m = body_json(r#"{"fInt64":"42","f_string":"x","customName":"r","inner":{"values":[1,2]},"color":"RED"}"#);
    assert_eq!(
        as_json(&m),
        json!({"fInt64":"42","fString":"x","customName":"r","inner":{"values":[1,2]},"color":"RED"})
    );
    let m = body_json(r#"{"renamed":"r2"}"#);
    assert_eq!(as_json(&m), json!({"customName":"r2"}));
}

#[test]
fn empty_or_blank_body_is_an_empty_message() {
    assert_eq!(as_json(&body_json("")), json!({}));
    assert_eq!(as_json(&body_json(" \n\t")), json!({}));
}

#[test]
fn malformed_json_names_line_and_column() {
    let err = assert_bad(build(&plan("*", &[]), "{\n  \"fString\": \"x\",\n  oops }", None), "");
    assert!(err.message.starts_with("invalid JSON at line 3 column 3: "), "{}", err.message);
    let err = assert_bad(build(&plan("*", &[]), r#"{"fString":"x"} {}"#, None), "");
    assert!(err.message.starts_with("invalid JSON at line 1 column "), "{}", err.message);
    assert!(err.message.contains("trailing characters"), "{}", err.message);
    let err = assert_bad(build(&plan("*", &[]), r#"{"fString":"#, None), "");
    assert!(err.message.starts_with("invalid JSON at line 1 column "), "{}", err.message);
}

#[test]
fn type_errors_name_the_field_path_as_sent() {
    let p = plan("*", &[]);
    assert_bad(build(&p, r#"{"fInt64":"abc"}"#, None), "fInt64");
    assert_bad(build(&p, r#"{"f_int64":"abc"}"#, None), "f_int64");
    assert_bad(build(&p, r#"{"fInt32":2147483648}"#, None), "fInt32");
    assert_bad(build(&p, r#"{"fDouble":1e400}"#, None), "fDouble");
    assert_bad(build(&p, r#"{"fBool":"true"}"#, None), "fBool");
    assert_bad(build(&p, r#"{"color":"PURPLE"}"#, None), "color");
    assert_bad(build(&p, r#"{"inner":{"values":[1,"x"]}}"#, None), "inner.values[1]");
    assert_bad(build(&p, r#"{"inners":[{},{"deep":{"n":true}}]}"#, None), "inners[1].deep.n");
    assert_bad(build(&p, r#"{"counts":{"a":"1","b":"z"}}"#, None), "counts.b");
    assert_bad(build(&p, r#"{"ts":"yesterday"}"#, None), "ts");
    let err = assert_bad(build(&p, r#"{"fUint32":-1}"#, None), "fUint32");
    assert!(err.message.starts_with("fUint32: "), "{}", err.message);
    // The description says what was expected.
    let err = assert_bad(build(&p, r#"{"inner":{"values":[1,"x"]}}"#, None), "inner.values[1]");
    assert!(err.violations[0].description.contains("int32"), "{}", err.message);
    let err = assert_bad(build(&p, r#"{"counts":{"a":"z"}}"#, None), "counts.a");
    assert!(err.violations[0].description.contains("int64"), "{}", err.message);
    let err = assert_bad(build(&p, r#"{"color":"PURPLE"}"#, None), "color");
    assert!(err.violations[0].description.contains("t.Color"), "{}", err.message);
    let err = assert_bad(build(&p, r#"{"fDouble":1e400}"#, None), "fDouble");
    assert!(err.violations[0].description.contains("double"), "{}", err.message);
}

#[test]
fn unknown_fields_are_rejected_or_ignored_by_config() {
    let p = plan("*", &[]);
    let err = assert_bad(build(&p, r#"{"inner":{"name":"x","bogus":1}}"#, None), "inner.bogus");
    assert!(err.message.contains("unknown field"), "{}", err.message);
    let lax = JsonSettings::new(&JsonOptions { unknown_fields: Strictness::Ignore, ..Default::default() });
    let m = p.build(&lax, input(r#"{"inner":{"name":"x","bogus":[1,{"a":2}]}}"#, &[], None)).unwrap();
    assert_eq!(as_json(&m), json!({"inner":{"name":"x"}}));
}

#[test]
fn oneof_given_twice_in_json_is_rejected() {
    let err = build(&plan("*", &[]), r#"{"cText":"a","cNum":1}"#, None).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains("choice"), "{}", err.message);
}

#[test]
fn deep_nesting_is_a_400_not_a_crash() {
    let p = plan("*", &[]);
    let deep_struct = format!(r#"{{"meta":{{"a":{}1{}}}}}"#, "[".repeat(5000), "]".repeat(5000));
    let err = build(&p, &deep_struct, None).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    let node = RequestPlan::new(&msg("t.Node"), "*", &[]).unwrap();
    let deep_node = format!("{}{}", r#"{"child":"#.repeat(3000), "}".repeat(3000));
    let err = build(&node, &deep_node, None).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains("recursion limit"), "{}", err.message);
}

#[test]
fn content_type_must_be_json() {
    let p = plan("*", &[]);
    let settings = JsonSettings::default();
    for ok in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ] {
        let req = RequestInput { content_type: Some(ok), ..input(r#"{"fString":"x"}"#, &[], None) };
        assert!(p.build(&settings, req).is_ok(), "{ok}");
    }
    for bad in ["text/xml", "application/xml", "multipart/form-data", "application/jsonx", "json"] {
        let req = RequestInput { content_type: Some(bad), ..input(r#"{"fString":"x"}"#, &[], None) };
        let err = p.build(&settings, req).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{bad}");
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
    }
}

#[test]
fn body_field_message_gets_the_json_and_paths_are_prefixed() {
    let p = plan("inner", &[]);
    assert!(p.has_body());
    let m = build(&p, r#"{"name":"x","values":[1]}"#, Some("fString=q")).unwrap();
    assert_eq!(as_json(&m), json!({"inner":{"name":"x","values":[1]},"fString":"q"}));
    assert_bad(build(&p, r#"{"values":["x"]}"#, None), "inner.values[0]");
    // An empty body still sets the field (presence), as `{}` would.
    let m = build(&p, "", None).unwrap();
    assert!(m.has_field_by_name("inner"));
    // The JSON is the field's value: the whole message shape is unknown to it.
    assert_bad(build(&p, r#"{"inner":{"name":"x"}}"#, None), "inner.inner");
}

#[test]
fn body_field_of_other_kinds() {
    let p = plan("tags", &[]);
    assert_eq!(as_json(&build(&p, r#"["a","b"]"#, None).unwrap()), json!({"tags":["a","b"]}));
    assert_bad(build(&p, r#"["a",1]"#, None), "tags[1]");
    // Nothing may escape the field's value into the rest of the message.
    let err = assert_bad(build(&p, r#"["a"], "fString": "x""#, None), "");
    assert!(err.message.starts_with("invalid JSON"), "{}", err.message);
    let p = plan("counts", &[]);
    assert_eq!(as_json(&build(&p, r#"{"a":"5"}"#, None).unwrap()), json!({"counts":{"a":"5"}}));
    let p = plan("f_int64", &[]);
    assert_eq!(as_json(&build(&p, "7", None).unwrap()), json!({"fInt64":"7"}));
    assert_bad(build(&p, r#""seven""#, None), "fInt64");
}

#[test]
fn http_body_whole_takes_raw_bytes_and_content_type() {
    let p = RequestPlan::new(&msg("google.api.HttpBody"), "*", &[]).unwrap();
    let req = RequestInput {
        body: Bytes::from_static(b"\x00\xffnot json"),
        content_type: Some("image/png"),
        captures: &[],
        query: None,
    };
    let m = p.build(&JsonSettings::default(), req).unwrap();
    assert_eq!(m.get_field_by_name("data").unwrap().as_bytes().unwrap().as_ref(), b"\x00\xffnot json");
    assert_eq!(m.get_field_by_name("content_type").unwrap().as_str(), Some("image/png"));
}

#[test]
fn http_body_field_takes_raw_bytes_rest_from_path_and_query() {
    let p = RequestPlan::new(&msg("t.Upload"), "file", &vars(&["name"])).unwrap();
    let captures = ["doc".to_owned()];
    let req = RequestInput {
        body: Bytes::from_static(b"plain text"),
        content_type: Some("text/plain"),
        captures: &captures,
        query: None,
    };
    let m = p.build(&JsonSettings::default(), req).unwrap();
    assert_eq!(m.get_field_by_name("name").unwrap().as_str(), Some("doc"));
    let file = m.get_field_by_name("file").unwrap();
    let file = file.as_message().unwrap();
    assert_eq!(file.get_field_by_name("data").unwrap().as_bytes().unwrap().as_ref(), b"plain text");
    assert_eq!(file.get_field_by_name("content_type").unwrap().as_str(), Some("text/plain"));
}

// ---------------------------------------------------------------- path

#[test]
fn captures_set_nested_fields_and_override_the_body() {
    let p = plan("*", &["inner.deep.id", "f_int64", "ts"]);
    let captures = ["abc".to_owned(), "-9".to_owned(), "2024-01-02T03:04:05Z".to_owned()];
    let m = p
        .build(
            &JsonSettings::default(),
            input(r#"{"inner":{"name":"n","deep":{"id":"body"}},"fInt64":"1"}"#, &captures, None),
        )
        .unwrap();
    assert_eq!(
        as_json(&m),
        json!({"inner":{"name":"n","deep":{"id":"abc"}},"fInt64":"-9","ts":"2024-01-02T03:04:05Z"})
    );
}

#[test]
fn captures_of_every_leaf_kind() {
    let p = plan("", &["f_bool", "color", "f_bytes", "f_float", "dur", "w_int64", "mask", "f_uint64"]);
    let captures: Vec<String> =
        ["true", "GREEN", "aGk", "Infinity", "1.5s", "12", "a,b.c", "18446744073709551615"].map(String::from).to_vec();
    let m = p.build(&JsonSettings::default(), input("", &captures, None)).unwrap();
    assert_eq!(
        as_json(&m),
        json!({"fBool":true,"color":"GREEN","fBytes":"aGk=","fFloat":"Infinity","dur":"1.500s","wInt64":"12",
               "mask":"a,b.c","fUint64":"18446744073709551615"})
    );
}

#[test]
fn bad_capture_names_the_variable() {
    let p = plan("", &["inner.deep.n"]);
    let captures = ["x1".to_owned()];
    let err = p.build(&JsonSettings::default(), input("", &captures, None));
    assert_bad(err, "inner.deep.n");
    let p = plan("", &["color"]);
    let captures = ["BLUE".to_owned()];
    assert_bad(p.build(&JsonSettings::default(), input("", &captures, None)), "color");
}

#[test]
fn plan_rejects_unusable_paths() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("", &["nope"], "nope"),
        ("", &["inner.nope"], "inner.nope"),
        ("", &["f_string.x"], "f_string.x"),
        ("", &["inners.name"], "inners.name"),
        ("", &["tags"], "tags"),
        ("", &["counts"], "counts"),
        ("", &["inner"], "inner"),
        ("", &["meta"], "meta"),
        ("nope", &[], "nope"),
    ];
    for (body, paths, named) in cases {
        let err = RequestPlan::new(&all(), body, &vars(paths)).unwrap_err();
        assert!(err.to_string().contains(named), "{err} should name {named}");
    }
    // Proto names only in templates.
    assert!(RequestPlan::new(&all(), "", &vars(&["fInt64"])).is_err());
    assert!(RequestPlan::new(&all(), "", &vars(&["w_bool", "ts", "inner.deep.id"])).is_ok());
}

// ---------------------------------------------------------------- query

#[test]
fn query_sets_nested_repeated_and_map_fields() {
    assert_eq!(
        query_json("inner.deep.id=x&inner.deep.n=5&tags=a&tags=b,c&counts[k1]=3&inner.labels[a.b]=v&customName=r"),
        json!({"inner":{"deep":{"id":"x","n":"5"},"labels":{"a.b":"v"}},"tags":["a","b,c"],"counts":{"k1":"3"},
               "customName":"r"})
    );
    assert_eq!(query_json("inner.deep.id=1&inner.name=n"), json!({"inner":{"name":"n","deep":{"id":"1"}}}));
    assert_eq!(query_json("fInt64=1&f_int32=2"), json!({"fInt64":"1","fInt32":2}));
}

#[test]
fn query_decoding() {
    assert_eq!(query_json("fString=a+b%20c%2Bd%26"), json!({"fString":"a b c+d&"}));
    assert_eq!(query_json("f%5Fstring=%C3%A9"), json!({"fString":"é"}));
    assert_eq!(query_json("fString"), json!({}));
    assert_eq!(query_json("fString=a=b&&"), json!({"fString":"a=b"}));
    assert_bad(query("fString=%FF"), "fString");
}

#[test]
fn query_scalars_of_every_kind() {
    let q = "fDouble=1.5&fFloat=-Infinity&fInt32=-3&fInt64=-4&fUint32=5&fUint64=6&fSint32=-7&fSint64=-8\
             &fFixed32=9&fFixed64=10&fSfixed32=-11&fSfixed64=-12&fBool=1&fBytes=-_8&color=2&colors=RED&colors=1";
    assert_eq!(
        query_json(q),
        json!({"fDouble":1.5,"fFloat":"-Infinity","fInt32":-3,"fInt64":"-4","fUint32":5,"fUint64":"6","fSint32":-7,
               "fSint64":"-8","fFixed32":9,"fFixed64":"10","fSfixed32":-11,"fSfixed64":"-12","fBool":true,
               "fBytes":"+/8=","color":"GREEN","colors":["RED","RED"]})
    );
    let m = query("fDouble=NaN&fBool=false").unwrap();
    assert!(m.get_field_by_name("f_double").unwrap().as_f64().unwrap().is_nan());
    assert_eq!(query_json("fBytes=aGVsbG8%3D&fDouble=Infinity"), json!({"fBytes":"aGVsbG8=","fDouble":"Infinity"}));
}

#[test]
fn query_well_known_types() {
    assert_eq!(
        query_json("ts=2024-05-06T07:08:09.5Z&dur=-2.5s&mask=a,b.c&wInt64=7&wBool=false&wString=&wDouble=NaN&stamps=1970-01-01T00:00:01Z"),
        json!({"ts":"2024-05-06T07:08:09.500Z","dur":"-2.500s","mask":"a,b.c","wInt64":"7","wBool":false,"wString":"",
               "wDouble":null,"stamps":["1970-01-01T00:00:01Z"]})
    );
    // prost-reflect writes a NaN DoubleValue as null; what was parsed is NaN.
    let m = query("wDouble=NaN").unwrap();
    let w = m.get_field_by_name("w_double").unwrap();
    assert!(w.as_message().unwrap().get_field_by_name("value").unwrap().as_f64().unwrap().is_nan());
    assert_bad(query("ts=soon"), "ts");
    assert_bad(query("dur=5"), "dur");
    assert_bad(query("wBool=yes"), "wBool");
}

#[test]
fn query_field_mask_paths_in_proto_names_are_taken_as_written() {
    // grpc-gateway's clients write `?update_mask=display_name`, which the
    // JSON form (lowerCamel, no `_`) cannot hold; other paths still read as
    // the JSON form.
    let m = query("mask=f_int32,inner.deep.id,fString").unwrap();
    let mask = m.get_field_by_name("mask").unwrap();
    let paths = mask.as_message().unwrap().get_field_by_name("paths").unwrap();
    let paths: Vec<&str> = paths.as_list().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(paths, ["f_int32", "inner.deep.id", "f_string"]);
    assert_bad(query("mask=f_int32,a-b"), "mask");
    assert_bad(query("mask=f_int32,"), "mask");
    assert_bad(query("mask=f_int32..id"), "mask");
}

#[test]
fn query_parse_errors_name_the_parameter() {
    for (q, name) in [
        ("fInt32=2147483648", "fInt32"),
        ("fInt64=abc", "fInt64"),
        ("fUint32=-1", "fUint32"),
        ("fFloat=1e40", "fFloat"),
        ("fDouble=1e400", "fDouble"),
        ("fDouble=inf", "fDouble"),
        ("fBool=yes", "fBool"),
        ("fBool", "fBool"),
        ("fBytes=*", "fBytes"),
        ("color=PURPLE", "color"),
        ("by_id[x]=1", "by_id[x]"),
        ("byFlag[maybe]=1", "byFlag[maybe]"),
    ] {
        assert_bad(query(q), name);
    }
    assert_eq!(query_json("byFlag[true]=y"), json!({"byFlag":{"true":"y"}}));
}

#[test]
fn query_names_that_resolve_to_nothing() {
    for (q, name) in [
        ("nope=1", "nope"),
        ("inner.nope=1", "inner.nope"),
        ("inner=x", "inner"),
        ("meta=x", "meta"),
        ("inners.name=x", "inners.name"),
        ("tags.x=1", "tags.x"),
        ("counts=1", "counts"),
        ("fString[a]=1", "fString[a]"),
        ("by_id[1].name=x", "by_id[1].name"),
        ("inner.name.x=1", "inner.name.x"),
        ("inner.=1", "inner."),
    ] {
        assert_bad(query(q), name);
    }
    let lax = JsonSettings::new(&JsonOptions { unknown_query_params: Strictness::Ignore, ..Default::default() });
    let m = plan("", &[]).build(&lax, input("", &[], Some("nope=1&inner=x&fString=ok"))).unwrap();
    assert_eq!(as_json(&m), json!({"fString":"ok"}));
    // Ignoring unknown names does not extend to bad values.
    assert!(plan("", &[]).build(&lax, input("", &[], Some("fInt32=x"))).is_err());
}

#[test]
fn query_rejects_a_singular_field_twice_and_two_oneof_members() {
    assert_bad(query("fString=a&fString=b"), "fString");
    assert_bad(query("fString=a&f_string=b"), "f_string");
    assert_bad(query("counts[a]=1&counts[a]=2"), "counts[a]");
    assert_bad(query("cText=a&cNum=1"), "cNum");
    assert_eq!(query_json("counts[a]=1&counts[b]=2"), json!({"counts":{"a":"1","b":"2"}}));
    assert_eq!(query_json("cInner.name=x"), json!({"cInner":{"name":"x"}}));
    // A member and a sub-field of another member are two members too.
    assert_bad(query("cText=a&cInner.name=x"), "cInner.name");
    assert_bad(query("cInner.name=x&cText=a"), "cText");
    assert_eq!(query_json("cInner.name=x&cInner.deep.id=y"), json!({"cInner":{"name":"x","deep":{"id":"y"}}}));
}

#[test]
fn query_collisions_with_path_and_body() {
    let settings = JsonSettings::default();
    let captures = ["p".to_owned()];
    let p = plan("", &["inner.deep.id"]);
    let run = |q: &'static str| p.build(&settings, input("", &captures, Some(q)));
    assert_bad(run("inner.deep.id=q"), "inner.deep.id");
    assert_bad(run("inner.deep.id=q"), "inner.deep.id");
    assert!(run("inner.deep.n=1").is_ok());
    let p = plan("", &["ts"]);
    let r = p.build(&settings, input("", &captures, Some("ts.seconds=5")));
    assert_bad(r, "ts.seconds");

    let whole = plan("*", &[]);
    assert_bad(build(&whole, "{}", Some("fString=x")), "fString");
    let field = plan("inner", &[]);
    assert_bad(build(&field, "{}", Some("inner.name=x")), "inner.name");
    assert!(build(&field, "{}", Some("innerx=1")).is_err());
    assert!(build(&field, "{}", Some("fString=x")).is_ok());
}

#[test]
fn with_path_wins_a_query_parameter_on_a_path_bound_field_is_dropped() {
    use crate::config::QueryPathConflict;
    let settings =
        JsonSettings::new(&JsonOptions { query_path_conflict: QueryPathConflict::PathWins, ..Default::default() });
    let captures = ["p".to_owned()];
    let p = plan("", &["inner.deep.id"]);
    let run = |q: &'static str| p.build(&settings, input("", &captures, Some(q)));
    // The path's value stays; other fields still come from the query.
    let m = run("inner.deep.id=q&inner.deep.n=1").unwrap();
    assert_eq!(as_json(&m), json!({"inner":{"deep":{"id":"p","n":"1"}}}));
    // Bodies still refuse: the switch is about the path only.
    let field = plan("inner", &[]);
    let lax_field = field.build(&settings, input("{}", &[], Some("inner.name=x")));
    assert_bad(lax_field, "inner.name");
}

#[test]
fn path_wins_over_query_order_does_not_matter() {
    let p = plan("", &["f_string"]);
    let captures = ["path".to_owned()];
    let m = p.build(&JsonSettings::default(), input("", &captures, Some("fInt32=3"))).unwrap();
    assert_eq!(as_json(&m), json!({"fString":"path","fInt32":3}));
}

// ---------------------------------------------------------------- integer bounds

/// Every integer kind and integer wrapper of the conformance message: JSON
/// name, the type errors name, and the bounds.
const INTEGER_FIELDS: [(&str, &str, i128, i128); 14] = {
    const I32: (i128, i128) = (i32::MIN as i128, i32::MAX as i128);
    const U32: (i128, i128) = (0, u32::MAX as i128);
    const I64: (i128, i128) = (i64::MIN as i128, i64::MAX as i128);
    const U64: (i128, i128) = (0, u64::MAX as i128);
    [
        ("int32Value", "int32", I32.0, I32.1),
        ("sint32Value", "sint32", I32.0, I32.1),
        ("sfixed32Value", "sfixed32", I32.0, I32.1),
        ("uint32Value", "uint32", U32.0, U32.1),
        ("fixed32Value", "fixed32", U32.0, U32.1),
        ("int64Value", "int64", I64.0, I64.1),
        ("sint64Value", "sint64", I64.0, I64.1),
        ("sfixed64Value", "sfixed64", I64.0, I64.1),
        ("uint64Value", "uint64", U64.0, U64.1),
        ("fixed64Value", "fixed64", U64.0, U64.1),
        ("int32Wrapper", "google.protobuf.Int32Value", I32.0, I32.1),
        ("uint32Wrapper", "google.protobuf.UInt32Value", U32.0, U32.1),
        ("int64Wrapper", "google.protobuf.Int64Value", I64.0, I64.1),
        ("uint64Wrapper", "google.protobuf.UInt64Value", U64.0, U64.1),
    ]
};

fn all_types() -> MessageDescriptor {
    msg("protogate.test.v1.AllTypes")
}

fn all_types_plan(body: &str, variables: &[&str]) -> RequestPlan {
    RequestPlan::new(&all_types(), body, &vars(variables)).unwrap()
}

fn all_types_body(body: &str) -> Result<DynamicMessage, GatewayError> {
    build(&all_types_plan("*", &[]), body, None)
}

fn proto_name(json_name: &str) -> String {
    all_types().get_field_by_json_name(json_name).unwrap().name().to_owned()
}

/// The integer a singular integer field (or wrapper) of `m` holds; `None`
/// when it is not set.
fn integer_in(m: &DynamicMessage, json_name: &str) -> Option<i128> {
    let field = prost_reflect::ReflectMessage::descriptor(m).get_field_by_json_name(json_name).unwrap();
    if field.kind().as_message().is_some() && !m.has_field(&field) {
        return None;
    }
    let value = m.get_field(&field);
    let value = match value.as_message() {
        Some(wrapper) => wrapper.get_field_by_name("value").unwrap().into_owned(),
        None => value.into_owned(),
    };
    Some(match value {
        Value::I32(v) => v.into(),
        Value::U32(v) => v.into(),
        Value::I64(v) => v.into(),
        Value::U64(v) => v.into(),
        other => panic!("{json_name} holds {other:?}"),
    })
}

/// `v` written as a JSON number in several ways, each denoting exactly `v`:
/// plain, with zero fractions, with exponents.
fn spellings(v: i128) -> Vec<String> {
    if v == 0 {
        return ["0", "-0", "0.0", "0e7", "-0.00000000000000000000", "0.0000000000000000000e-3"]
            .map(String::from)
            .to_vec();
    }
    let plain = v.to_string();
    let (sign, digits) = plain.split_at(usize::from(v < 0));
    let (head, tail) = digits.split_at(1);
    let scientific =
        if tail.is_empty() { format!("{sign}{head}e0") } else { format!("{sign}{head}.{tail}e{}", tail.len()) };
    vec![
        plain.clone(),
        format!("{plain}.0"),
        format!("{plain}.00000000000000000000"),
        format!("{plain}0e-1"),
        scientific,
        format!("{sign}0.{digits}E+{}", digits.len()),
    ]
}

/// Asserts a 400 naming `field` whose description names the type `ty`.
#[track_caller]
fn assert_refused(result: Result<DynamicMessage, GatewayError>, field: &str, ty: &str, sent: &str) {
    let err = match result {
        Ok(m) => panic!("{sent} was accepted as {}", as_json(&m)),
        Err(err) => err,
    };
    assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, Code::InvalidArgument), "{sent}: {err}");
    assert_eq!(err.violations.len(), 1, "{sent}: {err}");
    assert_eq!(err.violations[0].field, field, "{sent}: {err}");
    assert!(err.violations[0].description.contains(ty), "{sent}: {}", err.violations[0].description);
}

#[test]
fn json_numbers_at_the_bounds_keep_their_exact_value() {
    for (field, _, min, max) in INTEGER_FIELDS {
        // One inside too: an f64 saturates onto the bounds themselves.
        for bound in [min, min + 1, max - 1, max] {
            for number in spellings(bound) {
                let body = format!(r#"{{"{field}": {number}}}"#);
                let m = all_types_body(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
                assert_eq!(integer_in(&m, field), Some(bound), "{body}");
            }
            let body = format!(r#"{{"{field}": "{bound}"}}"#);
            assert_eq!(integer_in(&all_types_body(&body).unwrap(), field), Some(bound), "{body}");
        }
    }
}

#[test]
fn json_numbers_past_the_bounds_are_refused_naming_the_field() {
    for (field, ty, min, max) in INTEGER_FIELDS {
        for past in [min - 1, max + 1] {
            for number in spellings(past).into_iter().chain([format!(r#""{past}""#)]) {
                let body = format!(r#"{{"{field}": {number}}}"#);
                assert_refused(all_types_body(&body), field, ty, &body);
            }
        }
        // Far past, where a literal has more digits than any integer kind.
        for number in ["1e20", "-1e20", "1e400", "123456789012345678901234567890", "1e1000000000000000000000"] {
            let body = format!(r#"{{"{field}": {number}}}"#);
            assert_refused(all_types_body(&body), field, ty, &body);
        }
    }
}

#[test]
fn json_numbers_that_are_not_whole_are_refused_even_when_an_f64_rounds_them() {
    for (field, ty, min, max) in INTEGER_FIELDS {
        let near = [
            format!("{max}.5"),
            format!("{}.999999999999999999", max - 1),
            format!("{max}.00000001"),
            format!("{}.00000000000000000001", min),
            format!("{}.5", min + 1),
            "1.0000000000000001".to_owned(),
            "0.99999999999999999999".to_owned(),
            "1e-400".to_owned(),
            format!("0.{}1", "0".repeat(400)),
            "12345678901234567e-1".to_owned(),
        ];
        for number in near {
            let body = format!(r#"{{"{field}": {number}}}"#);
            assert_refused(all_types_body(&body), field, ty, &body);
        }
    }
    let err = all_types_body(r#"{"int32Value": 2147483646.99999999999}"#).unwrap_err();
    assert_eq!(err.violations[0].description, "invalid value for int32: expected integer value");
    let err = all_types_body(r#"{"uint64Value": 18446744073709551616}"#).unwrap_err();
    assert_eq!(err.violations[0].description, "invalid value for uint64: 18446744073709551616 is out of range");
    assert_eq!(err.message, "uint64Value: invalid value for uint64: 18446744073709551616 is out of range");
    // A long literal is cut in the description.
    let err = all_types_body(&format!(r#"{{"uint64Value": 18446744073709551616.{}}}"#, "0".repeat(100))).unwrap_err();
    assert!(err.violations[0].description.ends_with("0… is out of range"), "{}", err.violations[0].description);
}

#[test]
fn integer_literals_anywhere_in_the_body_are_judged_exactly() {
    let any_of = |ty: &str, rest: &str| format!(r#"{{"any": {{"@type": "type.googleapis.com/{ty}", {rest}}}}}"#);
    let all_types_any = any_of("protogate.test.v1.AllTypes", r#""repeatedUint64": [18446744073709551616]"#);
    let wrapper_any = any_of("google.protobuf.UInt64Value", r#""value": 18446744073709551616"#);
    let type_last = r#"{"any": {"nested": {"values": [2147483647.0000000001]}, "@type": "type.googleapis.com/protogate.test.v1.AllTypes"}}"#;
    let whole = all_types_plan("*", &[]);
    let cases: &[(&RequestPlan, &str, &str)] = &[
        (&whole, r#"{"repeatedUint64": [1, 18446744073709551616]}"#, "repeatedUint64[1]"),
        (&whole, r#"{"repeatedInt64": [-9223372036854775809]}"#, "repeatedInt64[0]"),
        (&whole, r#"{"repeated_int32": [0, 1, 2147483647.00000000001]}"#, "repeated_int32[2]"),
        (&whole, r#"{"mapStringInt32": {"a": 1, "b.c": 2147483648.000000001}}"#, "mapStringInt32.b.c"),
        (&whole, r#"{"mapStringNested": {"k": {"values": [1e-400]}}}"#, "mapStringNested.k.values[0]"),
        (&whole, r#"{"number": 2147483647.00000001}"#, "number"),
        (&whole, r#"{"optionalInt32": -2147483648.5000000001}"#, "optionalInt32"),
        (&whole, r#"{"nested": {"child": {"values": [4294967295.00000001]}}}"#, "nested.child.values[0]"),
        (&whole, r#"{"repeatedNested": [{}, {"values": [1.0000000000000001]}]}"#, "repeatedNested[1].values[0]"),
        (&whole, r#"{"int64_value": 9223372036854775808.0}"#, "int64_value"),
        (&whole, r#"{"uint64\u0056alue": 18446744073709551616}"#, "uint64Value"),
        (&whole, &all_types_any, "any.repeatedUint64[0]"),
        (&whole, &wrapper_any, "any.value"),
        (&whole, type_last, "any.nested.values[0]"),
        (&all_types_plan("nested", &[]), r#"{"values": [1, 2147483648.0000000001]}"#, "nested.values[1]"),
        (&all_types_plan("uint64_value", &[]), "18446744073709551616", "uint64Value"),
        (&all_types_plan("repeated_uint64", &[]), "[0, 18446744073709551616]", "repeatedUint64[1]"),
        (&all_types_plan("uint64_wrapper", &[]), "18446744073709551616", "uint64Wrapper"),
    ];
    for (plan, body, field) in cases {
        assert_bad(build(plan, body, None), field);
    }
    // 64-bit map values, in the inline schema.
    assert_bad(build(&plan("*", &[]), r#"{"counts": {"a": "1", "b": 9223372036854775808}}"#, None), "counts.b");
}

#[test]
fn exact_integers_leave_doubles_and_prost_reflect_rules_alone() {
    let m = all_types_body(
        r#"{"int64Value": 9007199254740993.0, "int64Wrapper": 123456789012345e4, "doubleValue": 9007199254740993.0,
            "repeatedDouble": [1.0000000000000001, 18446744073709551616], "structValue": {"a": 18446744073709551616},
            "value": 1.5e300, "repeatedUint64": ["18446744073709551615", 1.8446744073709551615e19, 0]}"#,
    )
    .unwrap();
    assert_eq!(
        as_json(&m),
        json!({"int64Value": "9007199254740993", "int64Wrapper": "1234567890123450000",
               "doubleValue": serde_json::from_str::<f64>("9007199254740993.0").unwrap(),
               "repeatedDouble": [1.0, 18446744073709551616.0], "structValue": {"a": 18446744073709551616.0},
               "value": 1.5e300, "repeatedUint64": ["18446744073709551615", "18446744073709551615", "0"]})
    );
    // A repeated key: the last non-null occurrence wins, as before.
    let m = all_types_body(r#"{"int64Value": 9007199254740993.0, "int64Value": 5}"#).unwrap();
    assert_eq!(integer_in(&m, "int64Value"), Some(5));
    let m = all_types_body(r#"{"int64Value": 9007199254740993.0, "int64_value": null}"#).unwrap();
    assert_eq!(integer_in(&m, "int64Value"), Some(9007199254740993));
    // Map values and keys, and the body field prefix of a rewritten body.
    let m = build(&plan("*", &[]), r#"{"counts": {"9007199254740993": 9007199254740993.00}}"#, None).unwrap();
    assert_eq!(as_json(&m), json!({"counts": {"9007199254740993": "9007199254740993"}}));
    let m = build(&all_types_plan("uint64_value", &[]), "18446744073709551615.0", None).unwrap();
    assert_eq!(integer_in(&m, "uint64Value"), Some(u64::MAX.into()));
    // Unknown fields that are ignored are not judged.
    let lax = JsonSettings::new(&JsonOptions { unknown_fields: Strictness::Ignore, ..Default::default() });
    let body = r#"{"bogus": 18446744073709551616, "nested": {"bogus": [1.0000000000000001]}, "int32Value": 7}"#;
    let m = all_types_plan("*", &[]).build(&lax, input(body, &[], None)).unwrap();
    assert_eq!(as_json(&m), json!({"nested": {}, "int32Value": 7}));
    // Strings and escapes with digits in them are not numbers.
    let m = all_types_body(r#"{"stringValue": "\"12345678901234567890\\", "int32Value": 1}"#).unwrap();
    assert_eq!(as_json(&m), json!({"stringValue": "\"12345678901234567890\\", "int32Value": 1}));
}

#[test]
fn query_and_path_integers_at_and_past_the_bounds() {
    let settings = JsonSettings::default();
    for (field, _, min, max) in INTEGER_FIELDS {
        let name = proto_name(field);
        let by_query = |text: &str| build(&all_types_plan("", &[]), "", Some(&format!("{field}={text}")));
        let by_path = |text: &str| {
            let captures = [text.to_owned()];
            all_types_plan("", &[&name]).build(&settings, input("", &captures, None))
        };
        for bound in [min, max] {
            let text = bound.to_string();
            assert_eq!(integer_in(&by_query(&text).unwrap(), field), Some(bound), "query {field}={text}");
            assert_eq!(integer_in(&by_path(&text).unwrap(), field), Some(bound), "path {name}={text}");
        }
        for past in [min - 1, max + 1] {
            let text = past.to_string();
            assert_bad(by_query(&text), field);
            assert_bad(by_path(&text), &name);
        }
    }
}

/// One rule for integers as text, whether in a JSON string, a query
/// parameter or a path variable: an optional sign, then decimal digits.
#[test]
fn integer_text_forms_agree_between_json_strings_query_and_path() {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let settings = JsonSettings::default();
    let forms = |text: &str| {
        let json = build(&all_types_plan("*", &[]), &json!({ "int64Value": text }).to_string(), None);
        let query = build(
            &all_types_plan("", &[]),
            "",
            Some(&format!("int64Value={}", utf8_percent_encode(text, NON_ALPHANUMERIC))),
        );
        let captures = [text.to_owned()];
        let path = all_types_plan("", &["int64_value"]).build(&settings, input("", &captures, None));
        [("JSON string", json), ("query", query), ("path", path)]
    };
    for (text, value) in [("+5", 5), ("007", 7), ("-0", 0), ("-12", -12), ("+9223372036854775807", i64::MAX.into())] {
        for (form, result) in forms(text) {
            let m = result.unwrap_or_else(|e| panic!("{form} {text:?}: {e}"));
            assert_eq!(integer_in(&m, "int64Value"), Some(value), "{form} {text:?}");
        }
    }
    for text in ["1.0", "1e2", "1E2", " 5", "5 ", "0x10", "", "+", "-", "1_000", "++1", "9223372036854775808"] {
        for (form, result) in forms(text) {
            assert!(result.is_err(), "{form} {text:?} was accepted");
        }
    }
    // Unsigned kinds take no minus sign at all in text, not even on zero.
    assert!(query("fUint64=-0").is_err());
    assert_eq!(query_json("fUint64=%2B0"), json!({}));
}

// ---------------------------------------------------------------- response

fn sample() -> DynamicMessage {
    body_json(r#"{"fInt64":"5","fString":"s","color":"RED","inner":{"name":"n"},"tags":["a"],"fDouble":0.5}"#)
}

fn render_str(plan: &ResponsePlan, settings: &JsonSettings, m: &DynamicMessage) -> String {
    let r = plan.render(settings, m).unwrap();
    assert_eq!(r.content_type, "application/json");
    String::from_utf8(r.body.to_vec()).unwrap()
}

#[test]
fn render_whole_message_with_default_options() {
    let p = ResponsePlan::new(&all(), "").unwrap();
    assert_eq!(p.output().full_name(), "t.All");
    let out = render_str(&p, &JsonSettings::default(), &sample());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"fDouble":0.5,"fInt64":"5","fString":"s","color":"RED","inner":{"name":"n"},"tags":["a"]})
    );
    assert!(!out.contains('\n'));
}

#[test]
fn render_honours_json_options() {
    let p = ResponsePlan::new(&all(), "").unwrap();
    let settings = JsonSettings::new(&JsonOptions {
        use_proto_names: true,
        enums_as_ints: true,
        int64_as_numbers: true,
        pretty: true,
        ..Default::default()
    });
    let out = render_str(&p, &settings, &sample());
    assert!(out.contains("\n  \""), "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        json!({"f_double":0.5,"f_int64":5,"f_string":"s","color":1,"inner":{"name":"n"},"tags":["a"]})
    );
    let settings = JsonSettings::new(&JsonOptions { emit_unpopulated: true, ..Default::default() });
    let out: serde_json::Value = serde_json::from_str(&render_str(&p, &settings, &sample())).unwrap();
    assert_eq!(out["fInt32"], json!(0));
    assert_eq!(out["fUint64"], json!("0"));
    assert_eq!(out["colors"], json!([]));
}

#[test]
fn render_response_body_field_even_when_default() {
    let settings = JsonSettings::default();
    let empty = DynamicMessage::new(all());
    let cases = [
        ("inner", r#"{"name":"n"}"#, "{}"),
        ("tags", r#"["a"]"#, "[]"),
        ("f_string", r#""s""#, r#""""#),
        ("f_int64", r#""5""#, r#""0""#),
        ("color", r#""RED""#, r#""COLOR_UNSPECIFIED""#),
        ("f_double", "0.5", "0.0"),
        ("counts", "{}", "{}"),
        ("ts", r#""1970-01-01T00:00:00Z""#, r#""1970-01-01T00:00:00Z""#),
    ];
    for (field, set, unset) in cases {
        let p = ResponsePlan::new(&all(), field).unwrap();
        assert_eq!(render_str(&p, &settings, &sample()), set, "{field}");
        let got: serde_json::Value = serde_json::from_str(&render_str(&p, &settings, &empty)).unwrap();
        let want: serde_json::Value = serde_json::from_str(unset).unwrap();
        assert_eq!(got, want, "{field}");
    }
    let m =
        body_json(r#"{"counts":{"a":"-1"},"byId":{"3":{"name":"x"}},"fBytes":"aGk=","fFloat":"NaN","colors":[1,7]}"#);
    for (field, want) in [
        ("counts", json!({"a":"-1"})),
        ("by_id", json!({"3":{"name":"x"}})),
        ("f_bytes", json!("aGk=")),
        ("f_float", json!("NaN")),
        ("colors", json!(["RED", 7])),
    ] {
        let p = ResponsePlan::new(&all(), field).unwrap();
        let got: serde_json::Value = serde_json::from_str(&render_str(&p, &settings, &m)).unwrap();
        assert_eq!(got, want, "{field}");
    }
    let numbers = JsonSettings::new(&JsonOptions { int64_as_numbers: true, enums_as_ints: true, ..Default::default() });
    let p = ResponsePlan::new(&all(), "counts").unwrap();
    assert_eq!(render_str(&p, &numbers, &m), r#"{"a":-1}"#);
    let p = ResponsePlan::new(&all(), "colors").unwrap();
    assert_eq!(render_str(&p, &numbers, &m), "[1,7]");
    assert!(ResponsePlan::new(&all(), "nope").is_err());
}

#[test]
fn render_http_body_raw() {
    let desc = msg("google.api.HttpBody");
    let p = ResponsePlan::new(&desc, "").unwrap();
    let mut body = DynamicMessage::new(desc.clone());
    body.set_field_by_name("data", Value::Bytes(Bytes::from_static(b"<html/>")));
    body.set_field_by_name("content_type", Value::String("text/html".into()));
    let r = p.render(&JsonSettings::default(), &body).unwrap();
    assert_eq!(r.body.as_ref(), b"<html/>");
    assert_eq!(r.content_type, "text/html");
    body.set_field_by_name("content_type", Value::String(String::new()));
    let r = p.render(&JsonSettings::default(), &body).unwrap();
    assert_eq!(r.content_type, "application/octet-stream");

    let p = ResponsePlan::new(&msg("t.Download"), "file").unwrap();
    let mut d = DynamicMessage::new(msg("t.Download"));
    d.set_field_by_name("name", Value::String("x".into()));
    d.set_field_by_name("file", Value::Message(body));
    let r = p.render(&JsonSettings::default(), &d).unwrap();
    assert_eq!(r.body.as_ref(), b"<html/>");
}

#[test]
fn unrenderable_response_is_internal_not_a_panic() {
    let mut m = DynamicMessage::new(all());
    let any = prost_types::Any { type_url: "type.googleapis.com/nowhere.Unknown".into(), value: vec![1, 2] };
    let mut any_msg = DynamicMessage::new(msg("google.protobuf.Any"));
    any_msg.transcode_from(&any).unwrap();
    m.set_field_by_name("any", Value::Message(any_msg));
    let p = ResponsePlan::new(&all(), "").unwrap();
    let err = p.render(&JsonSettings::default(), &m).err().unwrap();
    assert_eq!(err.code, Code::Internal);
    assert!(err.message.contains("nowhere.Unknown"), "{}", err.message);
}

// ---------------------------------------------------------------- status

fn envelope(err: &GatewayError, settings: &JsonSettings) -> serde_json::Value {
    serde_json::from_slice(&status::render_error(err, pool(), settings)).unwrap()
}

#[test]
fn error_envelope_always_has_details() {
    let err = GatewayError::not_found("no route");
    assert_eq!(envelope(&err, &JsonSettings::default()), json!({"code":5,"message":"no route","details":[]}));
}

#[test]
fn violations_become_a_bad_request_detail() {
    let err = build(&plan("*", &[]), r#"{"inner":{"values":[1,"x"]}}"#, None).unwrap_err();
    let out = envelope(&err, &JsonSettings::default());
    assert_eq!(out["code"], json!(3));
    assert_eq!(out["message"], json!(err.message));
    assert_eq!(out["details"][0]["@type"], json!("type.googleapis.com/google.rpc.BadRequest"));
    assert_eq!(out["details"][0]["fieldViolations"][0]["field"], json!("inner.values[1]"));
    assert_eq!(out["details"][0]["fieldViolations"][0]["description"], json!(err.violations[0].description));
    let proto_names = JsonSettings::new(&JsonOptions { use_proto_names: true, pretty: true, ..Default::default() });
    let raw = status::render_error(&err, pool(), &proto_names);
    assert!(raw.contains(&b'\n'));
    let out: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(out["details"][0]["field_violations"][0]["field"], json!("inner.values[1]"));
}

#[test]
fn backend_details_render_through_the_pool_or_fall_back() {
    let mut bad_request = DynamicMessage::new(msg("google.rpc.BadRequest"));
    let mut violation = DynamicMessage::new(msg("google.rpc.BadRequest.FieldViolation"));
    violation.set_field_by_name("field", Value::String("name".into()));
    bad_request.set_field_by_name("field_violations", Value::List(vec![Value::Message(violation)]));
    let mut retry = DynamicMessage::new(msg("google.rpc.RetryInfo"));
    let mut delay = DynamicMessage::new(msg("google.protobuf.Duration"));
    delay.set_field_by_name("seconds", Value::I64(3));
    retry.set_field_by_name("retry_delay", Value::Message(delay));
    let details = [
        prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
            value: bad_request.encode_to_vec(),
        },
        prost_types::Any { type_url: "type.googleapis.com/acme.Secret".into(), value: vec![1, 2, 3] },
        prost_types::Any { type_url: "type.googleapis.com/google.rpc.RetryInfo".into(), value: retry.encode_to_vec() },
    ];
    let mut status = DynamicMessage::new(msg("google.rpc.Status"));
    status.set_field_by_name("code", Value::I32(9));
    status.set_field_by_name("message", Value::String("backend says".into()));
    let any_desc = msg("google.protobuf.Any");
    let anys = details
        .iter()
        .map(|a| {
            let mut m = DynamicMessage::new(any_desc.clone());
            m.transcode_from(a).unwrap();
            Value::Message(m)
        })
        .collect();
    status.set_field_by_name("details", Value::List(anys));
    let tonic_status = tonic::Status::with_details(
        tonic::Code::FailedPrecondition,
        "precondition",
        Bytes::from(status.encode_to_vec()),
    );
    let err = GatewayError::from_upstream(&tonic_status);
    assert_eq!(
        envelope(&err, &JsonSettings::default()),
        json!({"code":9,"message":"precondition","details":[
            {"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"name"}]},
            {"@type":"type.googleapis.com/acme.Secret","value":"AQID"},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"},
        ]})
    );
    // Garbage instead of a Status: still a valid envelope.
    let mut garbage = GatewayError::from_upstream(&tonic::Status::internal("x"));
    garbage.backend_details = Some(Bytes::from_static(b"\xff\xff\xff"));
    assert_eq!(envelope(&garbage, &JsonSettings::default()), json!({"code":13,"message":"x","details":[]}));
}

// ---------------------------------------------------------------- round trip

mod roundtrip {
    use proptest::prelude::*;

    use super::*;

    fn scalar_fields() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
        (
            (
                any::<i32>().prop_map(|v| f64::from(v) / 8.0),
                any::<i16>().prop_map(|v| f32::from(v) / 4.0),
                any::<i32>(),
                any::<i64>(),
                any::<u32>(),
                any::<u64>(),
                any::<i32>(),
                any::<i64>(),
            ),
            (
                any::<u32>(),
                any::<u64>(),
                any::<i32>(),
                any::<i64>(),
                any::<bool>(),
                ".{0,8}",
                proptest::collection::vec(any::<u8>(), 0..8),
                0..3i32,
            ),
        )
            .prop_map(
                |((d, f, i32_, i64_, u32_, u64_, s32, s64), (f32_, f64_, sf32, sf64, b, s, bytes, color))| {
                    vec![
                        ("f_double", Value::F64(d)),
                        ("f_float", Value::F32(f)),
                        ("f_int32", Value::I32(i32_)),
                        ("f_int64", Value::I64(i64_)),
                        ("f_uint32", Value::U32(u32_)),
                        ("f_uint64", Value::U64(u64_)),
                        ("f_sint32", Value::I32(s32)),
                        ("f_sint64", Value::I64(s64)),
                        ("f_fixed32", Value::U32(f32_)),
                        ("f_fixed64", Value::U64(f64_)),
                        ("f_sfixed32", Value::I32(sf32)),
                        ("f_sfixed64", Value::I64(sf64)),
                        ("f_bool", Value::Bool(b)),
                        ("f_string", Value::String(s)),
                        ("f_bytes", Value::Bytes(bytes.into())),
                        ("color", Value::EnumNumber(color)),
                    ]
                },
            )
    }

    fn inner() -> impl Strategy<Value = DynamicMessage> {
        (
            "[a-z]{0,4}",
            proptest::collection::vec(any::<i32>(), 0..3),
            proptest::option::of(("[a-z]{0,3}", any::<i64>())),
        )
            .prop_map(|(name, values, deep)| {
                let mut m = DynamicMessage::new(msg("t.Inner"));
                m.set_field_by_name("name", Value::String(name));
                m.set_field_by_name("values", Value::List(values.into_iter().map(Value::I32).collect()));
                if let Some((id, n)) = deep {
                    let mut d = DynamicMessage::new(msg("t.Deep"));
                    d.set_field_by_name("id", Value::String(id));
                    d.set_field_by_name("n", Value::I64(n));
                    m.set_field_by_name("deep", Value::Message(d));
                }
                m
            })
    }

    fn message() -> impl Strategy<Value = DynamicMessage> {
        (
            scalar_fields(),
            proptest::option::of(inner()),
            proptest::collection::vec(inner(), 0..3),
            proptest::collection::vec(".{0,4}", 0..3),
            proptest::collection::hash_map("[a-z]{0,3}", any::<i64>(), 0..3),
            proptest::option::of((-62135596800i64..253402300799, 0..1_000_000_000i32)),
            proptest::option::of((-315576000000i64..315576000000, 0..1_000_000_000i32)),
            proptest::option::of(any::<i64>()),
            0..4u8,
            proptest::collection::vec(0..3i32, 0..3),
        )
            .prop_map(|(scalars, inner_msg, inners, tags, counts, ts, dur, wrapped, choice, colors)| {
                let mut m = DynamicMessage::new(all());
                for (name, value) in scalars {
                    m.set_field_by_name(name, value);
                }
                if let Some(i) = inner_msg {
                    m.set_field_by_name("inner", Value::Message(i));
                }
                m.set_field_by_name("inners", Value::List(inners.into_iter().map(Value::Message).collect()));
                m.set_field_by_name("tags", Value::List(tags.into_iter().map(Value::String).collect()));
                m.set_field_by_name(
                    "counts",
                    Value::Map(counts.into_iter().map(|(k, v)| (MapKey::String(k), Value::I64(v))).collect()),
                );
                if let Some((seconds, nanos)) = ts {
                    let mut t = DynamicMessage::new(msg("google.protobuf.Timestamp"));
                    t.transcode_from(&prost_types::Timestamp { seconds, nanos }).unwrap();
                    m.set_field_by_name("ts", Value::Message(t));
                }
                if let Some((seconds, nanos)) = dur {
                    // Duration's seconds and nanos must share their sign.
                    let nanos = if seconds < 0 { -nanos } else { nanos };
                    let mut d = DynamicMessage::new(msg("google.protobuf.Duration"));
                    d.transcode_from(&prost_types::Duration { seconds, nanos }).unwrap();
                    m.set_field_by_name("dur", Value::Message(d));
                }
                if let Some(v) = wrapped {
                    let mut w = DynamicMessage::new(msg("google.protobuf.Int64Value"));
                    w.set_field_by_name("value", Value::I64(v));
                    m.set_field_by_name("w_int64", Value::Message(w));
                }
                match choice {
                    1 => m.set_field_by_name("c_text", Value::String("t".into())),
                    2 => m.set_field_by_name("c_num", Value::I32(0)),
                    3 => m.set_field_by_name("c_inner", Value::Message(DynamicMessage::new(msg("t.Inner")))),
                    _ => {}
                }
                m.set_field_by_name("colors", Value::List(colors.into_iter().map(Value::EnumNumber).collect()));
                m
            })
    }

    proptest! {
        #[test]
        fn render_then_build_is_identity(m in message()) {
            let settings = JsonSettings::default();
            let rendered = ResponsePlan::new(&all(), "").unwrap().render(&settings, &m).unwrap();
            let back = RequestPlan::new(&all(), "*", &[]).unwrap()
                .build(&settings, RequestInput { body: rendered.body, content_type: None, captures: &[], query: None })
                .unwrap();
            prop_assert_eq!(as_json(&back), as_json(&m));
            prop_assert_eq!(back.encode_to_vec().len(), m.encode_to_vec().len());
            let everything = SerializeOptions::new().skip_default_fields(false);
            let full = |m: &DynamicMessage| m.serialize_with_options(serde_json::value::Serializer, &everything).unwrap();
            prop_assert_eq!(full(&back), full(&m));
        }
    }
}

/// Inputs that the fuzz targets of `fuzz/` found failing, replayed against
/// the conformance type they were found with.
mod fuzz_regressions {
    use super::*;

    fn all_types() -> MessageDescriptor {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        POOL.get_or_init(|| {
            DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/examples.binpb"))[..]).unwrap()
        })
        .get_message_by_name("protogate.test.v1.AllTypes")
        .unwrap()
    }

    /// `json_response`: `[field] [settings] wire bytes`. The double it holds
    /// came back one ULP off once rendered and parsed again, until
    /// serde_json's `float_roundtrip` was on.
    #[test]
    fn rendered_double_parses_back_exactly() {
        let input = include_bytes!("../../fuzz/regressions/json_response/double-one-ulp-off");
        let settings =
            JsonSettings::new(&JsonOptions { use_proto_names: true, int64_as_numbers: true, ..Default::default() });
        assert_eq!(input[..2], [0, 0x09], "whole message, those settings");
        let sent = DynamicMessage::decode(all_types(), &input[2..]).unwrap();
        let rendered = ResponsePlan::new(&all_types(), "").unwrap().render(&settings, &sent).unwrap();
        let plan = RequestPlan::new(&all_types(), "*", &[]).unwrap();
        let back = plan
            .build(&settings, RequestInput { body: rendered.body, content_type: None, captures: &[], query: None })
            .unwrap();
        let double = |m: &DynamicMessage| m.get_field_by_name("double_value").unwrap().as_f64().unwrap();
        assert_eq!(double(&back).to_bits(), double(&sent).to_bits());
    }

    /// `query` (structured mode): `[mode] [settings] name=value` lines. A
    /// oneof member and a sub-field of another member were both accepted,
    /// the second silently dropping the first.
    #[test]
    fn oneof_member_and_a_sub_field_of_another() {
        let input = include_bytes!("../../fuzz/regressions/query/oneof-member-and-subfield");
        let query = std::str::from_utf8(&input[2..]).unwrap().lines().collect::<Vec<_>>().join("&");
        assert_eq!(query, "text=a&item.name=b");
        let plan = RequestPlan::new(&all_types(), "", &[]).unwrap();
        let result = plan.build(&JsonSettings::default(), input_with_query(&query));
        let err = assert_bad(result, "item.name");
        assert!(err.message.contains("query parameter 'text'"), "{}", err.message);
    }

    fn input_with_query(query: &str) -> RequestInput<'_> {
        RequestInput { body: Bytes::new(), content_type: None, captures: &[], query: Some(query) }
    }
}
