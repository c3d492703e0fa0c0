//! Entry points for the fuzz targets in `fuzz/` into decoders that are
//! private to their modules, so that the targets test the gateway's own
//! code rather than a copy of it. Not an API: the gateway never calls these.

use std::borrow::Cow;
use std::str::Utf8Error;

use crate::routing::percent;
use crate::transcode::query;

/// A single-segment path variable's value, fully percent-decoded.
pub fn path_decode(raw: &str) -> Result<String, Utf8Error> {
    percent::decode(raw)
}

/// A multi-segment path variable's value: decoded except `%2F`.
pub fn path_decode_keeping_slashes(raw: &str) -> Result<String, Utf8Error> {
    percent::decode_keeping_slashes(raw)
}

/// What the route table compares literals and verbs with (`None`: not
/// UTF-8 once decoded).
pub fn path_segment_decoded(raw: &str) -> Option<String> {
    percent::with_decoded(raw, |text| text.map(str::to_owned))
}

/// One query-string name or value: `+` as space, then percent-decoding.
pub fn query_decode_component(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    query::decode_component(raw)
}
