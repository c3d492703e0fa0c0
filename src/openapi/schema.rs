//! JSON Schemas of messages, enums and fields as the gateway prints and
//! reads them under the catalog's `json` settings (the proto3 JSON
//! mapping): field names, 64-bit integers, enums, the well-known types'
//! JSON forms, maps, oneofs. Messages become `#/components/schemas/<full
//! name>` so that recursive types are `$ref`s; well-known types are inlined
//! in their JSON form.
//!
//! The mapping reads more than it prints: `null` for any field (the
//! default), 32-bit integers and floats as strings too, 64-bit integers as
//! numbers too, enums by number, base64 of either alphabet. A request body
//! therefore has its own components, `<full name>-Input` (pydantic's
//! spelling), which accept what the gateway accepts, while the answers'
//! components say exactly what it prints. Fuzzers generate requests from
//! the first and validate answers against the second.

use std::collections::{BTreeMap, HashMap};

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{json, Map, Value};

use crate::config::{JsonOptions, Strictness};

/// The error envelope every operation answers with by default.
pub const STATUS: &str = "google.rpc.Status";

/// Which way a schema's JSON goes: printed by the gateway (answers) or read
/// by it (request bodies).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Output,
    Input,
}

impl Side {
    /// The component name of `full_name` on this side.
    fn component(self, full_name: &str) -> String {
        match self {
            Side::Output => full_name.to_owned(),
            Side::Input => format!("{full_name}-Input"),
        }
    }
}

/// Builds component schemas as operations ask for them.
pub struct Schemas<'a> {
    options: &'a JsonOptions,
    /// Component schemas by name; a message is inserted before its fields
    /// are walked, so a recursive reference finds it.
    components: BTreeMap<String, Value>,
    comments: Comments,
}

impl<'a> Schemas<'a> {
    pub fn new(options: &'a JsonOptions) -> Self {
        let mut schemas = Self { options, components: BTreeMap::new(), comments: Comments::default() };
        schemas.components.insert(STATUS.to_owned(), status_schema());
        schemas
    }

    /// Every component schema asked for so far.
    pub fn into_components(self) -> Map<String, Value> {
        self.components.into_iter().collect()
    }

    /// The schema of a message value as the gateway prints it: a well-known
    /// type's JSON form, or a `$ref` to the message's component.
    pub fn message(&mut self, desc: &MessageDescriptor) -> Value {
        self.message_on(desc, Side::Output)
    }

    /// The schema of a message value as the gateway reads it (a request
    /// body): a `$ref` to its `-Input` component.
    pub fn input_message(&mut self, desc: &MessageDescriptor) -> Value {
        self.message_on(desc, Side::Input)
    }

    /// The schema of a field's JSON value as the gateway prints it:
    /// repeated as an array, a map as an object.
    pub fn field(&mut self, field: &FieldDescriptor) -> Value {
        self.field_on(field, Side::Output)
    }

    /// The schema of a field's JSON value as the gateway reads it: `null`
    /// (the field's default) besides the value.
    pub fn input_field(&mut self, field: &FieldDescriptor) -> Value {
        self.field_on(field, Side::Input)
    }

    fn message_on(&mut self, desc: &MessageDescriptor, side: Side) -> Value {
        if let Some(inline) = well_known(desc, self.options, side) {
            return inline;
        }
        let name = side.component(desc.full_name());
        if !self.components.contains_key(&name) {
            self.components.insert(name.clone(), Value::Null);
            let schema = self.build_message(desc, side);
            self.components.insert(name.clone(), schema);
        }
        reference(&name)
    }

