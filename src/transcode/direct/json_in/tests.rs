//! `JsonIn` against its reference, `request::parse_message` then
//! `encode_raw`: random bodies over rich descriptors (every scalar kind,
//! enums, nested and recursive messages, lists packed and not, maps with
//! string, integer and bool keys, oneofs, proto3 `optional`, proto2
//! presence, groups and extensions, well-known types, a `json_name`
//! override), mostly valid and in every spelling, plus mutations.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fmt::Write as _;
use std::sync::OnceLock;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};

use super::*;
use crate::config::JsonOptions;
use crate::transcode::request::parse_message;
use crate::transcode::tests::compile;

const PROTO3: &str = r#"
syntax = "proto3";
package d;

import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/any.proto";
import "google/protobuf/empty.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; MINUS = -1; }

message Deep { string id = 1; int64 n = 2; }

message Inner {
  string name = 1;
  repeated int32 values = 2;
  Deep deep = 3;
  map<string, string> labels = 4;
}

message All {
  double f_double = 1;
  float f_float = 2;
  int32 f_int32 = 3;
  int64 f_int64 = 4;
  uint32 f_uint32 = 5;
  uint64 f_uint64 = 6;
  sint32 f_sint32 = 7;
  sint64 f_sint64 = 8;
  fixed32 f_fixed32 = 9;
  fixed64 f_fixed64 = 10;
  sfixed32 f_sfixed32 = 11;
  sfixed64 f_sfixed64 = 12;
  bool f_bool = 13;
  string f_string = 14;
  bytes f_bytes = 15;
  Color color = 16;
  Inner inner = 17;
  repeated Inner inners = 18;
  repeated string tags = 19;
  map<string, int64> counts = 20;
  map<int32, Inner> by_id = 21;
  google.protobuf.Timestamp ts = 22;
  google.protobuf.Duration dur = 23;
  google.protobuf.FieldMask mask = 24;
  google.protobuf.Int64Value w_int64 = 25;
  google.protobuf.BoolValue w_bool = 26;
  google.protobuf.StringValue w_string = 27;
  oneof choice {
    string c_text = 28;
    int32 c_num = 29;
    Inner c_inner = 30;
  }
  repeated Color colors = 31;
  google.protobuf.Struct meta = 32;
  google.protobuf.Any any = 33;
  string renamed = 34 [json_name = "customName"];
  repeated google.protobuf.Timestamp stamps = 35;
  google.protobuf.DoubleValue w_double = 36;
  map<bool, string> by_flag = 37;
  optional int32 opt_int32 = 38;
  optional string opt_string = 39;
  repeated sint64 r_sint64 = 40;
  repeated fixed32 r_fixed32 = 41;
  repeated double r_double = 42;
  repeated float r_float = 43;
  repeated bool r_bool = 44;
  repeated bytes r_bytes = 45;
  repeated uint64 r_uint64 = 46 [packed = false];
  map<uint64, Color> by_u64 = 47;
  map<sint32, bytes> by_s32 = 48;
  map<fixed64, double> by_f64 = 49;
  google.protobuf.Value value = 50;
  google.protobuf.ListValue list = 51;
  google.protobuf.Empty empty = 52;
  All recursive = 53;
  repeated sfixed64 r_sfixed64 = 54;
  map<string, Color> color_by_name = 55;
  int32 big_number_field = 100000;
}
"#;

const PROTO2: &str = r#"
syntax = "proto2";
package d2;

enum E { ONE = 1; TWO = 2; }

message P2 {
  optional int32 a = 1 [default = 7];
  optional string s = 2;
  repeated int32 unpacked = 3;
  repeated int32 packed = 4 [packed = true];
  optional E e = 5;
  map<string, int32> m = 6;
  optional P2 child = 7;
  optional group G = 8 { optional int32 x = 9; }
  optional double d = 10;
  required bool r = 11;
  extensions 100 to 200;
}

extend P2 { optional int32 ext = 100; }
"#;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| compile(&[("d.proto", PROTO3), ("d2.proto", PROTO2)], &["protogate/test/v1/test.proto"]))
}

