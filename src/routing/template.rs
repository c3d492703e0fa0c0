//! Path templates of google/api/http.proto (`/v1/{name=shelves/*}:cancel`).
//!
//! A template is parsed once, when routes are loaded, into segments and the
//! variables that cover them; the route table is built from that and request
//! matching never looks at template text again.

use std::fmt;

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches a request segment equal to it after percent-decoding.
    Literal(String),
    /// `*`: exactly one non-empty segment.
    Single,
    /// `**`: zero or more segments; only ever the last segment.
    Multi,
}

/// A `{field.path=...}` variable and the template segments it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `a.b.c` split on dots.
    pub field_path: Vec<String>,
    /// Index of the first segment the variable covers.
    pub start: usize,
    /// One past the last segment it covers.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// `**`, if present, is the last one.
    pub segments: Vec<Segment>,
    /// In template order, non-overlapping, each covering at least one segment.
    pub variables: Vec<Variable>,
    pub verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        parse(template).map_err(|reason| TemplateError { template: template.to_owned(), reason })
    }

    /// Mount under a version prefix like "/v2": prepend its literal segments
    /// unless the template already starts with exactly those literals (never
    /// prefix twice). Variables' ranges shift accordingly.
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let literals: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
        let already_prefixed = literals.len() <= self.segments.len()
            && literals.iter().zip(&self.segments).all(|(want, have)| matches!(have, Segment::Literal(l) if l == want));
        if already_prefixed {
            return self.clone();
        }
        let shift = literals.len();
        let segments =
            literals.iter().map(|l| Segment::Literal((*l).to_owned())).chain(self.segments.iter().cloned()).collect();
        let variables = self
            .variables
            .iter()
            .map(|v| Variable { field_path: v.field_path.clone(), start: v.start + shift, end: v.end + shift })
            .collect();
        Self { segments, variables, verb: self.verb.clone() }
    }

    /// Whether `variable` captures exactly one request segment; http.proto
    /// fully percent-decodes those, while multi-segment values keep `%2F`.
    pub fn is_single_segment(&self, variable: &Variable) -> bool {
        variable.end == variable.start + 1 && self.segments.get(variable.start) != Some(&Segment::Multi)
    }

    /// Whether the template ends with `**`, which swallows the rest of the path.
    pub fn ends_with_multi(&self) -> bool {
        self.segments.last() == Some(&Segment::Multi)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Literal(text) => f.write_str(text),
            Segment::Single => f.write_str("*"),
            Segment::Multi => f.write_str("**"),
        }
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            f.write_str("/")?;
        }
        let mut i = 0;
        while i < self.segments.len() {
            f.write_str("/")?;
            match self.variables.iter().find(|v| v.start == i && v.end > i) {
                Some(v) => {
                    write!(f, "{{{}", v.field_path.join("."))?;
                    // `{id}` is the canonical spelling of `{id=*}`.
                    if !(v.end == i + 1 && self.segments[i] == Segment::Single) {
                        f.write_str("=")?;
                        for (k, segment) in self.segments[i..v.end.min(self.segments.len())].iter().enumerate() {
                            if k > 0 {
                                f.write_str("/")?;
                            }
                            write!(f, "{segment}")?;
                        }
                    }
                    f.write_str("}")?;
                    i = v.end;
                }
                None => {
                    write!(f, "{}", self.segments[i])?;
                    i += 1;
                }
            }
        }
        if let Some(verb) = &self.verb {
            write!(f, ":{verb}")?;
        }
        Ok(())
    }
}

// Every reason quotes the rule of google/api/http.proto's template grammar
// it breaks, so that a user can fix the binding without reading the spec:
//
//     Template = "/" Segments [ Verb ] ;
//     Segments = Segment { "/" Segment } ;
//     Segment  = "*" | "**" | LITERAL | Variable ;
//     Variable = "{" FieldPath [ "=" Segments ] "}" ;
//     FieldPath = IDENT { "." IDENT } ;
//     Verb     = ":" LITERAL ;

fn parse(src: &str) -> Result<PathTemplate, String> {
    let body = src.strip_prefix('/').ok_or_else(|| {
        format!("a path template must start with `/` (http.proto: Template = \"/\" Segments [ Verb ]); write `/{src}`")
    })?;
    let mut template = PathTemplate { segments: Vec::new(), variables: Vec::new(), verb: None };
    // The grammar wants at least one segment, but `/` alone is a common
    // binding for a root endpoint (Envoy's transcoder accepts it too).
    if body.is_empty() {
        return Ok(template);
    }
    let (mut rest, verb) = split_verb(body)?;
    template.verb = verb;
    loop {
        if let Some(after_brace) = rest.strip_prefix('{') {
            let close = after_brace.find(['{', '}']).ok_or(
                "unclosed `{`: a variable is `{field}` or `{field=pattern}` (http.proto: Variable = \"{\" FieldPath \
                 [ \"=\" Segments ] \"}\")",
            )?;
            if after_brace[close..].starts_with('{') {
                return Err("variables cannot be nested: after `=` a variable holds only literals, `*` and `**` \
                            (http.proto: Variable = \"{\" FieldPath [ \"=\" Segments ] \"}\")"
                    .into());
            }
            let inner = &after_brace[..close];
            parse_variable(inner, &mut template)?;
            rest = &after_brace[close + 1..];
            if !rest.is_empty() && !rest.starts_with('/') {
                let after = rest.split('/').next().unwrap_or(rest);
                return Err(variable_not_whole(&format!("{{{inner}}}{after}"), after.starts_with(':')));
            }
        } else {
            let end = rest.find('/').unwrap_or(rest.len());
            template.segments.push(parse_segment(&rest[..end])?);
            rest = &rest[end..];
        }
        match rest.strip_prefix('/') {
            Some(next) => rest = next,
            None => break,
        }
    }
    let last = template.segments.len() - 1;
    if template.segments[..last].contains(&Segment::Multi) {
        return Err("`**` must be the last segment: it matches the rest of the path, so nothing can follow it \
                    (http.proto)"
            .into());
    }
    Ok(template)
}

