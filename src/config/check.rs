//! How the config file's checks get their key path and line.
//!
//! serde_yaml_ng attaches the key path and the line to an error only when
//! the error is raised inside the deserializer of the node at fault, and it
//! has no spans to keep for later. So every check runs as early as what it
//! looks at allows:
//!
//! - a single value is checked while its scalar is read (the `str_rule`,
//!   `opt_str_rule` and `at_least_one_*` helpers here, the value types of
//!   [`super::values`]);
//! - a mapping as a whole is checked by [`Checked`], inside the mapping's
//!   own `visit_map`;
//! - what needs two places of the file (a duplicate name, a policy naming a
//!   provider of `auth`) is checked once the whole file is read. Such a
//!   check returns a [`Problem`] with the key path of the node at fault, and
//!   [`locate`] reads the text a second time down to that node and fails
//!   there, so the error carries the same key path and line as any other.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A mapping whose fields are read by a derived `Deserialize` and then
/// checked as a whole.
///
/// The check runs inside the mapping's own `visit_map`, which is what makes
/// serde_yaml_ng attach the mapping's key path and line to its error; a
/// check after deserialization (or serde's `try_from`) would only get the
/// enclosing sequence's position.
#[derive(Debug)]
pub(super) struct Checked<T>(pub(super) T);

pub(super) trait Check {
    fn check(&self) -> Result<(), String>;
}

impl<'de, T: DeserializeOwned + Check> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned + Check> Visitor<'de> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let raw = T::deserialize(MapAccessDeserializer::new(map))?;
                raw.check().map_err(de::Error::custom)?;
                Ok(Checked(raw))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// `deserialize_with` for a list of mappings each checked by [`Checked`],
/// kept as the plain list.
pub(super) fn checked_list<'de, D: Deserializer<'de>, T: DeserializeOwned + Check>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Checked<T>>::deserialize(d).map(|list| list.into_iter().map(|Checked(item)| item).collect())
}

/// A rule for one string value: `Err` says what is wrong with it.
pub(super) type StrRule = fn(&str) -> Result<(), String>;

struct StrVisitor(StrRule);

impl Visitor<'_> for StrVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        (self.0)(v).map_err(E::custom)?;
        Ok(v.to_owned())
    }
}

/// A string checked by `rule` while its scalar is read.
pub(super) fn str_rule<'de, D: Deserializer<'de>>(d: D, rule: StrRule) -> Result<String, D::Error> {
    d.deserialize_str(StrVisitor(rule))
}

/// A string parsed into `T` by `parse`, whose error becomes the config
/// error at the value's line; `expecting` names what was wanted.
pub(super) fn parsed<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, parse })
}

/// [`str_rule`] for an optional value (`key: ~` is `None`).
pub(super) fn opt_str_rule<'de, D: Deserializer<'de>>(d: D, rule: StrRule) -> Result<Option<String>, D::Error> {
    struct V(StrRule);
    impl<'de> Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            str_rule(d, self.0).map(Some)
        }
    }
    d.deserialize_option(V(rule))
}

/// A whole number from 1 to `max`, checked while its scalar is read (a
/// check after reading would lose the value's line).
struct AtLeastOne(u64);

impl Visitor<'_> for AtLeastOne {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a whole number, at least 1")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        match v {
            0 => Err(E::custom("must be at least 1")),
            v if v > self.0 => Err(E::custom(format!("{v} is too large (at most {})", self.0))),
            v => Ok(v),
        }
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        self.visit_u64(u64::try_from(v).unwrap_or(0))
    }
}

pub(super) fn at_least_one_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    // `any`, not `u64`: a negative number gets "at least 1", not a type error.
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    let n = d.deserialize_any(AtLeastOne(max))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn opt_at_least_one_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number, at least 1")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            let n = d.deserialize_any(AtLeastOne(u64::from(u32::MAX)))?;
            Ok(Some(u32::try_from(n).unwrap_or(u32::MAX)))
        }
    }
    d.deserialize_option(V)
}

/// One step of a key path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    Key(&'static str),
    /// A key the user chose (a call name, a request field).
    Name(String),
    Index(usize),
}

impl Step {
    fn key(&self) -> Option<&str> {
        match self {
            Step::Key(key) => Some(key),
            Step::Name(name) => Some(name),
            Step::Index(_) => None,
        }
    }
}

/// A problem found once the whole file is read, with the key path of the
/// node at fault (`policies.rules[2].providers[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(super) path: Vec<Step>,
    pub(super) message: String,
}

impl Problem {
    /// The same problem seen from one level up: `key` goes in front.
    pub(super) fn under(mut self, key: &'static str) -> Self {
        self.path.insert(0, Step::Key(key));
        self
    }
}

/// Builds the key path of a [`Problem`]: `KeyPath::new().key("rules").index(2)`.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyPath(Vec<Step>);

impl KeyPath {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn key(mut self, key: &'static str) -> Self {
        self.0.push(Step::Key(key));
        self
    }

    /// A key the user chose, such as a call name.
    pub(super) fn name(mut self, name: impl Into<String>) -> Self {
        self.0.push(Step::Name(name.into()));
        self
    }

    pub(crate) fn index(mut self, index: usize) -> Self {
        self.0.push(Step::Index(index));
        self
    }

    pub(crate) fn problem(self, message: impl Into<String>) -> Problem {
        Problem { path: self.0, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.path.iter().enumerate() {
            let Some(key) = step.key() else {
                if let Step::Index(index) = step {
                    write!(f, "[{index}]")?;
                }
                continue;
            };
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(key)?;
        }
        if !self.path.is_empty() {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// The error serde_yaml_ng gives for `problem` when it is raised at the
/// node its path names: the same key path and line as a check made while
/// reading. A node the path names but the file leaves out (a key with a
/// default) is reported at the closest node the file has.
pub(crate) fn locate(text: &str, problem: &Problem) -> serde_yaml_ng::Error {
    let probe = Probe { path: &problem.path, message: &problem.message };
    match probe.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(err) => err,
        // Every branch of the probe fails; this is only a fallback.
        Ok(()) => de::Error::custom(problem.to_string()),
    }
}

/// Walks down `path` and fails at its end, or where the file stops
/// following it.
#[derive(Clone, Copy)]
struct Probe<'a> {
    path: &'a [Step],
    message: &'a str,
}

impl Probe<'_> {
    fn fail<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(self.message))
    }
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((wanted, rest)) = self.path.split_first() else {
            return self.fail();
        };
        let Some(wanted) = wanted.key() else {
            return self.fail();
        };
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            if key.as_str() == Some(wanted) {
                return map.next_value_seed(Probe { path: rest, message: self.message });
            }
            map.next_value::<IgnoredAny>()?;
        }
        self.fail()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(wanted), rest)) = self.path.split_first() else {
            return self.fail();
        };
        let mut index = 0;
        while index < *wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return self.fail();
            }
            index += 1;
        }
        match seq.next_element_seed(Probe { path: rest, message: self.message })? {
            Some(()) => Ok(()),
            None => self.fail(),
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.fail()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.fail()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.fail()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.fail()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.fail()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.fail()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.fail()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.fail()
    }
}
