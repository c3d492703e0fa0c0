//! Values moved between messages by field path, for compositions (DESIGN
//! §8): where a value is read in one call's answer, where it is written in
//! another call's request, and how its type changes on the way — all
//! decided at load, so that a request only copies and converts.

use prost_reflect::{DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value};

use super::query::{set_at, Leaf};

/// A field reached from a message through singular message fields
/// (`filter.region`), resolved against the message type.
#[derive(Debug, Clone)]
pub struct FieldPath {
    fields: Vec<FieldDescriptor>,
}

impl FieldPath {
    /// `names` from `desc`: every name but the last must be a singular
    /// message field. An empty path is the message itself.
    pub fn resolve(desc: &MessageDescriptor, names: &[String]) -> Result<Self, String> {
        let mut fields = Vec::with_capacity(names.len());
        let mut current = desc.clone();
        for (i, name) in names.iter().enumerate() {
            let field = current
                .get_field_by_name(name)
                .or_else(|| current.get_field_by_json_name(name))
                .ok_or_else(|| format!("no field `{name}` in {}", current.full_name()))?;
            if i + 1 < names.len() {
                match field.kind() {
                    Kind::Message(inner) if !field.is_list() && !field.is_map() => current = inner,
                    _ => return Err(format!("field `{name}` of {} is not a singular message", current.full_name())),
                }
            }
            fields.push(field);
        }
        Ok(Self { fields })
    }

    /// The message itself.
    pub fn empty() -> Self {
        Self { fields: Vec::new() }
    }

    /// The last field (`None` for the message itself).
    pub fn leaf(&self) -> Option<&FieldDescriptor> {
        self.fields.last()
    }

    /// The value at this path in `msg` (default values for fields not set).
    pub fn get(&self, msg: &DynamicMessage) -> Value {
        let Some((leaf, parents)) = self.fields.split_last() else {
            return Value::Message(msg.clone());
        };
        let mut current = msg.clone();
        for field in parents {
            current = match current.get_field(field).as_message() {
                Some(inner) => inner.clone(),
                None => return leaf.default_value(),
            };
        }
        current.get_field(leaf).into_owned()
    }

    /// Writes `value` at this path, creating the messages on the way.
    pub fn set(&self, msg: &mut DynamicMessage, value: Value) -> Result<(), String> {
        set_at(msg, &self.fields, value)
    }
}

/// What a value of one type must go through to fit a field of another,
/// fixed at load by [`Conversion::plan`].
#[derive(Debug, Clone)]
pub enum Conversion {
    /// Same type: copied as it is.
    Same,
    /// Text parsed as the proto3 JSON mapping reads a string (path and query
    /// values, interpolated strings, strings and 64-bit integers).
    FromText(Leaf),
    /// A 64-bit integer written as its decimal text (into a string).
    ToText,
    /// An enum written as its value's name (into a string).
    EnumName(EnumDescriptor),
    /// Between integer kinds, checked against the target's range.
    Integer(Kind),
    /// Between `float` and `double`.
    Float(Kind),
}

/// The kind of a value a reference yields, for type checks.
#[derive(Debug, Clone)]
pub enum Source {
    /// Plain text (a path variable, a query parameter, interpolation).
    Text,
    /// A proto value of this kind; `list` for a repeated field.
    Proto { kind: Kind, list: bool },
}

impl Conversion {
    /// How a value from `source` fits `target` (`list`: written as a whole
    /// repeated field), or why it cannot, in the words of the proto3 JSON
    /// mapping.
    pub fn plan(source: &Source, target: &FieldDescriptor) -> Result<Self, String> {
        let target_kind = target.kind();
        let target_list = target.is_list() || target.is_map();
        match source {
            Source::Text if target_list => Err(format!("text cannot fill the repeated field `{}`", target.name())),
            Source::Text => Leaf::of(&target_kind)
                .map(Conversion::FromText)
                .ok_or_else(|| format!("text does not fit `{}` ({})", target.name(), kind_name(&target_kind))),
            Source::Proto { list: true, .. } if !target_list => {
                Err(format!("a repeated value does not fit the singular field `{}`", target.name()))
            }
            Source::Proto { list: false, .. } if target_list => {
                Err(format!("a single value does not fit the repeated field `{}`", target.name()))
            }
            Source::Proto { kind, .. } => Self::between(kind, &target_kind).ok_or_else(|| {
                format!("{} does not fit `{}` ({})", kind_name(kind), target.name(), kind_name(&target_kind))
            }),
        }
    }

