//! STUB — replaced by the error envelope renderer.
use bytes::Bytes;
use prost_reflect::DescriptorPool;

use super::JsonSettings;
use crate::error::GatewayError;

/// The JSON body of `google.rpc.Status` for `err`.
pub fn render_error(err: &GatewayError, _pool: &DescriptorPool, _settings: &JsonSettings) -> Bytes {
    let body = serde_json::json!({"code": err.code as i32, "message": err.message, "details": []});
    Bytes::from(body.to_string())
}
