//! Protobuf wire bytes → proto3 JSON, without a `DynamicMessage` in
//! between: the response side's fast path.
//!
//! A [`JsonOut`] is compiled once per response type at load: per message
//! type its fields by number (both JSON keys, the kind, presence, oneof),
//! enum names by number. Rendering walks the wire bytes once and writes each
//! field through the same serde_json serializer the `DynamicMessage` path
//! uses, so numbers, strings, escapes and pretty-printing come out the same
//! by construction.
//!
//! It covers what a well-behaved encoder writes: fields in ascending number
//! order, each at most once (a repeated field or map as one run). Anything
//! else — a field out of order or given twice (which protobuf merges), two
//! members of one oneof, a wire type that does not fit, invalid UTF-8, a map
//! key given twice, deep nesting — makes it *bail*: the caller drops what
//! was written and takes the `DynamicMessage` path, which is the oracle and
//! also gives the error for bytes that are not a valid message. Well-known
//! types, messages with extensions or groups are handed to prost-reflect
//! one sub-message at a time. prost-reflect keeps map entries in a
//! `HashMap`, so with two entries or more the two paths may order a map
//! differently; everything else is byte for byte the same.

use std::collections::HashSet;

use base64::display::Base64Display;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::transcode::response::{non_finite, FieldJson};
use crate::transcode::JsonSettings;

/// Nesting past this bails (prost-reflect refuses 100 levels).
const MAX_DEPTH: u32 = 32;

/// Field numbers below this are looked up by index.
const DENSE_NUMBERS: u32 = 128;

/// The wire → JSON plan of one message type and every type inside it.
#[derive(Debug)]
pub struct JsonOut {
    /// Index 0 is the root.
    messages: Vec<Shape>,
    enums: Vec<EnumNames>,
}

#[derive(Debug)]
enum Shape {
    Plain(Fields),
    /// Rendered by prost-reflect from the sub-message's bytes.
    Oracle(MessageDescriptor),
}

#[derive(Debug)]
struct Fields {
    /// In ascending number order: the order the JSON object is written in.
    fields: Vec<Field>,
    /// `dense[number]`: index into `fields`, or `NONE`.
    dense: Vec<u16>,
}

const NONE: u16 = u16::MAX;

#[derive(Debug)]
struct Field {
    number: u32,
    json_name: Box<str>,
    proto_name: Box<str>,
    element: Element,
    /// `Some` for a map: the key's kind (`element` is then the value's).
    map_key: Option<Scalar>,
    list: bool,
    presence: bool,
    oneof: Option<u8>,
    /// The field's value when absent (rendered by `FieldJson` when unset
    /// fields are emitted), and its kind for that.
    default: Value,
    kind: Kind,
    /// For a map: the value's default, for an entry without one.
    map_value_default: Option<(Value, Kind)>,
}

