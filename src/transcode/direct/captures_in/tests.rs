//! `CapturesIn` against its oracle, `RequestPlan::build` then encoding,
//! through `RequestPlan::build_outgoing`: random bindings over every scalar
//! kind, enums (negative values included), nested messages shared by two
//! variables, oneofs, proto3 `optional`, proto2 presence and defaults,
//! groups, wrappers and timestamps, with random capture texts, valid or not.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor};

use super::*;
use crate::transcode::codec::Outgoing;
use crate::transcode::tests::compile;
use crate::transcode::{JsonSettings, RequestInput, RequestPlan};

const PROTO3: &str = r#"
syntax = "proto3";
package c;

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; MINUS = -1; }

message Book { string id = 1; uint32 pages = 2; }

message Shelf {
  string id = 1;
  int64 n = 2;
  Color color = 3;
  Book book = 4;
  optional string note = 5;
  oneof pick { string a = 6; int32 b = 7; }
}

message Req {
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
  Shelf shelf = 17;
  optional int32 opt_int32 = 18;
  optional string opt_string = 19;
  optional Color opt_color = 20;
  oneof choice {
    string c_text = 21;
    int32 c_num = 22;
    Shelf c_shelf = 23;
  }
  google.protobuf.Int64Value w_int64 = 24;
  google.protobuf.Timestamp ts = 25;
  int32 big_number_field = 100000;
}
"#;

const PROTO2: &str = r#"
syntax = "proto2";
package c2;

enum E { ONE = 1; TWO = 2; }

message P2 {
  optional int32 a = 1 [default = 7];
  optional string s = 2 [default = "x"];
  optional E e = 3;
  optional P2 child = 4;
  optional group G = 5 { optional int32 x = 6; }
  required bool r = 7;
  optional double d = 8;
}
"#;

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| compile(&[("c.proto", PROTO3), ("c2.proto", PROTO2)], &[]))
}

fn msg(name: &str) -> MessageDescriptor {
    pool().get_message_by_name(name).unwrap()
}

fn binding(message: &str, body: &str, paths: &[&str]) -> RequestPlan {
    let variables: Vec<Vec<String>> = paths.iter().map(|p| p.split('.').map(str::to_owned).collect()).collect();
    RequestPlan::new(&msg(message), body, &variables).unwrap()
}

/// What `build_outgoing` did with one request.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Wire bytes, the oracle's.
    Encoded,
    /// The oracle's message or error.
    Oracle,
}

/// Runs `build_outgoing` and the oracle on one request and fails on any
/// difference; also fails when a covered request the oracle accepts did
/// not take the direct path.
fn check(plan: &RequestPlan, captures: &[String], body: &str, query: Option<&str>, covered: bool) -> Outcome {
    let settings = JsonSettings::default();
    let input = || RequestInput { body: Bytes::copy_from_slice(body.as_bytes()), content_type: None, captures, query };
    let oracle = plan.build(&settings, input());
    let outcome = match (plan.build_outgoing(&settings, input()), &oracle) {
        (Ok(Outgoing::Encoded(got)), Ok(message)) => {
            let want = message.encode_to_vec();
            assert_eq!(got, want, "bytes differ for {captures:?}\n got {got:02x?}\nwant {want:02x?}");
            Outcome::Encoded
        }
        (Ok(Outgoing::Encoded(_)), Err(err)) => panic!("encoded captures the oracle refuses ({err:?}): {captures:?}"),
        (Ok(Outgoing::Message(got)), Ok(message)) => {
            assert_eq!(got.encode_to_vec(), message.encode_to_vec(), "{captures:?}");
            Outcome::Oracle
        }
        (Err(got), Err(err)) => {
            assert_eq!(format!("{got:?}"), format!("{err:?}"), "errors differ for {captures:?}");
            Outcome::Oracle
        }
        (got, _) => panic!("build_outgoing gave {got:?}, the oracle {oracle:?}, for {captures:?}"),
    };
    if covered && oracle.is_ok() {
        assert_eq!(outcome, Outcome::Encoded, "a covered request fell back: {captures:?}");
    }
    outcome
}

fn captures(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|&t| t.to_owned()).collect()
}