    fn field_on(&mut self, field: &FieldDescriptor, side: Side) -> Value {
        let kind = field.kind();
        let schema = match &kind {
            Kind::Message(entry) if field.is_map() => {
                let key = entry.map_entry_key_field().kind();
                // Map values and list elements are never `null`: only a
                // field as a whole falls back to its default.
                let value = self.value(&entry.map_entry_value_field().kind(), side);
                let mut schema = json!({"type": "object", "additionalProperties": value});
                if let Some(names) = map_key_names(&key) {
                    schema["propertyNames"] = names;
                }
                schema
            }
            _ if field.is_list() => json!({"type": "array", "items": self.value(&kind, side)}),
            _ => {
                let value = self.value(&kind, side);
                // Unset message fields print as `null` when defaults are emitted.
                if side == Side::Output
                    && self.options.emit_unpopulated
                    && matches!(kind, Kind::Message(_))
                    && value.get("$ref").is_some()
                {
                    return json!({"anyOf": [value, {"type": "null"}]});
                }
                value
            }
        };
        match side {
            Side::Output => schema,
            Side::Input => or_null(schema),
        }
    }

    /// The schema of one value of `kind`.
    fn value(&mut self, kind: &Kind, side: Side) -> Value {
        match kind {
            Kind::Message(desc) => self.message_on(desc, side),
            Kind::Enum(desc) => self.enumeration(desc, side),
            scalar => match side {
                Side::Output => scalar_schema(scalar, self.options),
                Side::Input => input_scalar_schema(scalar),
            },
        }
    }

    /// The schema of a path or query parameter that sets `field` from text:
    /// numbers as numbers (the text is parsed), enums by name, wrappers as
    /// their value, Timestamp, Duration and FieldMask as their strings.
    pub fn parameter(&mut self, field: &FieldDescriptor) -> Value {
        let kind = field.kind();
        let one = self.text_value(&kind);
        if field.is_list() {
            return json!({"type": "array", "items": one});
        }
        one
    }

    /// A map field with scalar values set from the query (`m[key]=v`).
    pub fn map_parameter(&mut self, field: &FieldDescriptor) -> Value {
        let Kind::Message(entry) = field.kind() else {
            return json!({"type": "object"});
        };
        let value = self.text_value(&entry.map_entry_value_field().kind());
        json!({"type": "object", "additionalProperties": value})
    }