impl Field {
    fn key(&self, proto_names: bool) -> &str {
        if proto_names {
            &self.proto_name
        } else {
            &self.json_name
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Scalar(Scalar),
    Enum(usize),
    Message(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
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
}

#[derive(Debug)]
struct EnumNames {
    /// `google.protobuf.NullValue` renders as `null`.
    null: bool,
    /// Sorted by number: the name prost-reflect picks for it.
    names: Vec<(i32, Box<str>)>,
}

impl EnumNames {
    fn name(&self, number: i32) -> Option<&str> {
        self.names.binary_search_by_key(&number, |(n, _)| *n).ok().map(|i| &*self.names[i].1)
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

impl Scalar {
    fn of(kind: &Kind) -> Option<Self> {
        Some(match kind {
            Kind::Double => Self::Double,
            Kind::Float => Self::Float,
            Kind::Int32 => Self::Int32,
            Kind::Int64 => Self::Int64,
            Kind::Uint32 => Self::Uint32,
            Kind::Uint64 => Self::Uint64,
            Kind::Sint32 => Self::Sint32,
            Kind::Sint64 => Self::Sint64,
            Kind::Fixed32 => Self::Fixed32,
            Kind::Fixed64 => Self::Fixed64,
            Kind::Sfixed32 => Self::Sfixed32,
            Kind::Sfixed64 => Self::Sfixed64,
            Kind::Bool => Self::Bool,
            Kind::String => Self::String,
            Kind::Bytes => Self::Bytes,
            Kind::Enum(_) | Kind::Message(_) => return None,
        })
    }

    fn wire_type(self) -> u8 {
        match self {
            Self::Double | Self::Fixed64 | Self::Sfixed64 => WIRE_FIXED64,
            Self::Float | Self::Fixed32 | Self::Sfixed32 => WIRE_FIXED32,
            Self::String | Self::Bytes => WIRE_LEN,
            _ => WIRE_VARINT,
        }
    }
}

/// prost-reflect renders these itself (`wkt.rs` there).
fn is_well_known(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.Struct"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}

impl JsonOut {
    /// The plan for `root` and every message type reachable from it.
    pub fn new(root: &MessageDescriptor) -> Self {
        let mut builder = Builder { out: JsonOut { messages: Vec::new(), enums: Vec::new() }, seen: Vec::new() };
        builder.message(root);
        builder.out
    }

    /// Whether the root message itself is walked here (not handed whole to
    /// prost-reflect, which the caller does better itself).
    pub fn covers_root(&self) -> bool {
        matches!(self.messages.first(), Some(Shape::Plain(_)))
    }

    /// Appends the JSON of the message encoded in `bytes` to `out`.
    /// `false`: the fast path bailed and `out` is as it was; render through
    /// a `DynamicMessage` instead.
    pub fn render(&self, settings: &JsonSettings, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        let object = Object { plan: self, index: 0, bytes, settings, depth: 0 };
        let written = crate::transcode::response::write_json(settings, out, |s| object.serialize(s));
        if written.is_err() {
            out.truncate(start);
        }
        written.is_ok()
    }
}

struct Builder {
    out: JsonOut,
    /// Message types already planned, by full name, with their index.
    seen: Vec<(String, usize)>,
}

impl Builder {
    fn message(&mut self, desc: &MessageDescriptor) -> usize {
        if let Some((_, index)) = self.seen.iter().find(|(name, _)| name == desc.full_name()) {
            return *index;
        }
        let index = self.out.messages.len();
        self.seen.push((desc.full_name().to_owned(), index));
        self.out.messages.push(Shape::Oracle(desc.clone()));
        let plain = !is_well_known(desc)
            && desc.extensions().len() == 0
            && desc.oneofs().len() <= 64
            && desc.fields().all(|f| !f.is_group() && f.number() < u32::from(NONE));
        if plain {
            let fields = self.fields(desc);
            self.out.messages[index] = Shape::Plain(fields);
        }
        index
    }

    fn fields(&mut self, desc: &MessageDescriptor) -> Fields {
        let mut fields: Vec<Field> = desc.fields().map(|f| self.field(&f)).collect();
        fields.sort_by_key(|f| f.number);
        let top = fields.iter().map(|f| f.number + 1).filter(|&n| n <= DENSE_NUMBERS).max().unwrap_or(0);
        let mut dense = vec![NONE; top as usize];
        for (i, f) in fields.iter().enumerate() {
            if let Some(slot) = dense.get_mut(f.number as usize) {
                *slot = i as u16;
            }
        }
        Fields { fields, dense }
    }

    fn field(&mut self, f: &FieldDescriptor) -> Field {
        let kind = f.kind();
        let (element, map_key, map_value_default) = match &kind {
            Kind::Message(entry) if f.is_map() => {
                let key = entry.map_entry_key_field();
                let value = entry.map_entry_value_field();
                let key = Scalar::of(&key.kind()).unwrap_or(Scalar::String);
                let default = (Value::default_value_for_field(&value), value.kind());
                (self.element(&value.kind()), Some(key), Some(default))
            }
            other => (self.element(other), None, None),
        };
        Field {
            number: f.number(),
            json_name: f.json_name().into(),
            proto_name: f.name().into(),
            element,
            map_key,
            list: f.is_list(),
            presence: f.supports_presence(),
            oneof: f.containing_oneof().and_then(|o| {
                let index = f.parent_message().oneofs().position(|other| other.name() == o.name())?;
                u8::try_from(index).ok()
            }),
            default: Value::default_value_for_field(f),
            kind,
            map_value_default,
        }
    }

    fn element(&mut self, kind: &Kind) -> Element {
        match kind {
            Kind::Message(desc) => Element::Message(self.message(desc)),
            Kind::Enum(desc) => Element::Enum(self.enumeration(desc)),
            other => Element::Scalar(Scalar::of(other).unwrap_or(Scalar::Bytes)),
        }
    }

    fn enumeration(&mut self, desc: &EnumDescriptor) -> usize {
        let mut names: Vec<(i32, Box<str>)> = Vec::new();
        for value in desc.values() {
            let number = value.number();
            if names.iter().all(|(n, _)| *n != number) {
                if let Some(chosen) = desc.get_value(number) {
                    names.push((number, chosen.name().into()));
                }
            }
        }
        names.sort_by_key(|(n, _)| *n);
        self.out.enums.push(EnumNames { null: desc.full_name() == "google.protobuf.NullValue", names });
        self.out.enums.len() - 1
    }
}

/// Why the fast path gave up; never shown (the oracle runs instead).
fn bail<E: serde::ser::Error>() -> E {
    E::custom("the direct path does not cover this message")
}

/// A cursor over wire bytes; `None` is malformed input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// prost's rules: at most ten bytes, the tenth at most 1.
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let first = *self.buf.get(self.pos)?;
        if first < 0x80 {
            self.pos += 1;
            return Some(u64::from(first));
        }
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos + i)?;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                if i == 9 && byte > 1 {
                    return None;
                }
                self.pos += i + 1;
                return Some(value);
            }
        }
        None
    }

    /// A field key: its number and wire type (groups and invalid types
    /// are `None`).
    #[inline]
    fn key(&mut self) -> Option<(u32, u8)> {
        let key = self.varint()?;
        let key = u32::try_from(key).ok()?;
        let wire = (key & 7) as u8;
        let number = key >> 3;
        if number == 0 || !matches!(wire, WIRE_VARINT | WIRE_FIXED64 | WIRE_LEN | WIRE_FIXED32) {
            return None;
        }
        Some((number, wire))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn len_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        self.take(len)
    }

    fn fixed32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn fixed64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            _ => None,
        }
    }

    /// One scalar of `kind` written with wire type `wire`.
    fn scalar(&mut self, kind: Scalar, wire: u8) -> Option<Decoded<'a>> {
        if wire != kind.wire_type() {
            return None;
        }
        Some(match kind {
            Scalar::Double => Decoded::F64(f64::from_bits(self.fixed64()?)),
            Scalar::Float => Decoded::F32(f32::from_bits(self.fixed32()?)),
            Scalar::Int32 => Decoded::I32(self.varint()? as i32),
            Scalar::Int64 => Decoded::I64(self.varint()? as i64),
            Scalar::Uint32 => Decoded::U32(self.varint()? as u32),
            Scalar::Uint64 => Decoded::U64(self.varint()?),
            Scalar::Sint32 => {
                let v = self.varint()? as u32;
                Decoded::I32(((v >> 1) as i32) ^ -((v & 1) as i32))
            }
            Scalar::Sint64 => {
                let v = self.varint()?;
                Decoded::I64(((v >> 1) as i64) ^ -((v & 1) as i64))
            }
            Scalar::Fixed32 => Decoded::U32(self.fixed32()?),
            Scalar::Fixed64 => Decoded::U64(self.fixed64()?),
            Scalar::Sfixed32 => Decoded::I32(self.fixed32()? as i32),
            Scalar::Sfixed64 => Decoded::I64(self.fixed64()? as i64),
            Scalar::Bool => Decoded::Bool(self.varint()? != 0),
            Scalar::String => Decoded::Str(std::str::from_utf8(self.len_delimited()?).ok()?),
            Scalar::Bytes => Decoded::Bytes(self.len_delimited()?),
        })
    }
}