// ------------------------------------------------------------ generator

/// What a capture text is for.
#[derive(Clone, Copy)]
enum Text {
    String,
    /// An integer kind's range.
    Int(i128, i128),
    Float,
    Double,
    Bool,
    Enum(&'static [&'static str]),
    Base64,
    Timestamp,
}

/// Whether `CapturesIn` must cover a variable.
#[derive(Clone, Copy, PartialEq)]
enum Cover {
    Yes,
    No,
    /// A member (second) of a oneof (first, with its message's path): two
    /// different members on one binding are not covered.
    Oneof(&'static str, &'static str),
}

const I32: Text = Text::Int(i32::MIN as i128, i32::MAX as i128);
const I64: Text = Text::Int(i64::MIN as i128, i64::MAX as i128);
const U32: Text = Text::Int(0, u32::MAX as i128);
const U64: Text = Text::Int(0, u64::MAX as i128);
const COLOR: Text = Text::Enum(&["COLOR_UNSPECIFIED", "RED", "GREEN", "MINUS"]);

const REQ: &[(&str, Text, Cover)] = &[
    ("f_double", Text::Double, Cover::Yes),
    ("f_float", Text::Float, Cover::Yes),
    ("f_int32", I32, Cover::Yes),
    ("f_int64", I64, Cover::Yes),
    ("f_uint32", U32, Cover::Yes),
    ("f_uint64", U64, Cover::Yes),
    ("f_sint32", I32, Cover::Yes),
    ("f_sint64", I64, Cover::Yes),
    ("f_fixed32", U32, Cover::Yes),
    ("f_fixed64", U64, Cover::Yes),
    ("f_sfixed32", I32, Cover::Yes),
    ("f_sfixed64", I64, Cover::Yes),
    ("f_bool", Text::Bool, Cover::Yes),
    ("f_string", Text::String, Cover::Yes),
    ("f_bytes", Text::Base64, Cover::No),
    ("color", COLOR, Cover::Yes),
    ("shelf.id", Text::String, Cover::Yes),
    ("shelf.n", I64, Cover::Yes),
    ("shelf.color", COLOR, Cover::Yes),
    ("shelf.book.id", Text::String, Cover::Yes),
    ("shelf.book.pages", U32, Cover::Yes),
    ("shelf.note", Text::String, Cover::Yes),
    ("shelf.a", Text::String, Cover::Oneof("shelf.pick", "a")),
    ("shelf.b", I32, Cover::Oneof("shelf.pick", "b")),
    ("opt_int32", I32, Cover::Yes),
    ("opt_string", Text::String, Cover::Yes),
    ("opt_color", COLOR, Cover::Yes),
    ("c_text", Text::String, Cover::Oneof("choice", "c_text")),
    ("c_num", I32, Cover::Oneof("choice", "c_num")),
    ("c_shelf.id", Text::String, Cover::Oneof("choice", "c_shelf")),
    ("c_shelf.n", I64, Cover::Oneof("choice", "c_shelf")),
    ("w_int64.value", I64, Cover::Yes),
    ("w_int64", I64, Cover::No),
    ("ts", Text::Timestamp, Cover::No),
    ("big_number_field", I32, Cover::Yes),
];

const P2: &[(&str, Text, Cover)] = &[
    ("a", I32, Cover::Yes),
    ("s", Text::String, Cover::Yes),
    ("e", Text::Enum(&["ONE", "TWO"]), Cover::Yes),
    ("child.a", I32, Cover::Yes),
    ("child.s", Text::String, Cover::Yes),
    ("child.child.e", Text::Enum(&["ONE", "TWO"]), Cover::Yes),
    ("g.x", I32, Cover::No),
    ("r", Text::Bool, Cover::Yes),
    ("d", Text::Double, Cover::Yes),
];