    fn text_value(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Message(desc) => match desc.full_name() {
                name if name.starts_with("google.protobuf.") && name.ends_with("Value") => {
                    match desc.get_field_by_name("value") {
                        Some(inner) => self.text_value(&inner.kind()),
                        None => json!({"type": "string"}),
                    }
                }
                _ => well_known(desc, self.options, Side::Input).unwrap_or_else(|| json!({"type": "string"})),
            },
            // By name or by number (query::parse_scalar).
            Kind::Enum(desc) => json!({"anyOf": [enum_names(desc), enum_numbers(desc)]}),
            // `1` and `0` too.
            Kind::Bool => json!({"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}]}),
            Kind::Bytes => bytes_schema(),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u64::MAX})
            }
            scalar => scalar_schema(scalar, self.options),
        }
    }

    fn enumeration(&mut self, desc: &EnumDescriptor, side: Side) -> Value {
        if desc.full_name() == "google.protobuf.NullValue" {
            return json!({"type": "null"});
        }
        let name = side.component(desc.full_name());
        if !self.components.contains_key(&name) {
            let mut schema = match side {
                Side::Output if self.options.enums_as_ints => enum_numbers(desc),
                Side::Output => enum_names(desc),
                // By name or number; an unknown name is dropped like an
                // unknown field when those are ignored.
                Side::Input => {
                    let names = match self.options.unknown_fields {
                        Strictness::Reject => enum_names(desc),
                        Strictness::Ignore => json!({"type": "string"}),
                    };
                    json!({"anyOf": [names, enum_numbers(desc)]})
                }
            };
            let mut text = self.comments.of(&desc.parent_file(), desc.path()).unwrap_or_default();
            let values: Vec<String> = desc
                .values()
                .filter_map(|v| {
                    let comment = self.comments.of(&desc.parent_file(), v.path())?;
                    Some(format!("- `{}` ({}): {}", v.name(), v.number(), comment.replace('\n', " ")))
                })
                .collect();
            if !values.is_empty() {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(&values.join("\n"));
            }
            if !text.is_empty() {
                schema["description"] = Value::String(text);
            }
            self.components.insert(name.clone(), schema);
        }
        reference(&name)
    }

    fn build_message(&mut self, desc: &MessageDescriptor, side: Side) -> Value {
        if desc.full_name() == STATUS {
            return status_schema();
        }
        let file = desc.parent_file();
        let mut properties = Map::new();
        for field in desc.fields() {
            let mut schema = self.field_on(&field, side);
            let mut notes = Vec::new();
            if let Some(comment) = self.comments.of(&file, field.path()) {
                notes.push(comment);
            }
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                let members: Vec<String> = oneof.fields().map(|f| format!("`{}`", self.name_of(&f))).collect();
                notes.push(format!(
                    "Member of oneof `{}`: at most one of {} is set.",
                    oneof.name(),
                    members.join(", ")
                ));
            }
            if !notes.is_empty() {
                schema = described(schema, notes.join("\n\n"));
            }
            properties.insert(self.name_of(&field), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        // The gateway refuses unknown fields (the proto field names are
        // accepted too, but only the printed ones are documented).
        if self.options.unknown_fields == Strictness::Reject {
            schema["additionalProperties"] = Value::Bool(false);
        }
        let oneofs: Map<String, Value> = desc
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| {
                let members: Vec<Value> = o.fields().map(|f| Value::String(self.name_of(&f))).collect();
                (o.name().to_owned(), Value::Array(members))
            })
            .collect();
        if side == Side::Input {
            if let Some(exclusive) = at_most_one_member(&oneofs) {
                schema["not"] = exclusive;
            }
        }
        if !oneofs.is_empty() {
            schema["x-protogate-oneofs"] = Value::Object(oneofs);
        }
        if let Some(comment) = self.comments.of(&file, desc.path()) {
            schema["description"] = Value::String(comment);
        }
        schema
    }

    /// A field's JSON name under the settings.
    pub fn name_of(&self, field: &FieldDescriptor) -> String {
        match self.options.use_proto_names {
            true => field.name().to_owned(),
            false => field.json_name().to_owned(),
        }
    }

    /// The comment of the element at `path` in `file`, when the descriptor
    /// set kept source info.
    pub fn comment(&mut self, file: &FileDescriptor, path: &[i32]) -> Option<String> {
        self.comments.of(file, path)
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `schema` with a description; a `$ref` keeps its siblings in OpenAPI 3.1.
pub fn described(mut schema: Value, text: String) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.insert("description".into(), Value::String(text));
    }
    schema
}

fn enum_names(desc: &EnumDescriptor) -> Value {
    let names: Vec<String> = desc.values().map(|v| v.name().to_owned()).collect();
    json!({"type": "string", "enum": names})
}

fn enum_numbers(desc: &EnumDescriptor) -> Value {
    let numbers: Vec<i32> = desc.values().map(|v| v.number()).collect();
    json!({"type": "integer", "format": "int32", "enum": numbers})
}

