//! gRPC API Service Config files (`type: google.api.Service`) in the
//! descriptor folder: the `http.rules` that grpc-gateway reads with
//! `--grpc_api_configuration` and ESPv2 reads from the service config, so
//! that protos without `google.api.http` annotations can be served as they
//! are.
//!
//! This module reads the files: which YAML files are service configs, the
//! shape of every rule (one HTTP pattern, a well-formed selector), and where
//! each rule is in its file for messages. Which methods a rule selects is
//! the catalog's business, once the pool is built.
//!
//! Only `type` and `http` are read; every other section of a service config
//! (`name`, `apis`, `authentication`, `usage`, ...) is left alone, so a
//! file written for ESPv2 loads unchanged. A YAML file without `type:
//! google.api.Service` is not ours (an OpenAPI options file, `buf.yaml`)
//! and is ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::Method;
use serde::Deserialize;

use crate::config::check::{locate, KeyPath};

/// The `type` that marks a YAML file as a service config.
pub const SERVICE_TYPE: &str = "google.api.Service";

/// The file extensions of service configs.
pub const EXTENSIONS: &[&str] = &["yaml", "yml"];

/// One service config file, its rules checked for shape.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Relative to the descriptor folder.
    pub path: PathBuf,
    /// `http.rules`, in file order: the last rule that selects a method wins
    /// (http.proto: "All service configuration rules follow 'last one wins'
    /// order").
    pub rules: Vec<ConfigRule>,
    /// The text, kept to find a rule's line when a message needs it.
    text: Arc<str>,
}

/// One `http.rules` entry.
#[derive(Debug, Clone)]
pub struct ConfigRule {
    /// Its index in `http.rules`.
    pub index: usize,
    /// The selector's patterns (a comma-separated list in the file).
    pub selector: Vec<Selector>,
    /// The rule's own binding, then its `additional_bindings`.
    pub bindings: Vec<ConfigBinding>,
}

/// One HTTP binding of a rule.
#[derive(Debug, Clone)]
pub struct ConfigBinding {
    pub http_method: Method,
    pub path: String,
    pub body: String,
    pub response_body: String,
    /// `None`: the rule itself; `Some(i)`: its `additional_bindings[i]`.
    pub additional: Option<usize>,
}

/// One pattern of a selector (Google's selector grammar: a fully-qualified
/// name that may end in a whole-component `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `*`: every method.
    All,
    /// `acme.v1.Users.*` or `acme.v1.*`: every method whose fully-qualified
    /// name starts with this prefix (the text before `*`, dot included).
    Prefix(String),
    /// `acme.v1.Users.GetUser`.
    Exact(String),
}

impl Selector {
    /// Whether the selector picks the method `full_name`
    /// (`acme.v1.Users.GetUser`).
    pub fn selects(&self, full_name: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Prefix(prefix) => full_name.starts_with(prefix.as_str()),
            Selector::Exact(name) => full_name == name,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("*"),
            Selector::Prefix(prefix) => write!(f, "{prefix}*"),
            Selector::Exact(name) => f.write_str(name),
        }
    }
}

impl ServiceConfig {
    /// `api.yaml:12`: where rule `rule` (its binding `additional`) is.
    pub fn place(&self, rule: usize, additional: Option<usize>) -> String {
        let mut path = KeyPath::new().key("http").key("rules").index(rule);
        if let Some(extra) = additional {
            path = path.key("additional_bindings").index(extra);
        }
        self.at(path)
    }

    /// `api.yaml:11`: where rule `rule`'s selector is.
    pub fn selector_place(&self, rule: usize) -> String {
        self.at(KeyPath::new().key("http").key("rules").index(rule).key("selector"))
    }

    fn at(&self, path: KeyPath) -> String {
        let err = locate(&self.text, &path.problem(""));
        match err.location() {
            Some(location) => format!("{}:{}", self.path.display(), location.line()),
            None => self.path.display().to_string(),
        }
    }
}

