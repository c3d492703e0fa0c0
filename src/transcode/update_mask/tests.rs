//! Which bindings fill `update_mask`, which paths a body names, and that a
//! mask the client sent is kept.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::paths_of;
use crate::config::{JsonOptions, Strictness};
use crate::transcode::{JsonSettings, RequestInput, RequestPlan};

const PROTO: &str = r#"
syntax = "proto3";
package m;

import "google/protobuf/any.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Geo { double lat = 1; double lng = 2; }
message Address { string city_name = 1; Geo geo = 2; }

message Thing {
  string id = 1;
  string display_name = 2;
  Address home_address = 3;
  map<string, string> labels = 4;
  repeated Address old_addresses = 5;
  google.protobuf.Timestamp expire_time = 6;
  google.protobuf.Struct extra = 7;
  google.protobuf.Value value = 8;
  google.protobuf.StringValue nickname = 9;
  google.protobuf.Any payload = 10;
  Thing parent = 11;
  string STATUS = 12 [json_name = "state"];
  oneof choice { string text = 13; Address place = 14; }
}

message UpdateThingRequest {
  Thing thing = 1;
  google.protobuf.FieldMask update_mask = 2;
  string name = 3;
  repeated Thing many = 4;
  google.protobuf.Struct doc = 5;
}

message NoMask { Thing thing = 1; google.protobuf.FieldMask field_mask = 2; }
message TextMask { Thing thing = 1; string update_mask = 2; }
message ManyMasks { Thing thing = 1; repeated google.protobuf.FieldMask update_mask = 2; }
"#;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::write(dir.path().join("m.proto"), PROTO).unwrap();
        let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut compiler = protox::Compiler::new([dir.path().to_path_buf(), proto]).unwrap();
        compiler.include_imports(true);
        compiler.open_files(["m.proto"]).unwrap();
        DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
    })
}

