//! Path captures straight to protobuf wire bytes.
//!
//! A request set only by its path variables (`GET /v1/items/{id}`, no
//! query, no body) went through a `DynamicMessage` — created, each capture
//! parsed into a `Value` and set, then encoded — to write a few bytes.
//! [`CapturesIn`] is compiled per binding at load: the variables' fields
//! as a tree in field-number order, their keys encoded, so that a request
//! only parses its captures and writes.
//!
//! It gives exactly what `RequestPlan::build` then `encode_raw` give:
//! fields in ascending number order; a field without presence left out at
//! its default (`id=""`, `0`), one with presence (proto3 `optional`, oneof
//! members, proto2) written even then; every message on a variable's path
//! written, empty or not, since setting a field below creates it. Captures
//! are read by the oracle's own parser (`query::parse_scalar`), enum names
//! by a table of the same names: [`CapturesIn::encode`] bails on any text
//! that parser refuses, and the caller's oracle path words the error.
//!
//! Bindings it does not compile (the oracle serves them): a leaf of type
//! bytes (base64), a wrapper or another well-known type; a group on the
//! path; the same field bound twice, or two members of one oneof (the last
//! set would clear the others).

use prost_reflect::{FieldDescriptor, Kind, Value};

use super::super::query;
use super::wire::{close_len, varint, Tag};

/// The wire bytes of one binding's path variables, compiled at load.
#[derive(Debug, Clone)]
pub struct CapturesIn {
    /// Top-level fields, in field-number order.
    fields: Vec<Node>,
    variables: usize,
}

/// One field on the way to a variable's leaf.
#[derive(Debug, Clone)]
struct Node {
    number: u32,
    tag: Tag,
    set: Set,
}

#[derive(Debug, Clone)]
enum Set {
    /// A scalar from capture number `capture`.
    Leaf {
        capture: usize,
        scalar: Scalar,
        /// The value left out: the field's default when it has no
        /// presence (prost-reflect's `has`), `None` when it has.
        skipped: Option<Value>,
    },
    /// A message: its fields that variables set, in field-number order.
    Message(Vec<Node>),
}

#[derive(Debug, Clone)]
enum Scalar {
    /// Taken as it is: no parsing, no copy.
    String,
    /// Value names and numbers, sorted by name; any other text is read
    /// as an `i32`, as `query::parse_scalar` does.
    Enum(Vec<(Box<str>, i32)>),
    /// Numbers and bool: `query::parse_scalar` on this kind, which looks
    /// nothing up and allocates nothing for them.
    Number(Kind),
}

/// Not sure to match the oracle: let it decide.
struct Bail;

impl CapturesIn {
    /// `variables`: each variable's fields (intermediate messages, then
    /// the leaf), in the template's order. `None` for a binding it does not
    /// cover (see the module docs) or without variables.
    pub fn new<'a>(variables: impl IntoIterator<Item = &'a [FieldDescriptor]>) -> Option<CapturesIn> {
        let mut fields = Vec::new();
        let mut count = 0;
        for (capture, path) in variables.into_iter().enumerate() {
            insert(&mut fields, path, capture)?;
            count += 1;
        }
        (count > 0).then_some(CapturesIn { fields, variables: count })
    }

    /// Appends the encoding of the message `captures` set (one text per
    /// variable, in the template's order) to `out`. Returns false ("bail",
    /// `out` back to its length on entry) when a capture is one the oracle
    /// refuses, or the count is not the binding's: the caller then takes
    /// the oracle's path, which words the error.
    pub fn encode(&self, captures: &[String], out: &mut Vec<u8>) -> bool {
        let start = out.len();
        if captures.len() == self.variables && write(&self.fields, captures, out).is_ok() {
            return true;
        }
        out.truncate(start);
        false
    }
}