/// What else a request brings: the binding's body, the request's body and
/// query, and whether the captures alone still set the message.
const SHAPES: &[(&str, &str, Option<&str>, bool)] = &[
    ("", "", None, true),
    ("", "", Some(""), true),
    // A binding without a body ignores one.
    ("", r#"{"ignored":1}"#, None, true),
    ("*", "", None, true),
    ("*", "{}", None, false),
    ("", "", Some("x=1"), false),
];

struct Gen {
    rng: fastrand::Rng,
    /// Every text valid: the direct path must take the request.
    clean: bool,
}

impl Gen {
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    fn text(&mut self, text: Text) -> String {
        if self.clean || self.rng.f64() < 0.7 {
            self.valid(text)
        } else {
            self.invalid(text)
        }
    }

    fn valid(&mut self, text: Text) -> String {
        match text {
            Text::String => match self.rng.u8(..6) {
                0 => String::new(),
                1 => "item-42".to_owned(),
                2 => "Zürich ☃ a/b%2F".to_owned(),
                // Past 127 bytes: lengths of two bytes, in the nested ones too.
                3 => "x".repeat(self.rng.usize(100..400)),
                _ => (0..self.rng.usize(1..12)).map(|_| self.rng.alphanumeric()).collect(),
            },
            Text::Int(min, max) => {
                let v = match self.rng.u8(..6) {
                    0 => 0,
                    1 => min,
                    2 => max,
                    3 => (-1i128).clamp(min, max),
                    4 => self.rng.i128(min..=max),
                    _ => self.rng.i128(-1000..1000).clamp(min, max),
                };
                match self.rng.u8(..10) {
                    0 if v >= 0 => format!("+{v}"),
                    // Rust's parser takes `-0` for signed kinds only.
                    1 if v == 0 && min < 0 => "-0".to_owned(),
                    _ => v.to_string(),
                }
            }
            Text::Float | Text::Double => match self.rng.u8(..4) {
                0 => self.rng.f32().mul_add(2e6, -1e6).to_string(),
                1 => (self.rng.f64() * 1e-300).to_string(),
                _ => {
                    // f32::MAX as an f64: `3.4028235e38` reads past it, out of range.
                    let max =
                        if matches!(text, Text::Float) { "3.4028234663852886e38" } else { "1.7976931348623157e308" };
                    let words =
                        ["0", "-0", "1.5", "-2.25", "0.1", "1e10", "1e-50", "NaN", "Infinity", "-Infinity", max];
                    self.pick(&words).to_owned()
                }
            },
            Text::Bool => self.pick(&["true", "false", "1", "0"]).to_owned(),
            Text::Enum(names) => match self.rng.bool() {
                true => self.pick(names).to_owned(),
                false => self.pick(&["0", "1", "2", "-1", "7", "2147483647", "-2147483648"]).to_owned(),
            },
            Text::Base64 => self.pick(&["", "aGk=", "aGk", "-_8=", "aGVsbG8"]).to_owned(),
            Text::Timestamp => self.pick(&["2024-01-02T03:04:05Z", "1970-01-01T00:00:00.5Z"]).to_owned(),
        }
    }

    /// Mostly texts the oracle refuses for `text` (some are valid there).
    fn invalid(&mut self, text: Text) -> String {
        let specific = match text {
            Text::Int(min, max) => vec![(min - 1).to_string(), (max + 1).to_string()],
            Text::Float => vec!["3.5e38".to_owned(), "1e400".to_owned()],
            Text::Double => vec!["1e400".to_owned(), "-1e309".to_owned()],
            Text::Bool => vec!["True".to_owned(), "yes".to_owned(), "2".to_owned()],
            Text::Enum(_) => vec!["red".to_owned(), "2147483648".to_owned(), "RED ".to_owned()],
            Text::Base64 => vec!["@@".to_owned(), "a".to_owned()],
            Text::Timestamp => vec!["2024-13-01T00:00:00Z".to_owned(), "nope".to_owned()],
            Text::String => vec![],
        };
        if !specific.is_empty() && self.rng.bool() {
            return specific[self.rng.usize(..specific.len())].clone();
        }
        let any = ["", " 1", "1 ", "abc", "1.0", "0x10", "1e3", "true", "inf", "nan", "--1", "１", "1_000"];
        self.pick(&any).to_owned()
    }
}

/// One random binding of `message` (its variables from `candidates`) and
/// request; `body_field` names a non-message field for `body:`.
fn differential(message: &str, candidates: &[(&str, Text, Cover)], body_field: &str, seed: u64) -> Outcome {
    let mut gen = Gen { rng: fastrand::Rng::with_seed(seed), clean: false };
    gen.clean = gen.rng.bool();
    let mut chosen: Vec<usize> = Vec::new();
    let mut covered = true;
    for _ in 0..gen.rng.usize(1..=4) {
        let i = match (chosen.is_empty(), gen.rng.f64() < 0.05) {
            // The same field bound twice.
            (false, true) => chosen[gen.rng.usize(..chosen.len())],
            _ => gen.rng.usize(..candidates.len()),
        };
        let (_, _, cover) = candidates[i];
        covered &= cover != Cover::No && !chosen.contains(&i);
        if let Cover::Oneof(oneof, member) = cover {
            let other_member = |&j: &usize| matches!(candidates[j].2, Cover::Oneof(o, m) if o == oneof && m != member);
            covered &= !chosen.iter().any(other_member);
        }
        chosen.push(i);
    }
    let (mut rule, body, query, plain) = match gen.rng.bool() {
        true => SHAPES[0],
        false => SHAPES[gen.rng.usize(..SHAPES.len())],
    };
    // `body: "<field>"` with an empty body sets nothing either.
    if rule == "*" && body.is_empty() && gen.rng.bool() {
        rule = body_field;
    }
    let paths: Vec<&str> = chosen.iter().map(|&i| candidates[i].0).collect();
    let texts: Vec<String> = chosen.iter().map(|&i| gen.text(candidates[i].1)).collect();
    let outcome = check(&binding(message, rule, &paths), &texts, body, query, covered && plain);
    if gen.clean && covered && plain {
        assert_eq!(outcome, Outcome::Encoded, "clean captures fell back: {paths:?} {texts:?}");
    }
    outcome
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 2048,
        // A seed is the whole input: nothing to shrink or keep.
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Default::default()
    })]

    #[test]
    fn agrees_with_the_oracle_on_proto3(seed in proptest::prelude::any::<u64>()) {
        differential("c.Req", REQ, "f_string", seed);
    }

    #[test]
    fn agrees_with_the_oracle_on_proto2(seed in proptest::prelude::any::<u64>()) {
        differential("c2.P2", P2, "s", seed);
    }
}

