//! `compositions:` (DESIGN §8): routes defined in config that call several
//! gRPC methods and answer one JSON object. Here only the file as written
//! and what can be checked without descriptors (names, shapes, reference
//! syntax); the catalog compiles each composition against the descriptor
//! pool at load and reports what needs the descriptors.
//!
//! The grammar of references (`{path.id}`, `{user.friend_ids}`) lives here
//! too, as [`parse_template`]: the config checks every string with it and
//! the catalog compiles with the same parser, so the two cannot disagree on
//! what a string means.

use std::fmt;
use std::time::Duration;

use http::Method;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::check::{self, Check, Checked, KeyPath, Problem};
use super::values::{parse_method_name, DurationValue};

/// One composition, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Composition {
    /// Unique; the selector key `composition` names it.
    pub name: String,
    /// The one of `get|post|put|patch|delete` given.
    pub http_method: Method,
    /// Its HttpRule template, as written (`/v1/users/{id}/overview`).
    pub path: String,
    /// The whole route's deadline (default: `routes.timeout`).
    pub timeout: Option<Duration>,
    /// `on_error: fail` makes every call required.
    pub on_error: OnError,
    /// In the order written.
    pub calls: Vec<Call>,
    /// `response:` shaping, in the order written: key → value: exactly one
    /// reference to a call (`"{orders.orders}"`, `"{user}"`) or a literal
    /// (strings inside lists and maps as in [`Call::request`]). `None`:
    /// every call by name.
    pub response: Option<Vec<(String, serde_json::Value)>>,
}

/// What a failed optional call does to the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Optional calls may fail: a partial answer (the default).
    #[default]
    Partial,
    /// Every call is required.
    Fail,
}

/// One call of a composition, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The key under `calls:`; the answer's key and the name references use.
    pub name: String,
    /// `package.Service/Method`.
    pub method: String,
    /// `request:` in the order written: a (dotted) proto field path of the
    /// request message → its value: a literal (YAML scalar, list or map as
    /// JSON) or a string holding references (`"{path.id}"`,
    /// `"users/{user.id}"`, see [`parse_template`]). Only a string that is
    /// the whole value holds references: a string inside a list or map is
    /// a literal, and the config refuses one with a brace in it. A map
    /// inside a value is a `serde_json::Map`, in its key order, not the
    /// file's.
    pub request: Vec<(String, serde_json::Value)>,
    /// This call's deadline, within the route's.
    pub timeout: Option<Duration>,
    pub optional: bool,
    /// `"{CALL.field}"`, a list in another call's answer (see
    /// [`parse_for_each`]): one call per element, the answers as a JSON
    /// array.
    pub for_each: Option<String>,
    /// Calls of a `for_each` in flight at once (default 16).
    pub max_concurrency: usize,
}

/// The default of `max_concurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;

impl Composition {
    /// The call named `name`.
    pub fn call(&self, name: &str) -> Option<&Call> {
        self.calls.iter().find(|c| c.name == name)
    }
}

impl Call {
    /// The calls this call needs before it can start (referenced by its
    /// `request` values or its `for_each`), each once, in the order first
    /// referenced. Meant for a checked config: a string that is not a valid
    /// template contributes nothing.
    pub fn dependencies(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let values = self.request.iter().filter_map(|(_, value)| value.as_str());
        for text in self.for_each.iter().map(String::as_str).chain(values) {
            for piece in parse_template(text).unwrap_or_default() {
                if let Piece::Ref(Reference { root: Root::Call(name), .. }) = piece {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        names
    }
}

/// Names a call may not have: the roots of references that are not calls,
/// and `errors`, the key of a partial answer's failed calls.
pub const RESERVED_NAMES: [&str; 5] = ["path", "query", "body", "item", "errors"];

/// One piece of a string value of `request`, `for_each` or `response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text, never empty.
    Text(String),
    /// A `{...}` reference.
    Ref(Reference),
}

/// A `{root.a.b}` reference, as written: the names of `path` are not
/// resolved against anything here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    /// The segments after the root (`["orders"]` in `{orders.orders}`);
    /// empty for `{body}`, `{item}`, `{CALL}`. For `path` and `query`
    /// never empty: `{path.user.id}` is the path variable `user.id`.
    pub path: Vec<String>,
}

/// What a reference starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `{path.X}`: a variable of the route's path template.
    Path,
    /// `{query.X}`: a query parameter.
    Query,
    /// `{body}`, `{body.X}`: the JSON request body (post, put, patch).
    Body,
    /// `{item}`, `{item.X}`: the element of a `for_each` list.
    Item,
    /// `{CALL}`, `{CALL.X}`: the answer of the call named CALL.
    Call(String),
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Root::Path => "path",
            Root::Query => "query",
            Root::Body => "body",
            Root::Item => "item",
            Root::Call(name) => name,
        })
    }
}