/// Adds the variable `path` to the tree `nodes`, keeping each level in
/// field-number order.
fn insert(nodes: &mut Vec<Node>, path: &[FieldDescriptor], capture: usize) -> Option<()> {
    let (field, rest) = path.split_first()?;
    let number = field.number();
    let at = nodes.partition_point(|n| n.number < number);
    if let Some(node) = nodes.get_mut(at).filter(|n| n.number == number) {
        // Variables below one message share its one occurrence; a field
        // bound twice is left to the oracle (the last one wins there).
        return match &mut node.set {
            Set::Message(children) if !rest.is_empty() => insert(children, rest, capture),
            _ => None,
        };
    }
    // Setting a member of a oneof clears the others: the oracle keeps the
    // last one set, where this tree would write them all.
    if let Some(oneof) = field.containing_oneof() {
        if oneof.fields().any(|member| nodes.iter().any(|n| n.number == member.number())) {
            return None;
        }
    }
    let (set, wire_type) = match rest {
        [] => {
            let scalar = Scalar::of(&field.kind())?;
            let wire_type = scalar.wire_type();
            let skipped = (!field.supports_presence()).then(|| field.default_value());
            (Set::Leaf { capture, scalar, skipped }, wire_type)
        }
        // A group is delimited by start and end keys, not a length.
        _ if field.is_group() => return None,
        _ => {
            let mut children = Vec::new();
            insert(&mut children, rest, capture)?;
            (Set::Message(children), 2)
        }
    };
    nodes.insert(at, Node { number, tag: Tag::new(number, wire_type), set });
    Some(())
}

fn write(nodes: &[Node], captures: &[String], out: &mut Vec<u8>) -> Result<(), Bail> {
    for node in nodes {
        match &node.set {
            Set::Message(fields) => {
                node.tag.put(out);
                let len_at = out.len();
                out.push(0);
                write(fields, captures, out)?;
                close_len(out, len_at);
            }
            Set::Leaf { capture, scalar, skipped } => {
                let text = captures.get(*capture).ok_or(Bail)?;
                scalar.write(node.tag, text, skipped.as_ref(), out)?;
            }
        }
    }
    Ok(())
}

impl Scalar {
    fn of(kind: &Kind) -> Option<Scalar> {
        match kind {
            Kind::String => Some(Scalar::String),
            Kind::Enum(desc) => {
                let mut names: Vec<(Box<str>, i32)> = desc.values().map(|v| (v.name().into(), v.number())).collect();
                names.sort_unstable();
                Some(Scalar::Enum(names))
            }
            Kind::Bytes | Kind::Message(_) => None,
            number => Some(Scalar::Number(number.clone())),
        }
    }

    fn wire_type(&self) -> u32 {
        match self {
            Scalar::String => 2,
            Scalar::Enum(_) => 0,
            Scalar::Number(kind) => match kind {
                Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
                Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
                _ => 0,
            },
        }
    }

    /// Writes the field (key and value) unless its value is `skipped`.
    fn write(&self, tag: Tag, text: &str, skipped: Option<&Value>, out: &mut Vec<u8>) -> Result<(), Bail> {
        match self {
            Scalar::String => {
                if matches!(skipped, Some(Value::String(default)) if default == text) {
                    return Ok(());
                }
                tag.put(out);
                varint(out, text.len() as u64);
                out.extend_from_slice(text.as_bytes());
            }
            Scalar::Enum(names) => {
                let number = match names.binary_search_by(|(name, _)| (**name).cmp(text)) {
                    Ok(i) => names[i].1,
                    Err(_) => text.parse::<i32>().map_err(|_| Bail)?,
                };
                if skipped == Some(&Value::EnumNumber(number)) {
                    return Ok(());
                }
                tag.put(out);
                // As int32: a negative number takes ten bytes.
                varint(out, i64::from(number) as u64);
            }
            Scalar::Number(kind) => {
                let value = query::parse_scalar(kind, text).map_err(|_| Bail)?;
                if skipped == Some(&value) {
                    return Ok(());
                }
                tag.put(out);
                put_number(kind, &value, out)?;
            }
        }
        Ok(())
    }
}

/// A number's wire form (without its key), as prost encodes `kind`.
fn put_number(kind: &Kind, value: &Value, out: &mut Vec<u8>) -> Result<(), Bail> {
    match (kind, value) {
        (Kind::Int32, Value::I32(v)) => varint(out, i64::from(*v) as u64),
        (Kind::Sint32, Value::I32(v)) => varint(out, u64::from(((*v << 1) ^ (*v >> 31)) as u32)),
        (Kind::Sfixed32, Value::I32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Int64, Value::I64(v)) => varint(out, *v as u64),
        (Kind::Sint64, Value::I64(v)) => varint(out, ((*v << 1) ^ (*v >> 63)) as u64),
        (Kind::Sfixed64, Value::I64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Uint32, Value::U32(v)) => varint(out, u64::from(*v)),
        (Kind::Fixed32, Value::U32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Uint64, Value::U64(v)) => varint(out, *v),
        (Kind::Fixed64, Value::U64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Float, Value::F32(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Double, Value::F64(v)) => out.extend_from_slice(&v.to_le_bytes()),
        (Kind::Bool, Value::Bool(v)) => varint(out, u64::from(*v)),
        _ => return Err(Bail),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