/// A decoded scalar, borrowing strings and bytes from the wire.
#[derive(Debug, Clone, Copy)]
enum Decoded<'a> {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
}

impl Decoded<'_> {
    /// proto3's zero value (compared as prost-reflect's `Value` does:
    /// `-0.0` is zero, NaN is not).
    fn is_zero(self) -> bool {
        match self {
            Self::Bool(v) => !v,
            Self::I32(v) => v == 0,
            Self::I64(v) => v == 0,
            Self::U32(v) => v == 0,
            Self::U64(v) => v == 0,
            Self::F32(v) => v == 0.0,
            Self::F64(v) => v == 0.0,
            Self::Str(v) => v.is_empty(),
            Self::Bytes(v) => v.is_empty(),
        }
    }
}

/// A map key, to find one given twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyRef<'a> {
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Str(&'a str),
}

impl<'a> KeyRef<'a> {
    fn of(value: Decoded<'a>) -> Option<Self> {
        Some(match value {
            Decoded::Bool(v) => Self::Bool(v),
            Decoded::I32(v) => Self::Signed(v.into()),
            Decoded::I64(v) => Self::Signed(v),
            Decoded::U32(v) => Self::Unsigned(v.into()),
            Decoded::U64(v) => Self::Unsigned(v),
            Decoded::Str(v) => Self::Str(v),
            _ => return None,
        })
    }
}