/// As written: `{orders.orders}`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}", self.root)?;
        for segment in &self.path {
            write!(f, ".{segment}")?;
        }
        f.write_str("}")
    }
}

/// Splits a string value into literal text and `{...}` references.
///
/// A string that is exactly one reference (`"{user}"`) stands for the
/// referenced value itself; one with text around references
/// (`"users/{path.id}"`) is string interpolation. `""` gives no pieces;
/// two `Text` pieces never follow each other. Only the syntax is checked:
/// whether a call of that name exists, or `{item}` is allowed where it
/// stands, is the caller's to know. There are no escapes: a `{` or `}` is
/// always part of a reference.
pub fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("{text:?}: a `}}` closes no `{{`"));
        }
        push_text(&mut pieces, &rest[..open]);
        let after = &rest[open + 1..];
        let close = match after.find(['{', '}']) {
            Some(close) if after[close..].starts_with('}') => close,
            Some(_) => return Err(format!("{text:?}: a `{{` inside a reference (references do not nest)")),
            None => return Err(format!("{text:?}: a `{{` is never closed")),
        };
        let reference = parse_reference(&after[..close]).map_err(|problem| format!("{text:?}: {problem}"))?;
        pieces.push(Piece::Ref(reference));
        rest = &after[close + 1..];
    }
    push_text(&mut pieces, rest);
    Ok(pieces)
}

/// A `for_each` value: exactly one reference to another call's answer
/// (`"{user.friend_ids}"`) and nothing around it. The list comes from a
/// call: never `{item}` (the element does not exist before its list), nor
/// `path`, `query` or `body`.
pub fn parse_for_each(text: &str) -> Result<Reference, String> {
    let mut pieces = parse_template(text)?;
    match (pieces.pop(), pieces.is_empty()) {
        (Some(Piece::Ref(reference)), true) if reference.root == Root::Item => {
            Err(format!("{text:?}: `{{item}}` is the element of this list, it cannot be the list"))
        }
        (Some(Piece::Ref(reference @ Reference { root: Root::Call(_), .. })), true) => Ok(reference),
        (Some(Piece::Ref(reference)), true) => Err(format!(
            "{text:?}: the list must come from a call's answer (`{{CALL.field}}`), not from {}",
            reference.root
        )),
        _ => Err(format!("{text:?} must be exactly one reference to a list, such as \"{{user.friend_ids}}\"")),
    }
}

/// A `response` value that is a string: one reference to a call's answer
/// (`"{orders.orders}"`), or text without references.
pub fn parse_response_value(text: &str) -> Result<Option<Reference>, String> {
    let mut pieces = parse_template(text)?;
    match (pieces.pop(), pieces.is_empty()) {
        (None | Some(Piece::Text(_)), true) => Ok(None),
        (Some(Piece::Ref(reference @ Reference { root: Root::Call(_), .. })), true) => Ok(Some(reference)),
        (Some(Piece::Ref(reference)), true) => Err(format!(
            "{text:?}: an answer value refers to a call's answer (`{{CALL}}`, `{{CALL.field}}`), not to {}",
            reference.root
        )),
        _ => Err(format!("{text:?}: an answer value is one reference to a call, or a literal: no text around it")),
    }
}

fn push_text(pieces: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    match pieces.last_mut() {
        Some(Piece::Text(last)) => last.push_str(text),
        _ => pieces.push(Piece::Text(text.to_owned())),
    }
}

