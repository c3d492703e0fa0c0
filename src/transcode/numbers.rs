//! JSON numbers bound for integer fields, judged from what the client wrote.
//!
//! serde_json hands prost-reflect a number that is not a plain integer within
//! `i64`/`u64` (`18446744073709551616`, `1.0`, `2e3`) as an `f64`, and
//! prost-reflect's range and integrality checks then look at the rounded
//! value: `2^64` passes as `u64::MAX`, `-9223372036854775809` as `i64::MIN`,
//! `1.0000000000000001` as `1`, and `9007199254740993.0` arrives as
//! `9007199254740992`. The proto3 JSON mapping means the number written: one
//! outside the field's range, or not whole, is refused like its string form,
//! and one inside keeps its exact value.
//!
//! Most literals cannot be misjudged that way ([`may_round`]), so the request
//! path pays one pass over the body's bytes ([`has_rounding_number`]). Only a
//! body with a literal that can is walked against its message type
//! ([`exact_integers`]): every literal that lands on an integer field is
//! judged from its digits, and the valid ones an `f64` could misread are
//! written back as plain integers for a second parse, which serde_json hands
//! over exactly. Double and float fields, `Struct` and `Value` keep their
//! literals as sent.

use std::borrow::Cow;
use std::fmt;
use std::ops::{Range, RangeInclusive};

use prost_reflect::{Kind, MessageDescriptor};
use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use serde_json::value::RawValue;

use super::names::{kind_name, push_key};
use crate::error::GatewayError;

/// Whether an `f64` could misjudge this JSON number literal for an integer
/// field. It cannot when the literal has at most 15 digits before any
/// exponent and an exponent of at most two digits that keeps its whole part
/// under 16 digits: its magnitude then lies between 1e-114 and 1e15 (< 2^53),
/// where an `f64` is exact for integers and, holding 15 significant digits
/// faithfully, is whole exactly when the literal is.
pub(super) fn may_round(literal: &[u8]) -> bool {
    let (mantissa, exponent) = split_exponent(literal);
    if mantissa.iter().filter(|b| b.is_ascii_digit()).count() > 15 {
        return true;
    }
    let Some(exponent) = exponent else {
        return false;
    };
    let (negative, digits) = split_sign(exponent);
    if digits.len() > 2 {
        return true;
    }
    let magnitude = digits.iter().fold(0i32, |acc, &b| acc * 10 + i32::from(b.wrapping_sub(b'0')));
    let whole_digits = mantissa.iter().take_while(|&&b| b != b'.').filter(|b| b.is_ascii_digit()).count();
    let whole_digits = i32::try_from(whole_digits).unwrap_or(i32::MAX);
    whole_digits.saturating_add(if negative { -magnitude } else { magnitude }) > 15
}

/// One pass over a JSON text (already parsed successfully): is there a
/// number literal, outside strings, that [`may_round`]? This runs on every
/// JSON body, so it keeps to a few instructions a byte: numbers without an
/// exponent are judged by their digit count on the way, and strings are
/// skipped eight bytes at a time.
pub(super) fn has_rounding_number(json: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => at = string_end(json, at + 1),
            b'-' | b'0'..=b'9' => {
                let start = at;
                at = digits_end(json, at + 1);
                let mut digits = at - start - usize::from(byte == b'-');
                if json.get(at) == Some(&b'.') {
                    let fraction_end = digits_end(json, at + 1);
                    digits += fraction_end - at - 1;
                    at = fraction_end;
                }
                if matches!(json.get(at), Some(b'e' | b'E')) {
                    let end = number_end(json, at);
                    if may_round(&json[start..end]) {
                        return true;
                    }
                    at = end;
                } else if digits > 15 {
                    return true;
                }
            }
            _ => at += 1,
        }
    }
    false
}

