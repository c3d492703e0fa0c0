//! The load bench: end-to-end throughput, latency and CPU of the release
//! gateway against a backend that does almost nothing, next to the same
//! backend called directly over gRPC (the limit any gateway on the machine
//! is measured against). `benches/load/run.sh` builds, pins and runs it;
//! `benches/load/README.md` says how to read the tables.
//!
//!     benches/load/run.sh [ARGS]
//!     cargo run --release --example load -- --help
//!
//! This process holds the backend (`protogate.load.v1.LoadService` of
//! `benches/load/bench.proto`, on a thread and runtime of its own) and the
//! load generator (one current-thread runtime); the gateway runs as its own
//! process, started from the release binary on ephemeral loopback ports.
//! Each row is a closed loop: C keep-alive connections, one request in
//! flight on each (HTTP/1.1 to the gateway, HTTP/2 gRPC to the backend),
//! a warm-up, then D timed seconds. CPU comes from /proc: the gateway's
//! process, the backend's thread, and the rest of this process (the load).
//! Every endpoint's answer is compared with the expected one before it is
//! measured, and every timed answer must have status 200 (gRPC OK) and the
//! checked answer's size (stream: its number of messages), so a broken
//! gateway cannot post good numbers.

use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use clap::Parser;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

type BoxError = Box<dyn Error + Send + Sync>;

const SERVICE: &str = "protogate.load.v1.LoadService";
const ECHO: &str = "/protogate.load.v1.LoadService/Echo";
const GET_ITEM: &str = "/protogate.load.v1.LoadService/GetItem";
const BULK: &str = "/protogate.load.v1.LoadService/Bulk";
const GET_CATALOG: &str = "/protogate.load.v1.LoadService/GetCatalog";
const TICKS: &str = "/protogate.load.v1.LoadService/Ticks";
const ITEM_ID: &str = "item-1042";

/// End-to-end load bench: protogate vs the backend called directly.
#[derive(Parser, Debug)]
#[command(name = "load")]
struct Args {
    /// Seconds measured per row.
    #[arg(long, env = "LOAD_DURATION", default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before each row's measurement starts.
    #[arg(long, env = "LOAD_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Connection counts, one row each (space- or comma-separated).
    #[arg(long, env = "LOAD_CONNECTIONS", default_value = "16 64")]
    connections: String,
    /// Workloads: small, large, stream.
    #[arg(long, env = "LOAD_WORKLOADS", default_value = "small large stream")]
    workloads: String,
    /// Targets: direct (gRPC to the backend), protogate, external (see
    /// --external).
    #[arg(long, env = "LOAD_TARGETS", default_value = "direct protogate")]
    targets: String,
    /// Address of a gateway started by hand in front of this backend (e.g.
    /// Envoy's grpc_json_transcoder), measured as target `external`.
    #[arg(long)]
    external: Option<SocketAddr>,
    /// Its process id, for its CPU columns.
    #[arg(long)]
    external_pid: Option<u32>,
    /// The backend's address (default: an ephemeral loopback port); fix it
    /// for a gateway configured by hand.
    #[arg(long, default_value = "127.0.0.1:0")]
    backend_listen: SocketAddr,
    /// Only write the descriptor set of bench.proto (imports included) to
    /// this file and exit, e.g. for Envoy's `proto_descriptor`.
    #[arg(long)]
    descriptor_out: Option<PathBuf>,
    /// The gateway binary (default: target/release/protogate of this checkout).
    #[arg(long, env = "PROTOGATE_BIN")]
    gateway: Option<PathBuf>,
    /// The gateway's worker threads (`--threads`).
    #[arg(long, env = "LOAD_THREADS", default_value_t = 1)]
    threads: usize,
    /// An extra word for the gateway's command line (repeatable).
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
    /// `SERVER:LOAD` CPU lists for taskset: the gateway and the backend
    /// thread on SERVER, the load generator on LOAD (e.g. `0:1`).
    #[arg(long, env = "LOAD_PIN")]
    pin: Option<String>,
    /// Messages per `stream` call (`?count=`).
    #[arg(long, env = "LOAD_STREAM_COUNT", default_value_t = 1000)]
    stream_count: u32,
    /// Products in the `large` catalog.
    #[arg(long, env = "LOAD_CATALOG_ITEMS", default_value_t = 500)]
    catalog_items: usize,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<bool, BoxError> {
    if let Some(path) = &args.descriptor_out {
        std::fs::write(path, Fixtures::descriptor_set()?)?;
        println!("wrote {}", path.display());
        return Ok(true);
    }
    let plan = Plan::from_args(&args)?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Pinned before any thread exists, so that every thread of the load
    // generator inherits it; the backend thread moves itself to SERVER.
    if let Some(pin) = &plan.pin {
        taskset_pid(&pin.load, std::process::id())?;
    }
    let fixtures = Arc::new(Fixtures::build(args.catalog_items, args.stream_count)?);
    let server_cpus = plan.pin.as_ref().map(|p| p.server.clone());
    let backend = BackendThread::start(fixtures.backend.clone(), args.backend_listen, server_cpus)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = runtime.block_on(bench(&args, &plan, &fixtures, &backend, cpus));
    backend.stop();
    result
}

// ---------------------------------------------------------------------------
// What to run.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Small,
    Large,
    Stream,
}