/// The text between `{` and `}`.
fn parse_reference(inner: &str) -> Result<Reference, String> {
    let shown = format!("`{{{inner}}}`");
    if inner.is_empty() {
        return Err("`{}` names nothing".into());
    }
    if inner.chars().any(char::is_whitespace) {
        return Err(format!("{shown}: no spaces inside a reference"));
    }
    let mut segments = inner.split('.');
    let root = segments.next().unwrap_or_default();
    let path: Vec<String> = segments.map(str::to_owned).collect();
    if root.is_empty() || path.iter().any(String::is_empty) {
        return Err(format!("{shown} has an empty segment"));
    }
    if let Some(bad) = path.iter().find(|s| !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')) {
        return Err(format!("{shown}: {bad:?} is not a field or parameter name"));
    }
    let root = match root {
        "path" | "query" if path.is_empty() => return Err(format!("{shown} needs a name: `{{{root}.NAME}}`")),
        "path" => Root::Path,
        "query" => Root::Query,
        "body" => Root::Body,
        "item" => Root::Item,
        "errors" => {
            return Err(format!("{shown}: `errors` holds a partial answer's failed calls and cannot be referenced"))
        }
        name if is_identifier(name) => Root::Call(name.to_owned()),
        other => {
            return Err(format!("{shown}: {other:?} is neither path, query, body, item nor a call name"));
        }
    };
    Ok(Reference { root, path })
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

// ---------------------------------------------------------------------------
// Reading the file. Single values and key names are checked while they are
// read; what needs the whole composition (call names, `{item}`, cycles) is
// `problem`, once the file is read.

/// `compositions:`, read and checked one entry at a time.
#[derive(Debug, Default)]
pub(super) struct CompositionsSection(pub(super) Vec<Composition>);

impl<'de> Deserialize<'de> for CompositionsSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        Ok(CompositionsSection(entries.into_iter().map(|Entry(c)| c).collect()))
    }
}

/// One entry of the list. Built inside the entry's own `visit_map`, so a
/// problem of the entry as a whole (no route, two routes) is reported at
/// its line (see `check::Checked`).
struct Entry(Composition);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a composition: a mapping with name, get|post|put|patch|delete and calls")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry, A::Error> {
                let raw = CompositionRaw::deserialize(MapAccessDeserializer::new(map))?;
                raw.into_composition().map(Entry).map_err(de::Error::custom)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with name, get|post|put|patch|delete, timeout, on_error, calls, response"
)]
struct CompositionRaw {
    #[serde(deserialize_with = "composition_name")]
    name: String,
    #[serde(default, deserialize_with = "route_path")]
    get: Option<String>,
    #[serde(default, deserialize_with = "route_path")]
    post: Option<String>,
    #[serde(default, deserialize_with = "route_path")]
    put: Option<String>,
    #[serde(default, deserialize_with = "route_path")]
    patch: Option<String>,
    #[serde(default, deserialize_with = "route_path")]
    delete: Option<String>,
    timeout: Option<DurationValue>,
    #[serde(default)]
    on_error: OnError,
    calls: Calls,
    response: Option<ResponseFields>,
}

impl CompositionRaw {
    fn into_composition(self) -> Result<Composition, String> {
        let routes = [
            (Method::GET, self.get),
            (Method::POST, self.post),
            (Method::PUT, self.put),
            (Method::PATCH, self.patch),
            (Method::DELETE, self.delete),
        ];
        let mut given = routes.into_iter().filter_map(|(method, path)| path.map(|path| (method, path)));
        let (http_method, path) = given.next().ok_or_else(|| {
            format!("composition {:?} needs its route: one of get, post, put, patch or delete", self.name)
        })?;
        if let Some((other, _)) = given.next() {
            return Err(format!(
                "composition {:?} has both {} and {}: a composition is one route, give one of get, post, put, patch or delete",
                self.name,
                http_method.as_str().to_ascii_lowercase(),
                other.as_str().to_ascii_lowercase()
            ));
        }
        Ok(Composition {
            name: self.name,
            http_method,
            path,
            timeout: self.timeout.map(|DurationValue(d)| d),
            on_error: self.on_error,
            calls: self.calls.0,
            response: self.response.map(|ResponseFields(fields)| fields),
        })
    }
}

fn composition_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, super::selector::check_composition)
}

fn route_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, |path| {
        if path.starts_with('/') {
            Ok(())
        } else {
            Err(format!("{path:?} must start with /: it is the route's path template, such as /v1/users/{{id}}"))
        }
    })
}

/// `calls:`: call name → call, in the order written.
struct Calls(Vec<Call>);

