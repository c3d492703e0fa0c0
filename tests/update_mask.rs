//! AIP-134 update masks filled in from a PATCH body, end to end: a real
//! tonic backend that reports the mask it received, behind the gateway. The
//! mask is read on the backend from the binary message, so the paths are
//! checked exactly as the gateway sent them (proto names), not as the JSON
//! mapping would print them back.

mod common;

use common::api::Config;
use common::unary::{ServiceName, Unary};
use common::{config_for, Backend, Descriptors, Reply, TestGateway};
use prost_types::FieldMask;
use serde_json::{json, Value};
use tonic::service::Routes;

const PROTO: &str = r#"
syntax = "proto3";
package masktest.v1;
import "google/api/annotations.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/timestamp.proto";

service Things {
  rpc UpdateThing(UpdateThingRequest) returns (Seen) {
    option (google.api.http) = {
      patch: "/v1/things/{thing.id}"
      body: "thing"
      additional_bindings { put: "/v1/things/{thing.id}" body: "thing" }
      additional_bindings { post: "/v1/things/{thing.id}:update" body: "thing" }
      additional_bindings { patch: "/v1/whole/{thing.id}" body: "*" }
    };
  }
}

message Geo { double lat = 1; double lng = 2; }
message Address { string city_name = 1; Geo geo = 2; }

message Thing {
  string id = 1;
  string display_name = 2;
  Address home_address = 3;
  map<string, string> labels = 4;
  google.protobuf.Timestamp expire_time = 5;
}

message UpdateThingRequest {
  Thing thing = 1;
  google.protobuf.FieldMask update_mask = 2;
}

// What the backend received.
message Seen {
  repeated string mask = 1;
  bool has_mask = 2;
  string id = 3;
  string display_name = 4;
}
"#;

// ---- the backend -------------------------------------------------------

/// The part of `Thing` the backend reports; the rest is skipped unread.
#[derive(Clone, PartialEq, prost::Message)]
struct Thing {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    display_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateThingRequest {
    #[prost(message, optional, tag = "1")]
    thing: Option<Thing>,
    #[prost(message, optional, tag = "2")]
    update_mask: Option<FieldMask>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Seen {
    #[prost(string, repeated, tag = "1")]
    mask: Vec<String>,
    #[prost(bool, tag = "2")]
    has_mask: bool,
    #[prost(string, tag = "3")]
    id: String,
    #[prost(string, tag = "4")]
    display_name: String,
}

/// `masktest.v1.Things`: `UpdateThing` answers with what it received.
struct ThingsName;

impl ServiceName for ThingsName {
    const NAME: &'static str = "masktest.v1.Things";
}

fn things_server() -> Unary<ThingsName, UpdateThingRequest, Seen> {
    Unary::new(|_method, req: tonic::Request<UpdateThingRequest>| {
        let req = req.into_inner();
        let thing = req.thing.unwrap_or_default();
        Seen {
            has_mask: req.update_mask.is_some(),
            mask: req.update_mask.map(|m| m.paths).unwrap_or_default(),
            id: thing.id,
            display_name: thing.display_name,
        }
    })
}

// ---- the harness ---------------------------------------------------------

async fn start(configure: impl FnOnce(&mut Config)) -> TestGateway {
    let backend = Backend::start(Routes::new(things_server())).await;
    let mut config = config_for(&backend);
    configure(&mut config);
    common::start(Descriptors::empty().with("things.proto", PROTO), config, vec![backend]).await
}

/// Sends `body` as JSON with `method`; answers what the backend saw.
async fn send(gw: &TestGateway, method: &str, path: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let body = serde_json::to_vec(&body).expect("JSON body");
    let reply: Reply = gw.request(method.clone(), path, &[("content-type", "application/json")], Some(body)).await;
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    reply.json()
}

/// A body touching nested messages, a map and a well-known type, with
/// lowerCamel names as JavaScript clients send them.
fn nested_body() -> Value {
    json!({
        "displayName": "Ann",
        "homeAddress": { "cityName": "Oslo", "geo": { "lat": 59.9 } },
        "labels": { "team": "core" },
        "expireTime": "2030-01-01T00:00:00Z"
    })
}

// ---- the cases -----------------------------------------------------------

#[tokio::test]
async fn a_patch_without_a_mask_gets_the_paths_its_body_names() {
    let gw = start(|_| {}).await;
    let seen = send(&gw, "PATCH", "/v1/things/t1", nested_body()).await;
    assert_eq!(
        seen,
        json!({
            "mask": ["display_name", "expire_time", "home_address.city_name", "home_address.geo.lat", "labels"],
            "hasMask": true,
            "id": "t1",
            "displayName": "Ann"
        })
    );
    // Proto names in the body give the same paths; the path variable adds
    // none.
    let seen = send(&gw, "PATCH", "/v1/things/t1", json!({ "home_address": { "geo": { "lng": 10.7 } } })).await;
    assert_eq!(seen["mask"], json!(["home_address.geo.lng"]));
    // A body naming nothing sends no mask.
    let seen = send(&gw, "PATCH", "/v1/things/t1", json!({})).await;
    assert_eq!(seen, json!({ "id": "t1" }));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_mask_the_client_sends_is_never_replaced() {
    let gw = start(|_| {}).await;
    let seen = send(&gw, "PATCH", "/v1/things/t1?update_mask=display_name", nested_body()).await;
    assert_eq!(seen["mask"], json!(["display_name"]));
    // The query's FieldMask is read as the JSON mapping writes it.
    let seen = send(&gw, "PATCH", "/v1/things/t1?updateMask=homeAddress.cityName,labels", nested_body()).await;
    assert_eq!(seen["mask"], json!(["home_address.city_name", "labels"]));
    // With `body: "*"` the mask travels in the body, or not at all.
    let whole = json!({ "thing": { "displayName": "Ann", "labels": { "a": "b" } }, "updateMask": "labels" });
    let seen = send(&gw, "PATCH", "/v1/whole/t1", whole).await;
    assert_eq!(seen["mask"], json!(["labels"]));
    let seen = send(&gw, "PATCH", "/v1/whole/t1", json!({ "thing": { "displayName": "Ann" } })).await;
    assert_eq!(seen["hasMask"], Value::Null, "{seen}");
    gw.shutdown().await;
}

#[tokio::test]
async fn only_patch_is_filled_in() {
    let gw = start(|_| {}).await;
    for (method, path) in [("PUT", "/v1/things/t1"), ("POST", "/v1/things/t1:update")] {
        let seen = send(&gw, method, path, nested_body()).await;
        assert_eq!(seen, json!({ "id": "t1", "displayName": "Ann" }), "{method}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_switch_turns_it_off() {
    let gw = start(|config| config.routes.autofill_update_mask = false).await;
    let seen = send(&gw, "PATCH", "/v1/things/t1", nested_body()).await;
    assert_eq!(seen, json!({ "id": "t1", "displayName": "Ann" }));
    let seen = send(&gw, "PATCH", "/v1/things/t1?update_mask=labels", nested_body()).await;
    assert_eq!(seen["mask"], json!(["labels"]));
    gw.shutdown().await;
}