fn digits_end(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

fn number_end(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string whose contents start at `at`.
/// Most strings are keys and short values, done within the first words;
/// memchr takes over for long ones.
fn string_end(json: &[u8], mut at: usize) -> usize {
    let mut words = 0;
    loop {
        let stop = match word_at(json, at) {
            Some(word) if words < 8 => {
                words += 1;
                let stops = lanes_equal(word, b'"') | lanes_equal(word, b'\\');
                if stops == 0 {
                    at += 8;
                    continue;
                }
                at + (stops.trailing_zeros() / 8) as usize
            }
            _ => match json.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                Some(offset) => at + offset,
                None => return json.len(),
            },
        };
        if json.get(stop) == Some(&b'"') {
            return stop + 1;
        }
        // A backslash: the next byte is escaped, whatever it is.
        at = stop + 2;
    }
}

// Eight bytes as one word, the first in the low bits; a byte's "lane" is
// its 8 bits. The lane tests below never carry from one lane into the next,
// so they are exact for every byte value.
const LANES: u64 = 0x0101_0101_0101_0101;
const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

fn word_at(json: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = json.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The high bit of each lane of `word` that equals `byte`, no other bit.
fn lanes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (LANES * u64::from(byte));
    !(((x & LOW_BITS).wrapping_add(LOW_BITS)) | x | LOW_BITS)
}

/// Judges every number literal that lands on an integer field of `desc` in
/// `json`, a text prost-reflect has accepted for it. `prefix` starts the
/// field paths of refusals, as in `request::json_error`. `Ok(None)`: the
/// parsed message is exact as it is; `Ok(Some(text))`: `json` with each
/// literal an `f64` could misread written as the integer it denotes.
pub(super) fn exact_integers(
    desc: &MessageDescriptor,
    json: &[u8],
    prefix: &str,
) -> Result<Option<Vec<u8>>, GatewayError> {
    let mut walk = Walk { start: json.as_ptr() as usize, path: prefix.to_owned(), rewrites: Vec::new(), refusal: None };
    let shape = Shape::of_message(desc);
    let mut de = serde_json::Deserializer::from_slice(json);
    let walked = Walker { walk: &mut walk, shape: &shape }.deserialize(&mut de);
    if let Some(refusal) = walk.refusal {
        return Err(refusal);
    }
    if let Err(err) = walked {
        // prost-reflect accepted this text, so the walk should follow it
        // anywhere; if it cannot, keep prost-reflect's reading.
        tracing::warn!(error = %err, message = desc.full_name(), "integer literal check could not follow a JSON body");
        return Ok(None);
    }
    if walk.rewrites.is_empty() {
        return Ok(None);
    }
    walk.rewrites.sort_by_key(|(range, _)| range.start);
    let mut exact = Vec::with_capacity(json.len());
    let mut at = 0;
    for (range, integer) in &walk.rewrites {
        let Some(before) = json.get(at..range.start) else {
            return Ok(None);
        };
        exact.extend_from_slice(before);
        exact.extend_from_slice(integer.as_bytes());
        at = range.end;
    }
    exact.extend_from_slice(json.get(at..).unwrap_or_default());
    Ok(Some(exact))
}

/// What a JSON value stands for, as far as integer literals go.
enum Shape {
    /// An integer field (or integer wrapper): its literal is judged.
    Integer {
        range: RangeInclusive<i128>,
        ty: String,
    },
    Message(MessageDescriptor),
    /// `google.protobuf.Any`: its `@type` says what the rest is.
    Any(MessageDescriptor),
    List(Box<Shape>),
    Map(Box<Shape>),
    /// Holds no integer field: not looked into.
    Skip,
}

impl Shape {
    fn of_field(kind: &Kind, is_list: bool, is_map: bool) -> Shape {
        match kind {
            Kind::Message(entry) if is_map => Shape::of_kind(&entry.map_entry_value_field().kind()).within(Shape::Map),
            kind if is_list => Shape::of_kind(kind).within(Shape::List),
            kind => Shape::of_kind(kind),
        }
    }

    fn of_kind(kind: &Kind) -> Shape {
        let range = match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => i128::from(i32::MIN)..=i128::from(i32::MAX),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => i128::from(i64::MIN)..=i128::from(i64::MAX),
            Kind::Uint32 | Kind::Fixed32 => 0..=i128::from(u32::MAX),
            Kind::Uint64 | Kind::Fixed64 => 0..=i128::from(u64::MAX),
            Kind::Message(message) => return Shape::of_message(message),
            _ => return Shape::Skip,
        };
        Shape::Integer { range, ty: kind_name(kind) }
    }

    /// Follows prost-reflect's special JSON forms of the well-known types.
    fn of_message(message: &MessageDescriptor) -> Shape {
        match message.full_name() {
            "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value" => match message.get_field_by_name("value") {
                Some(value) => match Shape::of_kind(&value.kind()) {
                    Shape::Integer { range, .. } => Shape::Integer { range, ty: message.full_name().to_owned() },
                    other => other,
                },
                None => Shape::Skip,
            },
            "google.protobuf.Any" => Shape::Any(message.clone()),
            "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.Value"
            | "google.protobuf.ListValue"
            | "google.protobuf.Empty"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue" => Shape::Skip,
            _ => Shape::Message(message.clone()),
        }
    }

    fn within(self, outer: fn(Box<Shape>) -> Shape) -> Shape {
        match self {
            Shape::Skip => Shape::Skip,
            inner => outer(Box::new(inner)),
        }
    }
}