/// Reads `text` (the file `path`, relative to the folder). `Ok(None)`: not
/// a service config (no `type: google.api.Service`). Errors name the file
/// and the line: `api.yaml:7: http.rules[1]: ...`.
pub fn parse(path: &Path, text: &str) -> Result<Option<ServiceConfig>, String> {
    let shown = path.display();
    let kind = match serde_yaml_ng::from_str::<TypeOnly>(text) {
        Ok(TypeOnly { kind }) => kind,
        // Broken YAML that says it is a service config is one, broken;
        // anything else is none of ours.
        Err(err) if text.contains(SERVICE_TYPE) => return Err(located(path, &err)),
        Err(err) => {
            tracing::debug!(file = %shown, error = %err, "YAML file in the descriptor folder is not a service config");
            return Ok(None);
        }
    };
    if kind.as_deref() != Some(SERVICE_TYPE) {
        tracing::debug!(file = %shown, "YAML file without `type: google.api.Service` in the descriptor folder: ignored");
        return Ok(None);
    }
    let file: ServiceFile = serde_yaml_ng::from_str(text).map_err(|err| located(path, &err))?;
    let mut rules = Vec::new();
    for (index, raw) in file.http.map(|http| http.rules).unwrap_or_default().into_iter().enumerate() {
        let Checked(rule) = raw;
        let mut bindings = vec![rule.binding(None)];
        for (extra, Checked(binding)) in rule.additional_bindings.iter().enumerate() {
            bindings.push(binding.binding(Some(extra)));
        }
        let selector = parse_selector(rule.selector.as_deref().unwrap_or_default()).map_err(|problem| {
            let path_to = KeyPath::new().key("http").key("rules").index(index).key("selector");
            located(path, &locate(text, &path_to.problem(problem)))
        })?;
        rules.push(ConfigRule { index, selector, bindings });
    }
    Ok(Some(ServiceConfig { path: path.to_path_buf(), rules, text: Arc::from(text) }))
}

/// `api.yaml:7: http.rules[1]: unknown field ...`: serde_yaml_ng's
/// message with its position in front, where it is easy to click.
fn located(path: &Path, err: &serde_yaml_ng::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(at) => {
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            format!("{}:{}: {message}", path.display(), at.line())
        }
        None => format!("{}: {message}", path.display()),
    }
}

/// A selector's comma-separated patterns. Google's grammar: each is a
/// fully-qualified name whose last component may be `*`.
fn parse_selector(text: &str) -> Result<Vec<Selector>, String> {
    const GRAMMAR: &str = "a selector is a fully-qualified method name (`acme.v1.Users.GetUser`), may end in a \
                           whole-component wildcard (`acme.v1.Users.*`, `acme.v1.*`), or is `*` for every method \
                           (Google's selector grammar)";
    if text.trim().is_empty() {
        return Err(format!("every rule needs a selector: {GRAMMAR}"));
    }
    let mut out = Vec::new();
    for pattern in text.split(',').map(str::trim) {
        let ident = |s: &str| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if pattern == "*" {
            out.push(Selector::All);
            continue;
        }
        let (name, wildcard) = match pattern.strip_suffix(".*") {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        if !name.split('.').all(ident) {
            let hint = match () {
                _ if pattern.contains('/') => " (write `.` between the service and the method, not `/`)",
                _ if pattern.starts_with('.') => " (without the leading `.`)",
                _ if pattern.contains('*') => " (`*` may only stand for a whole last component)",
                _ => "",
            };
            return Err(format!("`{pattern}` is not a valid selector{hint}: {GRAMMAR}"));
        }
        out.push(match wildcard {
            true => Selector::Prefix(format!("{name}.")),
            false => Selector::Exact(name.to_owned()),
        });
    }
    Ok(out)
}

/// Just the `type` of a YAML file, whatever else it holds.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The parts of a service config protogate reads; the other sections are
/// ignored.
#[derive(Deserialize)]
struct ServiceFile {
    http: Option<HttpSection>,
}

/// google.api.Http.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with rules")]
struct HttpSection {
    #[serde(default)]
    rules: Vec<Checked<RuleRaw>>,
    /// Accepted only at its default: see `Checked<HttpSection>`.
    #[serde(default, alias = "fullyDecodeReservedExpansion", deserialize_with = "decode_reserved")]
    #[allow(dead_code)]
    fully_decode_reserved_expansion: bool,
}

/// `fully_decode_reserved_expansion: true` asks multi-segment variables to
/// be fully decoded, against http.proto's default that protogate follows.
fn decode_reserved<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match bool::deserialize(d)? {
        false => Ok(false),
        true => Err(serde::de::Error::custom(
            "fully_decode_reserved_expansion: true is not supported: protogate keeps `%2F` in multi-segment \
             variables, http.proto's default; remove the key",
        )),
    }
}

