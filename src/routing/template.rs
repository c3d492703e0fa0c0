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

fn parse(src: &str) -> Result<PathTemplate, String> {
    let body = src.strip_prefix('/').ok_or("must start with `/`")?;
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
            let close = after_brace.find(['{', '}']).ok_or("unclosed `{`")?;
            if after_brace[close..].starts_with('{') {
                return Err("variables cannot be nested".into());
            }
            parse_variable(&after_brace[..close], &mut template)?;
            rest = &after_brace[close + 1..];
            if !rest.is_empty() && !rest.starts_with('/') {
                return Err("a variable must be a whole segment".into());
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
        return Err("`**` must be the last segment".into());
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
        return Err("empty verb after `:`".into());
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
        return Err("variable without a field path".into());
    }
    if !path.split('.').all(is_ident) {
        return Err(format!("invalid field path `{path}`"));
    }
    let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
    if template.variables.iter().any(|v| v.field_path == field_path) {
        return Err(format!("variable `{path}` appears twice"));
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
        "" => Err("empty segment".into()),
        "*" => Ok(Segment::Single),
        "**" => Ok(Segment::Multi),
        _ if text.contains('{') => Err("a variable must be a whole segment".into()),
        _ if text.contains('}') => Err("`}` without `{`".into()),
        _ => {
            check_literal(text, "literal")?;
            Ok(Segment::Literal(text.to_owned()))
        }
    }
}

/// Literals exclude the grammar's own characters, and `%`: a template names
/// segments by their decoded text.
fn check_literal(text: &str, what: &str) -> Result<(), String> {
    match text.chars().find(|&c| c.is_control() || c.is_whitespace() || "/{}*=:?#%".contains(c)) {
        Some(c) => Err(format!("invalid character {c:?} in {what} `{text}`")),
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
