//! A JSON request body straight to protobuf wire bytes.
//!
//! The request path turns a body into a `DynamicMessage` (serde_json, then
//! prost-reflect's proto3 JSON mapping, then the exact-integer pass of
//! `numbers`) only to encode it again. [`JsonIn`] is compiled once per
//! message type at load and writes the wire bytes in one pass over the JSON
//! text, with no tree, no `Value`s and no descriptor lookups.
//!
//! It handles the common shapes exactly and bails out of everything else:
//! [`JsonIn::encode`] returns `false` whenever it is not sure to give the
//! bytes the `DynamicMessage` path gives, and the caller runs that path,
//! which also words the error of a bad body. What it bails on: anything the
//! reference refuses (malformed JSON, wrong types, out-of-range numbers, two
//! members of a oneof, unknown keys under `json.unknown_fields: reject`),
//! and a few legal but rare spellings: a key sent twice, an integer field
//! written as `1.0`, `2e3` or `-0`, escapes in keys and in number strings,
//! unknown enum names, `null` inside lists and maps, groups, nesting deeper
//! than [`MAX_DEPTH`]. Well-known types (Timestamp, wrappers, Struct, …)
//! are read by prost-reflect itself, one value at a time.
//!
//! Fields come out in ascending field-number order, as `DynamicMessage`
//! encodes them: each field is written where it comes, and an object whose
//! keys came out of order has its fields' byte ranges put in order at its
//! end. Map entries come out in the body's order (the reference's order is
//! its `HashMap`'s).

use std::fmt;
use std::sync::Arc;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, DecodeError, Engine as _};
use prost::Message as _;
use prost_reflect::{DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use super::super::numbers;
use super::super::JsonSettings;
use super::is_well_known;
use super::wire::{close_len, varint, Tag};
use crate::config::Strictness;

/// Deepest nesting of objects and arrays taken (serde_json refuses 128).
pub const MAX_DEPTH: u32 = 100;

/// The wire bytes of one message type's JSON bodies, compiled at load
/// (nested types inside, recursion by index). Cheap to clone.
#[derive(Clone)]
pub struct JsonIn {
    plan: Arc<Plan>,
}

impl fmt::Debug for JsonIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonIn").field("message", &self.plan.name).finish_non_exhaustive()
    }
}

impl JsonIn {
    /// Never fails: a type it cannot handle makes [`JsonIn::encode`] bail
    /// on the bodies that use it.
    pub fn new(desc: &MessageDescriptor) -> JsonIn {
        let mut compiler = Compiler::default();
        let root = match is_well_known(desc) || desc.is_map_entry() {
            true => None,
            false => Some(compiler.message(desc)),
        };
        JsonIn {
            plan: Arc::new(Plan {
                name: desc.full_name().to_owned(),
                messages: compiler.messages,
                enums: compiler.enums,
                root,
            }),
        }
    }

    /// Appends the protobuf encoding of the JSON object `json` to `out`.
    /// Returns false ("bail", `out` back to its length on entry) whenever
    /// it is not sure to give exactly what `request::parse_message` and
    /// `encode_raw` give: the caller then takes that path, which also makes
    /// the error for a bad body. Never true for a body that path refuses.
    pub fn encode(&self, json: &[u8], settings: &JsonSettings, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let mut scratch = Scratch::new(settings);
        // The two buffers every object uses, kept from the last call.
        (scratch.segments, scratch.bits) = SPARE.take();
        let mut reader = Reader { json, at: 0 };
        let done = match self.document(&mut reader, out, &mut scratch) {
            Ok(()) => true,
            Err(Bail) => {
                out.truncate(start);
                false
            }
        };
        if scratch.segments.capacity() <= SPARE_KEPT && scratch.bits.capacity() <= SPARE_KEPT {
            scratch.segments.clear();
            scratch.bits.clear();
            SPARE.set((scratch.segments, scratch.bits));
        }
        done
    }

