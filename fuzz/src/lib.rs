//! What the fuzz targets share: the conformance message type, the gateway's
//! JSON settings in every combination, and the round-trip checks that the
//! proto3 JSON mapping promises.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions, Value};
use protogate::config::{JsonOptions, Strictness};
use protogate::error::{Fault, GatewayError};
use protogate::transcode::JsonSettings;

/// The descriptor set of `proto/protogate/test/v1/test.proto`, built by
/// `build.rs`.
const TEST_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/test.binpb"));

pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(TEST_SET).expect("the test descriptor set decodes"))
}

/// `protogate.test.v1.AllTypes`: one field of every kind the mappings treat
/// differently.
pub fn all_types() -> MessageDescriptor {
    pool().get_message_by_name("protogate.test.v1.AllTypes").expect("AllTypes is in the test set")
}

/// The gateway's JSON settings with each of `config.json`'s switches taken
/// from one bit of `bits`, so that one input byte picks the combination.
pub fn settings(bits: u8) -> JsonSettings {
    let bit = |n: u8| bits & (1 << n) != 0;
    let strictness = |on: bool| if on { Strictness::Ignore } else { Strictness::Reject };
    JsonSettings::new(&JsonOptions {
        use_proto_names: bit(0),
        emit_unpopulated: bit(1),
        enums_as_ints: bit(2),
        int64_as_numbers: bit(3),
        unknown_fields: strictness(bit(4)),
        unknown_query_params: strictness(bit(5)),
        pretty: bit(6),
        ..JsonOptions::default()
    })
}

/// A message in the mapping's canonical form (default options), or why it
/// has none.
pub fn canonical(msg: &DynamicMessage) -> Result<serde_json::Value, serde_json::Error> {
    msg.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
}

/// A refusal of client input must be the client's fault and a 4xx: a 500
/// here would mean the gateway blames itself for what a client sent.
#[track_caller]
pub fn assert_client_error(err: &GatewayError) {
    assert_eq!(err.fault, Fault::Client, "client input refused as {:?}: {}", err.fault, err.message);
    assert!(err.status.is_client_error(), "client input refused with {}: {}", err.status, err.message);
    assert!(!err.message.is_empty(), "a refusal without a message");
}

/// What a message accepted from a client must allow: it renders as JSON,
/// that JSON parses back to the same message, and so do its protobuf bytes
/// (what goes to the backend).
#[track_caller]
pub fn assert_round_trips(msg: &DynamicMessage) {
    if has_lossy_json(msg) {
        return;
    }
    let json = match canonical(msg) {
        Ok(json) => json,
        Err(e) if is_empty_any(&e) => return,
        // Not `{msg:?}`: a message's Debug walks its whole descriptor pool.
        Err(e) => panic!("an accepted message cannot be rendered: {e}\nwire bytes: {:02x?}", msg.encode_to_vec()),
    };
    let again = match DynamicMessage::deserialize(msg.descriptor(), json.clone()) {
        Ok(again) => again,
        Err(e) => panic!("the JSON of an accepted message does not parse back: {e}\n{json}"),
    };
    assert_eq!(canonical(&again).ok().as_ref(), Some(&json), "JSON → message → JSON changed the message");
    let wire = DynamicMessage::decode(msg.descriptor(), msg.encode_to_vec().as_slice())
        .expect("the protobuf encoding of an accepted message decodes");
    assert_eq!(canonical(&wire).ok().as_ref(), Some(&json), "message → protobuf → message changed the message");
}

/// prost-reflect has no JSON for an `Any` without a type URL (protojson
/// writes `{}`); the gateway creates one for an empty body bound to an
/// `Any` field. Known, documented in docs/fuzzing.md, not judged here.
pub fn is_empty_any(err: &impl std::fmt::Display) -> bool {
    err.to_string().contains("unsupported type url ''")
}

/// Whether `msg` holds a value whose JSON form cannot carry it, so the
/// round trip is not judged. Both are known and documented in
/// docs/fuzzing.md:
/// - prost-reflect writes a `DoubleValue` or `FloatValue` holding NaN or an
///   infinity as a JSON number, which serde_json prints as `null`, so the
///   value comes back as an absent wrapper (the mapping wants `"NaN"`, as
///   for plain doubles);
/// - a `FieldMask` path that is empty, holds anything but lowercase
///   letters, digits and `_` (a `,` splits it in two on the way back), or
///   does not survive the mapping's snake_case → lowerCamelCase →
///   snake_case (`a__b`, `a_1`), has no faithful JSON form (protojson
///   refuses to write one).
pub fn has_lossy_json(msg: &DynamicMessage) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::Message(m) => has_lossy_json(m),
            Value::List(items) => items.iter().any(value),
            Value::Map(entries) => entries.values().any(value),
            _ => false,
        }
    }
    match msg.descriptor().full_name() {
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => msg.fields().any(|(_, v)| match v {
            Value::F64(x) => !x.is_finite(),
            Value::F32(x) => !x.is_finite(),
            _ => false,
        }),
        "google.protobuf.FieldMask" => msg.fields().any(|(_, v)| match v {
            Value::List(paths) => paths.iter().any(|p| p.as_str().is_some_and(|p| !camel_round_trips(p))),
            _ => false,
        }),
        _ => msg.fields().any(|(_, v)| value(v)),
    }
}

/// Whether a FieldMask path comes back from its lowerCamelCase form.
fn camel_round_trips(path: &str) -> bool {
    path.split('.').all(|segment| {
        let mut camel = String::new();
        let mut upper = false;
        for c in segment.chars() {
            if c == '_' {
                upper = true;
            } else if upper {
                camel.extend(c.to_uppercase());
                upper = false;
            } else {
                camel.push(c);
            }
        }
        let mut snake = String::new();
        for c in camel.chars() {
            if c.is_ascii_uppercase() {
                snake.push('_');
                snake.push(c.to_ascii_lowercase());
            } else {
                snake.push(c);
            }
        }
        let plain = segment.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        !segment.is_empty() && plain && snake == segment
    })
}
