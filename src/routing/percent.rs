//! Percent-decoding as http.proto prescribes for path matching: literals
//! and single-segment variables see fully decoded text, multi-segment
//! variables keep `%2F` so that an encoded slash stays distinguishable from a
//! separator. A `%` without two hex digits is kept as is.

use percent_encoding::percent_decode_str;
use std::str::Utf8Error;

/// Decoded text of short segments fits here, so matching literals and verbs
/// does not allocate.
const STACK_BYTES: usize = 128;

/// Calls `f` with `raw` percent-decoded, or `None` when that is not UTF-8
/// (no literal can equal it then).
pub(crate) fn with_decoded<R>(raw: &str, f: impl FnOnce(Option<&str>) -> R) -> R {
    if !raw.contains('%') {
        return f(Some(raw));
    }
    let mut buf = [0u8; STACK_BYTES];
    let mut len = 0;
    for byte in percent_decode_str(raw) {
        let Some(slot) = buf.get_mut(len) else {
            let owned: Vec<u8> = percent_decode_str(raw).collect();
            return f(std::str::from_utf8(&owned).ok());
        };
        *slot = byte;
        len += 1;
    }
    f(std::str::from_utf8(&buf[..len]).ok())
}

/// Fully decodes the value of a single-segment variable.
pub(crate) fn decode(raw: &str) -> Result<String, Utf8Error> {
    percent_decode_str(raw).decode_utf8().map(|text| text.into_owned())
}

/// Decodes the value of a multi-segment variable, except `%2F`/`%2f`, which
/// stays (as `%2F`).
pub(crate) fn decode_keeping_slashes(raw: &str) -> Result<String, Utf8Error> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    // An escape is `%` and two hex digits, so a `%2F` found by search never
    // starts inside another escape: splitting there decodes the same bytes.
    while let Some(at) = find_encoded_slash(rest) {
        out.extend(percent_decode_str(&rest[..at]));
        out.extend_from_slice(b"%2F");
        rest = &rest[at + 3..];
    }
    out.extend(percent_decode_str(rest));
    String::from_utf8(out).map_err(|e| e.utf8_error())
}

fn find_encoded_slash(text: &str) -> Option<usize> {
    text.as_bytes().windows(3).position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'F' || w[2] == b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_segment_values_are_fully_decoded() {
        assert_eq!(decode("a%2Fb%20c%C3%A9").as_deref(), Ok("a/b cé"));
        assert_eq!(decode("plain").as_deref(), Ok("plain"));
    }

    #[test]
    fn stray_percent_signs_are_kept() {
        assert_eq!(decode("100%").as_deref(), Ok("100%"));
        assert_eq!(decode("%zz%4").as_deref(), Ok("%zz%4"));
        assert_eq!(decode_keeping_slashes("%%2F%2").as_deref(), Ok("%%2F%2"));
    }

    #[test]
    fn multi_segment_values_keep_encoded_slashes_only() {
        assert_eq!(decode_keeping_slashes("a/b%2fc%2Fd%20e").as_deref(), Ok("a/b%2Fc%2Fd e"));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(decode("%FF").is_err());
        assert!(decode_keeping_slashes("a/%C3").is_err());
    }

    #[test]
    fn with_decoded_handles_short_long_and_invalid_input() {
        assert_eq!(with_decoded("a%62c", |s| s.map(str::to_owned)), Some("abc".into()));
        let long = "%61".repeat(STACK_BYTES + 5);
        let expected = "a".repeat(STACK_BYTES + 5);
        assert_eq!(with_decoded(&long, |s| s.map(str::to_owned)), Some(expected));
        assert_eq!(with_decoded("%FF", |s| s.map(str::to_owned)), None);
    }
}