    fn document<'j>(&self, r: &mut Reader<'j>, out: &mut Vec<u8>, s: &mut Scratch<'j>) -> Result<(), Bail> {
        let root = self.plan.root.ok_or(Bail)?;
        r.ws();
        if r.peek() != Some(b'{') {
            return Err(Bail);
        }
        self.message(r, root, out, s, 1)?;
        r.ws();
        match r.at == r.json.len() {
            true => Ok(()),
            false => Err(Bail),
        }
    }

    /// One JSON object (the reader is on its `{`) as the fields of message
    /// `index`, without a length prefix. `depth` counts the containers
    /// open, this one included.
    fn message<'j>(
        &self,
        r: &mut Reader<'j>,
        index: u32,
        out: &mut Vec<u8>,
        s: &mut Scratch<'j>,
        depth: u32,
    ) -> Result<(), Bail> {
        let plan = self.plan.messages.get(index as usize).ok_or(Bail)?;
        if depth > MAX_DEPTH || plan.unsupported {
            return Err(Bail);
        }
        r.at += 1;
        r.ws();
        if r.peek() == Some(b'}') {
            r.at += 1;
            return Ok(());
        }
        let segments = s.segments.len();
        let bits = s.bits.len();
        s.bits.resize(bits + plan.words, 0);
        let mut last = 0;
        let mut ordered = true;
        loop {
            let key = r.string()?;
            if key.escaped {
                return Err(Bail);
            }
            r.ws();
            r.eat(b':')?;
            r.ws();
            match plan.keys.get(r.slice(key.start, key.end)) {
                Some(i) => {
                    let field = plan.fields.get(i as usize).ok_or(Bail)?;
                    // A key sent twice (or under both names): the last one
                    // wins, except in oneofs; rare enough to leave to the
                    // reference.
                    if !s.set_bit(bits, i as usize) {
                        return Err(Bail);
                    }
                    if r.peek() == Some(b'n') && !field.null_is_value {
                        r.literal(b"null")?;
                    } else {
                        if let Some(oneof) = field.oneof_bit {
                            if !s.set_bit(bits, oneof) {
                                return Err(Bail);
                            }
                        }
                        let start = out.len();
                        self.field(r, field, out, s, depth)?;
                        if out.len() > start {
                            if field.number < last {
                                ordered = false;
                            } else {
                                last = field.number;
                            }
                            s.segments.push(Segment { number: field.number, start, end: out.len() });
                        }
                    }
                }
                None => {
                    if s.deny_unknown || plan.has_extensions {
                        return Err(Bail);
                    }
                    r.skip(depth + 1)?;
                }
            }
            r.ws();
            match r.next() {
                Some(b',') => r.ws(),
                Some(b'}') => break,
                _ => return Err(Bail),
            }
        }
        if !ordered {
            reorder(out, &mut s.segments[segments..], &mut s.reorder);
        }
        s.segments.truncate(segments);
        s.bits.truncate(bits);
        Ok(())
    }

    fn field<'j>(
        &self,
        r: &mut Reader<'j>,
        field: &FieldPlan,
        out: &mut Vec<u8>,
        s: &mut Scratch<'j>,
        depth: u32,
    ) -> Result<(), Bail> {
        match &field.shape {
            Shape::Single { value, skip_default } => self.value(r, value, field.tag, *skip_default, out, s, depth),
            Shape::List { value, packed } => self.list(r, field, value, *packed, out, s, depth + 1),
            Shape::Map(map) => self.map(r, field.tag, map, out, s, depth + 1),
        }
    }

    /// One JSON value of type `ty`, appended as a field with `tag`; nothing
    /// when `skip_default` and it is the type's default value. `depth`: the
    /// containers open around the value.
    #[allow(clippy::too_many_arguments)]
    fn value<'j>(
        &self,
        r: &mut Reader<'j>,
        ty: &ValueType,
        tag: Tag,
        skip_default: bool,
        out: &mut Vec<u8>,
        s: &mut Scratch<'j>,
        depth: u32,
    ) -> Result<(), Bail> {
        match ty {
            ValueType::String => {
                let text = r.string()?;
                let bytes = s.text(r.json, text)?;
                if !(skip_default && bytes.is_empty()) {
                    tag.put(out);
                    varint(out, bytes.len() as u64);
                    out.extend_from_slice(bytes);
                }
                Ok(())
            }
            ValueType::Bytes => {
                let text = r.string()?;
                let base64 = s.text(r.json, text)?;
                let before = out.len();
                tag.put(out);
                let len_at = out.len();
                out.push(0);
                decode_base64(base64, out)?;
                if skip_default && out.len() == len_at + 1 {
                    out.truncate(before);
                } else {
                    close_len(out, len_at);
                }
                Ok(())
            }
            ValueType::Message(index) => {
                if r.peek() != Some(b'{') {
                    return Err(Bail);
                }
                tag.put(out);
                let len_at = out.len();
                out.push(0);
                self.message(r, *index, out, s, depth + 1)?;
                close_len(out, len_at);
                Ok(())
            }
            ValueType::WellKnown { desc, integers } => {
                let start = r.at;
                let nested = r.skip(depth + 1)?;
                let span = r.slice(start, r.at);
                // Integer literals an f64 could round are the reference's
                // second pass (numbers.rs): left to it.
                if depth + nested > MAX_DEPTH || (*integers && numbers::has_rounding_number(span)) {
                    return Err(Bail);
                }
                let mut de = serde_json::Deserializer::from_slice(span);
                let msg =
                    DynamicMessage::deserialize_with_options(desc.clone(), &mut de, s.options).map_err(|_| Bail)?;
                de.end().map_err(|_| Bail)?;
                tag.put(out);
                varint(out, msg.encoded_len() as u64);
                msg.encode_raw(out);
                Ok(())
            }
            ValueType::Unsupported => Err(Bail),
            scalar => {
                let (number, is_default) = self.scalar(r, scalar)?;
                if !(skip_default && is_default) {
                    tag.put(out);
                    number.put(out);
                }
                Ok(())
            }
        }
    }

    /// A JSON array (the reader is on it) as a repeated field. `depth`
    /// counts the array.
    #[allow(clippy::too_many_arguments)]
    fn list<'j>(
        &self,
        r: &mut Reader<'j>,
        field: &FieldPlan,
        value: &ValueType,
        packed: bool,
        out: &mut Vec<u8>,
        s: &mut Scratch<'j>,
        depth: u32,
    ) -> Result<(), Bail> {
        if depth > MAX_DEPTH {
            return Err(Bail);
        }
        r.eat(b'[')?;
        r.ws();
        if r.peek() == Some(b']') {
            r.at += 1;
            return Ok(());
        }
        let len_at = match packed {
            true => {
                field.packed_tag.put(out);
                out.push(0);
                Some(out.len() - 1)
            }
            false => None,
        };
        loop {
            // `null` in a list is refused, or for Value, a NullValue.
            if r.peek() == Some(b'n') {
                return Err(Bail);
            }
            match packed {
                true => self.scalar(r, value)?.0.put(out),
                false => self.value(r, value, field.tag, false, out, s, depth)?,
            }
            r.ws();
            match r.next() {
                Some(b',') => r.ws(),
                Some(b']') => break,
                _ => return Err(Bail),
            }
        }
        if let Some(len_at) = len_at {
            close_len(out, len_at);
        }
        Ok(())
    }

    /// A JSON object (the reader is on it) as a map field, one entry per
    /// key. `depth` counts the object.
    fn map<'j>(
        &self,
        r: &mut Reader<'j>,
        tag: Tag,
        map: &MapPlan,
        out: &mut Vec<u8>,
        s: &mut Scratch<'j>,
        depth: u32,
    ) -> Result<(), Bail> {
        if depth > MAX_DEPTH || r.peek() != Some(b'{') {
            return Err(Bail);
        }
        r.at += 1;
        r.ws();
        if r.peek() == Some(b'}') {
            r.at += 1;
            return Ok(());
        }
        let text_keys = s.text_keys.len();
        let number_keys = s.number_keys.len();
        loop {
            let key = r.string()?;
            if key.escaped {
                return Err(Bail);
            }
            r.ws();
            r.eat(b':')?;
            r.ws();
            if r.peek() == Some(b'n') {
                return Err(Bail);
            }
            tag.put(out);
            let len_at = out.len();
            out.push(0);
            let text = r.slice(key.start, key.end);
            match map_key(&map.key, text)? {
                Key::Text => {
                    s.text_keys.push(text);
                    if !(map.key_skip_default && text.is_empty()) {
                        map.key_tag.put(out);
                        varint(out, text.len() as u64);
                        out.extend_from_slice(text);
                    }
                }
                Key::Number(number, is_default) => {
                    s.number_keys.push(number.bits());
                    if !(map.key_skip_default && is_default) {
                        map.key_tag.put(out);
                        number.put(out);
                    }
                }
            }
            self.value(r, &map.value, map.value_tag, map.value_skip_default, out, s, depth)?;
            close_len(out, len_at);
            r.ws();
            match r.next() {
                Some(b',') => r.ws(),
                Some(b'}') => break,
                _ => return Err(Bail),
            }
        }
        // A key sent twice: the reference keeps the last value.
        let unique =
            has_no_duplicates(&mut s.text_keys[text_keys..]) && has_no_duplicates(&mut s.number_keys[number_keys..]);
        s.text_keys.truncate(text_keys);
        s.number_keys.truncate(number_keys);
        match unique {
            true => Ok(()),
            false => Err(Bail),
        }
    }

    /// A number, bool or enum value: its wire form and whether it is the
    /// type's default.
    fn scalar(&self, r: &mut Reader<'_>, ty: &ValueType) -> Result<(Number, bool), Bail> {
        match r.peek() {
            Some(b'"') => {
                let text = r.string()?;
                if text.escaped {
                    return Err(Bail);
                }
                let text = std::str::from_utf8(r.slice(text.start, text.end)).map_err(|_| Bail)?;
                self.scalar_from_string(text, ty)
            }
            Some(b'-' | b'0'..=b'9') => {
                let (start, end, plain) = r.number()?;
                let (number, is_default) = scalar_from_literal(r.slice(start, end), plain, ty)?;
                match ty {
                    ValueType::Enum(index) => {
                        let plan = self.plan.enums.get(*index as usize).ok_or(Bail)?;
                        Ok((number, number.bits() as i64 == i64::from(plan.default)))
                    }
                    _ => Ok((number, is_default)),
                }
            }
            Some(b't') if matches!(ty, ValueType::Bool) => {
                r.literal(b"true")?;
                Ok((Number::Varint(1), false))
            }
            Some(b'f') if matches!(ty, ValueType::Bool) => {
                r.literal(b"false")?;
                Ok((Number::Varint(0), true))
            }
            _ => Err(Bail),
        }
    }

    /// A quoted number (as prost-reflect reads it: Rust's `parse`), or an
    /// enum value's name.
    fn scalar_from_string(&self, text: &str, ty: &ValueType) -> Result<(Number, bool), Bail> {
        fn parsed<T: std::str::FromStr>(text: &str) -> Result<T, Bail> {
            text.parse().map_err(|_| Bail)
        }
        let value = match ty {
            ValueType::Double => return Ok(double(parse_f64(text)?)),
            ValueType::Float => return Ok(float(parse_f32(text)?)),
            ValueType::Int32 | ValueType::Sint32 | ValueType::Sfixed32 => i64::from(parsed::<i32>(text)?),
            ValueType::Int64 | ValueType::Sint64 | ValueType::Sfixed64 => parsed::<i64>(text)?,
            ValueType::Uint32 | ValueType::Fixed32 => i64::from(parsed::<u32>(text)?),
            ValueType::Uint64 | ValueType::Fixed64 => return Ok(integer(ty, parsed::<u64>(text)?)),
            ValueType::Enum(index) => {
                let plan = self.plan.enums.get(*index as usize).ok_or(Bail)?;
                let number = plan.names.get(text.as_bytes()).ok_or(Bail)?;
                let number = i32::from_ne_bytes(number.to_ne_bytes());
                return Ok((Number::Varint(number as u64), number == plan.default));
            }
            _ => return Err(Bail),
        };
        Ok(integer(ty, value as u64))
    }
}