fn msg(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn settings(reject: bool) -> JsonSettings {
    let unknown_fields = if reject { Strictness::Reject } else { Strictness::Ignore };
    JsonSettings::new(&JsonOptions { unknown_fields, ..JsonOptions::default() })
}

/// What the fast path did with one body.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Returned true, and the bytes are the reference's.
    Encoded,
    Bailed,
}

/// Runs both paths on `json` and fails on any difference.
fn check(desc: &MessageDescriptor, json: &str, settings: &JsonSettings, maps_reordered: bool) -> Outcome {
    let fast = JsonIn::new(desc);
    // Something before, to see that `encode` appends and restores.
    let mut out = vec![0xA5];
    let encoded = fast.encode(json.as_bytes(), settings, &mut out);
    let oracle = parse_message(desc, json.as_bytes(), &settings.deserialize, "");
    if !encoded {
        assert_eq!(out, [0xA5], "a bail must leave `out` as it was");
        return Outcome::Bailed;
    }
    let oracle = match oracle {
        Ok(msg) => msg,
        Err(err) => panic!("encode took a body the reference refuses ({err:?}): {json}"),
    };
    let expected = oracle.encode_to_vec();
    let got = &out[1..];
    if got != expected.as_slice() {
        assert!(maps_reordered, "bytes differ for {json}\n got {got:02x?}\nwant {expected:02x?}");
        // Map entries come in the reference's HashMap order: compare the
        // decoded messages (NaN != NaN, so JSON as the last word).
        let mine = DynamicMessage::decode(desc.clone(), got).expect("encode wrote bytes that do not decode");
        let theirs = DynamicMessage::decode(desc.clone(), expected.as_slice()).unwrap();
        if mine != theirs {
            let as_json =
                |m: &DynamicMessage| m.serialize_with_options(serde_json::value::Serializer, &Default::default());
            assert_eq!(as_json(&mine).unwrap(), as_json(&theirs).unwrap(), "messages differ for {json}");
        }
    }
    Outcome::Encoded
}

// ------------------------------------------------------------ generator

/// What a generated body may hold besides valid, common spellings.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Must take the fast path.
    Clean,
    /// Valid bodies, with rare spellings the fast path may bail on.
    Rare,
    /// Rare spellings and mistakes the reference may refuse.
    Mutated,
}

/// Writes random JSON bodies for a message type.
struct Gen {
    rng: fastrand::Rng,
    mode: Mode,
    /// `unknown_fields: reject`: an unknown key is a mistake.
    reject: bool,
    /// Scales the odds of rare spellings and mistakes: a body with one of
    /// them tests more than one with twenty.
    intensity: f64,
    /// A map (or Struct) got two entries or more: their order may differ.
    multi_map: bool,
    depth: u32,
}