impl<'de> Deserialize<'de> for Calls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Calls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of call name to call")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Calls, A::Error> {
                let mut calls: Vec<Call> = Vec::new();
                // The key is read through a seed that knows the earlier
                // names, so a bad or repeated name is reported at its line.
                while let Some(name) = map.next_key_seed(CallName { seen: &calls })? {
                    let Checked(raw) = map.next_value::<Checked<CallRaw>>()?;
                    calls.push(raw.into_call(name));
                }
                if calls.is_empty() {
                    return Err(de::Error::custom("a composition needs at least one call"));
                }
                Ok(Calls(calls))
            }
        }
        d.deserialize_map(V)
    }
}

struct CallName<'a> {
    seen: &'a [Call],
}

impl<'de> DeserializeSeed<'de> for CallName<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for CallName<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a call name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if !is_identifier(v) {
            return Err(E::custom(format!(
                "call name {v:?} must be letters, digits and _, not starting with a digit: references name it (`{{{v}.field}}`)"
            )));
        }
        if RESERVED_NAMES.contains(&v) {
            return Err(E::custom(format!(
                "call name {v:?} is reserved (path, query, body, item and errors cannot name a call)"
            )));
        }
        if self.seen.iter().any(|c| c.name == v) {
            return Err(E::custom(format!("call name {v:?} is given twice")));
        }
        Ok(v.to_owned())
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with method, request, timeout, optional, for_each, max_concurrency"
)]
struct CallRaw {
    #[serde(deserialize_with = "grpc_method")]
    method: String,
    request: Option<RequestFields>,
    timeout: Option<DurationValue>,
    #[serde(default)]
    optional: bool,
    #[serde(default, deserialize_with = "for_each")]
    for_each: Option<String>,
    #[serde(default, deserialize_with = "max_concurrency")]
    max_concurrency: Option<usize>,
}

impl Check for CallRaw {
    fn check(&self) -> Result<(), String> {
        if self.max_concurrency.is_some() && self.for_each.is_none() {
            return Err("max_concurrency limits the calls of a for_each, and this call has no for_each".into());
        }
        Ok(())
    }
}

impl CallRaw {
    fn into_call(self, name: String) -> Call {
        Call {
            name,
            method: self.method,
            request: self.request.map(|RequestFields(fields)| fields).unwrap_or_default(),
            timeout: self.timeout.map(|DurationValue(d)| d),
            optional: self.optional,
            for_each: self.for_each,
            max_concurrency: self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY),
        }
    }
}

/// `package.Service/Method`: a package is required, as in the gRPC path.
fn grpc_method<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |text| match (parse_method_name(text), text.split_once('/')) {
        (Ok(_), Some((service, _))) if service.contains('.') => Ok(()),
        _ => Err(format!(
            "invalid method `{text}`: expected package.Service/Method such as acme.users.v1.UserService/GetUser"
        )),
    })
}

fn for_each<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, |text| parse_for_each(text).map(|_| ()))
}

fn max_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    check::at_least_one_usize(d).map(Some)
}

/// `request:`: a (dotted) field path → value, in the order written.
struct RequestFields(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for RequestFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Fields {
            expecting: "a mapping of request field to value",
            key_rule: field_path,
            text_rule: |text| parse_template(text).map(drop),
        })
        .map(RequestFields)
    }
}

/// `response:`: an answer key → value, in the order written.
struct ResponseFields(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for ResponseFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Fields {
            expecting: "a mapping of answer key to value",
            key_rule: response_key,
            text_rule: |text| parse_response_value(text).map(drop),
        })
        .map(ResponseFields)
    }
}

/// A request key: proto field names joined by dots (`filter.region`).
fn field_path(key: &str) -> Result<(), String> {
    if key.split('.').all(is_identifier) {
        Ok(())
    } else {
        Err(format!("{key:?} is not a field path: field names joined by dots, such as filter.region"))
    }
}

fn response_key(key: &str) -> Result<(), String> {
    match key {
        "" => Err("an answer key must not be empty".into()),
        "errors" => Err("`errors` is where a partial answer lists its failed calls; choose another key".into()),
        _ => Ok(()),
    }
}

/// A mapping read in order, each key checked by `key_rule` and given once,
/// each value read as JSON; a value that is a string is checked by
/// `text_rule`.
struct Fields {
    expecting: &'static str,
    key_rule: check::StrRule,
    text_rule: check::StrRule,
}

impl<'de> Visitor<'de> for Fields {
    type Value = Vec<(String, serde_json::Value)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key_seed(FieldKey { rule: self.key_rule, seen: &fields })? {
            let value = map.next_value_seed(Json { text_rule: self.text_rule })?;
            fields.push((key, value));
        }
        Ok(fields)
    }
}

