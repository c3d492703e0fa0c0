//! The gateway: loads everything ([`load`]), builds the request path
//! ([`Gateway::pipeline`], the whole layer stack top to bottom in one
//! function), serves it ([`listener`]), reloads it ([`reload`]) and exposes
//! its state on the admin listener ([`admin`]).

pub mod admin;
pub mod connection;
pub mod http1;
pub mod listener;
pub mod load;
pub mod readiness;
pub mod refusal;
pub mod reload;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};

use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};

use self::connection::Timeouts;
use self::listener::{accept_loop, Drain, Peer};
use self::load::Loader;
use self::readiness::Readiness;
use self::reload::Reloader;
use crate::auth::{AuthLayer, Authenticator};
use crate::catalog::{Catalog, LoadError};
use crate::config::Config;
use crate::http::cors::{CorsLayer, CorsRules};
use crate::http::request_id::RequestIdLayer;
use crate::http::respond::{Observer, RespondLayer};
use crate::http::route_match::RouteMatchLayer;
use crate::http::trace::TraceLayer;
use crate::http::{Body, RequestBody};
use crate::metrics::Metrics;
use crate::proxy::metadata::MetadataRules;
use crate::proxy::{Ending, Handler};
use crate::ratelimit::{RateLimitLayer, RateLimiter};
use crate::tls::ServerTls;
use crate::upstream::cluster::{Resolve, SystemResolver};
use crate::upstream::Upstreams;

/// A loaded gateway: config, upstream channels and the live catalog.
#[derive(Clone)]
pub struct Gateway {
    /// Owns the live catalog (swapped whole on reload; a request keeps the
    /// snapshot it started on).
    reloader: Arc<Reloader>,
    metadata: Arc<MetadataRules>,
    auth: Arc<Authenticator>,
    /// Rate-limit state; outlives catalog swaps so buckets survive reloads.
    ratelimit: Arc<RateLimiter>,
    /// Connection deadlines, fixed when the listeners start.
    timeouts: Timeouts,
    /// How the public listener winds down; its signal ends open streams.
    drain: Drain,
    /// The live catalog's OpenAPI document, made once per catalog.
    openapi: Arc<crate::openapi::Documents>,
    /// Every metric of the gateway, served at admin `/metrics`.
    metrics: Arc<Metrics>,
    /// `logging.access`.
    access_log: bool,
    /// `limits.max_concurrent_requests`.
    max_in_flight: Option<std::num::NonZeroUsize>,
    /// Which upstreams answer, probed in the background for `/readyz`.
    readiness: Arc<Readiness>,
    /// `cors`, compiled; `None`: CORS is off.
    cors: Option<Arc<CorsRules>>,
    /// `tls`: the listener's certificate, re-read when its files change;
    /// `None`: h2c and HTTP/1.1 in clear.
    tls: Option<Arc<ServerTls>>,
}

impl Gateway {
    /// Checks the config, reads the descriptor folder and builds the
    /// catalog. Must run inside a tokio runtime (upstream channels spawn
    /// their workers). Reflected services join at the first reload, which
    /// [`Gateway::serve`] starts at once.
    pub fn load(config: Config) -> Result<Self, LoadError> {
        Self::load_with_resolver(config, Arc::new(SystemResolver))
    }

    /// [`Gateway::load`], with upstream names resolved by `resolver`
    /// instead of the system's resolver.
    pub fn load_with_resolver(config: Config, resolver: Arc<dyn Resolve>) -> Result<Self, LoadError> {
        let loader = Loader::with_resolver(Arc::new(config), resolver)?;
        let config = loader.config.clone();
        let tls = loader.tls.clone();
        let auth = loader.features.auth.clone();
        let cors = loader.features.cors.clone();
        let metadata = MetadataRules::new(&config.forward_headers).with_identity(auth.forwarding().clone());
        let metrics = Arc::new(Metrics::new());
        let ratelimit = Arc::new(RateLimiter::new(&config.rate_limits).with_metrics(metrics.clone()));
        let reloader = Arc::new(Reloader::start(loader, metrics.clone())?);
        auth.start();
        let timeouts = Timeouts::from_limits(&config.limits);
        let drain = Drain::new(config.shutdown_timeout);
        let openapi = Arc::new(crate::openapi::Documents::new(config.auth.clone()));
        // Probes until the reloader (and with it the gateway) is gone.
        let readiness = Arc::new(Readiness::default());
        tokio::spawn(readiness.clone().probe(Arc::downgrade(reloader.catalog())));
        Ok(Self {
            reloader,
            metadata: Arc::new(metadata),
            auth,
            ratelimit,
            timeouts,
            drain,
            openapi,
            metrics,
            access_log: config.logging.access,
            max_in_flight: config.limits.max_concurrent_requests,
            readiness,
            cors,
            tls,
        })
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What the last background probe of the upstreams found.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// The rate limiter's state (sizes and counters for metrics).
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.ratelimit
    }