impl Gen {
    fn new(seed: u64, reject: bool) -> Gen {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mode = match rng.u8(..10) {
            0..=5 => Mode::Clean,
            6 | 7 => Mode::Rare,
            _ => Mode::Mutated,
        };
        let intensity = [0.05, 0.2, 1.0][rng.usize(..3)];
        Gen { rng, mode, reject, intensity, multi_map: false, depth: 0 }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    /// A rare spelling, with probability `p` when the mode allows it.
    fn rarely(&mut self, p: f64) -> bool {
        self.mode != Mode::Clean && self.chance(p * self.intensity)
    }

    /// A mistake, with probability `p` when the mode allows it.
    fn mistake(&mut self, p: f64) -> bool {
        self.mode == Mode::Mutated && self.chance(p * self.intensity)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    fn ws(&mut self, s: &mut String) {
        if self.chance(0.15) {
            s.push_str(self.pick(&[" ", "\n", "\t", "  ", "\r\n "]));
        }
    }

    fn document(&mut self, desc: &MessageDescriptor) -> String {
        let mut s = String::new();
        self.ws(&mut s);
        self.message(desc, &mut s);
        self.ws(&mut s);
        if self.mistake(0.2) {
            match self.rng.u8(..4) {
                0 => {
                    let mut at = self.rng.usize(..s.len());
                    while !s.is_char_boundary(at) {
                        at -= 1;
                    }
                    s.truncate(at);
                }
                1 => s.push_str(self.pick(&["}", ",", "x", "{}", "[", "\u{feff}"])),
                2 => {
                    let at = self.rng.usize(..s.len());
                    if s.is_char_boundary(at) {
                        s.insert(at, self.pick(&[",", ":", "\"", "{", "]"]).chars().next().unwrap());
                    }
                }
                _ => s.insert(0, '\u{feff}'),
            }
        }
        s
    }

    fn message(&mut self, desc: &MessageDescriptor, s: &mut String) {
        if self.depth > 3 {
            s.push_str("{}");
            return;
        }
        self.depth += 1;
        let mut fields: Vec<FieldDescriptor> = Vec::new();
        let mut oneofs_used: Vec<String> = Vec::new();
        for field in desc.fields() {
            // Groups are left to the reference.
            if !self.chance(0.5) || (field.is_group() && !self.rarely(1.0)) {
                continue;
            }
            if let Some(oneof) = field.containing_oneof() {
                let name = oneof.name().to_owned();
                // Two members of one oneof are refused.
                if oneofs_used.contains(&name) && !self.mistake(0.2) {
                    continue;
                }
                oneofs_used.push(name);
            }
            fields.push(field);
        }
        if self.chance(0.5) {
            self.rng.shuffle(&mut fields);
        }
        let mut entries: Vec<(String, String)> = Vec::new();
        for field in &fields {
            let key = if self.chance(0.5) { field.json_name() } else { field.name() };
            let mut value = String::new();
            if self.chance(0.05) {
                // `null` leaves a field unset, or sets a NullValue.
                value.push_str("null");
            } else if self.mistake(0.03) {
                value.push_str(self.pick(&["true", "1.5", "\"x\"", "[]", "{}", "[1,{}]", "-1", "1e999"]));
            } else {
                self.field(field, &mut value);
            }
            entries.push((key.to_owned(), value));
        }
        // Unknown keys: ignored, or refused; next to extensions (whose keys
        // are `[pkg.ext]`) left to the reference.
        let ignored = !self.reject && (desc.extensions().next().is_none() || self.rarely(1.0));
        if (ignored && self.chance(0.1)) || self.mistake(0.1) {
            let mut value = String::new();
            self.any_json(&mut value, 2);
            let at = self.rng.usize(..=entries.len());
            entries.insert(at, (self.pick(&["zzz", "unknownField", "é"]).to_owned(), value));
        }
        if !entries.is_empty() && self.rarely(0.05) {
            // The same key twice: the last one wins (or a oneof refuses).
            let (key, value) = entries[self.rng.usize(..entries.len())].clone();
            entries.push((key, value));
        }
        s.push('{');
        for (i, (key, value)) in entries.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            self.ws(s);
            s.push_str(&serde_json::to_string(key).unwrap());
            self.ws(s);
            s.push(':');
            self.ws(s);
            s.push_str(value);
            self.ws(s);
        }
        s.push('}');
        self.depth -= 1;
    }

    fn field(&mut self, field: &FieldDescriptor, s: &mut String) {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else { unreachable!() };
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let most = if matches!(key.kind(), Kind::Bool) { 3 } else { 4 };
            let count = self.rng.usize(..most);
            self.multi_map |= count >= 2;
            let mut keys: Vec<String> = Vec::new();
            // What a key means: `+1` and `01` are `1`.
            let mut meanings: Vec<String> = Vec::new();
            while keys.len() < count {
                let k = self.map_key(&key.kind());
                let meaning = match key.kind() {
                    Kind::String | Kind::Bool => k.clone(),
                    _ => k.trim_start_matches('+').parse::<i128>().map_or(k.clone(), |v| v.to_string()),
                };
                if !meanings.contains(&meaning) {
                    meanings.push(meaning);
                    keys.push(k);
                }
            }
            if count > 0 && self.rarely(0.05) {
                // A key sent twice.
                keys.push(keys[0].clone());
            }
            s.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&serde_json::to_string(k).unwrap());
                s.push(':');
                if self.mistake(0.05) {
                    s.push_str("null");
                } else {
                    self.value(&value.kind(), s);
                }
            }
            s.push('}');
        } else if field.is_list() {
            s.push('[');
            for i in 0..self.rng.usize(..5) {
                if i > 0 {
                    s.push(',');
                    self.ws(s);
                }
                if self.mistake(0.05) {
                    s.push_str("null");
                } else {
                    self.value(&field.kind(), s);
                }
            }
            s.push(']');
        } else {
            self.value(&field.kind(), s);
        }
    }

    fn map_key(&mut self, kind: &Kind) -> String {
        match kind {
            Kind::String => {
                let key = self.text_content();
                // Escapes in keys are left to the reference.
                match key.contains(['"', '\\']) || key.contains(|c: char| c < ' ') {
                    true if !self.rarely(1.0) => key.replace(|c: char| c < ' ' || c == '"' || c == '\\', ""),
                    _ => key,
                }
            }
            Kind::Bool => self.pick(&["true", "false"]).to_owned(),
            kind => {
                let (min, max) = integer_range(kind);
                let v = self.integer_value(min, max);
                match self.rng.u8(..20) {
                    0 if v >= 0 => format!("+{v}"),
                    1 if v >= 0 => format!("0{v}"),
                    2 if self.mistake(1.0) => self.pick(&["abc", "1.0", " 1", ""]).to_owned(),
                    _ => v.to_string(),
                }
            }
        }
    }

    fn value(&mut self, kind: &Kind, s: &mut String) {
        match kind {
            Kind::Double | Kind::Float => self.float(matches!(kind, Kind::Float), s),
            Kind::Bool => match self.mistake(0.05) {
                true => s.push_str(self.pick(&["\"true\"", "1", "tru"])),
                false => s.push_str(self.pick(&["true", "false"])),
            },
            Kind::String => {
                let text = self.text_content();
                s.push_str(&self.quoted(&text));
            }
            Kind::Bytes => self.bytes(s),
            Kind::Enum(e) => {
                let values: Vec<_> = e.values().collect();
                match self.rng.u8(..10) {
                    0..=5 => s.push_str(&format!("\"{}\"", values[self.rng.usize(..values.len())].name())),
                    6 | 7 => s.push_str(&values[self.rng.usize(..values.len())].number().to_string()),
                    8 => s.push_str(&self.rng.i32(..).to_string()),
                    // Unknown names, or numbers spelled as floats or strings.
                    _ if self.rarely(1.0) => s.push_str(self.pick(&["\"NOPE\"", "\"1\"", "1.0", "2147483648", "-0"])),
                    _ => s.push('0'),
                }
            }
            Kind::Message(m) => self.message_value(m, s),
            kind => {
                let (min, max) = integer_range(kind);
                let v = self.integer_value(min, max);
                self.integer(v, s);
            }
        }
    }

    fn message_value(&mut self, m: &MessageDescriptor, s: &mut String) {
        let text = match m.full_name() {
            "google.protobuf.Timestamp" => self.pick(&[
                "\"2024-01-02T03:04:05Z\"",
                "\"1970-01-01T00:00:00.123456789Z\"",
                "\"2024-01-02T03:04:05+01:00\"",
            ]),
            "google.protobuf.Duration" => self.pick(&["\"1.5s\"", "\"-2s\"", "\"0s\"", "\"315576000000s\""]),
            "google.protobuf.FieldMask" => self.pick(&["\"a,bC.d\"", "\"\"", "\"fDouble\""]),
            "google.protobuf.Empty" => "{}",
            "google.protobuf.Any" => self.pick(&[
                r#"{"@type":"type.googleapis.com/d.Deep","id":"x","n":"5"}"#,
                r#"{"n":1,"@type":"type.googleapis.com/d.Deep"}"#,
                r#"{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}"#,
            ]),
            "google.protobuf.BytesValue" => return self.bytes(s),
            "google.protobuf.Int64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.UInt32Value" => {
                let v = self.integer_value(0, i32::MAX.into());
                return self.integer(v, s);
            }
            "google.protobuf.DoubleValue" => return self.float(false, s),
            "google.protobuf.FloatValue" => return self.float(true, s),
            "google.protobuf.BoolValue" => self.pick(&["true", "false"]),
            "google.protobuf.StringValue" => {
                let text = self.text_content();
                return s.push_str(&self.quoted(&text));
            }
            "google.protobuf.Struct" => {
                s.push_str("{\"k\":");
                self.any_json(s, 3);
                return s.push('}');
            }
            "google.protobuf.ListValue" => {
                s.push('[');
                self.any_json(s, 2);
                return s.push(']');
            }
            "google.protobuf.Value" => return self.any_json(s, 3),
            _ => return self.message(m, s),
        };
        match self.mistake(0.05) {
            true => s.push_str(self.pick(&["\"yesterday\"", "\"1h\"", "{\"@type\":\"nope\"}", "5"])),
            false => s.push_str(text),
        }
    }

    /// Some JSON value of any shape.
    fn any_json(&mut self, s: &mut String, depth: u32) {
        match self.rng.u8(..if depth == 0 { 5 } else { 7 }) {
            0 => s.push_str("null"),
            1 => s.push_str(self.pick(&["true", "false"])),
            2 => self.float(false, s),
            3 => s.push_str(self.pick(&["12345678901234567", "1", "-0", "2.5"])),
            4 => {
                let text = self.text_content();
                s.push_str(&self.quoted(&text));
            }
            5 => {
                s.push('[');
                for i in 0..self.rng.usize(..3) {
                    if i > 0 {
                        s.push(',');
                    }
                    self.any_json(s, depth - 1);
                }
                s.push(']');
            }
            _ => {
                // A Struct is a map: entries in the reference's own order.
                let count = self.rng.usize(..3);
                self.multi_map |= count >= 2;
                s.push('{');
                for i in 0..count {
                    if i > 0 {
                        s.push(',');
                    }
                    write!(s, "\"k{i}\":").unwrap();
                    self.any_json(s, depth - 1);
                }
                s.push('}');
            }
        }
    }

    fn integer_value(&mut self, min: i128, max: i128) -> i128 {
        let v = match self.rng.u8(..8) {
            0 => 0,
            1 => min,
            2 => max,
            3 => 1,
            4 => min.max(-1),
            5 => self.rng.i64(..).into(),
            _ => self.rng.i128(min..=max),
        };
        v.clamp(min, max)
    }

    fn integer(&mut self, v: i128, s: &mut String) {
        if self.mistake(0.1) {
            // Out of range by one (refused), such as a 2^64 that an f64
            // would take for u64::MAX.
            let out = if v >= 0 { v + 1 } else { v - 1 };
            let quote = self.pick(&["", "\""]);
            return write!(s, "{quote}{out}{quote}").unwrap();
        }
        if self.rarely(0.15) {
            return match self.rng.u8(..7) {
                0 => write!(s, "{v}.0").unwrap(),
                1 => write!(s, "{v}e0").unwrap(),
                2 => write!(s, "\"+{v}\"").unwrap(),
                3 => write!(s, "\" {v}\"").unwrap(),
                4 => write!(s, "{v}.5").unwrap(),
                5 => s.push_str("-0"),
                _ => write!(s, "\"{v}.0\"").unwrap(),
            };
        }
        match self.rng.u8(..3) {
            0 | 1 => write!(s, "{v}").unwrap(),
            _ => write!(s, "\"{v}\"").unwrap(),
        }
    }

    fn float(&mut self, single: bool, s: &mut String) {
        let limit = if single { f64::from(f32::MAX) } else { f64::MAX };
        let v: f64 = match self.rng.u8(..8) {
            0 => 0.0,
            1 => self.rng.f64(),
            2 => (self.rng.f64() - 0.5) * 10f64.powi(self.rng.i32(-30..30)),
            3 => f64::from(self.rng.i32(..)),
            4 => self.rng.i64(..) as f64,
            // The largest value, or (refused) just beyond.
            5 if single && self.mistake(0.5) => limit * 1.0000001,
            5 => limit,
            6 => f64::from(f32::MIN_POSITIVE) / 1e3,
            _ => -1.5,
        };
        match self.rng.u8(..24) {
            0..=9 => write!(s, "{v}").unwrap(),
            10..=12 => write!(s, "{v:e}").unwrap(),
            13 | 14 => write!(s, "\"{v}\"").unwrap(),
            15 => s.push_str(self.pick(&["\"NaN\"", "\"Infinity\"", "\"-Infinity\"", "\"inf\"", "\"nan\""])),
            16 => s.push_str(self.pick(&["-0", "-0.0", "0e0", "1E+2", "12345678901234567890", "0.30000000000000004"])),
            17 => s.push_str(self.pick(&["1e-46", "1e-400", "-1e-400", "\"1e400\"", "\"+1.5\"", "\".5\""])),
            // Beyond f32's range (f32::MAX's shortest spelling is, as an
            // f64), or what Rust's `parse` refuses.
            18 if self.mistake(1.0) => {
                s.push_str(self.pick(&["3.4028235e38", "3.4028236e38", "-3.5e38", "\" 1\"", "\"1_0\"", "\"0x10\""]))
            }
            19 if self.mistake(1.0) => s.push_str(self.pick(&["1e400", "-1e999", "01", "1.", ".5", "+1", "NaN"])),
            // An f32's shortest spelling, unless that is beyond f32's range
            // as an f64.
            _ if format!("{}", v as f32).parse::<f64>().unwrap().abs() <= f64::from(f32::MAX) => {
                write!(s, "{}", v as f32).unwrap()
            }
            _ => write!(s, "{v}").unwrap(),
        }
    }

    /// A string's content (unescaped).
    fn text_content(&mut self) -> String {
        let mut text = String::new();
        for _ in 0..self.rng.usize(..4) {
            text.push_str(self.pick(&[
                "a",
                "hello",
                "Zürich",
                "😀",
                " ",
                "\n",
                "\"",
                "\\",
                "/",
                "\u{0}",
                "é",
                "abcdefghijklmnopq",
            ]));
        }
        text
    }

    /// `text` as a JSON string, escaped in one of several ways.
    fn quoted(&mut self, text: &str) -> String {
        if self.mistake(0.1) {
            return self.pick(&["\"\\ud800\"", "\"\\x\"", "\"a\u{1}b\"", "\"\\udc00\"", "\"\\u12\""]).to_owned();
        }
        match self.rng.u8(..10) {
            0 => {
                // Every non-ASCII character as \u escapes (Python's default).
                let mut s = String::from("\"");
                for unit in text.encode_utf16() {
                    match unit {
                        0x20..=0x7e if unit != u16::from(b'"') && unit != u16::from(b'\\') => {
                            s.push(unit as u8 as char)
                        }
                        _ => write!(s, "\\u{unit:04x}").unwrap(),
                    }
                }
                s.push('"');
                s
            }
            1 => serde_json::to_string(text).unwrap().replace('/', "\\/"),
            _ => serde_json::to_string(text).unwrap(),
        }
    }

    fn bytes(&mut self, s: &mut String) {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        if self.mistake(0.1) {
            return s.push_str(self.pick(&["\"@@\"", "\"QQ=\"", "\"Q\"", "\"QUJD-+\"", "\"QU JD\""]));
        }
        let mut data = vec![0u8; self.rng.usize(..12)];
        self.rng.fill(&mut data);
        let b64 = match self.rng.u8(..5) {
            0 => STANDARD.encode(&data),
            1 => STANDARD_NO_PAD.encode(&data),
            2 => URL_SAFE.encode(&data),
            3 => URL_SAFE_NO_PAD.encode(&data),
            _ => STANDARD.encode(&data).replace('/', "\\/"),
        };
        write!(s, "\"{b64}\"").unwrap();
    }
}

