//! Query-string binding: names resolved against `AllTypes` (nested fields,
//! maps, repeated fields, oneofs, wrappers, well-known types), values parsed
//! from text, collisions with the body and the path refused.
//!
//! Input: `[mode] [settings] text`. In raw mode `text` is the query string
//! as sent. In structured mode each line of `text` is `name=value`
//! unencoded; the target percent-encodes both (as a browser would) and then
//! checks that string fields got exactly the value written.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use prost_reflect::{DynamicMessage, MapKey, ReflectMessage, Value};
use protogate::transcode::{RequestInput, RequestPlan};
use protogate_fuzz::{all_types, assert_client_error, assert_round_trips, settings};

/// `(body, path variables, their captures)` of one binding over `AllTypes`.
const BINDINGS: &[(&str, &[&str], &[&str])] = &[
    ("", &[], &[]),
    ("", &["string_value", "int64_value", "nested.name", "color"], &["s", "-1", "n", "RED"]),
    ("", &["nested.child.name"], &["c"]),
    ("nested", &["string_value"], &["s"]),
    ("repeated_string", &[], &[]),
    ("*", &[], &[]),
];

/// Form encoding keeps these unreserved characters as they are.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(text: &str, plus_for_space: bool) -> String {
    let encoded = utf8_percent_encode(text, QUERY_VALUE).to_string();
    if plus_for_space {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, bits, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let (body, variables, captures) = BINDINGS[usize::from(*mode & 0x3f) % BINDINGS.len()];
    let variables: Vec<Vec<String>> = variables.iter().map(|v| v.split('.').map(str::to_owned).collect()).collect();
    let captures: Vec<String> = captures.iter().map(|c| (*c).to_owned()).collect();
    let plan = RequestPlan::new(&all_types(), body, &variables).expect("every binding here is valid");

    let structured = *mode & 0x80 != 0;
    let pairs: Vec<(&str, &str)> = if structured {
        text.lines().map(|line| line.split_once('=').unwrap_or((line, ""))).collect()
    } else {
        Vec::new()
    };
    let query = if structured {
        let plus = *mode & 0x40 != 0;
        let encoded: Vec<String> =
            pairs.iter().map(|(n, v)| format!("{}={}", encode(n, plus), encode(v, plus))).collect();
        encoded.join("&")
    } else {
        text.to_owned()
    };

    let input = RequestInput { body: Bytes::new(), content_type: None, captures: &captures, query: Some(&query) };
    let msg = match plan.build(&settings(*bits), input) {
        Ok(msg) => msg,
        Err(err) => return assert_client_error(&err),
    };
    assert_round_trips(&msg);
    if structured && variables.is_empty() && body.is_empty() {
        check_strings(&msg, &pairs);
    }
});

/// Every string field named by a parameter holds that parameter's value
/// exactly: encoding and decoding lost nothing and added nothing.
fn check_strings(msg: &DynamicMessage, pairs: &[(&str, &str)]) {
    let all = msg.descriptor();
    let field = |name: &str| all.get_field_by_name(name).expect("field exists");
    let mut repeated = Vec::new();
    for (name, value) in pairs {
        match *name {
            "string_value" | "stringValue" => {
                assert_eq!(msg.get_field(&field("string_value")).as_str(), Some(*value), "{name}")
            }
            "renamed" | "customName" => assert_eq!(msg.get_field(&field("renamed")).as_str(), Some(*value), "{name}"),
            "text" => assert_eq!(msg.get_field(&field("text")).as_str(), Some(*value), "{name}"),
            "nested.name" => {
                let nested = msg.get_field(&field("nested"));
                let inner = nested.as_message().expect("nested is a message");
                let name_field = inner.descriptor().get_field_by_name("name").expect("Nested.name");
                assert_eq!(inner.get_field(&name_field).as_str(), Some(*value), "{name}");
            }
            "repeated_string" | "repeatedString" => repeated.push(Value::String((*value).to_owned())),
            _ => {
                if let Some(key) = name.strip_prefix("map_bool_string[").and_then(|k| k.strip_suffix(']')) {
                    let key = match key {
                        "true" | "1" => MapKey::Bool(true),
                        _ => MapKey::Bool(false),
                    };
                    let map = msg.get_field(&field("map_bool_string"));
                    let got = map.as_map().and_then(|m| m.get(&key)).and_then(Value::as_str);
                    assert_eq!(got, Some(*value), "{name}");
                }
            }
        }
    }
    if !repeated.is_empty() {
        assert_eq!(msg.get_field(&field("repeated_string")).as_list(), Some(repeated.as_slice()), "repeated_string");
    }
}
