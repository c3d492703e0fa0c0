//! The transcoding hot path on the shapes of `../shared/bench` (the
//! gateway comparison): POST /v1/echo with a JSON body, and
//! GET /v1/items/{id}?view=… — request into a `DynamicMessage`, response
//! back to JSON; `json_in/*`: a JSON body to protobuf wire bytes, the
//! `DynamicMessage` way against `transcode::direct::json_in`;
//! `path_only/*`: GET /v1/items/{id} with no query, the request built and
//! encoded through a `DynamicMessage` against `build_outgoing`; and
//! `wire_to_json/*`: an answer's wire bytes to JSON, through a
//! `DynamicMessage` (the oracle) against `transcode::direct::json_out`.
//! Large is a catalog of 500 products, ~115 KB of JSON, as the bench's
//! large workload.

#![allow(clippy::unwrap_used)] // setup failures should abort the bench

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use protogate::error::GatewayError;
use protogate::transcode::codec::Outgoing;
use protogate::transcode::direct::json_in::JsonIn;
use protogate::transcode::status::render_error;
use protogate::transcode::{JsonSettings, RequestInput, RequestPlan, ResponsePlan};

/// bench.proto of the shared bench, without its google.api import.
const BENCH_PROTO: &str = r#"
syntax = "proto3";
package bench.v1;

message Inner { string name = 1; repeated int32 values = 2; }

message EchoRequest {
  string message = 1; int64 count = 2; repeated string tags = 3;
  Inner inner = 4; bool flag = 5; double ratio = 6;
}
message EchoResponse {
  string message = 1; int64 count = 2; repeated string tags = 3;
  Inner inner = 4; bool flag = 5; double ratio = 6;
}

enum ItemView { ITEM_VIEW_UNSPECIFIED = 0; ITEM_VIEW_BASIC = 1; ITEM_VIEW_FULL = 2; }
message GetItemRequest { string id = 1; ItemView view = 2; }
message Attribute { string key = 1; string value = 2; }
message Dimensions { double width_cm = 1; double height_cm = 2; double depth_cm = 3; }
message Item {
  string id = 1; string name = 2; int64 price_cents = 3; int32 stock = 4; bool available = 5;
  repeated string tags = 6; Dimensions dimensions = 7; repeated Attribute attributes = 8; ItemView view = 9;
}

enum Availability {
  AVAILABILITY_UNSPECIFIED = 0; AVAILABILITY_IN_STOCK = 1; AVAILABILITY_BACKORDER = 2; AVAILABILITY_DISCONTINUED = 3;
}
message Product {
  string sku = 1; string title = 2; int64 price_micros = 3; int64 stock = 4; double rating = 5; double weight_kg = 6;
  Availability availability = 7; map<string, string> attributes = 8; repeated string tags = 9;
}
message Catalog { string catalog_id = 1; int64 revision = 2; repeated Product products = 3; }
"#;

const ECHO_JSON: &str = r#"{"message":"hello","count":"42","tags":["a","b","c"],"inner":{"name":"x","values":[1,2,3]},"flag":true,"ratio":0.5}"#;

const ITEM_JSON: &str = r#"{"id":"item-42","name":"Widget","priceCents":"1999","stock":7,"available":true,
"tags":["new","sale"],"dimensions":{"widthCm":10.5,"heightCm":2,"depthCm":3.25},
"attributes":[{"key":"color","value":"red"},{"key":"size","value":"M"}],"view":"ITEM_VIEW_FULL"}"#;

fn large_echo_json() -> String {
    let tags: Vec<String> = (0..200).map(|i| format!("\"tag-{i}-with some text\"")).collect();
    let values: Vec<String> = (0..600).map(|i| (i * 7919 % 100_000).to_string()).collect();
    format!(
        r#"{{"message":"{}","count":"42","tags":[{}],"inner":{{"name":"x","values":[{}]}},"flag":true,"ratio":0.5}}"#,
        "lorem ipsum ".repeat(100),
        tags.join(","),
        values.join(",")
    )
}

