//! STUB — replaced by the routing implementation.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `*`
    Single,
    /// `**`
    Multi,
}

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
    pub segments: Vec<Segment>,
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
        Err(TemplateError { template: template.into(), reason: "stub".into() })
    }

    pub fn with_prefix(&self, _prefix: &str) -> Self {
        self.clone()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/")
    }
}
