//! Transcoding without a `DynamicMessage` in between, compiled per message
//! type at load: request JSON straight to wire bytes ([`json_in`]), answers'
//! wire bytes straight to JSON ([`json_out`]). The `DynamicMessage` paths
//! stay as the oracle: a direct path bails to them on anything it does not
//! cover, and differential tests hold the two to the same output.

pub mod json_in;
pub mod json_out;
