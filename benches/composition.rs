//! What a composition costs next to a plain route (DESIGN §12: a
//! composition of N independent calls answers in about the time of its
//! slowest call, and costs the gateway at most 1.2 × a plain route's CPU
//! per backend call).
//!
//! In one process, over real loopback sockets: the example users backend
//! (tonic, one thread), the gateway (`Gateway::serve`, one worker thread)
//! and a reqwest client (one thread), each on its own runtime so that the
//! gateway's threads can be told apart. Every backend call is the same
//! `UserService/GetUser`, so the routes differ only in how many calls one
//! request makes:
//!
//! - `plain`: `GET /v1/users/1001`, the descriptor route (1 call);
//! - `fanout`: a composition of 3 independent calls;
//! - `overview`: the same 3 and a 4th that reads the first one's answer.
//!
//! Groups:
//! - `gateway_cpu`: CPU time of the gateway's threads per request (read from
//!   `/proc/self/task/*/schedstat`, nanoseconds), 8 requests in flight.
//!   Criterion's "time" is that CPU time; its throughput, in backend calls,
//!   is the inverse of the CPU per call.
//! - `wall`: end-to-end time of one request at a time, instant backends (all
//!   three parties share the machine, so this is mostly CPU too).
//! - `latency_2ms`: the same with every backend call taking 2 ms: `fanout`
//!   should take about one call's time and `overview` two (its critical
//!   path), not three and four.
//!
//! After the groups, a summary prints the gateway CPU per backend call of
//! each route (the median of rounds in which the routes take turns) and its
//! ratio to the plain route's.
//!
//! Linux only (schedstat). `cargo bench --bench composition`; a filter
//! (`-- gateway_cpu`) skips the rest but not the summary.

#![allow(clippy::unwrap_used)] // setup failures should abort the bench

#[path = "../examples/backends/mod.rs"]
mod backends;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

/// The three routes, each with the number of backend calls one request
/// makes.
const ROUTES: [(&str, &str, u64); 3] =
    [("plain", "/v1/users/1001", 1), ("fanout", "/bench/1001/fanout", 3), ("overview", "/bench/1001/overview", 4)];

/// Requests in flight while CPU is measured.
const IN_FLIGHT: u64 = 8;

/// `{descriptors}` and `{users}` are filled in by [`Setup::start`].
const CONFIG: &str = r#"
descriptors: { path: "{descriptors}" }
upstreams: { acme.users.v1: "{users}" }
compositions:
  - name: fanout
    get: /bench/{id}/fanout
    calls:
      a: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
      b: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
      c: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
  - name: overview
    get: /bench/{id}/overview
    calls:
      a: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
      b: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
      c: { method: acme.users.v1.UserService/GetUser, request: { id: "{path.id}" } }
      d: { method: acme.users.v1.UserService/GetUser, request: { id: "{a.id}" } }
"#;

/// The backend, the gateway and the client, each on its own runtime.
struct Setup {
    client_rt: Runtime,
    client: reqwest::Client,
    base: String,
    /// How long every backend call waits before it answers (µs).
    backend_delay: Arc<AtomicU64>,
    // Kept alive for the length of the bench.
    _backend_rt: Runtime,
    _gateway_rt: Runtime,
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name(name).enable_all().build().unwrap()
}

