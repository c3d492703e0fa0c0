//! The direct wire → JSON path held to the `DynamicMessage` oracle on
//! random wire bytes: canonical encodings, and the ones it must hand over
//! (fields out of order or repeated, unknown fields, bad UTF-8, cut or
//! flipped bytes), under every combination of the JSON switches.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::OnceLock;

use proptest::prelude::*;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value};

use super::JsonOut;
use crate::config::JsonOptions;
use crate::transcode::response::write_json;
use crate::transcode::tests::pool;
use crate::transcode::JsonSettings;

const TYPES: [&str; 4] = ["t.All", "t.More", "t.Node", "protogate.test.v1.AllTypes"];

fn plans() -> &'static [(MessageDescriptor, JsonOut)] {
    static PLANS: OnceLock<Vec<(MessageDescriptor, JsonOut)>> = OnceLock::new();
    PLANS.get_or_init(|| {
        TYPES
            .iter()
            .map(|name| {
                let desc = pool().get_message_by_name(name).unwrap();
                let plan = JsonOut::new(&desc);
                (desc, plan)
            })
            .collect()
    })
}

/// The five JSON switches that change rendering, one bit each.
fn settings(flags: u8) -> JsonSettings {
    let options = JsonOptions {
        emit_unpopulated: flags & 1 != 0,
        use_proto_names: flags & 2 != 0,
        int64_as_numbers: flags & 4 != 0,
        enums_as_ints: flags & 8 != 0,
        pretty: flags & 16 != 0,
        ..JsonOptions::default()
    };
    JsonSettings::new(&options)
}

fn oracle(desc: &MessageDescriptor, bytes: &[u8], settings: &JsonSettings) -> Option<(Vec<u8>, DynamicMessage)> {
    let message = DynamicMessage::decode(desc.clone(), bytes).ok()?;
    let mut out = Vec::new();
    write_json(settings, &mut out, |s| message.serialize_with_options(s, &settings.serialize)).ok()?;
    Some((out, message))
}

/// Renders `bytes` both ways; whether the fast path took it.
fn check(plan: &(MessageDescriptor, JsonOut), bytes: &[u8], settings: &JsonSettings) -> bool {
    let (desc, plan) = plan;
    let mut fast = b"before".to_vec();
    if !plan.render(settings, bytes, &mut fast) {
        assert_eq!(fast, b"before", "a bail must leave the buffer as it was");
        return false;
    }
    let fast = &fast[b"before".len()..];
    let Some((expected, message)) = oracle(desc, bytes, settings) else {
        panic!(
            "{}: the fast path rendered bytes the oracle refuses: {bytes:02x?} → {}",
            desc.full_name(),
            String::from_utf8_lossy(fast)
        );
    };
    if has_two_entry_map(&message) {
        // prost-reflect's maps are hash maps: entry order is its own.
        let parse = |json: &[u8]| serde_json::from_slice::<serde_json::Value>(json).unwrap();
        assert_eq!(parse(fast), parse(&expected), "{}: {bytes:02x?}", desc.full_name());
    } else {
        assert_eq!(
            String::from_utf8_lossy(fast),
            String::from_utf8_lossy(&expected),
            "{}: {bytes:02x?}",
            desc.full_name()
        );
    }
    true
}

fn has_two_entry_map(message: &DynamicMessage) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::Map(entries) => entries.len() >= 2 || entries.values().any(value),
            Value::List(items) => items.iter().any(value),
            Value::Message(m) => has_two_entry_map(m),
            _ => false,
        }
    }
    message.fields().any(|(_, v)| value(v))
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// Random wire bytes for a message type. `clean` keeps to what a
/// well-behaved encoder writes (the fast path's domain).
struct Gen {
    rng: fastrand::Rng,
    clean: bool,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, number: u32, wire: u8) {
    varint(out, u64::from(number << 3 | u32::from(wire)));
}

fn len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packable(kind: &Kind) -> bool {
    !matches!(kind, Kind::String | Kind::Bytes | Kind::Message(_))
}

impl Gen {
    fn new(seed: u64, clean: bool) -> Self {
        Self { rng: fastrand::Rng::with_seed(seed), clean }
    }

