//! An upstream as a set of endpoints (DESIGN §4b): discovered (a fixed
//! list, or every address a name resolves to, re-resolved), balanced
//! (least request by two random choices, or round robin), checked (active
//! `grpc.health.v1` probes, passive outlier ejection, a pause after a
//! failed connect) and guarded (a cap on calls in flight, a retry budget).
//!
//! Everything a call touches is lock-free: the endpoint set is an
//! `ArcSwap`, states are atomics. Endpoints that leave the set drain: calls
//! in flight hold the endpoint and its connection until they end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::Uri;
use tokio::time::Instant;

use crate::config::upstreams::{Balance, HealthCheck, UpstreamSettings};
use crate::tls::{Refresh, Watched};

use super::connection::{self, ClientTls, Connection, Target};

/// The longest an ejection lasts, however often it is repeated.
const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Pauses after failed connects: the first, and the most.
const CONNECT_PAUSE: Duration = Duration::from_millis(500);
const MAX_CONNECT_PAUSE: Duration = Duration::from_secs(30);
/// The retry budget's window, in one-second buckets.
const WINDOW: usize = 10;
/// Retries the budget always allows per second.
const MIN_RETRIES_PER_SECOND: u64 = 3;

/// Where a host's addresses come from: the system's resolver by default
/// ([`SystemResolver`]), or one the embedding program gives (tests point
/// names at loopback addresses they control).
pub trait Resolve: Send + Sync + std::fmt::Debug {
    /// Every address of `host` (blocking: used once, at load).
    fn resolve_now(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
    /// Every address of `host`, for the periodic refresh.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// getaddrinfo, as every other program on the host resolves: `/etc/hosts`,
/// search domains (a Kubernetes headless service's short name), A and AAAA.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve_now(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        (host, port).to_socket_addrs().map(Iterator::collect)
    }

    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move { tokio::net::lookup_host((host.as_str(), port)).await.map(Iterator::collect) })
    }
}

/// What an endpoint is, as admin and metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Healthy,
    /// Failed its active health checks.
    Unhealthy,
    /// Taken out by outlier detection (or, briefly, after a failed connect).
    Ejected,
    /// No longer discovered; finishing its calls.
    Draining,
}

impl EndpointState {
    pub const ALL: [EndpointState; 4] = [Self::Healthy, Self::Unhealthy, Self::Ejected, Self::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected => "ejected",
            Self::Draining => "draining",
        }
    }
}

/// How a call through an endpoint went, for its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered (whatever its status).
    Answered,
    /// No connection could be made: the request went nowhere.
    ConnectFailed,
    /// A transport failure after the connection, or a trailers-only
    /// UNAVAILABLE: counts toward outlier ejection.
    Failed,
}

/// One backend address with its connections.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    connections: ArcSwap<Vec<Connection>>,
    next_connection: AtomicUsize,
    in_flight: AtomicUsize,
    /// Failed active checks pushed it out (until enough pass).
    unhealthy: AtomicBool,
    checks_failed: AtomicU32,
    checks_passed: AtomicU32,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since the cluster's epoch until which it is out
    /// (ejected, or paused after a failed connect); 0: never.
    out_until_ms: AtomicU64,
    /// Whether the pause is an ejection (shown as `ejected`) or a connect
    /// pause (shown as `healthy`: not the backend's fault yet).
    ejected: AtomicBool,
    connect_failures: AtomicU32,
    draining: AtomicBool,
    /// The last readiness probe (or call) reached it.
    reachable: AtomicBool,
}

impl Endpoint {
    fn new(addr: SocketAddr, connections: Vec<Connection>) -> Self {
        Self {
            addr,
            connections: ArcSwap::from_pointee(connections),
            next_connection: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            unhealthy: AtomicBool::new(false),
            checks_failed: AtomicU32::new(0),
            checks_passed: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            out_until_ms: AtomicU64::new(0),
            ejected: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
        }
    }