/// A number literal of the body (`plain`: an integer without fraction or
/// exponent) as serde_json hands it to prost-reflect's visitors.
fn scalar_from_literal(literal: &[u8], plain: bool, ty: &ValueType) -> Result<(Number, bool), Bail> {
    // Integer fields take plain integers only: `1.0`, `2e3` and those
    // beyond 64 bits go through an f64 and numbers.rs, and `-0` is an f64
    // to serde_json (which an enum refuses).
    let whole = if plain { plain_integer(literal) } else { None };
    let in_range = |min: i128, max: i128| whole.filter(|v| (min..=max).contains(v)).ok_or(Bail);
    match ty {
        ValueType::Double => Ok(double(literal_f64(literal)?)),
        ValueType::Float => {
            // serde_json passes a u64 or i64 on to `as f32` directly, the
            // rest as an f64 checked against f32's range.
            let value = match whole.filter(|v| *v >= i128::from(i64::MIN) && *v <= i128::from(u64::MAX)) {
                Some(v) if v >= 0 => v as u64 as f32,
                Some(v) => v as i64 as f32,
                None => {
                    let v = literal_f64(literal)?;
                    if v < f64::from(f32::MIN) || v > f64::from(f32::MAX) {
                        return Err(Bail);
                    }
                    v as f32
                }
            };
            Ok(float(value))
        }
        // An enum number: any i32 (its default is the caller's to judge).
        ValueType::Int32 | ValueType::Sint32 | ValueType::Sfixed32 | ValueType::Enum(_) => {
            Ok(integer(ty, in_range(i32::MIN.into(), i32::MAX.into())? as i64 as u64))
        }
        ValueType::Int64 | ValueType::Sint64 | ValueType::Sfixed64 => {
            Ok(integer(ty, in_range(i64::MIN.into(), i64::MAX.into())? as i64 as u64))
        }
        ValueType::Uint32 | ValueType::Fixed32 => Ok(integer(ty, in_range(0, u32::MAX.into())? as u64)),
        ValueType::Uint64 | ValueType::Fixed64 => Ok(integer(ty, in_range(0, u64::MAX.into())? as u64)),
        _ => Err(Bail),
    }
}