    fn between(from: &Kind, to: &Kind) -> Option<Self> {
        use Kind::*;
        let integer = |k: &Kind| {
            matches!(k, Int32 | Sint32 | Sfixed32 | Uint32 | Fixed32 | Int64 | Sint64 | Sfixed64 | Uint64 | Fixed64)
        };
        let wide = |k: &Kind| matches!(k, Int64 | Sint64 | Sfixed64 | Uint64 | Fixed64);
        match (from, to) {
            (Message(a), Message(b)) if a == b => Some(Self::Same),
            (Enum(a), Enum(b)) if a == b => Some(Self::Same),
            (a, b) if a == b => Some(Self::Same),
            (a, b) if integer(a) && integer(b) => Some(Self::Integer(b.clone())),
            (Float | Double, Float | Double) => Some(Self::Float(to.clone())),
            // The JSON mapping writes strings, 64-bit integers and enum
            // names as JSON strings; a string field takes them as they are.
            (a, String) if wide(a) => Some(Self::ToText),
            (Enum(e), String) => Some(Self::EnumName(e.clone())),
            // And a string is read back the way the mapping reads a JSON
            // string into the field.
            (String, b) if !matches!(b, Bool | Bytes) => Leaf::of(b).map(Self::FromText),
            _ => None,
        }
    }

    /// Converts a proto value (a call's answer, a list's element).
    pub fn apply(&self, value: Value) -> Result<Value, String> {
        match (self, value) {
            (Self::Same, value) => Ok(value),
            (Self::FromText(leaf), Value::String(text)) => leaf.parse(&text),
            (Self::FromText(_), other) => Err(format!("expected text, found {other:?}")),
            (Self::ToText, value) => Ok(Value::String(text_of(&value))),
            (Self::EnumName(e), Value::EnumNumber(n)) => {
                Ok(Value::String(e.get_value(n).map_or_else(|| n.to_string(), |v| v.name().to_owned())))
            }
            (Self::EnumName(_), value) => Ok(Value::String(text_of(&value))),
            (Self::Integer(kind), value) => integer(kind, &value),
            (Self::Float(Kind::Float), Value::F64(v)) => Ok(Value::F32(v as f32)),
            (Self::Float(_), Value::F32(v)) => Ok(Value::F64(f64::from(v))),
            (Self::Float(_), value) => Ok(value),
        }
    }

    /// Converts text (a path variable, a query parameter, interpolation).
    pub fn apply_text(&self, text: &str) -> Result<Value, String> {
        match self {
            Self::FromText(leaf) => leaf.parse(text),
            _ => Ok(Value::String(text.to_owned())),
        }
    }
}

/// A scalar as text: decimal numbers, enum numbers, the string itself.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::I32(v) | Value::EnumNumber(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        Value::Bool(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

fn integer(kind: &Kind, value: &Value) -> Result<Value, String> {
    let wide: i128 = match value {
        Value::I32(v) => i128::from(*v),
        Value::I64(v) => i128::from(*v),
        Value::U32(v) => i128::from(*v),
        Value::U64(v) => i128::from(*v),
        other => return Err(format!("expected an integer, found {other:?}")),
    };
    let out_of_range = || format!("{wide} is out of range for {}", kind_name(kind));
    Ok(match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(i32::try_from(wide).map_err(|_| out_of_range())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(i64::try_from(wide).map_err(|_| out_of_range())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(u32::try_from(wide).map_err(|_| out_of_range())?),
        _ => Value::U64(u64::try_from(wide).map_err(|_| out_of_range())?),
    })
}

/// `int64`, `string`, `acme.users.v1.User`: a kind as proto spells it.
pub fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
        other => format!("{other:?}").to_lowercase(),
    }
}