/// One message's bytes, rendered as a JSON object (or by prost-reflect).
struct Object<'a> {
    plan: &'a JsonOut,
    index: usize,
    bytes: &'a [u8],
    settings: &'a JsonSettings,
    depth: u32,
}

impl Serialize for Object<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.depth > MAX_DEPTH {
            return Err(bail());
        }
        let fields = match &self.plan.messages[self.index] {
            Shape::Plain(fields) => fields,
            Shape::Oracle(desc) => {
                let message = DynamicMessage::decode(desc.clone(), self.bytes).map_err(|_| bail())?;
                return message.serialize_with_options(s, &self.settings.serialize);
            }
        };
        let options = &self.settings.options;
        let emit = options.emit_unpopulated;
        let proto_names = options.use_proto_names;
        let mut map = s.serialize_map(None)?;
        let mut reader = Reader::new(self.bytes);
        // Fields before `next` have been written or passed over.
        let mut next = 0;
        let mut last = 0;
        let mut oneofs = 0u64;
        while !reader.done() {
            let start = reader.pos;
            let (number, wire) = reader.key().ok_or_else(bail)?;
            let Some(index) = fields.find(number) else {
                reader.skip(wire).ok_or_else(bail)?;
                continue;
            };
            // Out of order, or given twice: protobuf's merge rules apply.
            if number <= last {
                return Err(bail());
            }
            last = number;
            let field = &fields.fields[index];
            if emit {
                for unset in &fields.fields[next..index] {
                    if !unset.presence {
                        map.serialize_entry(unset.key(proto_names), &self.default_of(unset))?;
                    }
                }
            }
            next = index + 1;
            if let Some(oneof) = field.oneof {
                if oneofs & (1 << oneof) != 0 {
                    return Err(bail());
                }
                oneofs |= 1 << oneof;
            }
            if field.list || field.map_key.is_some() {
                reader.pos = start;
                let run = self.run(field, &mut reader).ok_or_else(bail)?;
                if run.count > 0 || emit {
                    map.serialize_entry(field.key(proto_names), &run)?;
                }
                continue;
            }
            match field.element {
                Element::Message(index) => {
                    if wire != WIRE_LEN {
                        return Err(bail());
                    }
                    let bytes = reader.len_delimited().ok_or_else(bail)?;
                    map.serialize_entry(field.key(proto_names), &self.nested(index, bytes))?;
                }
                Element::Scalar(kind) => {
                    let value = reader.scalar(kind, wire).ok_or_else(bail)?;
                    if field.presence || emit || !value.is_zero() {
                        map.serialize_entry(field.key(proto_names), &self.scalar(value))?;
                    }
                }
                Element::Enum(names) => {
                    let value = reader.scalar(Scalar::Int32, wire).ok_or_else(bail)?;
                    if field.presence || emit || !value.is_zero() {
                        let Decoded::I32(number) = value else { return Err(bail()) };
                        map.serialize_entry(field.key(proto_names), &self.enumeration(names, number))?;
                    }
                }
            }
        }
        if emit {
            for unset in &fields.fields[next..] {
                if !unset.presence {
                    map.serialize_entry(unset.key(proto_names), &self.default_of(unset))?;
                }
            }
        }
        map.end()
    }
}