fn integer_range(kind: &Kind) -> (i128, i128) {
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => (i32::MIN.into(), i32::MAX.into()),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => (i64::MIN.into(), i64::MAX.into()),
        Kind::Uint32 | Kind::Fixed32 => (0, u32::MAX.into()),
        Kind::Uint64 | Kind::Fixed64 => (0, u64::MAX.into()),
        other => panic!("not an integer kind: {other:?}"),
    }
}

/// Generates one body for `name` from `seed`, checks it, and asserts that a
/// clean body (valid, common spellings) never bails.
fn differential(name: &str, seed: u64, reject: bool) -> Outcome {
    let desc = msg(name);
    let mut gen = Gen::new(seed, reject);
    let json = gen.document(&desc);
    let outcome = check(&desc, &json, &settings(reject), gen.multi_map);
    if gen.mode == Mode::Clean {
        assert_eq!(outcome, Outcome::Encoded, "a clean body bailed: {json}");
    }
    outcome
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 1024,
        // A seed is the whole input: nothing to shrink or keep.
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Default::default()
    })]

    #[test]
    fn agrees_with_the_reference_on_all(seed in proptest::prelude::any::<u64>(), reject in proptest::prelude::any::<bool>()) {
        differential("d.All", seed, reject);
    }

    #[test]
    fn agrees_with_the_reference_on_all_types(seed in proptest::prelude::any::<u64>(), reject in proptest::prelude::any::<bool>()) {
        differential("protogate.test.v1.AllTypes", seed, reject);
    }

    #[test]
    fn agrees_with_the_reference_on_proto2(seed in proptest::prelude::any::<u64>(), reject in proptest::prelude::any::<bool>()) {
        differential("d2.P2", seed, reject);
    }
}