/// `schema`, or `null`: what a request may send for any field.
fn or_null(mut schema: Value) -> Value {
    let Some(object) = schema.as_object_mut() else { return schema };
    let constrained = ["type", "$ref", "anyOf", "enum", "const"].iter().any(|k| object.contains_key(*k));
    if !constrained {
        // Any JSON value (google.protobuf.Value), `null` included.
        return schema;
    }
    if let Some(Value::Array(alternatives)) = object.get_mut("anyOf") {
        if !alternatives.iter().any(|a| a["type"] == "null") {
            alternatives.push(json!({"type": "null"}));
        }
        return schema;
    }
    let plain = !["$ref", "enum", "const"].iter().any(|k| object.contains_key(*k));
    match object.get("type") {
        Some(Value::String(ty)) if plain => {
            let ty = ty.clone();
            object.insert("type".into(), json!([ty, "null"]));
            schema
        }
        Some(Value::Array(types)) if types.iter().any(|t| t == "null") => schema,
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

/// A scalar as the gateway reads it (prost-reflect's proto3 JSON reader):
/// integers as numbers or decimal strings, 64-bit ones too; floats as
/// numbers or strings, `NaN` and `Infinity` included. The digit counts of
/// the string forms stay inside each type's range, so that every value the
/// schema allows is one the gateway takes.
fn input_scalar_schema(kind: &Kind) -> Value {
    let integer = |format: &str, minimum: Value, maximum: Value, pattern: &str| {
        json!({"anyOf": [
            {"type": "integer", "format": format, "minimum": minimum, "maximum": maximum},
            {"type": "string", "pattern": pattern},
        ]})
    };
    let float = |format: &str, limit: f64| {
        json!({"anyOf": [
            {"type": "number", "format": format, "minimum": -limit, "maximum": limit},
            {"type": "string", "pattern": FLOAT_TEXT},
        ]})
    };
    match kind {
        Kind::Double => float("double", f64::MAX),
        Kind::Float => float("float", f64::from(f32::MAX)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            integer("int32", json!(i32::MIN), json!(i32::MAX), "^-?[0-9]{1,9}$")
        }
        Kind::Uint32 | Kind::Fixed32 => integer("int64", json!(0), json!(u32::MAX), "^[0-9]{1,9}$"),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            integer("int64", json!(i64::MIN), json!(i64::MAX), "^-?[0-9]{1,18}$")
        }
        Kind::Uint64 | Kind::Fixed64 => integer("int64", json!(0), json!(u64::MAX), "^[0-9]{1,19}$"),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => bytes_schema(),
        Kind::Enum(_) | Kind::Message(_) => json!({}),
    }
}

/// The floats JSON has no number for, as the mapping prints them.
fn non_finite() -> Value {
    json!({"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]})
}

/// A float's text: a decimal, `NaN` or `Infinity`.
const FLOAT_TEXT: &str = "^(-?Infinity|NaN|-?[0-9]{1,15}(\\.[0-9]{1,15})?([eE]-?[0-9]{1,2})?)$";

/// Bytes read as base64 of the standard or the URL-safe alphabet, padded or
/// not.
fn bytes_schema() -> Value {
    json!({
        "type": "string",
        "contentEncoding": "base64",
        "pattern": "^((?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==?)?|[A-Za-z0-9+/]{3}=?)?|(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}(?:==?)?|[A-Za-z0-9_-]{3}=?)?)$",
    })
}

/// A request sets at most one member of each oneof (`null` sets none):
/// the `not` of every pair of members present and not `null`.
fn at_most_one_member(oneofs: &Map<String, Value>) -> Option<Value> {
    let set = json!({"not": {"type": "null"}});
    let mut pairs = Vec::new();
    for members in oneofs.values().filter_map(Value::as_array) {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                let (Some(a), Some(b)) = (a.as_str(), b.as_str()) else { continue };
                pairs.push(json!({"required": [a, b], "properties": {a: set.clone(), b: set.clone()}}));
            }
        }
    }
    (!pairs.is_empty()).then(|| json!({"anyOf": pairs}))
}

fn scalar_schema(kind: &Kind, options: &JsonOptions) -> Value {
    let wide = |format: &str, pattern: &str, minimum: Value, maximum: Value| {
        if options.int64_as_numbers {
            json!({"type": "integer", "format": "int64", "minimum": minimum, "maximum": maximum})
        } else {
            json!({"type": "string", "format": format, "pattern": pattern})
        }
    };
    match kind {
        // Not-a-number and the infinities print as strings.
        Kind::Double => json!({"anyOf": [{"type": "number", "format": "double"}, non_finite()]}),
        Kind::Float => json!({"anyOf": [{"type": "number", "format": "float"}, non_finite()]}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => wide("int64", "^-?[0-9]+$", json!(i64::MIN), json!(i64::MAX)),
        Kind::Uint64 | Kind::Fixed64 => wide("uint64", "^[0-9]+$", json!(0), json!(u64::MAX)),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte", "contentEncoding": "base64"}),
        Kind::Enum(_) | Kind::Message(_) => json!({}),
    }
}

/// Map keys are JSON object keys: strings, holding numbers or booleans for
/// those key types.
fn map_key_names(kind: &Kind) -> Option<Value> {
    match kind {
        Kind::Bool => Some(json!({"enum": ["true", "false"]})),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Some(json!({"pattern": "^-?[0-9]+$"}))
        }
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => Some(json!({"pattern": "^[0-9]+$"})),
        _ => None,
    }
}

/// The JSON form of a well-known type, `None` for other messages.
fn well_known(desc: &MessageDescriptor, options: &JsonOptions, side: Side) -> Option<Value> {
    // A wrapper is its value, or `null` for none.
    let nullable = |kind: Kind| match side {
        Side::Output => or_null(scalar_schema(&kind, options)),
        Side::Input => or_null(input_scalar_schema(&kind)),
    };
    Some(match desc.full_name() {
        "google.protobuf.Timestamp" => json!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 timestamp in UTC, e.g. `2024-01-31T12:00:00Z` (google.protobuf.Timestamp)."
        }),
        "google.protobuf.Duration" => json!({
            "type": "string",
            // Read only within the type's ±10 000 years.
            "pattern": match side {
                Side::Output => "^-?[0-9]+(\\.[0-9]{1,9})?s$",
                Side::Input => "^-?[0-9]{1,11}(\\.[0-9]{1,9})?s$",
            },
            "description": "Seconds with an `s` suffix, e.g. `1.5s` (google.protobuf.Duration)."
        }),
        "google.protobuf.FieldMask" => json!({
            "type": "string",
            "description": "Comma-separated field paths in lowerCamelCase (google.protobuf.FieldMask)."
        }),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({"description": "Any JSON value (google.protobuf.Value)."}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object", "maxProperties": 0}),
        "google.protobuf.Any" => any_schema(),
        "google.protobuf.DoubleValue" => nullable(Kind::Double),
        "google.protobuf.FloatValue" => nullable(Kind::Float),
        "google.protobuf.Int64Value" => nullable(Kind::Int64),
        "google.protobuf.UInt64Value" => nullable(Kind::Uint64),
        "google.protobuf.Int32Value" => nullable(Kind::Int32),
        "google.protobuf.UInt32Value" => nullable(Kind::Uint32),
        "google.protobuf.BoolValue" => nullable(Kind::Bool),
        "google.protobuf.StringValue" => nullable(Kind::String),
        "google.protobuf.BytesValue" => nullable(Kind::Bytes),
        _ => return None,
    })
}