    fn chance(&mut self, percent: u8) -> bool {
        self.rng.u8(0..100) < percent
    }

    fn message(&mut self, desc: &MessageDescriptor, depth: u32) -> Vec<u8> {
        let fields: Vec<FieldDescriptor> = desc.fields().collect();
        let mut chosen: Vec<(u32, Vec<u8>)> = Vec::new();
        for _ in 0..self.rng.usize(0..=6) {
            if fields.is_empty() || self.chance(8) {
                let number = 1000 + self.rng.u32(0..20);
                let mut out = Vec::new();
                match self.rng.u8(0..4) {
                    0 => {
                        key(&mut out, number, WIRE_VARINT);
                        varint(&mut out, self.rng.u64(..));
                    }
                    1 => {
                        key(&mut out, number, WIRE_FIXED64);
                        out.extend_from_slice(&self.rng.u64(..).to_le_bytes());
                    }
                    2 => {
                        key(&mut out, number, WIRE_LEN);
                        len_prefixed(&mut out, b"xyz");
                    }
                    _ => {
                        key(&mut out, number, WIRE_FIXED32);
                        out.extend_from_slice(&self.rng.u32(..).to_le_bytes());
                    }
                }
                chosen.push((number, out));
                continue;
            }
            let field = &fields[self.rng.usize(..fields.len())];
            if depth >= 3 && matches!(field.kind(), Kind::Message(_)) {
                continue;
            }
            chosen.push((field.number(), self.field(field, depth)));
        }
        if self.clean || self.chance(75) {
            chosen.sort_by_key(|(number, _)| *number);
            if self.clean || self.chance(50) {
                chosen.dedup_by_key(|(number, _)| *number);
            }
        }
        if self.clean {
            // One member of each oneof: a second one replaces the first.
            let mut oneofs: Vec<String> = Vec::new();
            chosen.retain(|(number, _)| match desc.get_field(*number).and_then(|f| f.containing_oneof()) {
                Some(oneof) if oneofs.iter().any(|o| o == oneof.name()) => false,
                Some(oneof) => {
                    oneofs.push(oneof.name().to_owned());
                    true
                }
                None => true,
            });
        }
        let mut bytes: Vec<u8> = chosen.into_iter().flat_map(|(_, bytes)| bytes).collect();
        if !self.clean && depth == 0 {
            self.mutate(&mut bytes);
        }
        bytes
    }

    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match self.rng.u8(0..100) {
            0..8 => {
                let at = self.rng.usize(..bytes.len());
                bytes[at] ^= 1 << self.rng.u8(0..8);
            }
            8..12 => bytes.truncate(self.rng.usize(..bytes.len())),
            12..15 => bytes.extend_from_slice(&[0x08, 0x80]),
            _ => {}
        }
    }

    fn field(&mut self, field: &FieldDescriptor, depth: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let number = field.number();
        let kind = field.kind();
        if field.is_map() {
            let Kind::Message(entry) = &kind else { unreachable!("a map's kind is its entry") };
            let (key_kind, value_kind) = (entry.map_entry_key_field().kind(), entry.map_entry_value_field().kind());
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for _ in 0..self.rng.usize(1..=3) {
                let mut parts = Vec::new();
                let mut key_part = Vec::new();
                let (wire, bytes) = self.value(&key_kind, depth);
                key(&mut key_part, 1, wire);
                key_part.extend_from_slice(&bytes);
                let mut value_part = Vec::new();
                let (wire, bytes) = self.value(&value_kind, depth);
                key(&mut value_part, 2, wire);
                value_part.extend_from_slice(&bytes);
                // prost leaves out a key or value at its default.
                let (with_key, with_value) = (self.clean || !self.chance(10), !self.chance(10));
                // A key given twice is merged (the last wins): not clean.
                if self.clean && keys.contains(&key_part) {
                    continue;
                }
                keys.push(key_part.clone());
                if !self.clean && self.chance(5) {
                    parts.extend_from_slice(&value_part);
                    parts.extend_from_slice(&key_part);
                } else {
                    if with_key {
                        parts.extend_from_slice(&key_part);
                    }
                    if with_value {
                        parts.extend_from_slice(&value_part);
                    }
                }
                key(&mut out, number, WIRE_LEN);
                len_prefixed(&mut out, &parts);
            }
        } else if field.is_list() {
            let count = self.rng.usize(0..=3);
            if packable(&kind) && self.chance(60) {
                let mut packed = Vec::new();
                for _ in 0..count {
                    packed.extend_from_slice(&self.value(&kind, depth).1);
                }
                key(&mut out, number, WIRE_LEN);
                len_prefixed(&mut out, &packed);
            } else {
                for _ in 0..count.max(1) {
                    let (wire, bytes) = self.value(&kind, depth);
                    key(&mut out, number, wire);
                    out.extend_from_slice(&bytes);
                }
            }
        } else {
            let (wire, bytes) = self.value(&kind, depth);
            key(&mut out, number, wire);
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// One value of `kind`: its wire type and bytes (length prefix
    /// included).
    fn value(&mut self, kind: &Kind, depth: u32) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        let pick = self.rng.usize(0..6);
        let wire = match kind {
            Kind::Double => {
                let v = [0.0, -0.0, 1.5, -2.25e300, f64::NAN, f64::INFINITY][pick];
                let v = if self.chance(30) { f64::from_bits(self.rng.u64(..)) } else { v };
                out.extend_from_slice(&v.to_le_bytes());
                WIRE_FIXED64
            }
            Kind::Float => {
                let v = [0.0, -0.0, 0.1, 3.4e38, f32::NAN, f32::NEG_INFINITY][pick];
                let v = if self.chance(30) { f32::from_bits(self.rng.u32(..)) } else { v };
                out.extend_from_slice(&v.to_le_bytes());
                WIRE_FIXED32
            }
            // Clean: what an encoder writes for the type (bools 0 or 1,
            // 32-bit values in range); otherwise any varint.
            Kind::Int32 | Kind::Enum(_) => {
                let v = [0, 1, -1, i32::MAX, i32::MIN, 2][pick];
                let v = if self.chance(20) { self.rng.i32(..) } else { v };
                let v = if !self.clean && self.chance(10) { self.rng.u64(..) } else { i64::from(v) as u64 };
                varint(&mut out, v);
                WIRE_VARINT
            }
            Kind::Bool => {
                let v = if self.clean { u64::from(self.rng.bool()) } else { [0, 1, 2, u64::MAX, 0, 1][pick] };
                varint(&mut out, v);
                WIRE_VARINT
            }
            Kind::Uint32 | Kind::Sint32 => {
                let v = [0, 1, 2, 3, u64::from(u32::MAX), 1 << 31][pick];
                let v = if self.chance(20) { u64::from(self.rng.u32(..)) } else { v };
                let v = if !self.clean && self.chance(10) { self.rng.u64(..) } else { v };
                varint(&mut out, v);
                WIRE_VARINT
            }
            Kind::Int64 | Kind::Uint64 | Kind::Sint64 => {
                let v = [0, 1, u64::MAX, 1 << 53, (1 << 53) + 1, 2][pick];
                let v = if self.chance(20) { self.rng.u64(..) } else { v };
                varint(&mut out, v);
                WIRE_VARINT
            }
            Kind::Fixed32 | Kind::Sfixed32 => {
                out.extend_from_slice(&[0, 1, u32::MAX, 1 << 31, 7, self.rng.u32(..)][pick].to_le_bytes());
                WIRE_FIXED32
            }
            Kind::Fixed64 | Kind::Sfixed64 => {
                out.extend_from_slice(&[0, 1, u64::MAX, 1 << 63, 7, self.rng.u64(..)][pick].to_le_bytes());
                WIRE_FIXED64
            }
            Kind::String => {
                let text: &[u8] = match pick {
                    0 => b"",
                    1 => b"hello",
                    2 => "\"quoted\" \\ / \u{7f}".as_bytes(),
                    3 => "\u{0}\n\t\u{1f} é漢字🎉 \u{2028}".as_bytes(),
                    4 if !self.clean && self.chance(30) => b"\xff\xfe bad",
                    _ => b"</script>",
                };
                len_prefixed(&mut out, text);
                WIRE_LEN
            }
            Kind::Bytes => {
                let bytes: Vec<u8> = (0..self.rng.usize(0..8)).map(|_| self.rng.u8(..)).collect();
                len_prefixed(&mut out, &bytes);
                WIRE_LEN
            }
            Kind::Message(desc) => {
                let inner = if depth >= 3 { Vec::new() } else { self.message(desc, depth + 1) };
                len_prefixed(&mut out, &inner);
                WIRE_LEN
            }
        };
        // A wire type that does not fit the field.
        if !self.clean && self.chance(2) {
            return (WIRE_FIXED32, vec![0, 0, 0, 0]);
        }
        (wire, out)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Whatever the fast path renders, the oracle renders the same way;
    /// whatever the oracle refuses, the fast path hands over.
    #[test]
    fn fast_path_renders_what_the_oracle_renders(seed: u64, flags in 0u8..32, which in 0usize..TYPES.len(), clean: bool) {
        let plan = &plans()[which];
        let bytes = Gen::new(seed, clean).message(&plan.0, 0);
        check(plan, &bytes, &settings(flags));
    }
}

/// The fast path takes every clean encoding the oracle can render (so one
/// that bailed more than it must fails here), and a message re-encoded by
/// prost-reflect itself renders byte for byte the same.
#[test]
fn clean_encodings_take_the_fast_path() {
    for (index, plan) in plans().iter().enumerate() {
        let mut taken = 0;
        let runs = 400;
        for seed in 0..runs {
            let bytes = Gen::new(seed, true).message(&plan.0, 0);
            let settings = settings((seed % 32) as u8);
            let mut encodings = vec![bytes.clone()];
            // Re-encoded by prost-reflect: its order, its packing.
            if let Ok(message) = DynamicMessage::decode(plan.0.clone(), bytes.as_slice()) {
                encodings.push(prost::Message::encode_to_vec(&message));
            }
            for bytes in encodings {
                if check(plan, &bytes, &settings) {
                    taken += 1;
                } else {
                    assert!(
                        oracle(&plan.0, &bytes, &settings).is_none(),
                        "{}: bailed on a clean encoding the oracle renders: {bytes:02x?}",
                        TYPES[index]
                    );
                }
            }
        }
        // The rest hold what only the oracle renders, or refuses: a
        // Timestamp out of range, an Any of an unknown type.
        assert!(taken >= runs, "{}: fast path for only {taken} of {}", TYPES[index], 2 * runs);
    }
}

#[test]
fn unusual_encodings_are_handed_to_the_oracle() {
    let plan = plans().iter().find(|(desc, _)| desc.full_name() == "t.All").unwrap();
    let settings = settings(0);
    let f_int32 = |v: u64| {
        let mut out = Vec::new();
        key(&mut out, 3, WIRE_VARINT);
        varint(&mut out, v);
        out
    };
    let f_string = |s: &[u8]| {
        let mut out = Vec::new();
        key(&mut out, 14, WIRE_LEN);
        len_prefixed(&mut out, s);
        out
    };
    let twice = [f_int32(1), f_int32(2)].concat();
    let out_of_order = [f_string(b"x"), f_int32(2)].concat();
    let bad_utf8 = f_string(b"\xc3");
    for bytes in [twice, out_of_order, bad_utf8] {
        let mut out = Vec::new();
        assert!(!plan.1.render(&settings, &bytes, &mut out), "{bytes:02x?}");
        assert!(out.is_empty());
    }
    let mut out = Vec::new();
    assert!(plan.1.render(&settings, &[f_int32(2), f_string(b"x")].concat(), &mut out));
    assert_eq!(out, br#"{"fInt32":2,"fString":"x"}"#);
}

#[test]
fn deep_nesting_is_handed_to_the_oracle() {
    let plan = plans().iter().find(|(desc, _)| desc.full_name() == "t.Node").unwrap();
    let mut bytes = Vec::new();
    for _ in 0..40 {
        let mut outer = Vec::new();
        key(&mut outer, 1, WIRE_LEN);
        len_prefixed(&mut outer, &bytes);
        bytes = outer;
    }
    let mut out = Vec::new();
    assert!(!plan.1.render(&settings(0), &bytes, &mut out));
    let node = DynamicMessage::decode(plan.0.clone(), bytes.as_slice()).unwrap();
    assert_eq!(node.descriptor().full_name(), "t.Node");
}