/// The bodies clients send most: every one goes the fast way, byte for
/// byte as the reference.
#[test]
fn common_shapes_take_the_fast_path() {
    let bodies = [
        r#"{}"#,
        r#"{"fString":"hello","fInt32":42,"fInt64":"9007199254740993","fBool":true,"fDouble":0.5}"#,
        r#"{"f_string":"hello","f_int32":-42,"f_int64":-7,"f_uint64":"18446744073709551615","f_float":1.25}"#,
        r#"{"inner":{"name":"x","values":[1,2,3],"deep":{"id":"d","n":"5"}},"tags":["a","b"],"color":"GREEN"}"#,
        r#"{"inners":[{"name":"a"},{"name":"b","values":[]}],"colors":["RED",2,"COLOR_UNSPECIFIED"]}"#,
        r#"{"color":"RED","fInt32":1,"fString":"out of order","fDouble":2.5}"#,
        r#"{"customName":"renamed","cText":"a choice","optInt32":0,"optString":""}"#,
        r#"{"counts":{"a":"1"},"byId":{"7":{"name":"seven"}},"byFlag":{"true":"yes"}}"#,
        r#"{"fBytes":"aGVsbG8=","rBytes":["aGk","-_8="],"rDouble":[1.5,-0.0,1e10],"rBool":[true,false]}"#,
        r#"{"ts":"2024-01-02T03:04:05Z","dur":"1.5s","wInt64":"5","wString":"s","stamps":["2024-01-02T03:04:05Z"]}"#,
        r#"{"fString":"esc\"aped\n \u00e9 \ud83d\ude00 Zürich"}"#,
        r#"{"fSint32":-5,"fSint64":"-9223372036854775808","fFixed32":4294967295,"fSfixed64":"-1","fFixed64":1}"#,
        r#"{"fDouble":"NaN","fFloat":"-Infinity","rFloat":[1,2.5,"3"]}"#,
        r#"{"meta":{"a":[1,"x",null,{"b":true}]},"value":"v","list":[1,2],"empty":{}}"#,
        r#"{"recursive":{"recursive":{"fInt32":3}},"bigNumberField":1}"#,
        "{\n  \"fString\" : \"spaced\" ,\n  \"fInt32\" : 7\n}\n",
        r#"{"fString":null,"inner":null,"cText":null,"cNum":5,"value":null,"any":null}"#,
    ];
    let desc = msg("d.All");
    for reject in [true, false] {
        for body in bodies {
            let maps = body.contains("counts");
            assert_eq!(check(&desc, body, &settings(reject), maps), Outcome::Encoded, "{body}");
        }
    }
    let all_types = msg("protogate.test.v1.AllTypes");
    let body = r#"{"doubleValue":1.5,"int64Value":"-3","stringValue":"s","color":"GREEN",
        "nested":{"name":"n","values":[1],"child":{"name":"c"}},"repeatedNested":[{"name":"a"}],
        "mapStringInt32":{"a":1},"mapInt64String":{"-5":"x"},"text":"t","customName":"c","optionalInt32":0}"#;
    assert_eq!(check(&all_types, body, &settings(true), false), Outcome::Encoded);
    let p2 = msg("d2.P2");
    let body = r#"{"a":0,"s":"","unpacked":[1,2],"packed":[3,4],"e":"ONE","m":{"":0},"child":{"a":7},"r":false}"#;
    assert_eq!(check(&p2, body, &settings(true), false), Outcome::Encoded);
}

