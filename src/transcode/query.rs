//! STUB — query parameters into fields.