    /// The catalog currently serving.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.reloader.catalog().load_full()
    }

    /// The OpenAPI document of the catalog currently serving (DESIGN §9).
    pub fn openapi(&self) -> bytes::Bytes {
        self.openapi.get(&self.catalog())
    }

    /// The connection deadlines both listeners keep.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// How long in-flight requests and streams may run after shutdown.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        self.drain.timeout
    }

    /// Reloading and its status.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Serves HTTP/1.1 and HTTP/2 (h2c) on `listener` until `shutdown`
    /// resolves, then stops accepting and drains in-flight requests. The
    /// descriptor folder is watched meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_watching, watching) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(self.reloader.clone().watch(async move {
            let _ = watching.await;
        }));
        let (stop_polling, polling) = tokio::sync::oneshot::channel::<()>();
        let poller = tokio::spawn(watch_tls(self.tls.clone(), self.reloader.upstreams().clone(), async move {
            let _ = polling.await;
        }));
        let this = self.clone();
        let result =
            accept_loop(listener, self.tls.clone(), self.timeouts, self.drain.clone(), shutdown, move |peer| {
                this.pipeline(peer)
            })
            .await;
        let _ = stop_watching.send(());
        let _ = stop_polling.send(());
        let _ = tokio::join!(watcher, poller);
        result
    }

    /// The request path of one connection, outermost layer first.
    pub fn pipeline(
        &self,
        peer: Peer,
    ) -> impl Service<
        Request<RequestBody>,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
    > + Clone {
        ServiceBuilder::new()
            // First, so that every response, errors included, carries the id.
            .layer(RequestIdLayer)
            // The W3C trace context (the client's, or a new trace) for the
            // upstream calls; the request's span while spans are exported.
            .layer(TraceLayer)
            // Every layer below refuses by returning an error; this one
            // renders it (the one envelope), logs it once and takes the
            // catalog snapshot the request finishes on.
            .layer(RespondLayer::new(
                self.reloader.catalog().clone(),
                Observer {
                    metrics: self.metrics.clone(),
                    access: self.access_log,
                    max_in_flight: self.max_in_flight,
                    max_header_bytes: self.timeouts.max_header_bytes,
                    peer: Arc::from(peer.addr.to_string()),
                },
            ))
            // Before the route match, so a preflight is answered before its
            // 404 or 405; below the respond layer, so error envelopes get
            // the headers that let a page read them.
            .layer(CorsLayer::new(self.cors.clone()))
            // 404 and 405 end here, before any body is read.
            .layer(RouteMatchLayer)
            // After the match (policies are per route), before any body is
            // read: 401/403 cost no JSON parsing.
            .layer(AuthLayer::new(self.auth.clone(), self.metrics.clone(), peer.client_cert))
            // After authentication (key `consumer`), before any body is read:
            // a refused request costs no JSON parsing and no upstream call.
            .layer(RateLimitLayer::new(self.ratelimit.clone(), peer.addr))
            // Innermost: body, transcoding, the upstream call (unary, a
            // stream over HTTP or a WebSocket session).
            .service(Handler::new(
                self.metadata.clone(),
                peer.addr.ip(),
                Ending::new(self.drain.streams.subscribe()),
                self.metrics.clone(),
            ))
    }
}

/// Re-reads the listener's and the upstreams' TLS files every
/// [`crate::tls::POLL`] until `shutdown`; a bad change is logged by the
/// files' watcher and changes nothing.
async fn watch_tls(server: Option<Arc<ServerTls>>, upstreams: Upstreams, shutdown: impl Future<Output = ()>) {
    if server.is_none() && !upstreams.has_tls_files() {
        return shutdown.await;
    }
    let mut poll = tokio::time::interval(crate::tls::POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = poll.tick() => {}
        }
        let (server, upstreams) = (server.clone(), upstreams.clone());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(server) = &server {
                server.refresh();
            }
            upstreams.refresh_tls();
        })
        .await;
    }
}