/// Splits off `:verb`: a `:` after the last `/` and outside any variable.
fn split_verb(body: &str) -> Result<(&str, Option<String>), String> {
    let Some(colon) = body.rfind(':') else {
        return Ok((body, None));
    };
    if body.rfind('/') > Some(colon) || body.rfind('}') > Some(colon) {
        // A `:` elsewhere is rejected by the literal check.
        return Ok((body, None));
    }
    let verb = &body[colon + 1..];
    if verb.is_empty() {
        return Err("empty verb after `:`: a custom verb is a literal, such as `:cancel` (http.proto: Verb = \":\" \
                    LITERAL)"
            .into());
    }
    check_literal(verb, "verb")?;
    Ok((&body[..colon], Some(verb.to_owned())))
}

fn parse_variable(inner: &str, template: &mut PathTemplate) -> Result<(), String> {
    let (path, pattern) = match inner.split_once('=') {
        Some((path, pattern)) => (path, Some(pattern)),
        None => (inner, None),
    };
    if path.is_empty() {
        return Err("variable without a field path: a variable names the request field it sets, `{field}` or \
                    `{field=pattern}` (http.proto: Variable = \"{\" FieldPath [ \"=\" Segments ] \"}\")"
            .into());
    }
    if !path.split('.').all(is_ident) {
        return Err(format!(
            "invalid field path `{path}`: proto field names joined by dots, such as `book.name` (http.proto: \
             FieldPath = IDENT {{ \".\" IDENT }})"
        ));
    }
    let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
    if template.variables.iter().any(|v| v.field_path == field_path) {
        return Err(format!("variable `{path}` appears twice: a field can be bound by one path variable only"));
    }
    let start = template.segments.len();
    match pattern {
        None => template.segments.push(Segment::Single),
        Some(pattern) => {
            for segment in pattern.split('/') {
                template.segments.push(parse_segment(segment)?);
            }
        }
    }
    template.variables.push(Variable { field_path, start, end: template.segments.len() });
    Ok(())
}

fn parse_segment(text: &str) -> Result<Segment, String> {
    match text {
        "" => Err("empty segment (`//`, or `/` at the end): every segment has text (http.proto: Segments = \
                   Segment { \"/\" Segment })"
            .into()),
        "*" => Ok(Segment::Single),
        "**" => Ok(Segment::Multi),
        _ if text.contains('{') => Err(variable_not_whole(text, false)),
        _ if text.contains('}') => Err(format!(
            "`}}` without `{{` in `{text}` (http.proto: Variable = \"{{\" FieldPath [ \"=\" Segments ] \"}}\")"
        )),
        _ => {
            check_literal(text, "literal")?;
            Ok(Segment::Literal(text.to_owned()))
        }
    }
}

/// `segment` holds a variable and more: http.proto's segments are a
/// variable or a literal, never both. `verb`: what follows the variable is
/// a `:`, as in grpc-gateway's `{uuid}:custom:custom`.
fn variable_not_whole(segment: &str, verb: bool) -> String {
    let rule = "a variable must be a whole segment (http.proto: Segment = \"*\" | \"**\" | LITERAL | Variable)";
    match verb {
        true => format!(
            "{rule}, but `{segment}` follows a variable with `:` in the same segment; only the template's end \
             may carry one custom verb (Verb = \":\" LITERAL). grpc-gateway accepts this, protogate does not: \
             give the method a template with a single verb"
        ),
        false => format!(
            "{rule}, but `{segment}` mixes a variable with other text: put the variable in a segment of its own"
        ),
    }
}

/// Literals exclude the grammar's own characters, and `%`: a template names
/// segments by their decoded text.
fn check_literal(text: &str, what: &str) -> Result<(), String> {
    match text.chars().find(|&c| c.is_control() || c.is_whitespace() || "/{}*=:?#%".contains(c)) {
        Some(c) => Err(format!(
            "invalid character {c:?} in {what} `{text}`: a literal has no spaces, controls or any of `/{{}}*=:?#%`, \
             and names its segment decoded, so no percent-escapes either (http.proto LITERAL; only the template's \
             end may carry a `:verb`)"
        )),
        None => Ok(()),
    }
}

fn is_ident(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
pub(crate) mod tests;
