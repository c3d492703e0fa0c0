//! A gRPC service over hand-written prost messages, for tests whose protos
//! have no generated server code: every method answers with what a closure
//! makes of the method's name and the request.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The fully-qualified name a [`Unary`] service is served under.
pub trait ServiceName {
    const NAME: &'static str;
}

type Answer<Req, Resp> = dyn Fn(&str, tonic::Request<Req>) -> Resp + Send + Sync;

/// Serves service `N`: each call is answered by `answer(method, request)`.
pub struct Unary<N, Req, Resp> {
    answer: Arc<Answer<Req, Resp>>,
    name: PhantomData<fn() -> N>,
}

impl<N, Req, Resp> Clone for Unary<N, Req, Resp> {
    fn clone(&self) -> Self {
        Self { answer: self.answer.clone(), name: PhantomData }
    }
}

impl<N, Req, Resp> Unary<N, Req, Resp> {
    pub fn new(answer: impl Fn(&str, tonic::Request<Req>) -> Resp + Send + Sync + 'static) -> Self {
        Self { answer: Arc::new(answer), name: PhantomData }
    }
}

impl<N: ServiceName, Req, Resp> tonic::server::NamedService for Unary<N, Req, Resp> {
    const NAME: &'static str = N::NAME;
}

impl<N, Req, Resp> tower::Service<http::Request<tonic::body::Body>> for Unary<N, Req, Resp>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        let answer = self.answer.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default());
            Ok(grpc.unary(Call { method, answer }, req).await)
        })
    }
}

struct Call<Req, Resp> {
    method: String,
    answer: Arc<Answer<Req, Resp>>,
}

impl<Req, Resp: Send + 'static> tonic::server::UnaryService<Req> for Call<Req, Resp> {
    type Response = Resp;
    type Future = BoxFuture<Result<tonic::Response<Resp>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<Req>) -> Self::Future {
        let reply = (self.answer)(&self.method, req);
        Box::pin(async move { Ok(tonic::Response::new(reply)) })
    }
}