impl Setup {
    fn start() -> Setup {
        let backend_rt = runtime("bench-backend");
        let gateway_rt = runtime("bench-gateway");
        let client_rt = runtime("bench-client");

        let backend_delay = Arc::new(AtomicU64::new(0));
        let delay = Delay(backend_delay.clone());
        let users = backend_rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let routes = Routes::new(backends::users_v1());
            tokio::spawn(Server::builder().layer(delay).add_routes(routes).serve_with_incoming(incoming));
            addr
        });

        let descriptors = Path::new(env!("CARGO_MANIFEST_DIR")).join("descriptors/v1");
        let yaml = CONFIG
            .replace("{descriptors}", &descriptors.display().to_string())
            .replace("{users}", &format!("http://{users}"));
        let config = protogate::config::from_yaml(&yaml, Path::new("benches/composition.rs")).unwrap();
        // Loaded inside the gateway's runtime: the upstream channels spawn
        // their workers where they are made.
        let base = gateway_rt.block_on(async {
            let gateway = protogate::gateway::Gateway::load(config).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(gateway.serve(listener, std::future::pending()));
            base
        });

        let client = reqwest::Client::builder().pool_max_idle_per_host(IN_FLIGHT as usize).build().unwrap();
        let setup = Setup { client_rt, client, base, backend_delay, _backend_rt: backend_rt, _gateway_rt: gateway_rt };
        // Every route answers completely before anything is measured.
        for (name, path, _) in ROUTES {
            setup.client_rt.block_on(async {
                let response = setup.client.get(format!("{}{path}", setup.base)).send().await.unwrap();
                let partial = response.headers().contains_key("x-protogate-partial");
                let status = response.status();
                let body = response.text().await.unwrap();
                assert!(status.is_success() && !partial, "{name}: {status} {body}");
            });
        }
        setup
    }

    /// `count` requests to `path`, `in_flight` at a time.
    fn run(&self, path: &str, count: u64, in_flight: u64) {
        let url: Arc<str> = format!("{}{path}", self.base).into();
        let next = Arc::new(AtomicU64::new(0));
        self.client_rt.block_on(async {
            let workers: Vec<_> = (0..in_flight.min(count).max(1))
                .map(|_| {
                    let (client, url, next) = (self.client.clone(), url.clone(), next.clone());
                    tokio::spawn(async move {
                        while next.fetch_add(1, Ordering::Relaxed) < count {
                            let response = client.get(&*url).send().await.unwrap();
                            assert!(response.status().is_success(), "{url}: {}", response.status());
                            response.bytes().await.unwrap();
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
        });
    }

    /// CPU time the gateway's threads spent while `count` requests to
    /// `path` ran, `IN_FLIGHT` at a time.
    fn gateway_cpu(&self, path: &str, count: u64) -> Duration {
        let before = gateway_cpu();
        self.run(path, count, IN_FLIGHT);
        gateway_cpu().saturating_sub(before)
    }
}

/// CPU time used so far by the gateway runtime's threads (workers and
/// blocking threads: tokio names them all).
fn gateway_cpu() -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("bench-gateway") {
            continue;
        }
        // "on-CPU ns, waiting ns, timeslices"; a thread that ended in
        // between has no file left, and its time no longer counts.
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_nanos(total)
}

fn benches(c: &mut Criterion, setup: &Setup) {
    let mut group = c.benchmark_group("gateway_cpu");
    for (name, path, calls) in ROUTES {
        group.throughput(Throughput::Elements(calls));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| setup.gateway_cpu(path, iters))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("wall");
    for (name, path, calls) in ROUTES {
        group.throughput(Throughput::Elements(calls));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                setup.run(path, iters, 1);
                start.elapsed()
            })
        });
    }
    group.finish();

    setup.backend_delay.store(2_000, Ordering::Relaxed);
    let mut group = c.benchmark_group("latency_2ms");
    for (name, path, _) in ROUTES {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                setup.run(path, iters, 1);
                start.elapsed()
            })
        });
    }
    group.finish();
    setup.backend_delay.store(0, Ordering::Relaxed);
}

/// Gateway CPU per backend call of each route, next to the plain route's:
/// the ratio DESIGN §12 bounds by 1.2. The routes take turns, round after
/// round, so that whatever else the machine does falls on all of them; each
/// route's figure is its median round.
fn summary(setup: &Setup) {
    const ROUNDS: usize = 7;
    const REQUESTS: u64 = 1_500;
    for (_, path, _) in ROUTES {
        setup.run(path, 500, IN_FLIGHT);
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); ROUTES.len()];
    for _ in 0..ROUNDS {
        for (i, (_, path, _)) in ROUTES.iter().enumerate() {
            let cpu = setup.gateway_cpu(path, REQUESTS);
            rounds[i].push(cpu.as_secs_f64() * 1e6 / REQUESTS as f64);
        }
    }
    println!("\ngateway CPU, median of {ROUNDS} rounds of {REQUESTS} requests per route, {IN_FLIGHT} in flight:");
    println!("{:<10} {:>6} {:>14} {:>14} {:>18}", "route", "calls", "µs/request", "µs/call", "per call vs plain");
    let mut plain_per_call = None;
    for ((name, _, calls), mut samples) in ROUTES.into_iter().zip(rounds) {
        samples.sort_by(f64::total_cmp);
        let per_request = samples[samples.len() / 2];
        let per_call = per_request / calls as f64;
        let plain = *plain_per_call.get_or_insert(per_call);
        println!("{name:<10} {calls:>6} {per_request:>14.1} {per_call:>14.1} {:>17.2}×", per_call / plain);
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let setup = Setup::start();
    benches(&mut criterion, &setup);
    criterion.final_summary();
    // `cargo test --benches` runs each benchmark once as a test; the
    // summary is for `cargo bench` only.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&setup);
    }
}

/// A layer that holds every backend call for the time in its cell before
/// answering (the `latency_2ms` group); 0 answers at once.
#[derive(Clone)]
struct Delay(Arc<AtomicU64>);

impl<S> tower::Layer<S> for Delay {
    type Service = Delayed<S>;

    fn layer(&self, inner: S) -> Delayed<S> {
        Delayed { inner, delay: self.0.clone() }
    }
}

#[derive(Clone)]
struct Delayed<S> {
    inner: S,
    delay: Arc<AtomicU64>,
}

impl<S, Req> tower::Service<Req> for Delayed<S>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let delay = Duration::from_micros(self.delay.load(Ordering::Relaxed));
        let answer = self.inner.call(request);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer.await
        })
    }
}