/// The wire form of an integer of type `ty`, given as its value's bits (a
/// signed value sign-extended to 64 bits).
fn integer(ty: &ValueType, bits: u64) -> (Number, bool) {
    let number = match ty {
        ValueType::Sint32 => {
            let v = bits as i32;
            Number::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
        }
        ValueType::Sint64 => {
            let v = bits as i64;
            Number::Varint(((v << 1) ^ (v >> 63)) as u64)
        }
        ValueType::Fixed32 | ValueType::Sfixed32 => Number::Fixed32(bits as u32),
        ValueType::Fixed64 | ValueType::Sfixed64 => Number::Fixed64(bits),
        ValueType::Uint32 => Number::Varint(u64::from(bits as u32)),
        _ => Number::Varint(bits),
    };
    (number, bits == 0)
}

fn double(v: f64) -> (Number, bool) {
    (Number::Fixed64(v.to_bits()), v == 0.0)
}

fn float(v: f32) -> (Number, bool) {
    (Number::Fixed32(v.to_bits()), v == 0.0)
}

/// prost-reflect's reading of a double sent as a string.
fn parse_f64(text: &str) -> Result<f64, Bail> {
    match text.parse::<f64>() {
        Ok(v) => Ok(v),
        Err(_) if text == "Infinity" => Ok(f64::INFINITY),
        Err(_) if text == "-Infinity" => Ok(f64::NEG_INFINITY),
        Err(_) if text == "NaN" => Ok(f64::NAN),
        Err(_) => Err(Bail),
    }
}

/// prost-reflect's reading of a float sent as a string.
fn parse_f32(text: &str) -> Result<f32, Bail> {
    match text.parse::<f32>() {
        Ok(v) => Ok(v),
        Err(_) if text == "Infinity" => Ok(f32::INFINITY),
        Err(_) if text == "-Infinity" => Ok(f32::NEG_INFINITY),
        Err(_) if text == "NaN" => Ok(f32::NAN),
        Err(_) => Err(Bail),
    }
}

/// A JSON number literal as serde_json (`float_roundtrip`) reads it: the
/// nearest f64; one that overflows is an error.
fn literal_f64(literal: &[u8]) -> Result<f64, Bail> {
    let text = std::str::from_utf8(literal).map_err(|_| Bail)?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Bail),
    }
}

/// The value of a plain integer literal (`-?digits`) of at most 20
/// digits, except `-0`.
fn plain_integer(literal: &[u8]) -> Option<i128> {
    let (negative, digits) = match literal.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, literal),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let magnitude = digits.iter().fold(0i128, |acc, &d| acc * 10 + i128::from(d - b'0'));
    match (negative, magnitude) {
        (true, 0) => None,
        (true, m) => Some(-m),
        (false, m) => Some(m),
    }
}