impl Fields {
    #[inline]
    fn find(&self, number: u32) -> Option<usize> {
        match self.dense.get(number as usize) {
            Some(&NONE) => None,
            Some(&index) => Some(usize::from(index)),
            None => self.fields.binary_search_by_key(&number, |f| f.number).ok(),
        }
    }
}

impl<'a> Object<'a> {
    fn nested(&self, index: usize, bytes: &'a [u8]) -> Object<'a> {
        Object { plan: self.plan, index, bytes, settings: self.settings, depth: self.depth + 1 }
    }

    fn scalar(&self, value: Decoded<'a>) -> ScalarJson<'a> {
        ScalarJson { value, settings: self.settings }
    }

    fn enumeration(&self, names: usize, number: i32) -> EnumJson<'a> {
        EnumJson { names: &self.plan.enums[names], number, settings: self.settings }
    }

    fn default_of(&self, field: &'a Field) -> FieldJson<'a> {
        FieldJson { value: &field.default, kind: &field.kind, settings: self.settings }
    }

    /// The consecutive occurrences of a repeated or map field starting at
    /// the reader's position (key included); the reader moves past them.
    fn run(&self, field: &'a Field, reader: &mut Reader<'a>) -> Option<Run<'a>> {
        let start = reader.pos;
        let mut count = 0usize;
        let mut end = start;
        while !reader.done() {
            let at = reader.pos;
            let (number, wire) = reader.key()?;
            if number != field.number {
                reader.pos = at;
                break;
            }
            count += match (field.map_key, field.element) {
                (None, Element::Scalar(kind)) if wire == WIRE_LEN && kind.wire_type() != WIRE_LEN => {
                    packed_count(reader.len_delimited()?, kind.wire_type())?
                }
                (None, Element::Enum(_)) if wire == WIRE_LEN => packed_count(reader.len_delimited()?, WIRE_VARINT)?,
                _ => {
                    reader.skip(wire)?;
                    1
                }
            };
            end = reader.pos;
        }
        Some(Run { object: self.nested_same(), field, bytes: &reader.buf[start..end], count })
    }

    fn nested_same(&self) -> Object<'a> {
        Object { plan: self.plan, index: self.index, bytes: self.bytes, settings: self.settings, depth: self.depth }
    }
}

/// How many elements a packed chunk holds; `None` if one is cut off.
fn packed_count(chunk: &[u8], wire: u8) -> Option<usize> {
    match wire {
        WIRE_FIXED32 => (chunk.len() % 4 == 0).then_some(chunk.len() / 4),
        WIRE_FIXED64 => (chunk.len() % 8 == 0).then_some(chunk.len() / 8),
        _ => {
            // Every element ends with a byte below 0x80; the last byte must.
            if chunk.last().is_some_and(|&b| b >= 0x80) {
                return None;
            }
            Some(chunk.iter().filter(|&&b| b < 0x80).count())
        }
    }
}

/// A repeated field's or map's occurrences, rendered as one JSON array or
/// object.
struct Run<'a> {
    object: Object<'a>,
    field: &'a Field,
    /// The occurrences, keys included.
    bytes: &'a [u8],
    count: usize,
}