/// The state of one walk over a body.
struct Walk {
    /// Address of the body's first byte: literals are located by their
    /// offset from it.
    start: usize,
    /// The request path of the value being walked.
    path: String,
    /// Byte range of a literal in the body, and the integer to write there.
    rewrites: Vec<(Range<usize>, String)>,
    refusal: Option<GatewayError>,
}

impl Walk {
    /// Judges `literal` (the JSON text of a value on an integer field). A
    /// refusal is kept in `self`; the error only stops the walk.
    fn judge(&mut self, literal: &str, range: &RangeInclusive<i128>, ty: &str) -> Result<(), &'static str> {
        let bytes = literal.as_bytes();
        // Strings and null: prost-reflect reads those exactly.
        if !matches!(bytes.first(), Some(b'-' | b'0'..=b'9')) {
            return Ok(());
        }
        let why = match whole_value(bytes) {
            Ok(Some(value)) if range.contains(&value) => {
                if may_round(bytes) {
                    let offset = (literal.as_ptr() as usize).wrapping_sub(self.start);
                    self.rewrites.push((offset..offset + literal.len(), value.to_string()));
                }
                return Ok(());
            }
            Ok(_) => format!("invalid value for {ty}: {} is out of range", shown(literal)),
            Err(NotWhole) => format!("invalid value for {ty}: expected integer value"),
        };
        self.refusal = Some(GatewayError::bad_field(self.path.clone(), why));
        Err("refused")
    }

    fn enter_key(&mut self, key: &str) -> usize {
        let mark = self.path.len();
        push_key(&mut self.path, key);
        mark
    }

    fn enter_index(&mut self, index: usize) -> usize {
        use std::fmt::Write as _;
        let mark = self.path.len();
        let _ = write!(self.path, "[{index}]");
        mark
    }

    fn leave(&mut self, mark: usize) {
        self.path.truncate(mark);
    }
}

/// A literal for an integer field that is not a whole number.
struct NotWhole;