// ------------------------------------------------------------ unit tests

/// The benchmark's shape, `GET /v1/items/{id}`, byte for byte.
#[test]
fn a_string_id_is_its_key_length_and_text() {
    let plan = binding("c.Req", "", &["f_string"]);
    let settings = JsonSettings::default();
    let captures = captures(&["item-42"]);
    let input = RequestInput { body: Bytes::new(), content_type: None, captures: &captures, query: None };
    match plan.build_outgoing(&settings, input).unwrap() {
        Outgoing::Encoded(bytes) => assert_eq!(bytes.as_ref(), b"\x72\x07item-42"),
        Outgoing::Message(_) => panic!("fell back"),
    }
}

#[test]
fn defaults_are_left_out_only_without_presence() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("c.Req", &["f_string", "f_int32", "f_float", "color"], &["", "0", "-0", "COLOR_UNSPECIFIED"]),
        ("c.Req", &["opt_string", "opt_int32", "opt_color"], &["", "-0", "0"]),
        // The messages on the way are written even empty.
        ("c.Req", &["shelf.id", "shelf.book.pages", "c_shelf.n"], &["", "0", "0"]),
        ("c.Req", &["c_num", "w_int64.value"], &["0", "0"]),
        // proto2: presence, whatever the declared default.
        ("c2.P2", &["a", "s", "e", "r", "child.child.a"], &["7", "x", "ONE", "false", "0"]),
        ("c.Req", &["f_float", "f_double", "color"], &["NaN", "-Infinity", "MINUS"]),
    ];
    for (message, paths, texts) in cases {
        let plan = binding(message, "", paths);
        assert_eq!(check(&plan, &captures(texts), "", None, true), Outcome::Encoded, "{paths:?}");
    }
}