    /// One of its connections, taken in turn.
    pub fn connection(&self) -> Connection {
        let connections = self.connections.load();
        match connections.len() {
            1 => connections[0].clone(),
            n => connections[self.next_connection.fetch_add(1, Ordering::Relaxed) % n].clone(),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What the readiness probe found.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }

    fn out(&self, now_ms: u64) -> bool {
        self.out_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Whether it takes calls now.
    fn in_rotation(&self, now_ms: u64) -> bool {
        !self.unhealthy.load(Ordering::Relaxed) && !self.out(now_ms) && !self.draining.load(Ordering::Relaxed)
    }

    pub fn state(&self, now_ms: u64) -> EndpointState {
        if self.draining.load(Ordering::Relaxed) {
            EndpointState::Draining
        } else if self.out(now_ms) && self.ejected.load(Ordering::Relaxed) {
            EndpointState::Ejected
        } else if self.unhealthy.load(Ordering::Relaxed) {
            EndpointState::Unhealthy
        } else {
            EndpointState::Healthy
        }
    }
}

/// A call holding an endpoint: its in-flight count drops with it.
#[derive(Debug)]
pub struct Attempt {
    pub endpoint: Arc<Endpoint>,
}

impl Attempt {
    fn begin(endpoint: Arc<Endpoint>) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { endpoint }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A call admitted past the circuit breaker; the count drops with it.
#[derive(Debug)]
pub struct Admitted(Arc<Cluster>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Builds the connections of one address (at least one), or says why not.
type Connect = Box<dyn Fn(SocketAddr) -> Result<Vec<Connection>, String> + Send + Sync>;

/// The endpoints of one upstream and everything that decides which one a
/// call goes to.
pub struct Cluster {
    pub settings: UpstreamSettings,
    /// Where endpoints come from: the hosts and ports to resolve again,
    /// or `None` when every one is an address.
    resolve: Option<Vec<(String, u16)>>,
    resolver: Arc<dyn Resolve>,
    connect: Connect,
    /// The client TLS of `https://` upstreams, re-read when its files
    /// change (then every endpoint's connections are made anew).
    tls: Option<Arc<Watched<ClientTls>>>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// Endpoints no longer discovered, until their calls end.
    draining: Mutex<Vec<Arc<Endpoint>>>,
    epoch: Instant,
    in_flight: AtomicUsize,
    round_robin: AtomicUsize,
    budget: RetryBudget,
    /// Totals for metrics: retries sent, ejections, calls the circuit
    /// breaker refused.
    pub retries: AtomicU64,
    pub ejections: AtomicU64,
    pub shed: AtomicU64,
    /// Why the last resolution failed, logged once per change.
    dns_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("resolve", &self.resolve)
            .field("endpoints", &self.endpoints.load().iter().map(|e| e.addr).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The endpoints of `url` (or of the settings' `endpoints`): fixed
    /// addresses at once; a name resolved now (a blocking lookup, at load
    /// only) and again every `dns_refresh` by [`Cluster::run`].
    pub fn new(
        url: &Uri,
        settings: UpstreamSettings,
        tls: Option<Arc<Watched<ClientTls>>>,
        resolver: Arc<dyn Resolve>,
    ) -> Arc<Self> {
        let https = url.scheme_str() == Some("https");
        let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let origin = url.clone();
        let tls_for_connect = tls.clone();
        let connections = settings.connections.max(1);
        // Connections are made lazily, on their first call: this only
        // settles where they go and how they are secured.
        let connect: Connect = Box::new(move |addr| {
            let client_tls = match (https, &tls_for_connect) {
                (false, _) => None,
                (true, Some(watched)) => Some(ClientTls::clone(&watched.current())),
                (true, None) => Some(connection::default_client_tls(&host_name(&origin))?),
            };
            let target = Arc::new(Target::new(&origin, client_tls));
            Ok((0..connections).map(|_| Connection::new(target.clone(), addr)).collect())
        });
        let sources: Vec<(String, u16)> = match settings.endpoints.is_empty() {
            true => vec![(host, port)],
            false => settings.endpoints.iter().map(host_port).collect(),
        };
        // The first answer now, so that routes and checks see the
        // endpoints; a name that does not resolve yet adds none until a
        // refresh finds it.
        let mut initial = Vec::new();
        for (host, port) in &sources {
            match lookup(resolver.as_ref(), host, *port) {
                Ok(addrs) => initial.extend(addrs),
                Err(err) => tracing::warn!(host, error = %err, "upstream name does not resolve yet"),
            }
        }
        let resolve = sources.iter().any(|(host, _)| host.parse::<std::net::IpAddr>().is_err()).then_some(sources);
        let cluster = Arc::new(Self {
            settings,
            resolve,
            resolver,
            connect,
            tls,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            draining: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            round_robin: AtomicUsize::new(0),
            budget: RetryBudget::default(),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            dns_error: Mutex::new(None),
        });
        cluster.set_addresses(initial);
        cluster
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The endpoints in the set (draining ones excluded).
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// How many endpoints are in the set.
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.load().len()
    }

    /// Every endpoint with its state, draining ones last.
    pub fn endpoint_states(&self) -> Vec<(Arc<Endpoint>, EndpointState)> {
        let now = self.now_ms();
        let mut out: Vec<_> = self.endpoints.load().iter().map(|e| (e.clone(), e.state(now))).collect();
        let draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        out.extend(draining.iter().map(|e| (e.clone(), EndpointState::Draining)));
        out
    }

    /// Calls in flight (the circuit breaker's count).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether any endpoint in the rotation is reachable (or, with health
    /// checks, passing them): the upstream's readiness.
    pub fn has_ready_endpoint(&self) -> bool {
        let now = self.now_ms();
        self.endpoints.load().iter().any(|e| e.in_rotation(now) && e.reachable.load(Ordering::Relaxed))
    }

    /// Past the circuit breaker, or `None` when `max_concurrent_requests`
    /// calls are already in flight.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(self.clone());
        match self.settings.max_concurrent_requests {
            Some(max) if in_flight >= max.get() => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => Some(admitted),
        }
    }

    /// An endpoint for the next try, none of `tried` if possible: among
    /// those in the rotation, or all of them when none is (panic mode:
    /// better a call that may fail than none at all).
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Attempt> {
        let endpoints = self.endpoints.load();
        if endpoints.len() == 1 {
            return Some(Attempt::begin(endpoints[0].clone()));
        }
        let now = self.now_ms();
        let fresh = |e: &&Arc<Endpoint>| !tried.contains(&e.addr);
        let usable = |e: &&Arc<Endpoint>| e.in_rotation(now) && fresh(e);
        let count = endpoints.iter().filter(usable).count();
        let chosen = if count > 0 {
            self.choose(endpoints.iter().filter(usable), count)
        } else {
            let count = endpoints.iter().filter(fresh).count();
            match count {
                0 => self.choose(endpoints.iter(), endpoints.len()),
                n => self.choose(endpoints.iter().filter(fresh), n),
            }
        };
        chosen.map(|e| Attempt::begin(e.clone()))
    }

    fn choose<'a>(
        &self,
        mut candidates: impl Iterator<Item = &'a Arc<Endpoint>> + Clone,
        count: usize,
    ) -> Option<&'a Arc<Endpoint>> {
        match (count, self.settings.balance) {
            (0, _) => None,
            (1, _) => candidates.next(),
            (n, Balance::RoundRobin) => candidates.nth(self.round_robin.fetch_add(1, Ordering::Relaxed) % n),
            (n, Balance::LeastRequest) => {
                let first = fastrand::usize(..n);
                let mut second = fastrand::usize(..n - 1);
                if second >= first {
                    second += 1;
                }
                let a = candidates.clone().nth(first)?;
                let b = candidates.nth(second)?;
                Some(if b.in_flight() < a.in_flight() { b } else { a })
            }
        }
    }

    /// Records how a call through `endpoint` went.
    pub fn report(&self, endpoint: &Endpoint, outcome: Outcome) {
        match outcome {
            Outcome::Answered => {
                endpoint.consecutive_failures.store(0, Ordering::Relaxed);
                endpoint.connect_failures.store(0, Ordering::Relaxed);
                endpoint.reachable.store(true, Ordering::Relaxed);
            }
            Outcome::ConnectFailed => {
                endpoint.reachable.store(false, Ordering::Relaxed);
                // Out of the rotation for a pause that doubles while the
                // connects keep failing (not an ejection: nothing was sent).
                let failures = endpoint.connect_failures.fetch_add(1, Ordering::Relaxed).min(6);
                let pause = (CONNECT_PAUSE * 2u32.pow(failures)).min(MAX_CONNECT_PAUSE);
                if !endpoint.out(self.now_ms()) {
                    endpoint.ejected.store(false, Ordering::Relaxed);
                    endpoint.out_until_ms.store(self.now_ms() + millis(pause), Ordering::Relaxed);
                }
                self.count_failure(endpoint);
            }
            Outcome::Failed => self.count_failure(endpoint),
        }
    }

    /// Outlier detection: enough failures in a row eject the endpoint,
    /// unless `max_ejected` of the set is out already.
    fn count_failure(&self, endpoint: &Endpoint) {
        let Some(outlier) = self.settings.outlier else { return };
        let failures = endpoint.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < outlier.consecutive_failures {
            return;
        }
        let now = self.now_ms();
        let endpoints = self.endpoints.load();
        let ejected = endpoints.iter().filter(|e| e.out(now) && e.ejected.load(Ordering::Relaxed)).count();
        let cap = (endpoints.len() * outlier.max_ejected_percent as usize / 100).max(1);
        if ejected >= cap || (endpoint.out(now) && endpoint.ejected.load(Ordering::Relaxed)) {
            return;
        }
        let times = endpoint.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        let lasts = (outlier.ejection * times).min(MAX_EJECTION);
        endpoint.consecutive_failures.store(0, Ordering::Relaxed);
        endpoint.ejected.store(true, Ordering::Relaxed);
        endpoint.out_until_ms.store(now + millis(lasts), Ordering::Relaxed);
        tracing::warn!(endpoint = %endpoint.addr, failures, ejection_ms = millis(lasts), "upstream endpoint ejected");
    }

    /// Whether the retry budget allows one more retry now; counts it if so.
    pub fn may_retry(&self) -> bool {
        self.budget.try_retry(self.settings.retries.budget_percent)
    }

    /// Counts a retry that is going out.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request toward the retry budget.
    pub fn count_request(&self) {
        self.budget.request();
    }

    /// Replaces the endpoint set with `addrs`: new ones join, kept ones
    /// keep their state, gone ones drain.
    fn set_addresses(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        let current = self.endpoints.load();
        if current.len() == addrs.len() && current.iter().zip(&addrs).all(|(e, a)| e.addr == *a) {
            return;
        }
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .filter_map(|addr| match current.iter().find(|e| e.addr == *addr) {
                Some(kept) => Some(kept.clone()),
                None => match (self.connect)(*addr) {
                    Ok(connections) => Some(Arc::new(Endpoint::new(*addr, connections))),
                    Err(err) => {
                        tracing::error!(endpoint = %addr, error = %err, "upstream endpoint left out");
                        None
                    }
                },
            })
            .collect();
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in current.iter().filter(|e| !addrs.contains(&e.addr)) {
            gone.draining.store(true, Ordering::Relaxed);
            draining.push(gone.clone());
        }
        if !current.is_empty() || !next.is_empty() {
            tracing::info!(
                endpoints = ?addrs,
                draining = draining.len(),
                "upstream endpoints changed"
            );
        }
        self.endpoints.store(Arc::new(next));
    }

    /// Forgets draining endpoints whose calls have ended.
    fn reap(&self) {
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        draining.retain(|e| e.in_flight() > 0);
    }

    /// Re-reads the TLS files; new connections for every endpoint when
    /// they changed. Blocking reads: off the request path.
    pub fn refresh_tls(&self) {
        let Some(tls) = &self.tls else { return };
        if tls.refresh() == Refresh::Reloaded {
            for endpoint in self.endpoints.load().iter() {
                match (self.connect)(endpoint.addr) {
                    Ok(connections) => endpoint.connections.store(Arc::new(connections)),
                    Err(err) => tracing::error!(endpoint = %endpoint.addr, error = %err, "kept the old connections"),
                }
            }
        }
    }

    pub fn has_tls_files(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether active health checks decide reachability (else the
    /// readiness probe's connects do).
    pub fn health_checked(&self) -> bool {
        self.settings.health_check.is_some()
    }

    /// Keeps the endpoint set fresh (DNS) and checked (health checks)
    /// until the cluster is dropped.
    pub async fn run(cluster: Weak<Self>) {
        let Some(this) = cluster.upgrade() else { return };
        let refresh = this.resolve.is_some().then_some(this.settings.dns_refresh);
        let health = this.settings.health_check;
        drop(this);
        if refresh.is_none() && health.is_none() {
            return;
        }
        let period = match (refresh, health) {
            (Some(r), Some(h)) => r.min(h.interval),
            (Some(r), None) => r,
            (None, Some(h)) => h.interval,
            (None, None) => return,
        };
        let mut last_dns = Instant::now();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(this) = cluster.upgrade() else { return };
            if let (Some(refresh), Some(sources)) = (refresh, &this.resolve) {
                if last_dns.elapsed() + Duration::from_millis(5) >= refresh {
                    last_dns = Instant::now();
                    this.refresh_dns(sources).await;
                }
            }
            this.reap();
            if let Some(health) = health {
                this.check_health(health).await;
            }
        }
    }

    /// Resolves every source again; the set changes only when all answer
    /// (one failing name must not drain the endpoints it had).
    async fn refresh_dns(&self, sources: &[(String, u16)]) {
        let mut addrs = Vec::new();
        for (host, port) in sources {
            let answer = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(vec![SocketAddr::new(ip, *port)]),
                Err(_) => self.resolver.resolve(host, *port).await,
            };
            match answer {
                Ok(found) if !found.is_empty() => addrs.extend(found),
                Ok(_) => return self.dns_failed(host, "no address".into()),
                Err(err) => return self.dns_failed(host, err.to_string()),
            }
        }
        *self.dns_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.set_addresses(addrs);
    }

    fn dns_failed(&self, host: &str, message: String) {
        let mut last = self.dns_error.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(message.as_str()) {
            tracing::warn!(host, error = %message, "upstream name did not resolve; keeping its endpoints");
            *last = Some(message);
        }
    }

    /// One round of `grpc.health.v1.Health/Check` (service "") on every
    /// endpoint, concurrently.
    async fn check_health(&self, health: HealthCheck) {
        let endpoints = self.endpoints.load_full();
        let checks = endpoints.iter().map(|endpoint| async move {
            let mut client = tonic_health::pb::health_client::HealthClient::new(endpoint.connection());
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            let passed = matches!(
                tokio::time::timeout(health.timeout, client.check(request)).await,
                Ok(Ok(response)) if response.get_ref().status == serving
            );
            (endpoint, passed)
        });
        for (endpoint, passed) in futures_util::future::join_all(checks).await {
            if passed {
                endpoint.checks_failed.store(0, Ordering::Relaxed);
                let passed = endpoint.checks_passed.fetch_add(1, Ordering::Relaxed) + 1;
                endpoint.reachable.store(true, Ordering::Relaxed);
                if passed >= health.healthy && endpoint.unhealthy.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %endpoint.addr, "upstream endpoint passes its health checks again");
                }
            } else {
                endpoint.checks_passed.store(0, Ordering::Relaxed);
                endpoint.reachable.store(false, Ordering::Relaxed);
                let failed = endpoint.checks_failed.fetch_add(1, Ordering::Relaxed) + 1;
                if failed >= health.unhealthy && !endpoint.unhealthy.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %endpoint.addr, failed, "upstream endpoint failed its health checks");
                }
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The host of `url` as a TLS server name.
fn host_name(url: &Uri) -> String {
    url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned()
}

/// A URL's host and port.
fn host_port(url: &Uri) -> (String, u16) {
    (host_name(url), url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 }))
}

/// The addresses of a host and port (blocking: at load only).
fn lookup(resolver: &dyn Resolve, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    resolver.resolve_now(host, port).map_err(|err| format!("{host} does not resolve: {err}"))
}

/// Retries of the last [`WINDOW`] seconds against requests: retries may
/// add a share of the requests, with a floor of a few per second.
#[derive(Debug, Default)]
struct RetryBudget {
    /// Per second bucket: (second, requests, retries).
    buckets: [Bucket; WINDOW],
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn bucket(&self, second: u64) -> &Bucket {
        let bucket = &self.buckets[(second % WINDOW as u64) as usize];
        let was = bucket.second.load(Ordering::Relaxed);
        if was != second && bucket.second.compare_exchange(was, second, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    fn request(&self) {
        self.bucket(Self::now()).requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry(&self, percent: u32) -> bool {
        let now = Self::now();
        if percent < 100 {
            let (mut requests, mut retries) = (0, 0);
            for bucket in &self.buckets {
                if now.saturating_sub(bucket.second.load(Ordering::Relaxed)) < WINDOW as u64 {
                    requests += bucket.requests.load(Ordering::Relaxed);
                    retries += bucket.retries.load(Ordering::Relaxed);
                }
            }
            let allowed = (requests * u64::from(percent) / 100).max(MIN_RETRIES_PER_SECOND * WINDOW as u64);
            if retries >= allowed {
                return false;
            }
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}
