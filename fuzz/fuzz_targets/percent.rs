//! Percent-decoding of path segments and variables (`routing::percent`) and
//! of query-string names and values.
//!
//! Arbitrary input is decoded every way and checked against a plain
//! reference (split on `%2F`, decode the pieces); the input read as a value
//! is encoded and must decode back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};
use protogate::fuzzing::{path_decode, path_decode_keeping_slashes, path_segment_decoded, query_decode_component};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    // As raw (still encoded) request text.
    let full = path_decode(text);
    let reference = percent_decode_str(text).decode_utf8().map(|t| t.into_owned());
    assert_eq!(full.as_ref().ok(), reference.as_ref().ok(), "{text:?}");
    assert_eq!(path_segment_decoded(text), full.as_ref().ok().cloned(), "segment vs value decoding of {text:?}");
    assert_eq!(path_decode_keeping_slashes(text).ok(), keeping_slashes_reference(text), "{text:?}");
    if !text.contains('+') {
        assert_eq!(query_decode_component(text).ok().as_deref(), full.as_deref().ok(), "query decoding of {text:?}");
    }
    if let Ok(query) = query_decode_component(text) {
        assert_eq!(Ok(query.as_ref()), path_decode(&text.replace('+', " ")).as_deref(), "{text:?}");
    }

    // As a value a client encodes.
    let encoded = utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
    assert_eq!(path_decode(&encoded).as_deref(), Ok(text));
    assert_eq!(path_segment_decoded(&encoded).as_deref(), Some(text));
    assert_eq!(path_decode_keeping_slashes(&encoded), Ok(text.replace('/', "%2F")));
    assert_eq!(query_decode_component(&encoded).as_deref(), Ok(text));
    assert_eq!(query_decode_component(&encoded.replace("%20", "+")).as_deref(), Ok(text));
});

/// What http.proto asks of a multi-segment value, written the obvious way:
/// cut at every `%2F` (either case), decode each piece, join with `%2F`.
fn keeping_slashes_reference(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i] == b'%' && bytes[i + 1] == b'2' && matches!(bytes[i + 2], b'F' | b'f') {
            pieces.push(&text[start..i]);
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    pieces.push(&text[start..]);
    let decoded: Vec<u8> = pieces
        .iter()
        .enumerate()
        .flat_map(|(k, piece)| {
            let sep: &[u8] = if k == 0 { b"" } else { b"%2F" };
            sep.iter().copied().chain(percent_decode_str(piece))
        })
        .collect();
    String::from_utf8(decoded).ok()
}
