//! Where a method's HTTP bindings come from: its `google.api.http`
//! annotation, or the `http.rules` of a service config file in the
//! descriptor folder, which replace the annotation of every method they
//! select (as Google's API tooling and ESPv2 do).
//!
//! A service config applies to the services mounted under its own version
//! folder (`v1/api.yaml` to the files of `v1/`; a file outside version
//! folders to the files outside them). Within that scope the last rule
//! that selects a method wins (http.proto: "last one wins"), files taken in
//! path order. Every selector pattern must select a method of its scope:
//! a typo is a load error, never a rule that silently binds nothing.

use std::collections::HashSet;
use std::sync::Arc;

use http::Method;
use prost_reflect::{DynamicMessage, ExtensionDescriptor, MethodDescriptor, Value};

use super::version_of;
use crate::descriptors::service_config::ServiceConfig;
use crate::descriptors::Origin;

/// One HTTP binding as written, before its template and fields are checked.
pub(super) struct Rule {
    pub http_method: Method,
    pub path: String,
    pub body: String,
    pub response_body: String,
}

/// Where a binding is written, for messages.
#[derive(Debug, Clone)]
pub(super) enum Declared {
    /// The method's `google.api.http` option, in its descriptor file.
    Annotation,
    /// Rule `rule` of a service config (its `additional_bindings[i]`).
    Config { config: Arc<ServiceConfig>, rule: usize, additional: Option<usize> },
    /// No binding at all: `routes.auto_map`.
    Auto,
}

impl Declared {
    /// `users.proto`, or `api.yaml:12` for a service config's rule.
    pub(super) fn place(&self, origin: &Origin) -> String {
        match self {
            Declared::Config { config, rule, additional } => config.place(*rule, *additional),
            Declared::Annotation | Declared::Auto => origin.to_string(),
        }
    }
}

/// A binding that cannot even be read (no pattern, a bad `custom.kind`).
pub(super) struct Unreadable {
    /// What to call it in messages.
    pub binding: String,
    pub reason: String,
}

pub(super) type Read = Result<(Rule, Declared), Unreadable>;

/// The annotation's binding and its `additional_bindings` (whose own nested
/// bindings are ignored, as http.proto says).
pub(super) fn annotation(ext: Option<&ExtensionDescriptor>, method: &MethodDescriptor) -> Vec<Read> {
    let Some(ext) = ext.filter(|ext| method.options().has_extension(ext)) else {
        return Vec::new();
    };
    let options = method.options();
    let value = options.get_extension(ext);
    let Some(rule) = value.as_message() else {
        return Vec::new();
    };
    let mut out = vec![read_rule(rule)];
    if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").as_deref() {
        out.extend(extra.iter().filter_map(Value::as_message).map(read_rule));
    }
    out.into_iter().map(|read| read.map(|rule| (rule, Declared::Annotation))).collect()
}

fn read_rule(rule: &DynamicMessage) -> Result<Rule, Unreadable> {
    let text =
        |name: &str| rule.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mut pattern = None;
    for (field, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(field) {
            pattern = Some((method, text(field)));
        }
    }
    if rule.has_field_by_name("custom") {
        if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref() {
            let kind = custom.get_field_by_name("kind").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let path = custom.get_field_by_name("path").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            let method =
                Method::from_bytes(kind.as_bytes()).ok().filter(|_| !kind.is_empty()).ok_or_else(|| Unreadable {
                    binding: format!("custom {kind:?} {path}"),
                    reason: format!(
                        "custom.kind {kind:?} is not an HTTP method name (http.proto CustomHttpPattern: a method such \
                     as HEAD or OPTIONS)"
                    ),
                })?;
            pattern = Some((method, path));
        }
    }
    let (http_method, path) = pattern.ok_or_else(|| Unreadable {
        binding: "google.api.http".into(),
        reason: "the rule has no HTTP pattern: http.proto's HttpRule needs exactly one of get, put, post, delete, \
                 patch or custom"
            .into(),
    })?;
    Ok(Rule { http_method, path, body: text("body"), response_body: text("response_body") })
}

/// The service configs of a load, with what their selectors matched.
pub(super) struct ConfigRules<'a> {
    /// Each config with the version its folder mounts under.
    configs: Vec<(&'a Arc<ServiceConfig>, Option<String>)>,
    /// (config, rule, pattern) that selected at least one method.
    matched: HashSet<(usize, usize, usize)>,
}

impl<'a> ConfigRules<'a> {
    pub(super) fn new(configs: &'a [Arc<ServiceConfig>]) -> Self {
        let configs = configs.iter().map(|config| (config, version_of(&Origin::Folder(config.path.clone())))).collect();
        Self { configs, matched: HashSet::new() }
    }

    /// The bindings of the last rule in scope that selects `method`, if
    /// any: they replace the method's annotation.
    pub(super) fn bindings_for(&mut self, version: Option<&str>, method: &MethodDescriptor) -> Option<Vec<Read>> {
        let name = method.full_name();
        let mut winner = None;
        for (c, (config, scope)) in self.configs.iter().enumerate() {
            if scope.as_deref() != version {
                continue;
            }
            for (r, rule) in config.rules.iter().enumerate() {
                let mut selected = false;
                for (p, pattern) in rule.selector.iter().enumerate() {
                    if pattern.selects(name) {
                        self.matched.insert((c, r, p));
                        selected = true;
                    }
                }
                if selected {
                    winner = Some((*config, r));
                }
            }
        }
        let (config, r) = winner?;
        let rule = &config.rules[r];
        let reads = rule.bindings.iter().map(|binding| {
            let declared =
                Declared::Config { config: Arc::clone(config), rule: rule.index, additional: binding.additional };
            let rule = Rule {
                http_method: binding.http_method.clone(),
                path: binding.path.clone(),
                body: binding.body.clone(),
                response_body: binding.response_body.clone(),
            };
            Ok((rule, declared))
        });
        Some(reads.collect())
    }

    /// A problem for every selector pattern that selected nothing in its
    /// scope; `methods` are every method of the load, with its version.
    pub(super) fn unmatched(&self, methods: &[(String, Option<String>)]) -> Vec<String> {
        let mut problems = Vec::new();
        for (c, (config, scope)) in self.configs.iter().enumerate() {
            for (r, rule) in config.rules.iter().enumerate() {
                for (p, pattern) in rule.selector.iter().enumerate() {
                    if self.matched.contains(&(c, r, p)) {
                        continue;
                    }
                    let elsewhere = methods.iter().find(|(name, _)| pattern.selects(name));
                    let folder = match scope {
                        Some(version) => format!("the descriptors under {version}/"),
                        None => "the descriptors outside version folders".to_owned(),
                    };
                    let hint = match elsewhere {
                        Some((name, Some(version))) => format!(
                            "; {name} is mounted under {version}/: a service config applies to the services of its \
                             own version folder, so move the file to {version}/"
                        ),
                        Some((name, None)) => format!(
                            "; {name} is outside version folders: a service config applies to the services of its \
                             own version folder, so move the file out of it"
                        ),
                        None => "; a selector names a method by its fully-qualified name, \
                                 `package.Service.Method`"
                            .to_owned(),
                    };
                    problems.push(format!(
                        "{}: http.rules[{}].selector: `{pattern}` selects no method of {folder}{hint}",
                        config.selector_place(rule.index),
                        rule.index,
                    ));
                }
            }
        }
        problems
    }
}