#[test]
fn refusals_and_rare_spellings_bail() {
    let desc = msg("d.All");
    let bodies = [
        r#"{"fInt32":1.0}"#,
        r#"{"fInt32":2e3}"#,
        r#"{"fInt32":-0}"#,
        r#"{"fInt32":2147483648}"#,
        r#"{"fUint64":18446744073709551616}"#,
        r#"{"fString":1}"#,
        r#"{"fInt32":1,"f_int32":2}"#,
        r#"{"cText":"a","cNum":1}"#,
        r#"{"color":"NOPE"}"#,
        r#"{"tags":[null]}"#,
        r#"{"counts":{"a":1,"a":2}}"#,
        r#"{"byId":{"1":{},"01":{}}}"#,
        r#"{"fString":"\ud800"}"#,
        r#"{"fDouble":1e400}"#,
        r#"{"fFloat":3.5e38}"#,
        r#"{"fInt64":"12345678901234567890"}"#,
        r#"{"fBytes":"@@"}"#,
        r#"{"fString":"a"} x"#,
        r#"{"fString":"a",}"#,
        r#"[]"#,
        r#"null"#,
        r#"{"wInt64":12345678901234567890}"#,
    ];
    for reject in [true, false] {
        for body in bodies {
            assert_eq!(check(&desc, body, &settings(reject), false), Outcome::Bailed, "{body}");
        }
    }
    assert_eq!(check(&desc, r#"{"zzz":1}"#, &settings(true), false), Outcome::Bailed);
    // Ignored unknown keys are skipped, not a reason to bail.
    assert_eq!(check(&desc, r#"{"zzz":{"a":[1,"x",null]},"fInt32":1}"#, &settings(false), false), Outcome::Encoded);
}

#[test]
fn deep_nesting_bails_before_serde_json_refuses() {
    let desc = msg("d.All");
    for depth in [10, 60, 99, 100, 101, 127, 128, 200] {
        let json = format!("{}{}", r#"{"recursive":"#.repeat(depth), "{}".to_owned() + &"}".repeat(depth));
        let outcome = check(&desc, &json, &settings(true), false);
        assert_eq!(outcome == Outcome::Encoded, depth < 100, "depth {depth}");
    }
}

#[test]
fn keys_out_of_field_order_come_out_in_it() {
    let desc = msg("d.All");
    let body = r#"{"bigNumberField":1,"recursive":{"fString":"b","fInt32":2},"tags":["t"],"fInt32":1}"#;
    assert_eq!(check(&desc, body, &settings(true), false), Outcome::Encoded);
}

#[test]
fn long_fields_get_multi_byte_lengths() {
    let desc = msg("d.All");
    let long = "x".repeat(300);
    let many: Vec<String> = (0..200).map(|i| format!("{{\"name\":\"{i}{long}\"}}")).collect();
    let body = format!(
        r#"{{"fString":"{long}","inners":[{}],"inner":{{"name":"{long}","values":[{}]}}}}"#,
        many.join(","),
        (0..100).map(|i| (i * 1000).to_string()).collect::<Vec<_>>().join(",")
    );
    assert_eq!(check(&desc, &body, &settings(true), false), Outcome::Encoded);
}

/// Replays one generated body: `SEED=d.All:<seed>:<reject> cargo test
/// replay_seed -- --nocapture` prints it, both outcomes, and which of its
/// top-level keys alone makes the fast path bail.
#[test]
fn replay_seed() {
    let Ok(seed) = std::env::var("SEED") else { return };
    let parts: Vec<&str> = seed.split(':').collect();
    let desc = msg(parts[0]);
    let reject = parts[2] == "true";
    let mut gen = Gen::new(parts[1].parse().unwrap(), reject);
    let json = gen.document(&desc);
    println!("{json}\nclean {}", gen.mode == Mode::Clean);
    let fast = JsonIn::new(&desc);
    let mut out = Vec::new();
    println!("encoded {}", fast.encode(json.as_bytes(), &settings(reject), &mut out));
    println!("{:?}", parse_message(&desc, json.as_bytes(), &settings(reject).deserialize, "").err());
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for (k, v) in value.as_object().unwrap() {
        let one = serde_json::json!({ k: v }).to_string();
        let mut out = Vec::new();
        if !fast.encode(one.as_bytes(), &settings(reject), &mut out) {
            println!("bails: {one}");
        }
    }
}