impl Serialize for Run<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut reader = Reader::new(self.bytes);
        if let Some(key_kind) = self.field.map_key {
            return self.map(s, key_kind, &mut reader);
        }
        let mut seq = s.serialize_seq(Some(self.count))?;
        while !reader.done() {
            let (_, wire) = reader.key().ok_or_else(bail)?;
            match self.field.element {
                Element::Message(index) => {
                    if wire != WIRE_LEN {
                        return Err(bail());
                    }
                    let bytes = reader.len_delimited().ok_or_else(bail)?;
                    seq.serialize_element(&self.object.nested(index, bytes))?;
                }
                Element::Scalar(kind) if wire == WIRE_LEN && kind.wire_type() != WIRE_LEN => {
                    let mut chunk = Reader::new(reader.len_delimited().ok_or_else(bail)?);
                    while !chunk.done() {
                        let value = chunk.scalar(kind, kind.wire_type()).ok_or_else(bail)?;
                        seq.serialize_element(&self.object.scalar(value))?;
                    }
                }
                Element::Scalar(kind) => {
                    let value = reader.scalar(kind, wire).ok_or_else(bail)?;
                    seq.serialize_element(&self.object.scalar(value))?;
                }
                Element::Enum(names) if wire == WIRE_LEN => {
                    let mut chunk = Reader::new(reader.len_delimited().ok_or_else(bail)?);
                    while !chunk.done() {
                        let number = chunk.varint().ok_or_else(bail)? as i32;
                        seq.serialize_element(&self.object.enumeration(names, number))?;
                    }
                }
                Element::Enum(names) => {
                    let Some(Decoded::I32(number)) = reader.scalar(Scalar::Int32, wire) else {
                        return Err(bail());
                    };
                    seq.serialize_element(&self.object.enumeration(names, number))?;
                }
            }
        }
        seq.end()
    }
}

impl Run<'_> {
    fn map<S: Serializer>(&self, s: S, key_kind: Scalar, reader: &mut Reader<'_>) -> Result<S::Ok, S::Error> {
        // Small maps are checked for repeated keys pairwise, large ones
        // with a set.
        const PAIRWISE: usize = 16;
        let mut seen_few: [Option<KeyRef<'_>>; PAIRWISE] = [None; PAIRWISE];
        let mut seen_many: HashSet<KeyRef<'_>> = HashSet::new();
        let mut map = s.serialize_map(Some(self.count))?;
        let mut entries = 0;
        while !reader.done() {
            let (_, wire) = reader.key().ok_or_else(bail)?;
            if wire != WIRE_LEN {
                return Err(bail());
            }
            let entry = reader.len_delimited().ok_or_else(bail)?;
            let (key, value) = entry_parts(entry, key_kind, self.field.element).ok_or_else(bail)?;
            let key = match key {
                Some(key) => key,
                None => zero(key_kind).ok_or_else(bail)?,
            };
            let seen = KeyRef::of(key).ok_or_else(bail)?;
            if self.count <= PAIRWISE {
                if seen_few[..entries].contains(&Some(seen)) {
                    return Err(bail());
                }
                seen_few[entries] = Some(seen);
            } else if !seen_many.insert(seen) {
                return Err(bail());
            }
            entries += 1;
            let key = MapKeyJson(key);
            match (value, self.field.element) {
                (None, _) => {
                    let Some((default, kind)) = &self.field.map_value_default else {
                        return Err(bail());
                    };
                    let settings = self.object.settings;
                    map.serialize_entry(&key, &FieldJson { value: default, kind, settings })?;
                }
                (Some(EntryValue::Bytes(bytes)), Element::Message(index)) => {
                    map.serialize_entry(&key, &self.object.nested(index, bytes))?;
                }
                (Some(EntryValue::Scalar(value)), Element::Scalar(_)) => {
                    map.serialize_entry(&key, &self.object.scalar(value))?;
                }
                (Some(EntryValue::Scalar(Decoded::I32(number))), Element::Enum(names)) => {
                    map.serialize_entry(&key, &self.object.enumeration(names, number))?;
                }
                _ => return Err(bail()),
            }
        }
        map.end()
    }
}