/// The integer a JSON number literal denotes, from its digits: `Ok(None)`
/// when it has more than 20 digits, beyond every integer kind.
fn whole_value(literal: &[u8]) -> Result<Option<i128>, NotWhole> {
    let (negative, unsigned) = split_sign(literal);
    let (mantissa, exponent) = split_exponent(unsigned);
    let exponent = exponent.map_or(0, exponent_value);
    let (whole, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
        None => (mantissa, &[][..]),
    };
    let digits = || whole.iter().chain(fraction).copied();
    let Some(first) = digits().position(|b| b != b'0') else {
        return Ok(Some(0));
    };
    let count = whole.len() + fraction.len();
    let last = count - 1 - digits().rev().position(|b| b != b'0').unwrap_or(0);
    // The last nonzero digit is worth 10^scale.
    let scale = exponent + as_i64(whole.len()) - 1 - as_i64(last);
    if scale < 0 {
        return Err(NotWhole);
    }
    let significant = last - first + 1;
    if as_i64(significant) + scale > 20 {
        return Ok(None);
    }
    let mut value =
        digits().skip(first).take(significant).fold(0i128, |acc, b| acc * 10 + i128::from(b.wrapping_sub(b'0')));
    for _ in 0..scale {
        value *= 10;
    }
    Ok(Some(if negative { -value } else { value }))
}

/// A JSON exponent's value, kept within ±2^40 (far past any integer kind,
/// and past any literal's length, so sums with lengths cannot overflow).
fn exponent_value(exponent: &[u8]) -> i64 {
    const LIMIT: i64 = 1 << 40;
    let (negative, digits) = split_sign(exponent);
    let magnitude = digits.iter().fold(0i64, |acc, &b| (acc * 10 + i64::from(b.wrapping_sub(b'0'))).min(LIMIT));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn split_sign(text: &[u8]) -> (bool, &[u8]) {
    match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    }
}

fn split_exponent(literal: &[u8]) -> (&[u8], Option<&[u8]>) {
    match literal.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => (&literal[..e], Some(&literal[e + 1..])),
        None => (literal, None),
    }
}

/// A literal for an error message: long ones are cut.
fn shown(literal: &str) -> Cow<'_, str> {
    match literal.get(..32) {
        Some(head) if literal.len() > 40 => Cow::Owned(format!("{head}…")),
        _ => Cow::Borrowed(literal),
    }
}

/// Walks one JSON value of a given shape.
struct Walker<'w> {
    walk: &'w mut Walk,
    shape: &'w Shape,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        match self.shape {
            Shape::Skip => IgnoredAny::deserialize(de).map(drop),
            Shape::Integer { range, ty } => {
                let raw = <&'de RawValue>::deserialize(de)?;
                self.walk.judge(raw.get(), range, ty).map_err(D::Error::custom)
            }
            // A null field is left unset by prost-reflect: nothing to judge.
            _ => de.deserialize_option(self),
        }
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value of the message type")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        match self.shape {
            Shape::Message(desc) => de.deserialize_map(MessageVisitor { walk: self.walk, desc }),
            Shape::Any(desc) => de.deserialize_map(AnyVisitor { walk: self.walk, desc }),
            Shape::List(element) => de.deserialize_seq(ListVisitor { walk: self.walk, element }),
            Shape::Map(value) => de.deserialize_map(MapVisitor { walk: self.walk, value }),
            Shape::Skip | Shape::Integer { .. } => self.deserialize(de),
        }
    }
}

/// A field of `desc` by JSON name or proto name (as prost-reflect looks it
/// up), or an extension by JSON name; `Skip` for unknown keys, which
/// prost-reflect has ignored if it accepted them.
fn field_shape(desc: &MessageDescriptor, key: &str) -> Shape {
    if let Some(field) = desc.get_field_by_json_name(key).or_else(|| desc.get_field_by_name(key)) {
        return Shape::of_field(&field.kind(), field.is_list(), field.is_map());
    }
    match desc.get_extension_by_json_name(key) {
        Some(extension) => Shape::of_field(&extension.kind(), extension.is_list(), extension.is_map()),
        None => Shape::Skip,
    }
}

struct MessageVisitor<'w> {
    walk: &'w mut Walk,
    desc: &'w MessageDescriptor,
}

impl<'de> Visitor<'de> for MessageVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let shape = field_shape(self.desc, &key);
            let mark = self.walk.enter_key(&key);
            map.next_value_seed(Walker { walk: &mut *self.walk, shape: &shape })?;
            self.walk.leave(mark);
        }
        Ok(())
    }
}

struct MapVisitor<'w> {
    walk: &'w mut Walk,
    value: &'w Shape,
}