/// google.api.HttpRule as YAML writes it (the proto JSON mapping, so both
/// `response_body` and `responseBody`).
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with selector, get, put, post, delete, patch or custom, body, response_body, \
                 additional_bindings"
)]
struct RuleRaw {
    selector: Option<String>,
    get: Option<String>,
    put: Option<String>,
    post: Option<String>,
    delete: Option<String>,
    patch: Option<String>,
    custom: Option<CustomRaw>,
    #[serde(default)]
    body: String,
    #[serde(default, alias = "responseBody")]
    response_body: String,
    #[serde(default, alias = "additionalBindings")]
    additional_bindings: Vec<Checked<AdditionalRaw>>,
}

/// An `additional_bindings` entry: an HttpRule without selector and
/// without bindings of its own (http.proto: nesting is one level deep).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with get, put, post, delete, patch or custom, body, response_body")]
struct AdditionalRaw {
    get: Option<String>,
    put: Option<String>,
    post: Option<String>,
    delete: Option<String>,
    patch: Option<String>,
    custom: Option<CustomRaw>,
    #[serde(default)]
    body: String,
    #[serde(default, alias = "responseBody")]
    response_body: String,
}

/// google.api.CustomHttpPattern.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with kind and path")]
struct CustomRaw {
    kind: String,
    path: String,
}

/// What the rule and its additional bindings share: one HTTP pattern.
trait Pattern {
    fn patterns(&self) -> Vec<(Method, &str)>;
    fn custom(&self) -> Option<&CustomRaw>;
    fn body(&self) -> &str;
    fn response_body(&self) -> &str;

    /// Exactly one of get, put, post, delete, patch and custom, as
    /// HttpRule's `oneof pattern` says.
    fn check_pattern(&self) -> Result<(), String> {
        if let Some(custom) = self.custom() {
            if Method::from_bytes(custom.kind.as_bytes()).is_err() || custom.kind.is_empty() {
                return Err(format!(
                    "custom.kind {:?} is not an HTTP method name (http.proto CustomHttpPattern: a method such as \
                     HEAD or OPTIONS)",
                    custom.kind
                ));
            }
        }
        match self.patterns().len() + usize::from(self.custom().is_some()) {
            1 => Ok(()),
            0 => Err("the rule has no HTTP pattern: http.proto's HttpRule needs exactly one of get, put, post, \
                      delete, patch or custom"
                .into()),
            _ => Err("the rule has more than one HTTP pattern: http.proto's HttpRule takes exactly one of get, put, \
                      post, delete, patch or custom (more bindings go in additional_bindings)"
                .into()),
        }
    }

    fn binding(&self, additional: Option<usize>) -> ConfigBinding {
        let (http_method, path) = match self.custom() {
            Some(custom) => (Method::from_bytes(custom.kind.as_bytes()).unwrap_or(Method::GET), custom.path.as_str()),
            None => self.patterns().into_iter().next().unwrap_or((Method::GET, "")),
        };
        ConfigBinding {
            http_method,
            path: path.to_owned(),
            body: self.body().to_owned(),
            response_body: self.response_body().to_owned(),
            additional,
        }
    }
}

macro_rules! pattern {
    ($raw:ty) => {
        impl Pattern for $raw {
            fn patterns(&self) -> Vec<(Method, &str)> {
                [
                    (Method::GET, &self.get),
                    (Method::PUT, &self.put),
                    (Method::POST, &self.post),
                    (Method::DELETE, &self.delete),
                    (Method::PATCH, &self.patch),
                ]
                .into_iter()
                .filter_map(|(method, path)| path.as_deref().map(|p| (method, p)))
                .collect()
            }
            fn custom(&self) -> Option<&CustomRaw> {
                self.custom.as_ref()
            }
            fn body(&self) -> &str {
                &self.body
            }
            fn response_body(&self) -> &str {
                &self.response_body
            }
        }
    };
}

pattern!(RuleRaw);
pattern!(AdditionalRaw);

/// A rule checked inside its own mapping, so that serde_yaml_ng gives the
/// error the rule's key path and line.
struct Checked<T>(T);

impl<'de, T: serde::de::DeserializeOwned + Pattern> Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};

        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::de::DeserializeOwned + Pattern> Visitor<'de> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HttpRule mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let raw = T::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                raw.check_pattern().map_err(A::Error::custom)?;
                Ok(Checked(raw))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> ServiceConfig {
        parse(Path::new("api.yaml"), text).expect("parses").expect("a service config")
    }

    fn parse_err(text: &str) -> String {
        match parse(Path::new("api.yaml"), text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(err) => err,
        }
    }

    const ECHO: &str = "\
type: google.api.Service
config_version: 3
name: echo.example.com
http:
  rules:
  - selector: demo.v1.Echo.Echo
    post: /v1/echo/{id}
    additional_bindings:
    - get: /v1/echo/{id}/{num}
    - custom: { kind: HEAD, path: /v1/echo }
  - selector: demo.v1.Echo.*, demo.v2.*
    post: /v1/echo_body
    body: \"*\"
    responseBody: text