enum EntryValue<'a> {
    Scalar(Decoded<'a>),
    Bytes(&'a [u8]),
}

/// A map entry's key and value, each when present. Entries written
/// otherwise than key then value, each once, are left to the oracle.
fn entry_parts<'a>(
    entry: &'a [u8],
    key_kind: Scalar,
    value: Element,
) -> Option<(Option<Decoded<'a>>, Option<EntryValue<'a>>)> {
    let mut reader = Reader::new(entry);
    let mut key = None;
    let mut found = None;
    let mut last = 0;
    while !reader.done() {
        let (number, wire) = reader.key()?;
        if number <= last || number > 2 {
            return None;
        }
        last = number;
        if number == 1 {
            key = Some(reader.scalar(key_kind, wire)?);
        } else {
            found = Some(match value {
                Element::Scalar(kind) => EntryValue::Scalar(reader.scalar(kind, wire)?),
                Element::Enum(_) => EntryValue::Scalar(reader.scalar(Scalar::Int32, wire)?),
                Element::Message(_) if wire == WIRE_LEN => EntryValue::Bytes(reader.len_delimited()?),
                Element::Message(_) => return None,
            });
        }
    }
    Some((key, found))
}

/// A map key's zero value, for an entry without a key.
fn zero(kind: Scalar) -> Option<Decoded<'static>> {
    Some(match kind {
        Scalar::Bool => Decoded::Bool(false),
        Scalar::Int32 | Scalar::Sint32 | Scalar::Sfixed32 => Decoded::I32(0),
        Scalar::Int64 | Scalar::Sint64 | Scalar::Sfixed64 => Decoded::I64(0),
        Scalar::Uint32 | Scalar::Fixed32 => Decoded::U32(0),
        Scalar::Uint64 | Scalar::Fixed64 => Decoded::U64(0),
        Scalar::String => Decoded::Str(""),
        Scalar::Double | Scalar::Float | Scalar::Bytes => return None,
    })
}

/// A scalar as prost-reflect's serializer writes it.
struct ScalarJson<'a> {
    value: Decoded<'a>,
    settings: &'a JsonSettings,
}

impl Serialize for ScalarJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let as_numbers = self.settings.options.int64_as_numbers;
        match self.value {
            Decoded::Bool(v) => s.serialize_bool(v),
            Decoded::I32(v) => s.serialize_i32(v),
            Decoded::U32(v) => s.serialize_u32(v),
            Decoded::I64(v) if as_numbers => s.serialize_i64(v),
            Decoded::U64(v) if as_numbers => s.serialize_u64(v),
            Decoded::I64(v) => s.collect_str(&v),
            Decoded::U64(v) => s.collect_str(&v),
            Decoded::F32(v) if v.is_finite() => s.serialize_f32(v),
            Decoded::F64(v) if v.is_finite() => s.serialize_f64(v),
            Decoded::F32(v) => s.serialize_str(non_finite(f64::from(v))),
            Decoded::F64(v) => s.serialize_str(non_finite(v)),
            Decoded::Str(v) => s.serialize_str(v),
            Decoded::Bytes(v) => s.collect_str(&Base64Display::new(v, &BASE64_STANDARD)),
        }
    }
}

struct EnumJson<'a> {
    names: &'a EnumNames,
    number: i32,
    settings: &'a JsonSettings,
}

impl Serialize for EnumJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.names.null {
            return s.serialize_none();
        }
        if self.settings.options.enums_as_ints {
            return s.serialize_i32(self.number);
        }
        match self.names.name(self.number) {
            Some(name) => s.serialize_str(name),
            None => s.serialize_i32(self.number),
        }
    }
}

/// Map keys are JSON strings.
struct MapKeyJson<'a>(Decoded<'a>);

impl Serialize for MapKeyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Decoded::Bool(v) => s.collect_str(&v),
            Decoded::I32(v) => s.collect_str(&v),
            Decoded::I64(v) => s.collect_str(&v),
            Decoded::U32(v) => s.collect_str(&v),
            Decoded::U64(v) => s.collect_str(&v),
            Decoded::Str(v) => s.serialize_str(v),
            _ => Err(bail()),
        }
    }
}

#[cfg(test)]
mod tests;