/// A map key as prost-reflect parses it (Rust's `parse`).
fn map_key(ty: &ValueType, text: &[u8]) -> Result<Key, Bail> {
    if matches!(ty, ValueType::String) {
        return Ok(Key::Text);
    }
    let text = std::str::from_utf8(text).map_err(|_| Bail)?;
    let parsed = |ok: Option<u64>| ok.map(|bits| integer(ty, bits)).ok_or(Bail);
    let (number, is_default) = match ty {
        ValueType::Bool => match text {
            "true" => (Number::Varint(1), false),
            "false" => (Number::Varint(0), true),
            _ => return Err(Bail),
        },
        ValueType::Int32 | ValueType::Sint32 | ValueType::Sfixed32 => {
            parsed(text.parse::<i32>().ok().map(|v| i64::from(v) as u64))?
        }
        ValueType::Int64 | ValueType::Sint64 | ValueType::Sfixed64 => {
            parsed(text.parse::<i64>().ok().map(|v| v as u64))?
        }
        ValueType::Uint32 | ValueType::Fixed32 => parsed(text.parse::<u32>().ok().map(u64::from))?,
        ValueType::Uint64 | ValueType::Fixed64 => parsed(text.parse::<u64>().ok())?,
        _ => return Err(Bail),
    };
    Ok(Key::Number(number, is_default))
}

enum Key {
    Text,
    Number(Number, bool),
}

fn has_no_duplicates<T: Ord>(keys: &mut [T]) -> bool {
    if keys.len() <= 8 {
        return keys.iter().enumerate().all(|(i, a)| keys[i + 1..].iter().all(|b| a != b));
    }
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1])
}

/// prost-reflect's base64: the standard alphabet, else the URL-safe one
/// when the text has `-` or `_`; padding optional, trailing bits allowed.
fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> Result<(), Bail> {
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let start = out.len();
    match STANDARD.decode_vec(text, out) {
        Ok(()) => Ok(()),
        Err(DecodeError::InvalidByte(_, b'-' | b'_')) => {
            out.truncate(start);
            URL_SAFE.decode_vec(text, out).map_err(|_| Bail)
        }
        Err(_) => Err(Bail),
    }
}

impl Scratch<'_> {
    /// Sets bit `i` of the object whose bits start at word `base`; false
    /// when it was set already.
    fn set_bit(&mut self, base: usize, i: usize) -> bool {
        let Some(word) = self.bits.get_mut(base + i / 64) else {
            return false;
        };
        let mask = 1u64 << (i % 64);
        let fresh = *word & mask == 0;
        *word |= mask;
        fresh
    }

    /// A string's content, unescaped if needed.
    fn text<'s>(&'s mut self, json: &'s [u8], text: Str) -> Result<&'s [u8], Bail> {
        let raw = json.get(text.start..text.end).ok_or(Bail)?;
        if !text.escaped {
            return Ok(raw);
        }
        self.unescaped.clear();
        unescape(raw, &mut self.unescaped)?;
        Ok(&self.unescaped)
    }
}

/// Puts the byte ranges of an object's fields in field-number order.
fn reorder(out: &mut Vec<u8>, segments: &mut [Segment], tmp: &mut Vec<u8>) {
    let Some(from) = segments.first().map(|s| s.start) else {
        return;
    };
    segments.sort_unstable_by_key(|s| s.number);
    tmp.clear();
    for segment in segments.iter() {
        tmp.extend_from_slice(&out[segment.start..segment.end]);
    }
    out.truncate(from);
    out.extend_from_slice(tmp);
}

/// Not sure to match the reference: let it decide.
#[derive(Debug)]
struct Bail;

/// A scalar's wire form, without its tag.
#[derive(Clone, Copy)]
enum Number {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
}

