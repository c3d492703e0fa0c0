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
use serde::Serializer as _;

use super::is_well_known;
use crate::transcode::names::non_finite;
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

#[derive(Debug)]
struct Field {
    number: u32,
    /// The JSON key with its quotes (escaped as serde_json would).
    json_key: Box<[u8]>,
    proto_key: Box<[u8]>,
    element: Element,
    /// `Some` for a map: the key's kind (`element` is then the value's).
    map_key: Option<Scalar>,
    list: bool,
    presence: bool,
    oneof: Option<u8>,
    /// A singular scalar's value when absent (written when unset fields
    /// are emitted).
    default: Value,
    /// For a map: the value's default, for an entry without one.
    map_value_default: Value,
}

impl Field {
    fn key(&self, proto_names: bool) -> &[u8] {
        if proto_names {
            &self.proto_key
        } else {
            &self.json_key
        }
    }
}

/// `name` as a JSON string, quotes included.
fn quoted(name: &str) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    // Writing a &str into a Vec cannot fail.
    let _ = serde::Serializer::serialize_str(&mut serde_json::Serializer::new(&mut out), name);
    out.into_boxed_slice()
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
        let options = &settings.options;
        let mut writer = Writer {
            plan: self,
            settings,
            out,
            pretty: settings.pretty,
            level: 0,
            emit: options.emit_unpopulated,
            proto_names: options.use_proto_names,
        };
        let written = writer.object(0, bytes, 0).is_some();
        if !written {
            out.truncate(start);
        }
        written
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
                (self.element(&value.kind()), Some(key), Value::default_value_for_field(&value))
            }
            other => (self.element(other), None, Value::Bool(false)),
        };
        Field {
            number: f.number(),
            json_key: quoted(f.json_name()),
            proto_key: quoted(f.name()),
            element,
            map_key,
            list: f.is_list(),
            presence: f.supports_presence(),
            oneof: f.containing_oneof().and_then(|o| {
                let index = f.parent_message().oneofs().position(|other| other.name() == o.name())?;
                u8::try_from(index).ok()
            }),
            default: Value::default_value_for_field(f),
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

/// Writes JSON for wire bytes, as serde_json would with the catalog's
/// formatting (compact, or pretty with two-space indents). `None` is a
/// bail: the caller drops what was written.
struct Writer<'a, 'o> {
    plan: &'a JsonOut,
    settings: &'a JsonSettings,
    out: &'o mut Vec<u8>,
    pretty: bool,
    /// Open objects and arrays.
    level: usize,
    /// `json.emit_unpopulated`, `json.use_proto_names`.
    emit: bool,
    proto_names: bool,
}

impl Writer<'_, '_> {
    fn open(&mut self, bracket: u8) {
        self.out.push(bracket);
        self.level += 1;
    }

    /// Before an object entry or array element.
    fn next_item(&mut self, first: bool) {
        if !first {
            self.out.push(b',');
        }
        if self.pretty {
            self.out.push(b'\n');
            self.indent();
        }
    }

    fn key(&mut self, first: bool, key: &[u8]) {
        self.next_item(first);
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(if self.pretty { b": " } else { b":" });
    }

    fn close(&mut self, bracket: u8, empty: bool) {
        self.level -= 1;
        if self.pretty && !empty {
            self.out.push(b'\n');
            self.indent();
        }
        self.out.push(bracket);
    }

    fn indent(&mut self) {
        for _ in 0..self.level {
            self.out.extend_from_slice(b"  ");
        }
    }

    /// One message: a JSON object walked from its bytes, or prost-reflect's
    /// rendering of it.
    fn object(&mut self, index: usize, bytes: &[u8], depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        let plan = self.plan;
        let fields = match &plan.messages[index] {
            Shape::Plain(fields) => fields,
            Shape::Oracle(desc) => return self.oracle(desc, bytes),
        };
        self.open(b'{');
        let mut first = true;
        let mut reader = Reader::new(bytes);
        // Fields before `next` have been written or passed over.
        let mut next = 0;
        let mut last = 0;
        let mut oneofs = 0u64;
        while !reader.done() {
            let start = reader.pos;
            let (number, wire) = reader.key()?;
            let Some(index) = fields.find(number) else {
                reader.skip(wire)?;
                continue;
            };
            // Out of order, or given twice: protobuf's merge rules apply.
            if number <= last {
                return None;
            }
            last = number;
            let field = &fields.fields[index];
            if self.emit {
                self.unset(&fields.fields[next..index], &mut first);
            }
            next = index + 1;
            if let Some(oneof) = field.oneof {
                if oneofs & (1 << oneof) != 0 {
                    return None;
                }
                oneofs |= 1 << oneof;
            }
            if field.list || field.map_key.is_some() {
                reader.pos = start;
                let (run, count) = run(field, &mut reader)?;
                if count > 0 || self.emit {
                    self.key(first, field.key(self.proto_names));
                    first = false;
                    self.run(field, run, count, depth)?;
                }
                continue;
            }
            let value = match field.element {
                Element::Message(index) if wire == WIRE_LEN => {
                    let bytes = reader.len_delimited()?;
                    self.key(first, field.key(self.proto_names));
                    first = false;
                    self.object(index, bytes, depth + 1)?;
                    continue;
                }
                Element::Message(_) => return None,
                Element::Scalar(kind) => reader.scalar(kind, wire)?,
                Element::Enum(_) => reader.scalar(Scalar::Int32, wire)?,
            };
            if field.presence || self.emit || !value.is_zero() {
                self.key(first, field.key(self.proto_names));
                first = false;
                self.value(field.element, value)?;
            }
        }
        if self.emit {
            self.unset(&fields.fields[next..], &mut first);
        }
        self.close(b'}', first);
        Some(())
    }

    /// Unset fields without presence, at their defaults.
    fn unset(&mut self, fields: &[Field], first: &mut bool) {
        for field in fields.iter().filter(|f| !f.presence) {
            self.key(*first, field.key(self.proto_names));
            *first = false;
            if field.map_key.is_some() {
                self.out.extend_from_slice(b"{}");
            } else if field.list {
                self.out.extend_from_slice(b"[]");
            } else if let Some(value) = decoded(&field.default) {
                // A default always has a JSON form.
                let _ = self.value(field.element, value);
            }
        }
    }

    /// A repeated field's or map's occurrences (keys included).
    fn run(&mut self, field: &Field, bytes: &[u8], count: usize, depth: u32) -> Option<()> {
        if let Some(key_kind) = field.map_key {
            return self.map(field, key_kind, bytes, count, depth);
        }
        self.open(b'[');
        let mut reader = Reader::new(bytes);
        let mut first = true;
        while !reader.done() {
            let (_, wire) = reader.key()?;
            match field.element {
                Element::Message(index) if wire == WIRE_LEN => {
                    let bytes = reader.len_delimited()?;
                    self.next_item(first);
                    self.object(index, bytes, depth + 1)?;
                }
                Element::Message(_) => return None,
                Element::Scalar(kind) if wire == WIRE_LEN && kind.wire_type() != WIRE_LEN => {
                    let mut chunk = Reader::new(reader.len_delimited()?);
                    while !chunk.done() {
                        let value = chunk.scalar(kind, kind.wire_type())?;
                        self.next_item(first);
                        first = false;
                        self.value(field.element, value)?;
                    }
                    continue;
                }
                Element::Enum(_) if wire == WIRE_LEN => {
                    let mut chunk = Reader::new(reader.len_delimited()?);
                    while !chunk.done() {
                        let value = chunk.scalar(Scalar::Int32, WIRE_VARINT)?;
                        self.next_item(first);
                        first = false;
                        self.value(field.element, value)?;
                    }
                    continue;
                }
                Element::Scalar(kind) => {
                    let value = reader.scalar(kind, wire)?;
                    self.next_item(first);
                    self.value(field.element, value)?;
                }
                Element::Enum(_) => {
                    let value = reader.scalar(Scalar::Int32, wire)?;
                    self.next_item(first);
                    self.value(field.element, value)?;
                }
            }
            first = false;
        }
        self.close(b']', count == 0);
        Some(())
    }

    fn map(&mut self, field: &Field, key_kind: Scalar, bytes: &[u8], count: usize, depth: u32) -> Option<()> {
        // Small maps are checked for repeated keys pairwise, large ones
        // with a set.
        const PAIRWISE: usize = 16;
        let mut seen_few: [Option<KeyRef<'_>>; PAIRWISE] = [None; PAIRWISE];
        let mut seen_many: HashSet<KeyRef<'_>> = HashSet::new();
        self.open(b'{');
        let mut reader = Reader::new(bytes);
        let mut entries = 0;
        while !reader.done() {
            let (_, wire) = reader.key()?;
            if wire != WIRE_LEN {
                return None;
            }
            let (key, value) = entry_parts(reader.len_delimited()?, key_kind, field.element)?;
            let key = match key {
                Some(key) => key,
                None => zero(key_kind)?,
            };
            let seen = KeyRef::of(key)?;
            if count <= PAIRWISE {
                if seen_few[..entries].contains(&Some(seen)) {
                    return None;
                }
                seen_few[entries] = Some(seen);
            } else if !seen_many.insert(seen) {
                return None;
            }
            self.next_item(entries == 0);
            entries += 1;
            self.map_key(key)?;
            self.out.extend_from_slice(if self.pretty { b": " } else { b":" });
            match (value, field.element) {
                (Some(EntryValue::Bytes(bytes)), Element::Message(index)) => self.object(index, bytes, depth + 1)?,
                (None, Element::Message(index)) => self.object(index, &[], depth + 1)?,
                (Some(EntryValue::Scalar(value)), element) => self.value(element, value)?,
                (None, element) => self.value(element, decoded(&field.map_value_default)?)?,
                (Some(EntryValue::Bytes(_)), _) => return None,
            }
        }
        self.close(b'}', entries == 0);
        Some(())
    }

    /// A scalar or enum value, as prost-reflect's serializer writes it.
    fn value(&mut self, element: Element, value: Decoded<'_>) -> Option<()> {
        let options = &self.settings.options;
        let mut s = serde_json::Serializer::new(&mut *self.out);
        let written = match (element, value) {
            (Element::Enum(names), Decoded::I32(number)) => {
                let names = &self.plan.enums[names];
                match names.name(number) {
                    _ if names.null => s.serialize_unit(),
                    _ if options.enums_as_ints => s.serialize_i32(number),
                    Some(name) => s.serialize_str(name),
                    None => s.serialize_i32(number),
                }
            }
            (Element::Enum(_) | Element::Message(_), _) => return None,
            (Element::Scalar(_), value) => match value {
                Decoded::Bool(v) => s.serialize_bool(v),
                Decoded::I32(v) => s.serialize_i32(v),
                Decoded::U32(v) => s.serialize_u32(v),
                Decoded::I64(v) if options.int64_as_numbers => s.serialize_i64(v),
                Decoded::U64(v) if options.int64_as_numbers => s.serialize_u64(v),
                Decoded::I64(v) => quoted_number(s, |s| s.serialize_i64(v)),
                Decoded::U64(v) => quoted_number(s, |s| s.serialize_u64(v)),
                Decoded::F32(v) if v.is_finite() => s.serialize_f32(v),
                Decoded::F64(v) if v.is_finite() => s.serialize_f64(v),
                Decoded::F32(v) => s.serialize_str(non_finite(f64::from(v))),
                Decoded::F64(v) => s.serialize_str(non_finite(v)),
                Decoded::Str(v) => s.serialize_str(v),
                Decoded::Bytes(v) => s.collect_str(&Base64Display::new(v, &BASE64_STANDARD)),
            },
        };
        written.ok()
    }

    /// Map keys are JSON strings.
    fn map_key(&mut self, key: Decoded<'_>) -> Option<()> {
        let mut s = serde_json::Serializer::new(&mut *self.out);
        let written = match key {
            Decoded::Bool(v) => s.collect_str(&v),
            Decoded::I32(v) => s.collect_str(&v),
            Decoded::I64(v) => s.collect_str(&v),
            Decoded::U32(v) => s.collect_str(&v),
            Decoded::U64(v) => s.collect_str(&v),
            Decoded::Str(v) => s.serialize_str(v),
            _ => return None,
        };
        written.ok()
    }

    /// A message prost-reflect renders (well-known types and the like),
    /// decoded from its bytes alone; indented to the current level.
    fn oracle(&mut self, desc: &MessageDescriptor, bytes: &[u8]) -> Option<()> {
        let message = DynamicMessage::decode(desc.clone(), bytes).ok()?;
        let serialize = &self.settings.serialize;
        if !self.pretty {
            let mut s = serde_json::Serializer::new(&mut *self.out);
            return message.serialize_with_options(&mut s, serialize).ok();
        }
        let mut alone = Vec::new();
        let mut s = serde_json::Serializer::pretty(&mut alone);
        message.serialize_with_options(&mut s, serialize).ok()?;
        // A newline occurs in pretty JSON only between tokens (strings
        // escape theirs): each is followed by this level's indent.
        for &byte in &alone {
            self.out.push(byte);
            if byte == b'\n' {
                self.indent();
            }
        }
        Some(())
    }
}

/// The consecutive occurrences of a repeated or map field starting at the
/// reader's position (key included), and how many elements they hold; the
/// reader moves past them.
fn run<'a>(field: &Field, reader: &mut Reader<'a>) -> Option<(&'a [u8], usize)> {
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
    Some((&reader.buf[start..end], count))
}

type JsonSerializer<'w> = serde_json::Serializer<&'w mut Vec<u8>>;

/// A number as a JSON string: what `collect_str` writes, without its
/// formatting machinery (digits need no escaping).
fn quoted_number(
    s: JsonSerializer<'_>,
    write: impl FnOnce(&mut JsonSerializer<'_>) -> Result<(), serde_json::Error>,
) -> Result<(), serde_json::Error> {
    let out = s.into_inner();
    out.push(b'"');
    write(&mut serde_json::Serializer::new(&mut *out))?;
    out.push(b'"');
    Ok(())
}

/// A scalar default as a wire value.
fn decoded(value: &Value) -> Option<Decoded<'_>> {
    Some(match value {
        Value::Bool(v) => Decoded::Bool(*v),
        Value::I32(v) | Value::EnumNumber(v) => Decoded::I32(*v),
        Value::I64(v) => Decoded::I64(*v),
        Value::U32(v) => Decoded::U32(*v),
        Value::U64(v) => Decoded::U64(*v),
        Value::F32(v) => Decoded::F32(*v),
        Value::F64(v) => Decoded::F64(*v),
        Value::String(v) => Decoded::Str(v),
        Value::Bytes(v) => Decoded::Bytes(v),
        Value::Message(_) | Value::List(_) | Value::Map(_) => return None,
    })
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

#[cfg(test)]
mod tests;
