//! STUB — replaced by the response transcoding implementation.
use bytes::Bytes;
use http::HeaderValue;
use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::{JsonSettings, PlanError};
use crate::error::GatewayError;

pub struct Rendered {
    pub body: Bytes,
    pub content_type: HeaderValue,
}

#[derive(Debug, Clone)]
pub struct ResponsePlan {
    output: MessageDescriptor,
}

impl ResponsePlan {
    pub fn new(output: &MessageDescriptor, _response_body: &str) -> Result<Self, PlanError> {
        Ok(Self { output: output.clone() })
    }

    pub fn output(&self) -> &MessageDescriptor {
        &self.output
    }

    pub fn render(&self, _settings: &JsonSettings, _msg: &DynamicMessage) -> Result<Rendered, GatewayError> {
        Ok(Rendered { body: Bytes::from_static(b"{}"), content_type: HeaderValue::from_static("application/json") })
    }
}