impl Number {
    fn put(self, out: &mut Vec<u8>) {
        match self {
            Number::Varint(v) => varint(out, v),
            Number::Fixed32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Number::Fixed64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }

    fn bits(self) -> u64 {
        match self {
            Number::Varint(v) | Number::Fixed64(v) => v,
            Number::Fixed32(v) => v.into(),
        }
    }
}

thread_local! {
    /// [`Scratch`]'s segment and bit buffers between calls.
    static SPARE: std::cell::Cell<(Vec<Segment>, Vec<u64>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Buffers that grew past this many entries (a huge body) are not kept.
const SPARE_KEPT: usize = 1024;

/// The bytes one field took in `out`, for reordering.
struct Segment {
    number: u32,
    start: usize,
    end: usize,
}

/// Per-call working memory; nothing is allocated until used.
struct Scratch<'j> {
    deny_unknown: bool,
    options: &'j prost_reflect::DeserializeOptions,
    segments: Vec<Segment>,
    /// Per open object: a bit per field (seen) and per oneof (set).
    bits: Vec<u64>,
    unescaped: Vec<u8>,
    reorder: Vec<u8>,
    text_keys: Vec<&'j [u8]>,
    number_keys: Vec<u64>,
}

impl<'j> Scratch<'j> {
    fn new(settings: &'j JsonSettings) -> Self {
        Scratch {
            // `JsonSettings::deserialize` is built from this option.
            deny_unknown: settings.options.unknown_fields == Strictness::Reject,
            options: &settings.deserialize,
            segments: Vec::new(),
            bits: Vec::new(),
            unescaped: Vec::new(),
            reorder: Vec::new(),
            text_keys: Vec::new(),
            number_keys: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- reading

/// A string token: its content's range in the body.
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

/// A cursor over the body that accepts a subset of what serde_json
/// accepts (never more): anything it does not take is a bail.
struct Reader<'j> {
    json: &'j [u8],
    at: usize,
}

impl<'j> Reader<'j> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek();
        self.at += 1;
        byte
    }

    fn slice(&self, start: usize, end: usize) -> &'j [u8] {
        self.json.get(start..end).unwrap_or_default()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.json.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), Bail> {
        match self.next() == Some(byte) {
            true => Ok(()),
            false => Err(Bail),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        match self.json.get(self.at..self.at + word.len()) == Some(word) {
            true => {
                self.at += word.len();
                Ok(())
            }
            false => Err(Bail),
        }
    }

    /// A string (the reader is on its opening quote): valid UTF-8, no
    /// control characters, escapes that serde_json takes for a `str` (a
    /// surrogate only in a pair).
    fn string(&mut self) -> Result<Str, Bail> {
        let json = self.json;
        if json.get(self.at) != Some(&b'"') {
            return Err(Bail);
        }
        let start = self.at + 1;
        let mut at = start;
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            while let Some(word) = word_at(json, at) {
                non_ascii |= word & HIGH_BITS != 0;
                let stops = lanes_equal(word, b'"') | lanes_equal(word, b'\\') | lanes_below_space(word);
                if stops != 0 {
                    at += (stops.trailing_zeros() / 8) as usize;
                    break;
                }
                at += 8;
            }
            match json.get(at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    at = escape_end(json, at)?;
                }
                Some(0..=0x1f) | None => return Err(Bail),
                Some(byte) => {
                    non_ascii |= *byte >= 0x80;
                    at += 1;
                }
            }
        }
        self.at = at + 1;
        if non_ascii && std::str::from_utf8(&json[start..at]).is_err() {
            return Err(Bail);
        }
        Ok(Str { start, end: at, escaped })
    }

    /// A number literal in JSON's grammar: its range, and whether it is a
    /// plain integer (no fraction, no exponent).
    fn number(&mut self) -> Result<(usize, usize, bool), Bail> {
        let json = self.json;
        let start = self.at;
        let mut at = start;
        if json.get(at) == Some(&b'-') {
            at += 1;
        }
        match json.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => at = digits_end(json, at + 1),
            _ => return Err(Bail),
        }
        let mut plain = true;
        if json.get(at) == Some(&b'.') {
            plain = false;
            let end = digits_end(json, at + 1);
            if end == at + 1 {
                return Err(Bail);
            }
            at = end;
        }
        if let Some(b'e' | b'E') = json.get(at) {
            plain = false;
            at += 1;
            if let Some(b'+' | b'-') = json.get(at) {
                at += 1;
            }
            let end = digits_end(json, at);
            if end == at {
                return Err(Bail);
            }
            at = end;
        }
        self.at = at;
        Ok((start, at, plain))
    }

    /// Steps over one value, checking it as strictly as the rest; returns
    /// how deep its containers nest (0 for a scalar). `depth`: the
    /// containers open once inside it.
    fn skip(&mut self, depth: u32) -> Result<u32, Bail> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| 0),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| 0),
            Some(b't') => self.literal(b"true").map(|_| 0),
            Some(b'f') => self.literal(b"false").map(|_| 0),
            Some(b'n') => self.literal(b"null").map(|_| 0),
            Some(open @ (b'[' | b'{')) => {
                if depth > MAX_DEPTH {
                    return Err(Bail);
                }
                let close = if open == b'[' { b']' } else { b'}' };
                self.at += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.at += 1;
                    return Ok(1);
                }
                let mut deepest = 0;
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    deepest = deepest.max(self.skip(depth + 1)?);
                    self.ws();
                    match self.next() {
                        Some(b',') => self.ws(),
                        Some(byte) if byte == close => return Ok(deepest + 1),
                        _ => return Err(Bail),
                    }
                }
            }
            _ => Err(Bail),
        }
    }
}

fn digits_end(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    at
}

/// Just past the escape at `at` (a backslash), which must be one serde_json
/// takes in a `str`.
fn escape_end(json: &[u8], at: usize) -> Result<usize, Bail> {
    match json.get(at + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => match hex4(json, at + 2)? {
            0xD800..=0xDBFF => match (json.get(at + 6..at + 8), hex4(json, at + 8)) {
                (Some(b"\\u"), Ok(0xDC00..=0xDFFF)) => Ok(at + 12),
                _ => Err(Bail),
            },
            0xDC00..=0xDFFF => Err(Bail),
            _ => Ok(at + 6),
        },
        _ => Err(Bail),
    }
}

fn hex4(json: &[u8], at: usize) -> Result<u32, Bail> {
    let digits = json.get(at..at + 4).ok_or(Bail)?;
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16).ok_or(Bail)?;
        Ok(acc * 16 + v)
    })
}