/// The shared bench's `catalog.json` (fixtures.py: 500 products, ~115 KB,
/// proto field names as keys).
fn catalog_json() -> String {
    const COLORS: [&str; 8] = ["red", "green", "blue", "black", "white", "silver", "crème", "orange"];
    const SIZES: [&str; 5] = ["XS", "S", "M", "L", "XL"];
    const MATERIALS: [&str; 6] = ["Steel", "Oak", "Cotton", "Glass", "Aluminium", "Nylon"];
    const TAGS: [&str; 8] = ["sale", "new", "eco", "bestseller", "outdoor", "kitchen", "garden", "tools"];
    const AVAILABILITY: [&str; 3] = ["AVAILABILITY_IN_STOCK", "AVAILABILITY_BACKORDER", "AVAILABILITY_DISCONTINUED"];
    // Python's float repr: a whole number keeps its `.0`.
    let float = |v: f64| if v.fract() == 0.0 { format!("{v:.1}") } else { format!("{v}") };
    let products: Vec<String> = (1..=500u64)
        .map(|i| {
            let i_ = i as usize;
            format!(
                r#"{{"sku":"SKU-{i:06}","title":"{} widget {i}","price_micros":"{}","stock":"{}","rating":{},"weight_kg":{},"availability":"{}","attributes":{{"color":"{}","size":"{}"}},"tags":["{}","{}"]}}"#,
                MATERIALS[i_ % 6],
                1_990_000 + i * 10_250,
                1 + (i * 7_919_993) % 5_000_000_011,
                float(((100 + i * 37 % 400) as f64 / 100.0 * 100.0).round() / 100.0),
                float((1 + i % 40) as f64 * 0.125),
                AVAILABILITY[i_ % 3],
                COLORS[i_ % 8],
                SIZES[i_ % 5],
                TAGS[i_ % 8],
                TAGS[(i_ * 3 + 1) % 8],
            )
        })
        .collect();
    format!(r#"{{"catalog_id":"catalog-2024-q4","revision":"9007199254740993","products":[{}]}}"#, products.join(","))
}

fn pool() -> DescriptorPool {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("bench.proto"), BENCH_PROTO).unwrap();
    let proto = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([dir.path().to_path_buf(), proto]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["bench.proto", "google/rpc/error_details.proto"]).unwrap();
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice()).unwrap()
}