struct FieldKey<'a> {
    rule: check::StrRule,
    seen: &'a [(String, serde_json::Value)],
}

impl<'de> DeserializeSeed<'de> for FieldKey<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldKey<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        (self.rule)(v).map_err(E::custom)?;
        if self.seen.iter().any(|(key, _)| key == v) {
            return Err(E::custom(format!("key {v:?} is given twice")));
        }
        Ok(v.to_owned())
    }
}

/// Any YAML value as JSON. A string that is the value itself is checked by
/// `text_rule`; strings inside its lists and maps are literals, where a
/// brace would look like a reference that is never read, so none is
/// allowed.
#[derive(Clone, Copy)]
struct Json {
    text_rule: check::StrRule,
}

/// The `text_rule` of strings inside a list or map.
fn literal_text(text: &str) -> Result<(), String> {
    if text.contains(['{', '}']) {
        Err(format!(
            "{text:?}: references stand only as a whole request or answer value, not inside a list or mapping \
             (and a brace means nothing else)"
        ))
    } else {
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Json {
    type Value = serde_json::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Json {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML scalar, list or mapping")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom(format!("{v} has no JSON form (write it as a string: \"{v}\")")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        (self.text_rule)(v).map_err(E::custom)?;
        Ok(v.into())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Json { text_rule: literal_text })? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let fields = Fields { expecting: "a mapping", key_rule: |_| Ok(()), text_rule: literal_text }.visit_map(map)?;
        Ok(serde_json::Value::Object(fields.into_iter().collect()))
    }
}

// ---------------------------------------------------------------------------
// Checks that need a whole composition, or the whole section.

/// What needs more than one place of the section: names are unique; a
/// reference names a call of its own composition and never the call it
/// stands in; `{item}` stands only in a call with `for_each`; `{body}`
/// only on a route with a body; `{path.X}` names a variable of the route's
/// path; calls do not wait for each other in a cycle; a call's timeout is
/// within its composition's. The path is relative to `compositions`.
pub(super) fn problem(compositions: &[Composition]) -> Option<Problem> {
    for (index, composition) in compositions.iter().enumerate() {
        let at = KeyPath::new().index(index);
        if let Some(first) = compositions[..index].iter().position(|c| c.name == composition.name) {
            let message = format!("composition name {:?} is used by compositions[{first}] too", composition.name);
            return Some(at.key("name").problem(message));
        }
        if let Some(problem) = composition_problem(composition, at) {
            return Some(problem);
        }
    }
    None
}

fn composition_problem(composition: &Composition, at: KeyPath) -> Option<Problem> {
    let named = |problem: Problem| Problem {
        message: format!("composition {:?}: {}", composition.name, problem.message),
        path: problem.path,
    };
    let variables = path_variables(&composition.path);
    let scope = Scope { composition, variables: variables.as_deref() };
    for call in &composition.calls {
        let call_at = || at.clone().key("calls").name(call.name.clone());
        if let (Some(route), Some(own)) = (composition.timeout, call.timeout) {
            if own > route {
                let message =
                    format!("call timeout {own:?} is longer than the composition's {route:?}, which ends it first");
                return Some(named(call_at().key("timeout").problem(message)));
            }
        }
        if let Some(text) = &call.for_each {
            let for_each = serde_json::Value::String(text.clone());
            if let Some(problem) = scope.value_problem(Some(call), &for_each, call_at().key("for_each")) {
                return Some(named(problem));
            }
        }
        for (key, value) in &call.request {
            if let Some(problem) = scope.value_problem(Some(call), value, call_at().key("request").name(key.clone())) {
                return Some(named(problem));
            }
        }
    }
    for (key, value) in composition.response.iter().flatten() {
        if let Some(problem) = scope.value_problem(None, value, at.clone().key("response").name(key.clone())) {
            return Some(named(problem));
        }
    }
    if let Some(cycle) = cycle(composition) {
        let message = format!(
            "calls {} wait for each other in a cycle: none of them could ever start",
            cycle.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(" → ")
        );
        return Some(named(at.key("calls").name(cycle[0]).problem(message)));
    }
    None
}

/// What the references of one composition may name.
struct Scope<'a> {
    composition: &'a Composition,
    /// `None`: the path's braces do not pair up, which the catalog reports.
    variables: Option<&'a [String]>,
}