";

    #[test]
    fn reads_rules_and_their_bindings() {
        let config = parse_ok(ECHO);
        assert_eq!(config.rules.len(), 2);
        let first = &config.rules[0];
        assert_eq!(first.selector, vec![Selector::Exact("demo.v1.Echo.Echo".into())]);
        let shown: Vec<_> = first.bindings.iter().map(|b| format!("{} {}", b.http_method, b.path)).collect();
        assert_eq!(shown, ["POST /v1/echo/{id}", "GET /v1/echo/{id}/{num}", "HEAD /v1/echo"]);
        assert_eq!(first.bindings[1].additional, Some(0));
        let second = &config.rules[1];
        assert_eq!(
            second.selector,
            vec![Selector::Prefix("demo.v1.Echo.".into()), Selector::Prefix("demo.v2.".into())]
        );
        assert_eq!((second.bindings[0].body.as_str(), second.bindings[0].response_body.as_str()), ("*", "text"));
    }

    #[test]
    fn places_name_file_and_line() {
        let config = parse_ok(ECHO);
        assert_eq!(config.place(0, None), "api.yaml:6");
        assert_eq!(config.selector_place(1), "api.yaml:11");
        assert_eq!(config.place(0, Some(1)), "api.yaml:10");
    }

    #[test]
    fn selectors() {
        assert!(Selector::All.selects("a.B.C"));
        assert!(Selector::Prefix("a.B.".into()).selects("a.B.C"));
        assert!(!Selector::Prefix("a.B.".into()).selects("a.BB.C"));
        assert!(Selector::Exact("a.B.C".into()).selects("a.B.C"));
        for bad in ["a.B/C", ".a.B.C", "a.B*", "a.*.C", "a..b", "*.B"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_yaml_is_not_ours() {
        for text in ["openapiOptions: { file: [] }", "version: v1\nplugins: []", "- a\n- b", "type: other.Type", ": :"]
        {
            assert!(parse(Path::new("x.yaml"), text).expect("ignored").is_none(), "{text}");
        }
    }

    #[test]
    fn bad_rules_name_file_and_line() {
        let rule = "type: google.api.Service\nhttp:\n  rules:\n  - selector: a.B.C\n";
        let cases = [
            (format!("{rule}    gett: /x\n"), "api.yaml:5: http.rules[0]: unknown field `gett`"),
            (format!("{rule}    body: x\n"), "api.yaml:4: http.rules[0]: the rule has no HTTP pattern"),
            (format!("{rule}    get: /x\n    post: /y\n"), "api.yaml:4: http.rules[0]: the rule has more than one"),
            (format!("{rule}    custom: {{ kind: 'A B', path: /x }}\n"), "is not an HTTP method name"),
            (
                format!("{rule}    get: /x\n    additional_bindings:\n    - selector: a.B.D\n      get: /y\n"),
                "api.yaml:7: http.rules[0].additional_bindings[0]: unknown field `selector`",
            ),
            (
                format!("{rule}    get: /x\n    additional_bindings:\n    - get: /y\n      additional_bindings: []\n"),
                "api.yaml:8: http.rules[0].additional_bindings[0]: unknown field `additional_bindings`",
            ),
            (
                "type: google.api.Service\nhttp:\n  rules:\n  - get: /x\n".to_owned(),
                "api.yaml:4: http.rules[0]: every rule needs a selector",
            ),
            (
                "type: google.api.Service\nhttp:\n  rules:\n  - get: /x\n    selector: a.B/C\n".to_owned(),
                "api.yaml:5: http.rules[0].selector: `a.B/C` is not a valid selector (write `.`",
            ),
            ("type: google.api.Service\nhttp: { fully_decode_reserved_expansion: true }\n".to_owned(), "not supported"),
            ("type: google.api.Service\nhttp:\n  rules: [ { selector: a.B.C\n".to_owned(), "api.yaml:"),
        ];
        for (text, expected) in cases {
            let err = parse_err(&text);
            assert!(err.contains(expected), "{text}\n{err}");
        }
    }
}
