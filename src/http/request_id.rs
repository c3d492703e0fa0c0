//! Gives every request an `x-request-id` (the client's, if it sent a sane
//! one) before anything else runs, and echoes it on every response, errors
//! included, so one id follows a call through logs and backends.

use std::task::{Context, Poll};

use std::future::Future;
use std::pin::Pin;

use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};

use super::Body;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we keep; longer ones are replaced.
const MAX_LEN: usize = 128;

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(id) if is_sane(id) => id.clone(),
            _ => {
                let id = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            response.headers_mut().insert(X_REQUEST_ID, id);
            Ok(response)
        })
    }
}

/// A fresh request id: 128 random bits as 32 hex digits.
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&hex_digits(fastrand::u128(..))).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `n` as `format!("{n:032x}")` writes it, without the formatter and its
/// string: every request without an id of its own pays for this.
fn hex_digits(mut n: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0; 32];
    for digit in text.iter_mut().rev() {
        *digit = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    text
}

fn is_sane(id: &HeaderValue) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_hex() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn hex_digits_are_the_formatters() {
        for n in [0, 1, 0xabc, u128::MAX, u128::MAX / 3, fastrand::u128(..)] {
            assert_eq!(&hex_digits(n)[..], format!("{n:032x}").as_bytes());
        }
    }
}
