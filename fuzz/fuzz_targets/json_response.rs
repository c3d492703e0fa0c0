//! Output message → JSON: random protobuf wire bytes decoded as `AllTypes`
//! (what a backend could send), rendered as the whole message or as one
//! `response_body` field, under every combination of `config.json`'s
//! switches.
//!
//! Input: `[field] [settings] protobuf bytes`. A render either fails (a 500
//! with a reason) or is valid JSON that parses back, with the same
//! settings, to the message it came from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_reflect::DynamicMessage;
use protogate::transcode::{RequestInput, RequestPlan, ResponsePlan};
use protogate_fuzz::{all_types, canonical, has_lossy_json, settings};

/// `response_body` values: the whole message, then fields of every shape.
const FIELDS: &[&str] = &[
    "",
    "nested",
    "int64_value",
    "uint64_value",
    "float_value",
    "double_value",
    "bytes_value",
    "color",
    "repeated_color",
    "repeated_int64",
    "repeated_double",
    "repeated_bytes",
    "repeated_nested",
    "map_string_int32",
    "map_int64_string",
    "map_string_nested",
    "map_bool_string",
    "item",
    "timestamp",
    "duration",
    "field_mask",
    "struct_value",
    "value",
    "list_value",
    "any",
    "empty",
    "repeated_timestamp",
    "double_wrapper",
    "uint64_wrapper",
    "bytes_wrapper",
];

fuzz_target!(|data: &[u8]| {
    let [pick, bits, wire @ ..] = data else { return };
    let all = all_types();
    let Ok(msg) = DynamicMessage::decode(all.clone(), wire) else { return };
    let field_name = FIELDS[usize::from(*pick) % FIELDS.len()];
    let plan = ResponsePlan::new(&all, field_name).expect("every field here exists");
    let settings = settings(*bits);

    let rendered = match plan.render(&settings, &msg) {
        Ok(rendered) => rendered,
        Err(err) => {
            assert_eq!(err.status, http::StatusCode::INTERNAL_SERVER_ERROR, "{}", err.message);
            return;
        }
    };
    assert_eq!(rendered.content_type, "application/json");
    let json: serde_json::Value = match serde_json::from_slice(&rendered.body) {
        Ok(json) => json,
        Err(e) => panic!("rendered invalid JSON ({e}): {}", String::from_utf8_lossy(&rendered.body)),
    };
    if has_lossy_json(&msg) {
        return;
    }

    // What the response says must be what the backend sent: read it back
    // the way the gateway reads a request (any option spelling is accepted
    // on input), as the whole message or as the one field.
    let (body, expected) = if field_name.is_empty() {
        ("*", msg.clone())
    } else {
        let field = all.get_field_by_name(field_name).expect("field exists");
        let mut only = DynamicMessage::new(all.clone());
        only.set_field(&field, msg.get_field(&field).into_owned());
        (field_name, only)
    };
    let Ok(expected) = canonical(&expected) else {
        panic!("rendered {json} from a message with no canonical JSON");
    };
    let request = RequestPlan::new(&all, body, &[]).expect("every field here exists");
    let input = RequestInput { body: rendered.body.clone(), content_type: None, captures: &[], query: None };
    let back = match request.build(&settings, input) {
        Ok(back) => back,
        Err(e) => panic!("rendered JSON does not parse back: {}\n{json}", e.message),
    };
    assert_eq!(canonical(&back).ok(), Some(expected), "rendered {json}");

    // The wire form a backend sent and the one the gateway would send for
    // the rendered JSON carry the same message.
    let resent = DynamicMessage::decode(all.clone(), back.encode_to_vec().as_slice()).expect("re-encoded bytes decode");
    assert_eq!(canonical(&resent).ok(), canonical(&back).ok());
});
