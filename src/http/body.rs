//! The response body of every route: one buffer for unary answers, or a
//! stream of frames (server streaming, HttpBody downloads). An enum rather
//! than a boxed body so that a unary answer costs no extra allocation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// The error a streaming body may end with (the connection is then reset).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum Body {
    /// The whole answer at once.
    Full(Full<Bytes>),
    /// Frames as they come, trailers included.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Full::new(bytes.into()))
    }

    pub fn empty() -> Self {
        Self::Full(Full::new(Bytes::new()))
    }

    /// Any body of bytes; its errors end the response.
    pub fn stream<B>(body: B) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self::Stream(body.map_err(Into::into).boxed_unsync())
    }

    /// The whole body when it is one buffer (tests, small answers).
    pub fn as_full(&self) -> Option<&Full<Bytes>> {
        match self {
            Self::Full(full) => Some(full),
            Self::Stream(_) => None,
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both variants are Unpin.
        match self.get_mut() {
            Self::Full(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Self::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(full) => full.is_end_stream(),
            Self::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(full) => full.size_hint(),
            Self::Stream(stream) => stream.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    #[tokio::test]
    async fn full_and_streamed_bodies_yield_their_bytes() {
        let full = Body::full("abc").collect().await.expect("full").to_bytes();
        assert_eq!(full, "abc");

        let frames = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Frame::data(Bytes::from("a"))),
            Ok(Frame::data(Bytes::from("b"))),
        ]);
        let body = Body::stream(StreamBody::new(frames));
        assert!(body.as_full().is_none());
        assert_eq!(body.collect().await.expect("stream").to_bytes(), "ab");
    }
}