impl<'de> Visitor<'de> for MapVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let mark = self.walk.enter_key(&key);
            map.next_value_seed(Walker { walk: &mut *self.walk, shape: self.value })?;
            self.walk.leave(mark);
        }
        Ok(())
    }
}

struct ListVisitor<'w> {
    walk: &'w mut Walk,
    element: &'w Shape,
}

impl<'de> Visitor<'de> for ListVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            let mark = self.walk.enter_index(index);
            let more = seq.next_element_seed(Walker { walk: &mut *self.walk, shape: self.element })?;
            self.walk.leave(mark);
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// `google.protobuf.Any`: `@type` may come last, so the object is buffered
/// as raw values, then each is walked as the named type's field (or, for a
/// well-known type, its `value`), as prost-reflect reads it.
struct AnyVisitor<'w> {
    walk: &'w mut Walk,
    desc: &'w MessageDescriptor,
}

impl<'de> Visitor<'de> for AnyVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with @type")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut entries: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        let type_url = entries
            .iter()
            .find(|(key, _)| key == "@type")
            .and_then(|(_, raw)| serde_json::from_str::<String>(raw.get()).ok());
        let payload = type_url
            .as_deref()
            .and_then(|url| url.rsplit_once('/'))
            .and_then(|(_, name)| self.desc.parent_pool().get_message_by_name(name));
        let Some(payload) = payload else {
            return Ok(());
        };
        let special = match Shape::of_message(&payload) {
            Shape::Message(_) => None,
            other => Some(other),
        };
        for (key, raw) in &entries {
            let field;
            let shape = match &special {
                _ if key == "@type" => continue,
                Some(shape) if key == "value" => shape,
                Some(_) => continue,
                None => {
                    field = field_shape(&payload, key);
                    &field
                }
            };
            let mark = self.walk.enter_key(key);
            let mut de = serde_json::Deserializer::from_str(raw.get());
            Walker { walk: &mut *self.walk, shape }.deserialize(&mut de).map_err(A::Error::custom)?;
            self.walk.leave(mark);
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }

        de.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_literals_may_round() {
        for exact in ["0", "-0", "123456789012345", "-123456789012345", "1.5", "0.00000000000001", "1e14", "-1.5e-99"] {
            assert!(!may_round(exact.as_bytes()), "{exact}");
        }
        // Too many digits, a magnitude from 1e15 up, or an exponent field
        // of three digits or more (whatever its value).
        for rounding in
            ["1234567890123456", "1.000000000000001", "0.000000000000001", "1e15", "12e14", "1e100", "1e005"]
        {
            assert!(may_round(rounding.as_bytes()), "{rounding}");
        }
    }

    #[test]
    fn the_scan_skips_strings_and_sees_every_number() {
        let cases: &[(&str, bool)] = &[
            (r#"{"a": 1, "b": [1.5, -2e3], "c": "12345678901234567890"}"#, false),
            (r#"{"a": "\"", "b": 12345678901234567}"#, true),
            (r#"{"a": "\\", "b": 1e400}"#, true),
            (r#"{"12345678901234567": "x\"12345678901234567"}"#, false),
            (r#"[0.1234567890123456]"#, true),
            ("18446744073709551616", true),
            (r#""unterminated 12345678901234567"#, false),
        ];
        for (json, rounding) in cases {
            assert_eq!(has_rounding_number(json.as_bytes()), *rounding, "{json}");
        }
    }

    #[test]
    fn lane_test_is_exact_for_every_byte() {
        let others = [b'"', 0xff, b'9', b'0', 0x00, b'/', b':', 0x80];
        for byte in 0..=255u8 {
            for lane in 0..8 {
                let mut bytes = others;
                bytes[lane] = byte;
                let word = u64::from_le_bytes(bytes);
                let bit = |mask: u64| mask >> (lane * 8 + 7) & 1 == 1;
                assert_eq!(bit(lanes_equal(word, b'"')), byte == b'"', "{byte:#x} in lane {lane}");
                assert_eq!(bit(lanes_equal(word, b'\\')), byte == b'\\', "{byte:#x} in lane {lane}");
                // The other lanes answer as they did without this byte.
                let rest = !(0xffu64 << (lane * 8));
                assert_eq!(lanes_equal(word, b'"') & rest, lanes_equal(u64::from_le_bytes(others), b'"') & rest);
            }
        }
    }

    /// The scan, byte by byte and without shortcuts.
    fn reference_scan(json: &[u8]) -> bool {
        let mut at = 0;
        while let Some(&byte) = json.get(at) {
            match byte {
                b'"' => {
                    at += 1;
                    while let Some(&b) = json.get(at) {
                        at += if b == b'\\' { 2 } else { 1 };
                        if b == b'"' {
                            break;
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let end = number_end(json, at);
                    if may_round(&json[at..end]) {
                        return true;
                    }
                    at = end;
                }
                _ => at += 1,
            }
        }
        false
    }

    fn json_token() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?",
            any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
            "[0-9eE.\"\\\\/ -]{0,40}".prop_map(|s| serde_json::Value::String(s).to_string()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
        ]
    }

    proptest::proptest! {
        #[test]
        fn the_scan_agrees_with_the_reference(
            tokens in proptest::collection::vec(json_token(), 0..12),
            separators in proptest::collection::vec("[ ,:\\[\\]{}\n]{1,3}", 12),
        ) {
            let json: String = tokens.iter().zip(&separators).flat_map(|(t, s)| [t.as_str(), s.as_str()]).collect();
            proptest::prop_assert_eq!(has_rounding_number(json.as_bytes()), reference_scan(json.as_bytes()), "{}", json);
        }

        #[test]
        fn whole_values_in_any_spelling(
            value in -(10i128.pow(20) - 1)..10i128.pow(20),
            zeros in 0usize..30,
            shift in 0usize..25,
        ) {
            let digits = value.unsigned_abs().to_string();
            let sign = if value < 0 { "-" } else { "" };
            // digits × 10^-shift × 10^shift, with `zeros` trailing zeros in the fraction.
            let (head, tail) = if shift < digits.len() {
                let (head, tail) = digits.split_at(digits.len() - shift);
                (head.to_owned(), tail.to_owned())
            } else {
                ("0".to_owned(), format!("{}{digits}", "0".repeat(shift - digits.len())))
            };
            let spelled = format!("{sign}{head}.{tail}{}e{shift}", "0".repeat(zeros));
            proptest::prop_assert_eq!(whole_value(spelled.as_bytes()).ok(), Some(Some(value)), "{}", spelled);
            let not_whole = format!("{sign}{digits}.{}1", "0".repeat(zeros));
            proptest::prop_assert!(whole_value(not_whole.as_bytes()).is_err(), "{}", not_whole);
        }
    }

    #[test]
    fn whole_values_from_digits() {
        let whole = |text: &str| whole_value(text.as_bytes()).ok();
        assert_eq!(whole("0"), Some(Some(0)));
        assert_eq!(whole("-0.000e-999999999999999999999"), Some(Some(0)));
        assert_eq!(whole("18446744073709551615"), Some(Some(u64::MAX.into())));
        assert_eq!(whole("1.8446744073709551615e19"), Some(Some(u64::MAX.into())));
        assert_eq!(whole("-92233720368547758080e-1"), Some(Some(i64::MIN.into())));
        assert_eq!(whole("99999999999999999999"), Some(Some(99_999_999_999_999_999_999)));
        assert_eq!(whole("100000000000000000000"), Some(None));
        assert_eq!(whole("1e20"), Some(None));
        assert_eq!(whole("1e999999999999999999999"), Some(None));
        assert_eq!(whole("12.5e1"), Some(Some(125)));
        assert_eq!(whole("1.25e1"), None);
        assert_eq!(whole("1.0000000000000001"), None);
        assert_eq!(whole("1e-400"), None);
    }
}
