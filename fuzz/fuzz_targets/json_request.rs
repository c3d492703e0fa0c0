//! HTTP request → input message: the JSON body under every kind of body
//! binding, with the query string and path captures laid over it.
//!
//! Input: `[binding] [settings] body \0 query \0 capture \0 capture …`.
//! The first byte picks the binding (and a content type), the second the
//! `config.json` switches. A refusal must be a 4xx blamed on the client; an
//! accepted message must render and round-trip.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protogate::transcode::{RequestInput, RequestPlan};
use protogate_fuzz::{all_types, assert_client_error, assert_round_trips, settings};

/// `(body, path variables)` of one binding over `AllTypes`.
const BINDINGS: &[(&str, &[&str])] = &[
    ("*", &[]),
    ("*", &["string_value"]),
    ("*", &["nested.child.name", "timestamp", "double_wrapper"]),
    ("nested", &["string_value"]),
    ("nested", &["nested.name"]),
    ("item", &["text"]),
    ("repeated_string", &[]),
    ("repeated_nested", &[]),
    ("map_string_int32", &[]),
    ("map_int64_string", &[]),
    ("map_string_nested", &[]),
    ("int64_value", &["int32_value"]),
    ("bytes_value", &[]),
    ("color", &[]),
    ("timestamp", &[]),
    ("duration", &[]),
    ("field_mask", &[]),
    ("struct_value", &[]),
    ("value", &[]),
    ("list_value", &[]),
    ("any", &[]),
    ("double_wrapper", &[]),
    ("bytes_wrapper", &[]),
    ("", &["string_value", "int64_value", "nested.name", "color"]),
];

const CONTENT_TYPES: &[Option<&str>] =
    &[None, Some("application/json"), Some("application/merge-patch+json; charset=utf-8"), Some("text/html")];

fuzz_target!(|data: &[u8]| {
    let [pick, bits, rest @ ..] = data else { return };
    let (body, variables) = BINDINGS[usize::from(*pick) % BINDINGS.len()];
    let content_type = CONTENT_TYPES[usize::from(*pick >> 5) % CONTENT_TYPES.len()];
    let variables: Vec<Vec<String>> = variables.iter().map(|v| v.split('.').map(str::to_owned).collect()).collect();
    let plan = RequestPlan::new(&all_types(), body, &variables).expect("every binding here is valid");

    let mut parts = rest.split(|b| *b == 0);
    let json = parts.next().unwrap_or_default();
    let query = parts.next().map(String::from_utf8_lossy);
    // Exactly as many captures as the template has variables: the route
    // table never hands over any other number.
    let mut captures: Vec<String> = parts.map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    captures.resize(variables.len(), String::new());

    let input =
        RequestInput { body: Bytes::copy_from_slice(json), content_type, captures: &captures, query: query.as_deref() };
    match plan.build(&settings(*bits), input) {
        Ok(msg) => assert_round_trips(&msg),
        Err(err) => assert_client_error(&err),
    }
});