fn any_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"@type": {"type": "string", "description": "The type URL, e.g. `type.googleapis.com/google.rpc.ErrorInfo`."}},
        "required": ["@type"],
        "additionalProperties": true,
        "description": "A message of the type named by `@type`, in its JSON form (google.protobuf.Any)."
    })
}

/// The envelope of every error (DESIGN §5, `transcode::status`): its keys
/// are fixed, whatever the naming settings.
fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "The error envelope (google.rpc.Status) of every error the gateway returns, its own or the backend's.",
        "properties": {
            "code": {"type": "integer", "format": "int32", "description": "The gRPC status code (google.rpc.Code)."},
            "message": {"type": "string"},
            "details": {"type": "array", "items": any_schema()}
        },
        "required": ["code", "message", "details"]
    })
}

/// Source comments by file and element path, read once per file.
#[derive(Default)]
struct Comments {
    files: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    fn of(&mut self, file: &FileDescriptor, path: &[i32]) -> Option<String> {
        let index = self.files.entry(file.name().to_owned()).or_insert_with(|| {
            let mut index = HashMap::new();
            if let Some(info) = &file.file_descriptor_proto().source_code_info {
                for location in &info.location {
                    let text = location.leading_comments.as_deref().or(location.trailing_comments.as_deref());
                    if let Some(text) = text.map(tidy).filter(|t| !t.is_empty()) {
                        index.insert(location.path.clone(), text);
                    }
                }
            }
            index
        });
        index.get(path).cloned()
    }
}

/// A comment's lines without the one space after `//`, trimmed as a block.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end()).collect();
    lines.join("\n").trim().to_owned()
}
