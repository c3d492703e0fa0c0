//! Transcoding without a `DynamicMessage` in between, compiled per message
//! type at load. The `DynamicMessage` paths stay as the oracle: a direct
//! path bails to them on anything it does not cover, and the differential
//! tests hold the two to the same output.

pub mod json_out;
