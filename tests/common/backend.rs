//! Real tonic backends for the tests, each on its own `127.0.0.1:0`
//! listener, served until a shutdown channel fires and joined by
//! [`Backend::shutdown`]: the conformance `TestService`
//! ([`Backend::test_service`]) or any set of services ([`Backend::start`]:
//! the example backends, a test's own service).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::api;
use super::pb::protogate::test::v1::test_service_client::TestServiceClient;
use super::pb::protogate::test::v1::{DelayStatsResponse, StreamStatsResponse};

/// A running backend; dropping it stops the server without waiting.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Backend {
    /// Serves `routes` (h2c, like any gRPC server) on a fresh ephemeral
    /// port; [`Backend::calls`] counts every request that reaches it.
    pub async fn start(routes: Routes) -> Backend {
        Self::start_on(bind().await, routes)
    }

    /// [`Backend::start`] on `listener`, e.g. a port chosen earlier.
    pub fn start_on(listener: TcpListener, routes: Routes) -> Backend {
        let calls = Arc::new(AtomicU64::new(0));
        let observe = Observe { calls, counts: |_| true, trailer_on: None };
        Self::serve(listener, routes, observe)
    }

    /// The conformance backend, `protogate.test.v1.TestService`;
    /// [`Backend::calls`] is what its `Count` method answers.
    pub async fn test_service() -> Backend {
        let (routes, observe) = super::test_service::routes(Arc::new(AtomicU64::new(0)));
        Self::serve(bind().await, routes, observe)
    }

    /// [`Backend::test_service`] on `listener` (a chosen address), also
    /// serving `grpc.health.v1.Health`, whose status the returned reporter
    /// sets (SERVING at first).
    pub async fn test_service_with_health(listener: TcpListener) -> (Backend, tonic_health::server::HealthReporter) {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let (routes, observe) = super::test_service::routes(Arc::new(AtomicU64::new(0)));
        (Self::serve_with(listener, routes.add_service(health), observe, None), reporter)
    }

    /// [`Backend::test_service`] over TLS: `tls` holds its certificate,
    /// and the CA of client certificates when it asks for them.
    pub async fn test_service_tls(tls: tonic::transport::ServerTlsConfig) -> Backend {
        let (routes, observe) = super::test_service::routes(Arc::new(AtomicU64::new(0)));
        Self::serve_with(bind().await, routes, observe, Some(tls))
    }

    fn serve(listener: TcpListener, routes: Routes, observe: Observe) -> Backend {
        Self::serve_with(listener, routes, observe, None)
    }

    fn serve_with(
        listener: TcpListener,
        routes: Routes,
        observe: Observe,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Backend {
        let addr = listener.local_addr().expect("backend local addr");
        let calls = observe.calls.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("backend TLS config");
        }
        let server = builder.layer(observe).add_routes(routes).serve_with_incoming_shutdown(incoming, async {
            let _ = rx.await;
        });
        let task = tokio::spawn(server);
        Backend { addr, calls, shutdown: Some(tx), task: Some(task) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// [`upstream_url`] of this backend.
    pub fn upstream_url(&self) -> String {
        upstream_url(self.addr)
    }

    /// Calls received so far (for the test service, `Count` and
    /// `StreamStats` excluded).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// What the test service's streaming methods observed so far, asked
    /// over gRPC directly (no gateway in between).
    pub async fn stream_stats(&self) -> StreamStatsResponse {
        let mut client = TestServiceClient::connect(self.url()).await.expect("connect to the backend");
        client.stream_stats(()).await.expect("StreamStats").into_inner()
    }

    /// Polls the stream counters until `check` accepts them (10 s at most).
    pub async fn stream_stats_until(
        &self,
        what: &str,
        check: impl Fn(&StreamStatsResponse) -> bool,
    ) -> StreamStatsResponse {
        super::eventually(what, std::time::Duration::from_secs(10), || async {
            let stats = self.stream_stats().await;
            if check(&stats) {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        })
        .await
    }

    /// What the test service's `Delay` calls observed so far, asked over
    /// gRPC directly (no gateway in between).
    pub async fn delay_stats(&self) -> DelayStatsResponse {
        let mut client = TestServiceClient::connect(self.url()).await.expect("connect to the backend");
        client.delay_stats(()).await.expect("DelayStats").into_inner()
    }

    /// Polls the `Delay` counters until `check` accepts them (10 s at most).
    pub async fn delay_stats_until(
        &self,
        what: &str,
        check: impl Fn(&DelayStatsResponse) -> bool,
    ) -> DelayStatsResponse {
        super::eventually(what, std::time::Duration::from_secs(10), || async {
            let stats = self.delay_stats().await;
            if check(&stats) {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        })
        .await
    }

    /// Stops accepting, drains open connections and joins the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("backend task panicked").expect("backend server failed");
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A listener on a fresh ephemeral loopback port.
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port")
}

/// The URL of `addr` as the gateway writes it (normalized by the config's
/// own rules), for comparing with the route table and error messages.
pub fn upstream_url(addr: SocketAddr) -> String {
    api::parse_upstream_url(&format!("http://{addr}")).expect("backend url").to_string()
}

/// The layer every backend is served with: counts the requests whose path
/// `counts` accepts (before tonic decodes them, so even a malformed one
/// counts) and adds the trailer `x-echo-trailer: bye` to the responses of
/// the path `trailer_on`.
#[derive(Debug, Clone)]
pub(super) struct Observe {
    pub(super) calls: Arc<AtomicU64>,
    pub(super) counts: fn(&str) -> bool,
    pub(super) trailer_on: Option<&'static str>,
}

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, observe: self.clone() }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Observed<S> {
    inner: S,
    observe: Observe,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observed<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<WithTrailer<ResBody>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if (self.observe.counts)(path) {
            self.observe.calls.fetch_add(1, Ordering::SeqCst);
        }
        let add_trailer = self.observe.trailer_on == Some(path);
        self.inner
            .call(request)
            .map(move |result| result.map(|response| response.map(|inner| WithTrailer { inner, add_trailer })))
            .boxed()
    }
}

/// A response body that adds `x-echo-trailer: bye` to the trailers frame.
#[derive(Debug)]
pub(super) struct WithTrailer<B> {
    inner: B,
    add_trailer: bool,
}

impl<B: Body + Unpin> Body for WithTrailer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let add_trailer = self.add_trailer;
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if !add_trailer {
            return polled;
        }
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        trailers.insert("x-echo-trailer", http::HeaderValue::from_static("bye"));
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