fn benches(c: &mut Criterion) {
    let pool = pool();
    let settings = JsonSettings::default();
    let desc = |name: &str| pool.get_message_by_name(name).unwrap();
    let no_captures: [String; 0] = [];

    let echo_in = RequestPlan::new(&desc("bench.v1.EchoRequest"), "*", &[]).unwrap();
    let echo_out = ResponsePlan::new(&desc("bench.v1.EchoResponse"), "").unwrap();
    let body = Bytes::from_static(ECHO_JSON.as_bytes());
    let echo_input = || RequestInput {
        body: body.clone(),
        content_type: Some("application/json"),
        captures: &no_captures,
        query: None,
    };
    c.bench_function("echo/build", |b| b.iter(|| black_box(echo_in.build(&settings, echo_input()).unwrap())));
    // A 16-digit double, as JavaScript writes 0.1 + 0.2: such a body is
    // walked once more for integer literals an f64 could round.
    let rounding = Bytes::from(ECHO_JSON.replace("0.5", "0.30000000000000004"));
    c.bench_function("echo/build_long_double", |b| {
        b.iter(|| {
            let input = RequestInput { body: rounding.clone(), ..echo_input() };
            black_box(echo_in.build(&settings, input).unwrap())
        })
    });
    // About 8 KiB of strings and numbers: what the per-byte scan costs.
    let large = Bytes::from(large_echo_json());
    c.bench_function("echo/build_large", |b| {
        b.iter(|| {
            let input = RequestInput { body: large.clone(), ..echo_input() };
            black_box(echo_in.build(&settings, input).unwrap())
        })
    });
    let echo_request = echo_in.build(&settings, echo_input()).unwrap();
    // The backend answers with the same fields, as EchoResponse.
    let mut echo_response = DynamicMessage::new(desc("bench.v1.EchoResponse"));
    echo_response.transcode_from(&echo_request).unwrap();
    c.bench_function("echo/render", |b| b.iter(|| black_box(echo_out.render(&settings, &echo_response).unwrap())));

    let item_in = RequestPlan::new(&desc("bench.v1.GetItemRequest"), "", &[vec!["id".to_owned()]]).unwrap();
    let item_out = ResponsePlan::new(&desc("bench.v1.Item"), "").unwrap();
    let captures = ["item-42".to_owned()];
    c.bench_function("get_item/build_path_and_query", |b| {
        b.iter(|| {
            let input = RequestInput {
                body: Bytes::new(),
                content_type: None,
                captures: &captures,
                query: Some("view=ITEM_VIEW_FULL"),
            };
            black_box(item_in.build(&settings, input).unwrap())
        })
    });
    let item =
        DynamicMessage::deserialize(desc("bench.v1.Item"), &mut serde_json::Deserializer::from_str(ITEM_JSON)).unwrap();
    c.bench_function("get_item/render", |b| b.iter(|| black_box(item_out.render(&settings, &item).unwrap())));

    let bad = RequestInput {
        body: Bytes::from_static(br#"{"message":"hello","count":"forty-two"}"#),
        content_type: None,
        captures: &no_captures,
        query: None,
    };
    let err: GatewayError = echo_in.build(&settings, bad).unwrap_err();
    c.bench_function("error/render_bad_request", |b| b.iter(|| black_box(render_error(&err, &pool, &settings))));
}

/// A backend's answer (wire bytes) to JSON: decoded into a
/// `DynamicMessage` and rendered (the oracle), against the direct path.
fn wire_to_json(c: &mut Criterion) {
    let pool = pool();
    let settings = JsonSettings::default();
    let cases = [
        ("echo", "bench.v1.EchoResponse", ECHO_JSON.to_owned()),
        ("item", "bench.v1.Item", ITEM_JSON.to_owned()),
        ("catalog", "bench.v1.Catalog", catalog_json()),
    ];
    for (name, type_name, json) in cases {
        let desc = pool.get_message_by_name(type_name).unwrap();
        let message =
            DynamicMessage::deserialize(desc.clone(), &mut serde_json::Deserializer::from_str(&json)).unwrap();
        let wire = Bytes::from(prost::Message::encode_to_vec(&message));
        let plan = ResponsePlan::new(&desc, "").unwrap();
        c.bench_function(&format!("wire_to_json/{name}/oracle"), |b| {
            b.iter(|| black_box(plan.render(&settings, &plan.decode(wire.clone()).unwrap()).unwrap()))
        });
        c.bench_function(&format!("wire_to_json/{name}/direct"), |b| {
            b.iter(|| black_box(plan.render_encoded(&settings, wire.clone()).unwrap()))
        });
    }
}

/// A JSON body to wire bytes: the `DynamicMessage` way (what
/// `RequestPlan::build` gives, then encoded) against `JsonIn::encode`.
fn json_in(c: &mut Criterion) {
    let pool = pool();
    let settings = JsonSettings::default();
    let no_captures: [String; 0] = [];
    let small = r#"{"message":"hello","count":"42","tags":["a","b"],"inner":{"name":"x","values":[1,2,3]},"flag":true,"ratio":0.5}"#;
    let large = catalog_json();
    let mut group = c.benchmark_group("json_in");
    for (name, message, json) in
        [("small", "bench.v1.EchoRequest", small.to_owned()), ("large", "bench.v1.Catalog", large)]
    {
        let desc = pool.get_message_by_name(message).unwrap();
        let plan = RequestPlan::new(&desc, "*", &[]).unwrap();
        let direct = JsonIn::new(&desc);
        let body = Bytes::from(json);
        let input = || RequestInput {
            body: body.clone(),
            content_type: Some("application/json"),
            captures: &no_captures,
            query: None,
        };
        let mut out = Vec::new();
        assert!(direct.encode(&body, &settings, &mut out), "{name}: the direct path bailed");
        assert_eq!(
            DynamicMessage::decode(desc.clone(), out.as_slice()).unwrap(),
            plan.build(&settings, input()).unwrap(),
            "{name}: the two paths differ"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/dynamic_message"), |b| {
            b.iter(|| {
                out.clear();
                plan.build(&settings, input()).unwrap().encode(&mut out).unwrap();
                black_box(out.len())
            })
        });
        group.bench_function(format!("{name}/direct"), |b| {
            b.iter(|| {
                out.clear();
                assert!(direct.encode(black_box(&body), &settings, &mut out));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// A request set only by its path variables (GET /v1/items/{id}, no
/// query), to the wire bytes the codec sends: `RequestPlan::build` then
/// encoding (the oracle) against `build_outgoing`.
fn path_only(c: &mut Criterion) {
    let pool = pool();
    let settings = JsonSettings::default();
    let desc = pool.get_message_by_name("bench.v1.GetItemRequest").unwrap();
    let plan = RequestPlan::new(&desc, "", &[vec!["id".to_owned()]]).unwrap();
    let captures = ["item-42".to_owned()];
    let input = || RequestInput { body: Bytes::new(), content_type: None, captures: &captures, query: None };
    // What the codec does with each outcome (codec.rs: `Encode`).
    let wire = |outgoing: Outgoing, out: &mut Vec<u8>| match outgoing {
        Outgoing::Message(message) => message.encode_raw(out),
        Outgoing::Encoded(bytes) => out.extend_from_slice(&bytes),
    };
    let mut out = Vec::new();
    wire(plan.build_outgoing(&settings, input()).unwrap(), &mut out);
    assert_eq!(out, plan.build(&settings, input()).unwrap().encode_to_vec(), "the two paths differ");
    let mut group = c.benchmark_group("path_only");
    group.bench_function("get_item/oracle", |b| {
        b.iter(|| {
            out.clear();
            wire(Outgoing::Message(plan.build(&settings, input()).unwrap()), &mut out);
            black_box(out.len())
        })
    });
    group.bench_function("get_item/direct", |b| {
        b.iter(|| {
            out.clear();
            wire(plan.build_outgoing(&settings, input()).unwrap(), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(transcode, benches, json_in, path_only, wire_to_json);
criterion_main!(transcode);