impl Workload {
    fn parse(word: &str) -> Result<Self, BoxError> {
        match word {
            "small" => Ok(Self::Small),
            "large" => Ok(Self::Large),
            "stream" => Ok(Self::Stream),
            _ => Err(format!("unknown workload {word:?} (small, large, stream)").into()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Large => "large",
            Self::Stream => "stream",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TargetKind {
    Direct,
    Protogate,
    External,
}

impl TargetKind {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Protogate => "protogate",
            Self::External => "external",
        }
    }
}

struct Pinning {
    server: String,
    load: String,
}

struct Plan {
    workloads: Vec<Workload>,
    targets: Vec<TargetKind>,
    connections: Vec<usize>,
    warmup: Duration,
    duration: Duration,
    pin: Option<Pinning>,
}

impl Plan {
    fn from_args(args: &Args) -> Result<Self, BoxError> {
        let words = |s: &str| s.split([' ', ',']).filter(|w| !w.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        let workloads = words(&args.workloads).iter().map(|w| Workload::parse(w)).collect::<Result<Vec<_>, _>>()?;
        let targets = words(&args.targets)
            .iter()
            .map(|t| match t.as_str() {
                "direct" => Ok(TargetKind::Direct),
                "protogate" => Ok(TargetKind::Protogate),
                "external" if args.external.is_some() => Ok(TargetKind::External),
                "external" => Err("target external needs --external ADDR".to_owned()),
                _ => Err(format!("unknown target {t:?} (direct, protogate, external)")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let connections = words(&args.connections)
            .iter()
            .map(|c| c.parse::<usize>().ok().filter(|&n| n > 0).ok_or(format!("bad connection count {c:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        if workloads.is_empty() || targets.is_empty() || connections.is_empty() {
            return Err("nothing to run: workloads, targets and connections must not be empty".into());
        }
        if !(args.duration > 0.0 && args.warmup >= 0.0) {
            return Err("--duration must be positive and --warmup not negative".into());
        }
        let pin = match args.pin.as_deref() {
            None | Some("") | Some("none") => None,
            Some(spec) => {
                let (server, load) = spec.split_once(':').ok_or(format!("--pin {spec:?}: expected SERVER:LOAD"))?;
                Some(Pinning { server: server.to_owned(), load: load.to_owned() })
            }
        };
        Ok(Self {
            workloads,
            targets,
            connections,
            warmup: Duration::from_secs_f64(args.warmup),
            duration: Duration::from_secs_f64(args.duration),
            pin,
        })
    }
}

// ---------------------------------------------------------------------------
// Payloads and the answers expected of them, built once from bench.proto.

/// One endpoint: how to call it either way and what must come back.
struct Call {
    workload: Workload,
    grpc_label: &'static str,
    http_label: String,
    method: http::Method,
    uri: String,
    accept: Option<&'static str>,
    http_body: Option<Bytes>,
    grpc_path: &'static str,
    grpc_request: Bytes,
    streaming: bool,
    reply: MessageDescriptor,
    /// The answer in the proto3 JSON mapping (lowerCamelCase names, 64-bit
    /// integers as strings, defaults left out): one value, or one per
    /// message of a stream.
    expected: Vec<Value>,
}

/// What the backend serves, prebuilt.
struct BackendData {
    item: Bytes,
    catalog: Bytes,
    ticks: Arc<[Bytes]>,
}

struct Fixtures {
    descriptor_set: Vec<u8>,
    calls: Vec<Arc<Call>>,
    backend: Arc<BackendData>,
    catalog_json_bytes: usize,
    catalog_proto_bytes: usize,
}

impl Fixtures {
    /// bench.proto and its imports as a FileDescriptorSet, compiled now.
    fn descriptor_set() -> Result<Vec<u8>, BoxError> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut compiler = protox::Compiler::new([root.join("benches/load"), root.join("proto")])?;
        compiler.include_imports(true).include_source_info(false);
        compiler.open_files(["bench.proto"])?;
        // Encoded by protox, not through prost_types: that would drop the
        // google.api.http options the gateway routes by.
        Ok(compiler.encode_file_descriptor_set())
    }

    fn build(catalog_items: usize, stream_count: u32) -> Result<Self, BoxError> {
        let descriptor_set = Self::descriptor_set()?;
        let pool = DescriptorPool::decode(descriptor_set.as_slice())?;
        let message = |name: &str| {
            pool.get_message_by_name(&format!("protogate.load.v1.{name}")).ok_or(format!("bench.proto has no {name}"))
        };
        // JSON in, protobuf out, and the canonical JSON of that protobuf.
        let encode = |name: &str, json: Value| -> Result<(Bytes, Value), BoxError> {
            let decoded = DynamicMessage::deserialize(message(name)?, json)?;
            Ok((decoded.encode_to_vec().into(), serde_json::to_value(&decoded)?))
        };

        let echo_json = json!({
            "text": "the quick brown fox jumps over the lazy dog",
            "sequence": "9007199254740993",
            "labels": ["alpha", "beta", "gamma"],
            "origin": {"host": "client-17.example.com", "hops": [3, 1, 4, 1, 5]},
            "urgent": true,
            "weight": 0.625
        });
        let (echo_request, _) = encode("EchoRequest", echo_json.clone())?;
        let (_, echo_reply) = encode("EchoReply", echo_json)?;
        let (item_request, _) = encode("GetItemRequest", json!({"id": ITEM_ID}))?;
        let (item, item_json) = encode(
            "Item",
            json!({
                "id": ITEM_ID,
                "title": "Cordless drill, 18 V, two batteries",
                "status": "STATUS_ACTIVE",
                "price": {"currency": "EUR", "units": "129", "nanos": 990000000},
                "tags": [{"key": "brand", "value": "acme"}, {"key": "warehouse", "value": "north-3"}],
                "revision": "7"
            }),
        )?;
        let (catalog, catalog_json) = encode("Catalog", catalog(catalog_items))?;
        let catalog_body = Bytes::from(serde_json::to_vec(&catalog_json)?);
        let (ticks_request, _) = encode("TicksRequest", json!({"count": stream_count}))?;
        let mut ticks = Vec::new();
        let mut ticks_json = Vec::new();
        for sequence in 1..=u64::from(stream_count) {
            let (bytes, value) = encode("Tick", tick(sequence))?;
            ticks.push(bytes);
            ticks_json.push(value);
        }

        let call = |workload, grpc_label, method: http::Method, uri: String, grpc_path, grpc_request, reply: &str| {
            Ok::<_, BoxError>(Call {
                workload,
                grpc_label,
                http_label: format!("{method} {}", uri.split('?').next().unwrap_or(&uri)),
                method,
                uri,
                accept: None,
                http_body: None,
                grpc_path,
                grpc_request,
                streaming: false,
                reply: message(reply)?,
                expected: Vec::new(),
            })
        };
        let mut echo = call(
            Workload::Small,
            "Echo (gRPC)",
            http::Method::POST,
            "/v1/echo".into(),
            ECHO,
            echo_request,
            "EchoReply",
        )?;
        echo.http_body = Some(serde_json::to_vec(&echo_reply)?.into());
        echo.expected = vec![echo_reply];
        let mut get_item = call(
            Workload::Small,
            "GetItem (gRPC)",
            http::Method::GET,
            format!("/v1/items/{ITEM_ID}"),
            GET_ITEM,
            item_request,
            "Item",
        )?;
        get_item.http_label = "GET /v1/items/{id}".into();
        get_item.expected = vec![item_json];
        let mut bulk = call(
            Workload::Large,
            "Bulk (gRPC)",
            http::Method::POST,
            "/v1/bulk".into(),
            BULK,
            catalog.clone(),
            "Catalog",
        )?;
        bulk.http_body = Some(catalog_body.clone());
        bulk.expected = vec![catalog_json.clone()];
        let mut get_catalog = call(
            Workload::Large,
            "GetCatalog (gRPC)",
            http::Method::GET,
            "/v1/catalog".into(),
            GET_CATALOG,
            Bytes::new(),
            "Catalog",
        )?;
        get_catalog.expected = vec![catalog_json];
        let mut stream = call(
            Workload::Stream,
            "Ticks (gRPC)",
            http::Method::GET,
            format!("/v1/ticks?count={stream_count}"),
            TICKS,
            ticks_request,
            "Tick",
        )?;
        stream.http_label = format!("GET /v1/ticks?count={stream_count}");
        stream.accept = Some("application/x-ndjson");
        stream.streaming = true;
        stream.expected = ticks_json;

        Ok(Self {
            descriptor_set,
            calls: [echo, get_item, bulk, get_catalog, stream].into_iter().map(Arc::new).collect(),
            backend: Arc::new(BackendData { item, catalog: catalog.clone(), ticks: ticks.into() }),
            catalog_json_bytes: catalog_body.len(),
            catalog_proto_bytes: catalog.len(),
        })
    }
}

/// A catalog of `n` products, ~240 bytes of JSON each; deterministic, and
/// every double a multiple of 1/4 so that its printing is unambiguous.
fn catalog(n: usize) -> Value {
    const CATEGORIES: [&str; 4] = ["CATEGORY_TOOLS", "CATEGORY_BOOKS", "CATEGORY_GARDEN", "CATEGORY_TOYS"];
    const COLORS: [&str; 5] = ["red", "green", "blue", "black", "white"];
    const SIZES: [&str; 4] = ["S", "M", "L", "XL"];
    const WORDS: [&str; 6] = ["sale", "new", "eco", "bestseller", "bundle", "refurbished"];
    let products: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "sku": format!("SKU-{i:06}"),
                "name": format!("Product {i}"),
                "description": format!("Item {i}."),
                "priceCents": ((i * 37) % 100_000 + 99).to_string(),
                "stock": ((i * 13) % 5_000).to_string(),
                "weightKg": 0.25 * ((i % 40) + 1) as f64,
                "rating": 1.0 + 0.25 * (i % 17) as f64,
                "category": CATEGORIES[i % CATEGORIES.len()],
                "attributes": {"color": COLORS[i % COLORS.len()], "size": SIZES[i % SIZES.len()]},
                "keywords": [WORDS[i % WORDS.len()], WORDS[(i + 2) % WORDS.len()]]
            })
        })
        .collect();
    json!({"name": "load-catalog", "products": products})
}

fn tick(sequence: u64) -> Value {
    json!({
        "sequence": sequence.to_string(),
        "symbol": "ACME",
        "price": 100.0 + 0.25 * (sequence % 400) as f64,
        "volume": (100 + sequence % 900).to_string()
    })
}

// ---------------------------------------------------------------------------
// The backend: a tonic server that decodes only what it must.

/// Hand-written prost messages for the only requests the backend decodes.
/// `EchoReply` has the same fields, numbers and types: the request's own
/// type encodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    sequence: i64,
    #[prost(string, repeated, tag = "3")]
    labels: Vec<String>,
    #[prost(message, optional, tag = "4")]
    origin: Option<Origin>,
    #[prost(bool, tag = "5")]
    urgent: bool,
    #[prost(double, tag = "6")]
    weight: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Origin {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(int32, repeated, tag = "2")]
    hops: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetItemRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TicksRequest {
    #[prost(int32, tag = "1")]
    count: i32,
}

/// Messages as their wire bytes, both ways: the backend answers Bulk with
/// the bytes it got and GetCatalog and Ticks with prebuilt encodings, and
/// the direct client neither encodes nor decodes in its loop (as h2load).
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `LoadService`, routed by hand (what tonic's generated server does, for
/// five methods and one codec).
#[derive(Clone)]
struct LoadBackend(Arc<BackendData>);

impl NamedService for LoadBackend {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<tonic::body::Body>> for LoadBackend {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let data = self.0.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            let response = match request.uri().path() {
                ECHO => grpc.unary(tower::service_fn(echo), request).await,
                GET_ITEM => grpc.unary(tower::service_fn(|r| get_item(data.clone(), r)), request).await,
                BULK => grpc.unary(tower::service_fn(bulk), request).await,
                GET_CATALOG => {
                    let catalog = data.catalog.clone();
                    grpc.unary(
                        tower::service_fn(move |_| std::future::ready(Ok(Response::new(catalog.clone())))),
                        request,
                    )
                    .await
                }
                TICKS => grpc.server_streaming(tower::service_fn(|r| ticks(data.clone(), r)), request).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

async fn echo(request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    // Decoded and encoded again, as a backend that moves the fields would.
    let request = EchoRequest::decode(request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Response::new(request.encode_to_vec().into()))
}

async fn get_item(data: Arc<BackendData>, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    let request = GetItemRequest::decode(request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if request.id != ITEM_ID {
        return Err(Status::not_found(format!("items/{} not found", request.id)));
    }
    Ok(Response::new(data.item.clone()))
}

async fn bulk(request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
    Ok(Response::new(request.into_inner()))
}

type TickStream = futures_util::stream::Iter<std::vec::IntoIter<Result<Bytes, Status>>>;

async fn ticks(data: Arc<BackendData>, request: Request<Bytes>) -> Result<Response<TickStream>, Status> {
    let request = TicksRequest::decode(request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let count = usize::try_from(request.count).unwrap_or(0);
    if count > data.ticks.len() {
        return Err(Status::out_of_range(format!("at most {} ticks", data.ticks.len())));
    }
    // Reference-counted clones of prebuilt encodings: no work per message.
    let messages: Vec<_> = data.ticks[..count].iter().cloned().map(Ok).collect();
    Ok(Response::new(futures_util::stream::iter(messages)))
}

/// The backend on a thread and current-thread runtime of its own: one
/// thread, as the gateway gets, whose CPU time can be read apart from the
/// load generator's.
struct BackendThread {
    addr: SocketAddr,
    tid: Option<u32>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl BackendThread {
    fn start(data: Arc<BackendData>, listen: SocketAddr, pin: Option<String>) -> Result<Self, BoxError> {
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("backend".into()).spawn(move || {
            let tid = current_tid();
            if let (Some(cpus), Some(tid)) = (&pin, tid) {
                taskset_pid(cpus, tid).map_err(|e| e.to_string())?;
            }
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let listener = TcpListener::bind(listen).await.map_err(|e| format!("{listen}: {e}"))?;
                let addr = listener.local_addr().map_err(|e| e.to_string())?;
                let _ = ready.send((addr, tid));
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                Server::builder()
                    .add_routes(Routes::new(LoadBackend(data)))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(|e| e.to_string())
            })
        })?;
        match started.recv() {
            Ok((addr, tid)) => Ok(Self { addr, tid, stop, thread }),
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(format!("backend: {e}").into()),
                _ => Err("backend thread ended before it listened".into()),
            },
        }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

// ---------------------------------------------------------------------------
// The gateway process.

struct Gateway {
    child: std::process::Child,
    addr: SocketAddr,
    log: PathBuf,
    _work: tempfile::TempDir,
}

impl Gateway {
    async fn start(args: &Args, plan: &Plan, fixtures: &Fixtures, backend: SocketAddr) -> Result<Self, BoxError> {
        let binary = args
            .gateway
            .clone()
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/protogate"));
        // Absolute: the gateway starts in a scratch folder.
        let binary = std::fs::canonicalize(&binary).map_err(|e| {
            format!(
                "no gateway binary at {} ({e}): cargo build --release --bin protogate, or --gateway PATH",
                binary.display()
            )
        })?;
        // A scratch folder: the descriptor set alone in the descriptor
        // folder, and no ./protogate.yaml for the gateway to pick up.
        let work = tempfile::tempdir()?;
        let descriptors = work.path().join("descriptors");
        std::fs::create_dir(&descriptors)?;
        std::fs::write(descriptors.join("load.binpb"), &fixtures.descriptor_set)?;
        let (addr, admin) = (free_port().await?, free_port().await?);
        let log = work.path().join("protogate.log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = match &plan.pin {
            Some(pin) => {
                let mut command = Command::new("taskset");
                command.args(["-c", &pin.server]).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .arg("serve")
            .arg("--descriptors")
            .arg(&descriptors)
            .args(["--listen", &addr.to_string(), "--admin-listen", &admin.to_string()])
            .args(["--upstream", &format!("*=http://{backend}"), "--threads", &args.threads.to_string()])
            .args(&args.gateway_args)
            .current_dir(work.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut gateway = Self { child, addr, log, _work: work };
        eprintln!("load: gateway {} (pid {}) on {addr}, admin {admin}", binary.display(), gateway.child.id());
        gateway.wait_ready(admin).await?;
        Ok(gateway)
    }

    async fn wait_ready(&mut self, admin: SocketAddr) -> Result<(), BoxError> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("the gateway exited ({status}):\n{}", self.log_tail()).into());
            }
            if let Ok(response) = client.get(format!("http://{admin}/readyz")).send().await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("the gateway was not ready within 20 s:\n{}", self.log_tail()).into())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn free_port() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?)
}

// ---------------------------------------------------------------------------
// Clients: one connection each, one request in flight.

enum Client {
    Http { addr: SocketAddr, host: String, sender: SendRequest<Full<Bytes>> },
    Grpc(tonic::client::Grpc<Channel>),
}

/// One answer: its size and number of messages, and its parts when kept
/// for the check.
#[derive(Default)]
struct Answer {
    bytes: u64,
    messages: u64,
    parts: Vec<Bytes>,
}

impl Client {
    async fn connect(kind: TargetKind, addr: SocketAddr) -> Result<Self, BoxError> {
        match kind {
            TargetKind::Protogate | TargetKind::External => {
                Ok(Self::Http { addr, host: addr.to_string(), sender: http1_connect(addr).await? })
            }
            TargetKind::Direct => {
                // One Channel per client: its own HTTP/2 connection.
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                Ok(Self::Grpc(tonic::client::Grpc::new(channel)))
            }
        }
    }

    /// Calls once; any status but 200 (gRPC OK) is an error.
    async fn call(&mut self, call: &Call, keep: bool) -> Result<Answer, String> {
        match self {
            Self::Http { addr, host, sender } => {
                if sender.ready().await.is_err() {
                    // The gateway closed the connection: open another one.
                    *sender = http1_connect(*addr).await.map_err(|e| format!("reconnect: {e}"))?;
                }
                let mut request = http::Request::builder()
                    .method(call.method.clone())
                    .uri(call.uri.as_str())
                    .header(http::header::HOST, host.as_str());
                if let Some(accept) = call.accept {
                    request = request.header(http::header::ACCEPT, accept);
                }
                if call.http_body.is_some() {
                    request = request.header(http::header::CONTENT_TYPE, "application/json");
                }
                let body = Full::new(call.http_body.clone().unwrap_or_default());
                let request = request.body(body).map_err(|e| e.to_string())?;
                let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
                let status = response.status();
                // An error's body goes into the message.
                let keep = keep || status != http::StatusCode::OK;
                let mut body = response.into_body();
                let mut answer = Answer::default();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
                        answer.bytes += data.len() as u64;
                        if call.streaming {
                            answer.messages += data.iter().filter(|&&b| b == b'\n').count() as u64;
                        }
                        if keep {
                            answer.parts.push(data);
                        }
                    }
                }
                if !call.streaming {
                    answer.messages = 1;
                }
                if status != http::StatusCode::OK {
                    let text: Vec<u8> = answer.parts.iter().flat_map(|p| p.iter().copied()).take(300).collect();
                    return Err(format!("status {status}: {}", String::from_utf8_lossy(&text)));
                }
                Ok(answer)
            }
            Self::Grpc(grpc) => {
                grpc.ready().await.map_err(|e| e.to_string())?;
                let path = PathAndQuery::from_static(call.grpc_path);
                let request = Request::new(call.grpc_request.clone());
                let grpc_error = |s: Status| format!("gRPC {:?}: {}", s.code(), s.message());
                let mut answer = Answer::default();
                let mut take = |message: Bytes| {
                    answer.bytes += message.len() as u64;
                    answer.messages += 1;
                    if keep {
                        answer.parts.push(message);
                    }
                };
                if call.streaming {
                    let mut stream =
                        grpc.server_streaming(request, path, RawCodec).await.map_err(grpc_error)?.into_inner();
                    while let Some(message) = stream.message().await.map_err(grpc_error)? {
                        take(message);
                    }
                } else {
                    take(grpc.unary(request, path, RawCodec).await.map_err(grpc_error)?.into_inner());
                }
                Ok(answer)
            }
        }
    }
}

async fn http1_connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Calls once and compares the answer with the expected JSON: the HTTP
/// body (one JSON value, or one per NDJSON line), or each gRPC message
/// decoded and printed in the proto3 JSON mapping.
async fn check(kind: TargetKind, addr: SocketAddr, call: &Call) -> Result<Answer, String> {
    let mut client = Client::connect(kind, addr).await.map_err(|e| e.to_string())?;
    let answer = client.call(call, true).await?;
    let got: Vec<Value> = match kind {
        TargetKind::Protogate | TargetKind::External => {
            let body: Vec<u8> = answer.parts.iter().flat_map(|p| p.iter().copied()).collect();
            if call.streaming {
                body.split(|&b| b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(serde_json::from_slice)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("not NDJSON: {e}"))?
            } else {
                vec![serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?]
            }
        }
        TargetKind::Direct => answer
            .parts
            .iter()
            .map(|part| {
                let message = DynamicMessage::decode(call.reply.clone(), part.clone()).map_err(|e| e.to_string())?;
                serde_json::to_value(&message).map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()?,
    };
    if got.len() != call.expected.len() {
        return Err(format!("{} messages, expected {}", got.len(), call.expected.len()));
    }
    for (i, (got, want)) in got.iter().zip(&call.expected).enumerate() {
        if let Some(difference) = difference(got, want, String::new()) {
            return Err(format!("message {i}: {difference}"));
        }
    }
    Ok(answer)
}

/// Where two JSON values first differ, as a path and both sides.
fn difference(got: &Value, want: &Value, path: String) -> Option<String> {
    let clip = |v: &Value| v.to_string().chars().take(80).collect::<String>();
    let here = || Some(format!("at `{path}`: got {}, expected {}", clip(got), clip(want)));
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            if let Some(key) = w.keys().find(|k| !g.contains_key(*k)) {
                return Some(format!("`{path}.{key}` is missing (got keys {:?})", g.keys().collect::<Vec<_>>()));
            }
            if let Some(key) = g.keys().find(|k| !w.contains_key(*k)) {
                return Some(format!("unexpected `{path}.{key}`"));
            }
            w.iter().find_map(|(key, w)| difference(&g[key], w, format!("{path}.{key}")))
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            g.iter().zip(w).enumerate().find_map(|(i, (g, w))| difference(g, w, format!("{path}[{i}]")))
        }
        _ if got == want => None,
        _ => here(),
    }
}

// ---------------------------------------------------------------------------
// Measurement.

/// CPU time in clock ticks from /proc (utime + stime).
fn cpu_ticks(stat_path: &str) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(stat_path)?;
    // The command name (field 2) may hold spaces: fields count from its ')'.
    let rest = stat.rsplit_once(')').ok_or("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).ok_or("short stat").map(|f| f.parse::<u64>());
    Ok(field(11)?? + field(12)??)
}

/// `getconf CLK_TCK` (no unsafe `sysconf` here); 100 on every Linux we know.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn current_tid() -> Option<u32> {
    // /proc/thread-self links to PID/task/TID of the calling thread.
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

fn taskset_pid(cpus: &str, pid: u32) -> Result<(), BoxError> {
    let status = Command::new("taskset")
        .args(["-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    if !status.success() {
        return Err(format!("taskset -p -c {cpus} {pid} failed ({status})").into());
    }
    Ok(())
}

/// The CPU counters a row reads at its start and end.
struct CpuProbe {
    gateway: Option<String>,
    backend: Option<String>,
    ticks_per_second: f64,
}

#[derive(Clone, Copy)]
struct CpuSample {
    gateway: Option<u64>,
    backend: Option<u64>,
    process: u64,
}

impl CpuProbe {
    fn sample(&self) -> Result<CpuSample, BoxError> {
        let read = |path: &Option<String>| path.as_deref().map(cpu_ticks).transpose();
        Ok(CpuSample {
            gateway: read(&self.gateway)?,
            backend: read(&self.backend)?,
            process: cpu_ticks("/proc/self/stat")?,
        })
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: u64,
    bytes: u64,
    messages: u64,
    first_error: Option<String>,
}

struct Row {
    target: TargetKind,
    /// Which endpoint (index into `Fixtures::calls`).
    call: usize,
    label: String,
    connections: usize,
    result: Result<Measured, String>,
}

struct Measured {
    seconds: f64,
    ok: u64,
    errors: u64,
    bytes: u64,
    messages: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU seconds of each party over the timed window: the gateway's (0
    /// for direct; unknown for an external gateway without --external-pid),
    /// the backend thread's, and the rest of this process (the load).
    gateway_cpu: Option<f64>,
    backend_cpu: f64,
    load_cpu: f64,
    first_error: Option<String>,
}

async fn measure(
    kind: TargetKind,
    addr: SocketAddr,
    call: Arc<Call>,
    expected: (u64, u64),
    connections: usize,
    plan: &Plan,
    probe: &CpuProbe,
) -> Result<Measured, BoxError> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(Client::connect(kind, addr).await?);
    }
    let begin = Instant::now() + plan.warmup;
    let end = begin + plan.duration;
    let request_bytes = match kind {
        TargetKind::Protogate | TargetKind::External => call.http_body.as_ref().map_or(0, |b| b.len()),
        TargetKind::Direct => call.grpc_request.len(),
    } as u64;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let result = client.call(&call, false).await;
                    let done = Instant::now();
                    if done < begin || done > end {
                        continue;
                    }
                    match result {
                        Ok(answer) if (answer.bytes, answer.messages) == expected => {
                            tally.ok += 1;
                            tally.bytes += request_bytes + answer.bytes;
                            tally.messages += answer.messages;
                            tally.latencies_us.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
                        }
                        Ok(answer) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| {
                                format!("{} bytes in {} messages, expected {expected:?}", answer.bytes, answer.messages)
                            });
                        }
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e);
                            // A refused connection must not turn into a busy loop.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    tokio::time::sleep_until(begin).await;
    let (start_cpu, start) = (probe.sample()?, Instant::now());
    tokio::time::sleep_until(end).await;
    let (end_cpu, stop) = (probe.sample()?, Instant::now());
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.ok += tally.ok;
        all.errors += tally.errors;
        all.bytes += tally.bytes;
        all.messages += tally.messages;
        all.first_error = all.first_error.or(tally.first_error);
    }
    all.latencies_us.sort_unstable();
    let percentile = |q: f64| {
        let n = all.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(all.latencies_us[rank - 1]) / 1000.0
    };
    let tick = 1.0 / probe.ticks_per_second;
    let spent = |start: Option<u64>, end: Option<u64>| Some(end?.saturating_sub(start?) as f64 * tick);
    let backend_cpu = spent(start_cpu.backend, end_cpu.backend).unwrap_or_default();
    let gateway_cpu = match kind {
        TargetKind::Direct => Some(0.0),
        _ => spent(start_cpu.gateway, end_cpu.gateway),
    };
    Ok(Measured {
        seconds: (stop - start).as_secs_f64(),
        ok: all.ok,
        errors: all.errors,
        bytes: all.bytes,
        messages: all.messages,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        gateway_cpu,
        backend_cpu,
        load_cpu: (end_cpu.process.saturating_sub(start_cpu.process) as f64 * tick - backend_cpu).max(0.0),
        first_error: all.first_error,
    })
}

async fn bench(
    args: &Args,
    plan: &Plan,
    fixtures: &Fixtures,
    backend: &BackendThread,
    cpus: usize,
) -> Result<bool, BoxError> {
    let gateway = match plan.targets.contains(&TargetKind::Protogate) {
        true => Some(Gateway::start(args, plan, fixtures, backend.addr).await?),
        false => None,
    };
    let ticks_per_second = clock_ticks_per_second();
    let backend_stat = backend.tid.map(|tid| format!("/proc/self/task/{tid}/stat"));
    print_header(args, plan, fixtures, cpus);

    let mut rows = Vec::new();
    for &workload in &plan.workloads {
        for &kind in &plan.targets {
            let (addr, probe) = match (kind, &gateway) {
                (TargetKind::Direct, _) => {
                    (backend.addr, CpuProbe { gateway: None, backend: backend_stat.clone(), ticks_per_second })
                }
                (TargetKind::Protogate, Some(gateway)) => (
                    gateway.addr,
                    CpuProbe {
                        gateway: Some(format!("/proc/{}/stat", gateway.pid())),
                        backend: backend_stat.clone(),
                        ticks_per_second,
                    },
                ),
                (TargetKind::Protogate, None) => return Err("the gateway did not start".into()),
                (TargetKind::External, _) => (
                    args.external.ok_or("target external needs --external ADDR")?,
                    CpuProbe {
                        gateway: args.external_pid.map(|pid| format!("/proc/{pid}/stat")),
                        backend: backend_stat.clone(),
                        ticks_per_second,
                    },
                ),
            };
            for (index, call) in fixtures.calls.iter().enumerate().filter(|(_, c)| c.workload == workload) {
                let label = match kind {
                    TargetKind::Direct => call.grpc_label.to_owned(),
                    TargetKind::Protogate | TargetKind::External => call.http_label.clone(),
                };
                let checked = check(kind, addr, call).await;
                for &connections in &plan.connections {
                    let result = match &checked {
                        Err(e) => Err(format!("check failed: {e}")),
                        Ok(answer) => {
                            let expected = (answer.bytes, answer.messages);
                            measure(kind, addr, call.clone(), expected, connections, plan, &probe)
                                .await
                                .map_err(|e| e.to_string())
                        }
                    };
                    let row = Row { target: kind, call: index, label: label.clone(), connections, result };
                    eprintln!("load: {}", progress(workload, &row));
                    rows.push((workload, row));
                }
            }
        }
    }
    drop(gateway);

    let mut ok = true;
    for &workload in &plan.workloads {
        let rows: Vec<&Row> = rows.iter().filter(|(w, _)| *w == workload).map(|(_, r)| r).collect();
        println!("\n### {}\n", workload.name());
        print!("{}", table(workload, &rows));
        for row in &rows {
            match &row.result {
                Err(e) => {
                    ok = false;
                    println!("\n{} {} x{}: {e}", row.target.name(), row.label, row.connections);
                }
                Ok(m) if m.errors > 0 || m.ok == 0 => {
                    ok = false;
                    let e = m.first_error.as_deref().unwrap_or("no answers in the window");
                    println!(
                        "\n{} {} x{}: {} errors, first: {e}",
                        row.target.name(),
                        row.label,
                        row.connections,
                        m.errors
                    );
                }
                Ok(_) => {}
            }
        }
    }
    if !ok {
        println!("\nFAILED: rows with errors or failed checks are not results.");
    }
    Ok(ok)
}

// ---------------------------------------------------------------------------
// Output.

fn print_header(args: &Args, plan: &Plan, fixtures: &Fixtures, cpus: usize) {
    let pin = plan.pin.as_ref().map_or("off".to_owned(), |p| format!("server CPUs {}, load CPUs {}", p.server, p.load));
    println!("# protogate load bench");
    println!();
    println!(
        "{cpus} CPUs; pinning: {pin}; gateway --threads {}; {} s measured after {} s of warm-up per row",
        args.threads,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    println!(
        "large: {} products, {} bytes of JSON ({} of protobuf); stream: {} messages a call",
        args.catalog_items, fixtures.catalog_json_bytes, fixtures.catalog_proto_bytes, args.stream_count
    );
}

fn progress(workload: Workload, row: &Row) -> String {
    let what = format!("{} {} {} x{}", workload.name(), row.target.name(), row.label, row.connections);
    match &row.result {
        Ok(m) => {
            format!("{what}: {:.0} answers/s, p99 {:.3} ms, {} errors", m.ok as f64 / m.seconds, m.p99_ms, m.errors)
        }
        Err(e) => format!("{what}: {}", e.lines().next().unwrap_or_default()),
    }
}

/// One markdown table per workload; numbers right-aligned. `vs direct` is
/// the row's throughput over that of the direct row of the same endpoint and
/// connection count.
fn table(workload: Workload, rows: &[&Row]) -> String {
    let per = if workload == Workload::Stream { "msg" } else { "req" };
    let mut header = vec!["target".to_owned(), "endpoint".to_owned(), "conns".to_owned()];
    header.extend(
        match workload {
            Workload::Small => &["req/s"][..],
            Workload::Large => &["req/s", "MB/s"],
            Workload::Stream => &["msgs/s", "streams/s"],
        }
        .iter()
        .map(|h| h.to_string()),
    );
    header.extend(["p50 ms".into(), "p99 ms".into(), "errors".into(), "srv%".into(), "gen%".into()]);
    header.extend([format!("srv us/{per}"), format!("gw us/{per}"), "vs direct".into()]);

    let rate = |m: &Measured| match workload {
        Workload::Stream => m.messages as f64 / m.seconds,
        _ => m.ok as f64 / m.seconds,
    };
    let direct = |row: &Row| {
        rows.iter()
            .find(|d| d.target == TargetKind::Direct && d.call == row.call && d.connections == row.connections)
            .and_then(|d| d.result.as_ref().ok())
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let mut line = vec![row.target.name().to_owned(), row.label.clone(), row.connections.to_string()];
        match &row.result {
            Err(e) => {
                line.push(if e.starts_with("check failed") { "check failed" } else { "failed" }.to_owned());
                line.resize(header.len(), "-".to_owned());
            }
            Ok(m) => {
                let units = match workload {
                    Workload::Stream => m.messages,
                    _ => m.ok,
                }
                .max(1) as f64;
                let per_unit = |cpu: Option<f64>| cpu.map_or("-".to_owned(), |cpu| format!("{:.2}", cpu * 1e6 / units));
                let server_cpu = m.gateway_cpu.map(|gateway| gateway + m.backend_cpu);
                line.push(format!("{:.0}", rate(m)));
                match workload {
                    Workload::Small => {}
                    Workload::Large => line.push(format!("{:.1}", m.bytes as f64 / m.seconds / 1e6)),
                    Workload::Stream => line.push(format!("{:.1}", m.ok as f64 / m.seconds)),
                }
                line.push(format!("{:.3}", m.p50_ms));
                line.push(format!("{:.3}", m.p99_ms));
                line.push(m.errors.to_string());
                line.push(server_cpu.map_or("-".to_owned(), |cpu| format!("{:.0}", cpu / m.seconds * 100.0)));
                line.push(format!("{:.0}", m.load_cpu / m.seconds * 100.0));
                line.push(per_unit(server_cpu));
                match row.target {
                    TargetKind::Direct => line.extend(["-".to_owned(), "-".to_owned()]),
                    TargetKind::Protogate | TargetKind::External => {
                        line.push(per_unit(m.gateway_cpu));
                        line.push(direct(row).map_or("-".to_owned(), |d| format!("{:.2}", rate(m) / rate(d))));
                    }
                }
            }
        }
        lines.push(line);
    }

    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().chain([&header]).map(|l| l[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let mut render = |cells: &[String]| {
        out.push('|');
        for (i, cell) in cells.iter().enumerate() {
            let _ = match i {
                0 | 1 => write!(out, " {cell:<w$} |", w = widths[i]),
                _ => write!(out, " {cell:>w$} |", w = widths[i]),
            };
        }
        out.push('\n');
    };
    render(&header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| match i {
            0 | 1 => "-".repeat(*w),
            _ => format!("{}:", "-".repeat(w.saturating_sub(1))),
        })
        .collect();
    render(&rule);
    for line in &lines {
        render(line);
    }
    out
}