/// The content of a string whose escapes [`escape_end`] has checked.
fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Bail> {
    let mut at = 0;
    while let Some(offset) = memchr::memchr(b'\\', raw.get(at..).unwrap_or_default()) {
        out.extend_from_slice(&raw[at..at + offset]);
        at += offset;
        let byte = match raw.get(at + 1) {
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let high = hex4(raw, at + 2)?;
                let (code, len) = match high {
                    0xD800..=0xDBFF => {
                        let low = hex4(raw, at + 8)?;
                        (0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3ff), 12)
                    }
                    _ => (high, 6),
                };
                let c = char::from_u32(code).ok_or(Bail)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                at += len;
                continue;
            }
            Some(&other) => other,
            None => return Err(Bail),
        };
        out.push(byte);
        at += 2;
    }
    out.extend_from_slice(raw.get(at..).unwrap_or_default());
    Ok(())
}

// Eight bytes as one word, the first in the low bits (as in numbers.rs).
const LANES: u64 = 0x0101_0101_0101_0101;
const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

fn word_at(json: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = json.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The high bit of each lane of `word` that equals `byte`, no other bit.
fn lanes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (LANES * u64::from(byte));
    !(((x & LOW_BITS).wrapping_add(LOW_BITS)) | x | LOW_BITS)
}

/// Nonzero when a lane is below 0x20; the lowest bit set is the first such
/// lane (a borrow can only mark lanes above a real one).
fn lanes_below_space(word: u64) -> u64 {
    word.wrapping_sub(LANES * 0x20) & !word & HIGH_BITS
}

// -------------------------------------------------------------- compiling

struct Plan {
    name: String,
    messages: Vec<MessagePlan>,
    enums: Vec<EnumPlan>,
    /// `None`: a root type read only by prost-reflect (a well-known type).
    root: Option<u32>,
}

struct MessagePlan {
    fields: Vec<FieldPlan>,
    /// JSON name and proto name → index in `fields`.
    keys: KeyTable,
    /// Bit words per open object: fields, then oneofs.
    words: usize,
    /// An unknown key could name an extension (`[pkg.ext]`).
    has_extensions: bool,
    /// Two fields share a JSON name: which one prost-reflect picks is not
    /// worth knowing.
    unsupported: bool,
}

struct FieldPlan {
    number: u32,
    /// The key with the value's own wire type (LEN for a map).
    tag: Tag,
    /// The key with wire type LEN, for a packed list.
    packed_tag: Tag,
    shape: Shape,
    /// Bit of its oneof (proto3 `optional` included), after the fields'.
    oneof_bit: Option<usize>,
    /// `null` sets this field (google.protobuf.Value, NullValue) instead
    /// of leaving it unset.
    null_is_value: bool,
}

enum Shape {
    /// `skip_default`: no presence, so a default value is not written.
    Single {
        value: ValueType,
        skip_default: bool,
    },
    List {
        value: ValueType,
        packed: bool,
    },
    Map(Box<MapPlan>),
}

struct MapPlan {
    key: ValueType,
    key_tag: Tag,
    key_skip_default: bool,
    value: ValueType,
    value_tag: Tag,
    value_skip_default: bool,
}

enum ValueType {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    Enum(u32),
    Message(u32),
    /// Read by prost-reflect, one value at a time. `integers`: it may hold
    /// integer fields (numbers.rs looks into it).
    WellKnown {
        desc: MessageDescriptor,
        integers: bool,
    },
    /// Groups and NullValue: always a bail.
    Unsupported,
}

impl ValueType {
    fn wire_type(&self) -> u32 {
        match self {
            ValueType::Double | ValueType::Fixed64 | ValueType::Sfixed64 => 1,
            ValueType::Float | ValueType::Fixed32 | ValueType::Sfixed32 => 5,
            ValueType::String | ValueType::Bytes | ValueType::Message(_) | ValueType::WellKnown { .. } => 2,
            _ => 0,
        }
    }
}

struct EnumPlan {
    /// Value name → number (as u32 bits).
    names: KeyTable,
    default: i32,
}

/// Names → small numbers, by open addressing on a multiplicative hash.
struct KeyTable {
    slots: Box<[u32]>,
    shift: u32,
    names: Vec<(Box<[u8]>, u32)>,
}

const EMPTY: u32 = u32::MAX;

impl KeyTable {
    /// Later entries win over earlier ones with the same name.
    fn new(entries: Vec<(Box<[u8]>, u32)>) -> KeyTable {
        let bits = (entries.len() * 2).max(8).next_power_of_two().trailing_zeros();
        let mut table = KeyTable { slots: vec![EMPTY; 1 << bits].into_boxed_slice(), shift: 64 - bits, names: vec![] };
        for (name, value) in entries {
            match table.find(&name) {
                Ok(i) => table.names[i].1 = value,
                Err(slot) => {
                    table.slots[slot] = table.names.len() as u32;
                    table.names.push((name, value));
                }
            }
        }
        table
    }

    fn get(&self, name: &[u8]) -> Option<u32> {
        self.find(name).ok().map(|i| self.names[i].1)
    }

    /// `Ok(index in names)`, or `Err(free slot)`.
    fn find(&self, name: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = (hash(name) >> self.shift) as usize;
        loop {
            let entry = self.slots[slot];
            if entry == EMPTY {
                return Err(slot);
            }
            if *self.names[entry as usize].0 == *name {
                return Ok(entry as usize);
            }
            slot = (slot + 1) & mask;
        }
    }
}

fn hash(name: &[u8]) -> u64 {
    let mut h = name.len() as u64;
    for chunk in name.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h
}