fn msg(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn paths(json: &str) -> Vec<String> {
    paths_of(&msg("m.Thing"), json.as_bytes()).unwrap()
}

/// The `PATCH /things/{thing.id}` plan with `body: "thing"`, filling masks.
fn patch_plan() -> RequestPlan {
    let mut plan =
        RequestPlan::new(&msg("m.UpdateThingRequest"), "thing", &[vec!["thing".into(), "id".into()]]).unwrap();
    assert!(plan.autofill_update_mask());
    plan
}

fn build_with(plan: &RequestPlan, settings: &JsonSettings, body: &str, query: Option<&str>) -> DynamicMessage {
    let captures = ["t1".to_owned()];
    let input =
        RequestInput { body: Bytes::copy_from_slice(body.as_bytes()), content_type: None, captures: &captures, query };
    match plan.build(settings, input) {
        Ok(msg) => msg,
        Err(err) => panic!("{body} {query:?}: {err}"),
    }
}

fn build(plan: &RequestPlan, body: &str, query: Option<&str>) -> DynamicMessage {
    build_with(plan, &JsonSettings::default(), body, query)
}

/// The request's mask paths; `None` when the mask is not set at all.
fn mask(msg: &DynamicMessage) -> Option<Vec<String>> {
    if !msg.has_field_by_name("update_mask") {
        return None;
    }
    let mask = msg.get_field_by_name("update_mask").unwrap();
    let paths = mask.as_message().unwrap().get_field_by_name("paths").unwrap();
    Some(paths.as_list().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect())
}

#[test]
fn nested_objects_list_their_leaves_in_proto_names() {
    let got = paths(r#"{"displayName": "a", "homeAddress": {"cityName": "b", "geo": {"lat": 1, "lng": 2}}}"#);
    assert_eq!(got, ["display_name", "home_address.city_name", "home_address.geo.lat", "home_address.geo.lng"]);
    // Proto names as sent, a json_name that is nothing like the proto name,
    // and an oneof member.
    let got = paths(r#"{"display_name": "a", "home_address": {"geo": {}}, "state": "x", "place": {"cityName": "c"}}"#);
    assert_eq!(got, ["STATUS", "display_name", "home_address.geo", "place.city_name"]);
    let got = paths(r#"{"parent": {"parent": {"id": "p"}}}"#);
    assert_eq!(got, ["parent.parent.id"]);
}

#[test]
fn maps_lists_scalars_null_and_opaque_well_known_types_end_the_path() {
    let got = paths(
        r#"{
            "labels": {"env": "prod"},
            "oldAddresses": [{"cityName": "x"}],
            "expireTime": "2030-01-01T00:00:00Z",
            "nickname": "nick",
            "payload": {"@type": "type.googleapis.com/m.Geo", "lat": 1},
            "homeAddress": null,
            "text": "t"
        }"#,
    );
    assert_eq!(got, ["expire_time", "home_address", "labels", "nickname", "old_addresses", "payload", "text"]);
}

#[test]
fn struct_and_value_objects_are_descended_by_their_keys() {
    // As grpc-gateway: the JSON keys as written, the path ends at a
    // non-object.
    let got = paths(r#"{"extra": {"a": {"b": 1, "c": [1]}, "d": "x"}, "value": {"k": {"l": null}}}"#);
    assert_eq!(got, ["extra.a.b", "extra.a.c", "extra.d", "value.k.l"]);
    assert_eq!(paths(r#"{"value": 3, "extra": {}}"#), ["extra", "value"]);
}

#[test]
fn an_empty_body_object_names_nothing_and_unknown_keys_are_skipped() {
    assert!(paths("{}").is_empty());
    assert!(paths("null").is_empty());
    assert_eq!(
        paths(r#"{"nope": {"x": 1}, "id": "i", "displayName": "a", "display_name": "b"}"#),
        ["display_name", "id"]
    );
}

#[test]
fn only_a_message_body_field_and_a_singular_field_mask_named_update_mask_qualify() {
    let qualifies = |input: &str, body: &str| {
        let mut plan = RequestPlan::new(&msg(input), body, &[]).unwrap();
        plan.autofill_update_mask()
    };
    assert!(qualifies("m.UpdateThingRequest", "thing"));
    // The whole message as body: the mask travels in it.
    assert!(!qualifies("m.UpdateThingRequest", "*"));
    assert!(!qualifies("m.UpdateThingRequest", ""));
    // Not a message whose JSON is an object of its fields.
    assert!(!qualifies("m.UpdateThingRequest", "name"));
    assert!(!qualifies("m.UpdateThingRequest", "many"));
    assert!(!qualifies("m.UpdateThingRequest", "doc"));
    assert!(!qualifies("m.UpdateThingRequest", "update_mask"));
    // No FieldMask named update_mask.
    assert!(!qualifies("m.NoMask", "thing"));
    assert!(!qualifies("m.TextMask", "thing"));
    assert!(!qualifies("m.ManyMasks", "thing"));
}

#[test]
fn the_mask_is_filled_from_the_body_and_the_path_adds_nothing() {
    let plan = patch_plan();
    let got = build(&plan, r#"{"displayName": "a", "homeAddress": {"geo": {"lat": 1}}}"#, None);
    assert_eq!(mask(&got).unwrap(), ["display_name", "home_address.geo.lat"]);
    // The path variable set thing.id; the mask lists only the body's keys.
    let thing = got.get_field_by_name("thing").unwrap();
    assert_eq!(thing.as_message().unwrap().get_field_by_name("id").unwrap().as_str(), Some("t1"));
}

#[test]
fn a_mask_sent_in_the_query_is_kept_and_an_empty_one_is_filled() {
    let plan = patch_plan();
    let got =
        build(&plan, r#"{"displayName": "a", "homeAddress": {"cityName": "b"}}"#, Some("update_mask=home_address"));
    assert_eq!(mask(&got).unwrap(), ["home_address"]);
    let got = build(&plan, r#"{"displayName": "a"}"#, Some("updateMask=displayName,homeAddress.cityName"));
    assert_eq!(mask(&got).unwrap(), ["display_name", "home_address.city_name"]);
    let got = build(&plan, r#"{"displayName": "a"}"#, Some("update_mask="));
    assert_eq!(mask(&got).unwrap(), ["display_name"]);
}

#[test]
fn a_body_naming_nothing_leaves_the_mask_unset() {
    let plan = patch_plan();
    assert_eq!(mask(&build(&plan, "", None)), None);
    assert_eq!(mask(&build(&plan, "{}", None)), None);
}

#[test]
fn unknown_keys_dropped_by_config_are_not_in_the_mask() {
    let settings = JsonSettings::new(&JsonOptions { unknown_fields: Strictness::Ignore, ..JsonOptions::default() });
    let got = build_with(&patch_plan(), &settings, r#"{"displayName": "a", "legacyField": 1}"#, None);
    assert_eq!(mask(&got).unwrap(), ["display_name"]);
}

#[test]
fn a_plan_not_asked_to_fill_leaves_the_mask_alone() {
    let plan = RequestPlan::new(&msg("m.UpdateThingRequest"), "thing", &[vec!["thing".into(), "id".into()]]).unwrap();
    assert_eq!(mask(&build(&plan, r#"{"displayName": "a"}"#, None)), None);
    let got = build(&plan, r#"{"displayName": "a"}"#, Some("update_mask=id"));
    assert_eq!(mask(&got).unwrap(), ["id"]);
}

#[test]
fn a_query_mask_may_use_proto_names_as_grpc_gateway_clients_write_them() {
    let plan = RequestPlan::new(&msg("m.UpdateThingRequest"), "thing", &[vec!["thing".into(), "id".into()]]).unwrap();
    let got = build(&plan, "{}", Some("update_mask=display_name,homeAddress.cityName,home_address.geo"));
    assert_eq!(mask(&got).unwrap(), ["display_name", "home_address.city_name", "home_address.geo"]);
    let captures = ["t1".to_owned()];
    for query in ["update_mask=display_name,a-b", "update_mask=display_name,,id", "update_mask=home_address..geo"] {
        let input = RequestInput { body: Bytes::new(), content_type: None, captures: &captures, query: Some(query) };
        let err = plan.build(&JsonSettings::default(), input).err().unwrap_or_else(|| panic!("{query} is refused"));
        assert_eq!(err.violations[0].field, "update_mask", "{query}: {err}");
    }
}
