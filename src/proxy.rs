//! The innermost handlers of the request path: what runs once every layer
//! has let a request through. Today the unary transcoder; streaming,
//! WebSocket and composition handlers join it here.

pub mod metadata;
pub mod unary;

pub use self::unary::Transcoder;