#[derive(Default)]
struct Compiler {
    messages: Vec<MessagePlan>,
    enums: Vec<EnumPlan>,
    message_ids: std::collections::HashMap<String, u32>,
    enum_ids: std::collections::HashMap<String, u32>,
}

impl Compiler {
    fn message(&mut self, desc: &MessageDescriptor) -> u32 {
        if let Some(&id) = self.message_ids.get(desc.full_name()) {
            return id;
        }
        let id = self.messages.len() as u32;
        self.message_ids.insert(desc.full_name().to_owned(), id);
        self.messages.push(MessagePlan {
            fields: Vec::new(),
            keys: KeyTable::new(Vec::new()),
            words: 0,
            has_extensions: false,
            unsupported: true,
        });
        let field_count = desc.fields().len();
        let fields: Vec<FieldPlan> = desc.fields().map(|field| self.field(&field, field_count)).collect();
        // prost-reflect looks a key up by JSON name first, then by name.
        let mut entries: Vec<(Box<[u8]>, u32)> =
            desc.fields().enumerate().map(|(i, f)| (f.name().as_bytes().into(), i as u32)).collect();
        let mut json_names = std::collections::HashSet::new();
        let mut unsupported = false;
        for (i, field) in desc.fields().enumerate() {
            unsupported |= !json_names.insert(field.json_name().to_owned());
            entries.push((field.json_name().as_bytes().into(), i as u32));
        }
        self.messages[id as usize] = MessagePlan {
            fields,
            keys: KeyTable::new(entries),
            words: (field_count + desc.oneofs().len()).div_ceil(64),
            has_extensions: desc.extensions().next().is_some(),
            unsupported,
        };
        id
    }

    fn field(&mut self, field: &FieldDescriptor, field_count: usize) -> FieldPlan {
        let number = field.number();
        let kind = field.kind();
        let null_is_value = match &kind {
            Kind::Message(m) => m.full_name() == "google.protobuf.Value",
            Kind::Enum(e) => e.full_name() == "google.protobuf.NullValue",
            _ => false,
        };
        let shape = match &kind {
            Kind::Message(entry) if field.is_map() => {
                let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                let (key_type, value_type) = (self.value_type(&key), self.value_type(&value));
                Shape::Map(Box::new(MapPlan {
                    key_tag: Tag::new(key.number(), key_type.wire_type()),
                    key: key_type,
                    key_skip_default: !key.supports_presence(),
                    value_tag: Tag::new(value.number(), value_type.wire_type()),
                    value: value_type,
                    value_skip_default: !value.supports_presence(),
                }))
            }
            _ if field.is_list() => Shape::List { value: self.value_type(field), packed: field.is_packed() },
            _ => Shape::Single { value: self.value_type(field), skip_default: !field.supports_presence() },
        };
        let wire_type = match &shape {
            Shape::Single { value, .. } | Shape::List { value, .. } => value.wire_type(),
            Shape::Map(_) => 2,
        };
        FieldPlan {
            number,
            tag: Tag::new(number, wire_type),
            packed_tag: Tag::new(number, 2),
            shape,
            oneof_bit: field
                .containing_oneof()
                .and_then(|o| field.parent_message().oneofs().position(|other| other.name() == o.name()))
                .map(|i| field_count + i),
            null_is_value,
        }
    }

    fn value_type(&mut self, field: &FieldDescriptor) -> ValueType {
        if field.is_group() {
            return ValueType::Unsupported;
        }
        match field.kind() {
            Kind::Double => ValueType::Double,
            Kind::Float => ValueType::Float,
            Kind::Int32 => ValueType::Int32,
            Kind::Int64 => ValueType::Int64,
            Kind::Uint32 => ValueType::Uint32,
            Kind::Uint64 => ValueType::Uint64,
            Kind::Sint32 => ValueType::Sint32,
            Kind::Sint64 => ValueType::Sint64,
            Kind::Fixed32 => ValueType::Fixed32,
            Kind::Fixed64 => ValueType::Fixed64,
            Kind::Sfixed32 => ValueType::Sfixed32,
            Kind::Sfixed64 => ValueType::Sfixed64,
            Kind::Bool => ValueType::Bool,
            Kind::String => ValueType::String,
            Kind::Bytes => ValueType::Bytes,
            Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => ValueType::Unsupported,
            Kind::Enum(e) => ValueType::Enum(self.enum_type(&e)),
            Kind::Message(m) if is_well_known(&m) => {
                let integers = matches!(
                    m.full_name(),
                    "google.protobuf.Int32Value"
                        | "google.protobuf.Int64Value"
                        | "google.protobuf.UInt32Value"
                        | "google.protobuf.UInt64Value"
                        | "google.protobuf.Any"
                );
                ValueType::WellKnown { desc: m, integers }
            }
            Kind::Message(m) => ValueType::Message(self.message(&m)),
        }
    }

    fn enum_type(&mut self, desc: &EnumDescriptor) -> u32 {
        if let Some(&id) = self.enum_ids.get(desc.full_name()) {
            return id;
        }
        let id = self.enums.len() as u32;
        self.enum_ids.insert(desc.full_name().to_owned(), id);
        let names = desc.values().map(|v| (v.name().as_bytes().into(), u32::from_ne_bytes(v.number().to_ne_bytes())));
        self.enums.push(EnumPlan { names: KeyTable::new(names.collect()), default: desc.default_value().number() });
        id
    }
}

#[cfg(test)]
mod tests;