impl Scope<'_> {
    /// The first reference in `value` that cannot stand where `value` does:
    /// in `call`'s `request` or `for_each`, or (no call) in `response`.
    /// Only a string that is the whole value holds references.
    fn value_problem(&self, call: Option<&Call>, value: &serde_json::Value, at: KeyPath) -> Option<Problem> {
        let pieces = match parse_template(value.as_str()?) {
            Ok(pieces) => pieces,
            Err(message) => return Some(at.problem(message)),
        };
        let mut references = pieces.iter().filter_map(|piece| match piece {
            Piece::Ref(reference) => Some(reference),
            Piece::Text(_) => None,
        });
        references.find_map(|r| self.reference_problem(call, r).err()).map(|message| at.problem(message))
    }

    fn reference_problem(&self, call: Option<&Call>, reference: &Reference) -> Result<(), String> {
        let composition = self.composition;
        match &reference.root {
            Root::Call(name) if call.is_some_and(|call| call.name == *name) => {
                Err(format!("`{reference}`: call {name:?} cannot use its own answer"))
            }
            Root::Call(name) if composition.call(name).is_none() => {
                let names: Vec<&str> = composition.calls.iter().map(|c| c.name.as_str()).collect();
                Err(format!("`{reference}` names no call: the calls are {}", names.join(", ")))
            }
            Root::Item => match call {
                Some(call) if call.for_each.is_some() => Ok(()),
                Some(call) => Err(format!("`{reference}`: call {:?} has no for_each, so it has no item", call.name)),
                None => Err(format!("`{reference}`: an item exists only in the request of a call with for_each")),
            },
            Root::Body if ![Method::POST, Method::PUT, Method::PATCH].contains(&composition.http_method) => {
                Err(format!("`{reference}`: a {} route has no request body", composition.http_method))
            }
            Root::Path => {
                let name = reference.path.join(".");
                match self.variables {
                    Some(variables) if !variables.contains(&name) => Err(format!(
                        "`{reference}`: the path {} has no variable `{name}`{}",
                        composition.path,
                        match variables {
                            [] => String::new(),
                            _ => format!(" (it has {})", variables.join(", ")),
                        }
                    )),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// The variables of a path template: `id` and `name` in
/// `/v1/{id}/{name=shelves/*}`. `None` when its braces do not pair up.
fn path_variables(template: &str) -> Option<Vec<String>> {
    let mut variables = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        let after = rest[open..].strip_prefix('{')?;
        let close = after.find('}')?;
        let inner = &after[..close];
        if inner.contains('{') {
            return None;
        }
        variables.push(inner.split('=').next().unwrap_or_default().to_owned());
        rest = &after[close + 1..];
    }
    Some(variables)
}

/// A cycle of calls that wait for each other, as names from the first call
/// met back to it (`a → b → a`). A call naming itself is reported before.
fn cycle(composition: &Composition) -> Option<Vec<&str>> {
    let calls = &composition.calls;
    let needs: Vec<Vec<usize>> = calls
        .iter()
        .map(|call| {
            let names = call.dependencies();
            names.iter().filter_map(|name| calls.iter().position(|c| c.name == *name)).collect()
        })
        .collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(at: usize, needs: &[Vec<usize>], marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[at] = Mark::OnPath;
        path.push(at);
        for &next in &needs[at] {
            match marks[next] {
                Mark::OnPath => {
                    let start = path.iter().position(|&i| i == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, needs, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks[at] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; calls.len()];
    for start in 0..calls.len() {
        if marks[start] == Mark::New {
            if let Some(cycle) = visit(start, &needs, &mut marks, &mut Vec::new()) {
                return Some(cycle.into_iter().map(|i| calls[i].name.as_str()).collect());
            }
        }
    }
    None
}

/// A selector's `composition` names a composition of the file: a typo would
/// otherwise select nothing, silently.
pub(super) fn unknown_composition(name: &str, compositions: &[Composition]) -> Option<String> {
    if compositions.iter().any(|c| c.name == name) {
        return None;
    }
    let names: Vec<String> = compositions.iter().map(|c| format!("{:?}", c.name)).collect();
    Some(match names.as_slice() {
        [] => format!("no composition is named {name:?}: the file defines no compositions"),
        _ => format!("no composition is named {name:?}; compositions are {}", names.join(", ")),
    })
}