#[test]
fn variables_in_one_message_share_it_in_field_order() {
    let plan = binding("c.Req", "", &["shelf.book.pages", "big_number_field", "shelf.id", "f_int32", "shelf.book.id"]);
    let texts = captures(&["12", "-5", "s", "3", &"b".repeat(200)]);
    assert_eq!(check(&plan, &texts, "", None, true), Outcome::Encoded);
}

/// Bindings with a variable it does not write: every request takes the
/// oracle's path.
#[test]
fn bindings_it_does_not_cover_fall_back() {
    let cases: &[(&str, &str, &[&str], &[&str])] = &[
        ("c.Req", "", &["f_bytes"], &["aGk="]),
        ("c.Req", "", &["w_int64"], &["5"]),
        ("c.Req", "", &["ts"], &["2024-01-02T03:04:05Z"]),
        ("c2.P2", "", &["g.x"], &["1"]),
        ("c.Req", "", &["f_string", "f_string"], &["a", "b"]),
        ("c.Req", "", &["c_text", "c_num"], &["a", "1"]),
        ("c.Req", "", &["c_shelf.id", "c_text"], &["a", "b"]),
        ("c.Req", "", &["shelf.a", "shelf.b"], &["a", "1"]),
    ];
    for (message, body, paths, texts) in cases {
        let plan = binding(message, body, paths);
        assert_eq!(check(&plan, &captures(texts), "", None, false), Outcome::Oracle, "{paths:?}");
        let desc = msg(message);
        let fields: Vec<Vec<FieldDescriptor>> = paths.iter().map(|p| field_path(&desc, p)).collect();
        assert!(CapturesIn::new(fields.iter().map(Vec::as_slice)).is_none(), "{paths:?}");
    }
}

/// A query, a body under `*`, or a message body field (set, if only to an
/// empty message, by the body) sets fields too: the oracle's path.
#[test]
fn requests_with_more_than_captures_fall_back() {
    let whole = binding("c.Req", "*", &["f_string"]);
    assert_eq!(check(&whole, &captures(&["a"]), r#"{"fInt32":1}"#, None, false), Outcome::Oracle);
    assert_eq!(check(&whole, &captures(&["a"]), "", Some("f_int32=1"), false), Outcome::Oracle);
    let none = binding("c.Req", "", &["f_string"]);
    assert_eq!(check(&none, &captures(&["a"]), "", Some("f_int32=1"), false), Outcome::Oracle);
    let message = binding("c.Req", "shelf", &["f_string"]);
    assert_eq!(check(&message, &captures(&["a"]), "", None, false), Outcome::Oracle);
}

/// A capture the oracle refuses gets the oracle's error, and `encode`
/// leaves `out` as it was.
#[test]
fn refused_captures_get_the_oracle_error() {
    let cases: &[(&str, &str)] = &[
        ("f_int32", "abc"),
        ("f_int32", "2147483648"),
        ("f_uint64", "-1"),
        ("f_float", "3.5e38"),
        ("f_double", "inf"),
        ("f_bool", "yes"),
        ("color", "red"),
        ("shelf.book.pages", "1.0"),
    ];
    let req = msg("c.Req");
    for (path, text) in cases {
        let plan = binding("c.Req", "", &[path]);
        assert_eq!(check(&plan, &captures(&[text]), "", None, true), Outcome::Oracle, "{path}={text}");
        let fields = field_path(&req, path);
        let direct = CapturesIn::new([fields.as_slice()]).unwrap();
        let mut out = vec![0xA5];
        assert!(!direct.encode(&captures(&[text]), &mut out), "{path}={text}");
        assert_eq!(out, [0xA5], "a bail must leave `out` as it was");
    }
    // A count of captures that is not the binding's is the oracle's error.
    let plan = binding("c.Req", "", &["f_string"]);
    assert_eq!(check(&plan, &captures(&["a", "b"]), "", None, true), Outcome::Oracle);
}

fn field_path(desc: &MessageDescriptor, path: &str) -> Vec<FieldDescriptor> {
    let mut desc = desc.clone();
    let mut fields = Vec::new();
    for name in path.split('.') {
        let field = desc.get_field_by_name(name).unwrap();
        if let Some(inner) = field.kind().as_message() {
            desc = inner.clone();
        }
        fields.push(field);
    }
    fields
}
