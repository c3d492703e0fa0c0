//! The response body of every route: one buffer for unary answers, or a
//! stream of frames (server streaming, HttpBody downloads). An enum rather
//! than a boxed body so that a unary answer costs no extra allocation.
//!
//! And the request body every layer sees ([`RequestBody`]): hyper's, or
//! one the listener read whole before passing the request on.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
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

/// A request's body: as hyper reads it, or as the listener reads it for a
/// plain HTTP/1.1 request it serves itself (`gateway::http1`): whole, or
/// fed as the rest arrives.
#[derive(Debug)]
pub enum RequestBody {
    Incoming(hyper::body::Incoming),
    /// The whole body; `None` once yielded.
    Whole(Option<Bytes>),
    Fed(Arc<Feed>),
}

/// The rest of a request body still arriving on its connection: the
/// connection pushes it, the handler reads it. At most
/// `gateway::http1::WHOLE_BODY` in all, so it needs no backpressure.
#[derive(Debug)]
pub struct Feed(Mutex<FeedState>);

#[derive(Debug)]
struct FeedState {
    arrived: BytesMut,
    /// Bytes still to come.
    left: usize,
    /// The connection ended first.
    broken: bool,
    reader: Option<Waker>,
}

impl Feed {
    /// A body of `first` and `left` more bytes.
    pub fn new(first: &[u8], left: usize) -> Arc<Self> {
        let mut arrived = BytesMut::with_capacity(first.len() + left);
        arrived.extend_from_slice(first);
        Arc::new(Self(Mutex::new(FeedState { arrived, left, broken: false, reader: None })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what of `bytes` is the body's; how much that was.
    pub fn push(&self, bytes: &[u8]) -> usize {
        let mut state = self.state();
        let take = bytes.len().min(state.left);
        state.arrived.extend_from_slice(&bytes[..take]);
        state.left -= take;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        take
    }

    /// Bytes still to come.
    pub fn left(&self) -> usize {
        let state = self.state();
        if state.broken {
            0
        } else {
            state.left
        }
    }

    /// The connection ended before the body did.
    pub fn break_off(&self) {
        let mut state = self.state();
        state.broken = true;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// Whether all of the body arrived.
    pub fn complete(&self) -> bool {
        let state = self.state();
        state.left == 0
    }

    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.state();
        if !state.arrived.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(state.arrived.split().freeze()))));
        }
        if state.left == 0 {
            return Poll::Ready(None);
        }
        if state.broken {
            state.left = 0;
            return Poll::Ready(Some(Err("the connection closed before the request body was complete".into())));
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn remaining(&self) -> u64 {
        let state = self.state();
        (state.arrived.len() + state.left) as u64
    }
}

impl RequestBody {
    pub fn whole(bytes: Bytes) -> Self {
        Self::Whole((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> Self {
        Self::Incoming(body)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every variant is Unpin.
        match self.get_mut() {
            Self::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Whole(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Fed(feed) => feed.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(body) => body.is_end_stream(),
            Self::Whole(bytes) => bytes.is_none(),
            Self::Fed(feed) => feed.remaining() == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(body) => body.size_hint(),
            Self::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Fed(feed) => SizeHint::with_exact(feed.remaining()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
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

    #[tokio::test]
    async fn a_whole_request_body_is_one_frame_of_known_length() {
        let body = RequestBody::whole(Bytes::from("abc"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.expect("whole").to_bytes(), "abc");
        let empty = RequestBody::whole(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_fed_body_yields_what_arrived_and_ends_when_all_has() {
        let feed = Feed::new(b"ab", 3);
        let mut body = RequestBody::Fed(feed.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().expect("data"), "ab");
        // What follows the body is not taken.
        assert_eq!(feed.push(b"cdeNEXT"), 3);
        assert!(feed.complete());
        assert_eq!(body.collect().await.expect("the rest").to_bytes(), "cde");

        // A connection that ends first breaks the body off.
        let feed = Feed::new(b"", 4);
        let body = RequestBody::Fed(feed.clone());
        let reading = tokio::spawn(body.collect());
        feed.push(b"xy");
        feed.break_off();
        assert!(reading.await.expect("joined").is_err());
    }
}
