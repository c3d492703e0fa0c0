//! STUB — replaced by the request transcoding implementation.
use bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::JsonSettings;
use crate::error::GatewayError;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// What one HTTP request brings.
pub struct RequestInput<'a> {
    pub body: Bytes,
    pub content_type: Option<&'a str>,
    /// Path variable values, in the order of the template's variables.
    pub captures: &'a [String],
    /// Raw query string (without `?`), if any.
    pub query: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct RequestPlan {
    input: MessageDescriptor,
}

impl RequestPlan {
    pub fn new(input: &MessageDescriptor, _body: &str, _variables: &[Vec<String>]) -> Result<Self, PlanError> {
        Ok(Self { input: input.clone() })
    }

    pub fn has_body(&self) -> bool {
        false
    }

    pub fn build(&self, _settings: &JsonSettings, _input: RequestInput<'_>) -> Result<DynamicMessage, GatewayError> {
        Ok(DynamicMessage::new(self.input.clone()))
    }
}
