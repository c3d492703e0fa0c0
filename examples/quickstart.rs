//! `cargo run --example quickstart`: the whole picture in one process.
//!
//! Starts three example gRPC backends, each its own server as separate
//! deployments would be: users v1 (127.0.0.1:50051), orders v1
//! (127.0.0.1:50052) and the incompatible users v2 (127.0.0.1:50053). Then
//! protogate on 127.0.0.1:8080 serves the descriptor sets in `descriptors/`,
//! whose folders are the URL versions: `descriptors/v1/*.binpb` under `/v1`,
//! `descriptors/v2/users.binpb` under `/v2`, side by side. v1 is marked
//! deprecated, so its responses carry `Deprecation` and `Sunset` headers.
//! One composition (`GET /v1/users/{id}/overview`, [`COMPOSITIONS`]) shows
//! a route that calls several methods and answers one JSON object.
//! Every backend also serves gRPC server reflection for its own services
//! (`grpcurl -plaintext 127.0.0.1:50051 list`), the source a gateway reads
//! with `descriptors.reflection` instead of files.
//! It prints the route table and curl commands to try, the streaming
//! methods included (NDJSON, SSE and JSON-array framings of WatchOrders, an
//! NDJSON upload to ImportUsers, Track over a WebSocket with `websocat` or
//! `examples/ws_client.rs`), and runs until Ctrl-C. The admin listener (`/healthz`, `/readyz`, `/routes`,
//! `/descriptors`) runs on 127.0.0.1:9901. Override the addresses with
//! `QUICKSTART_GATEWAY`, `QUICKSTART_ADMIN`, `QUICKSTART_USERS`,
//! `QUICKSTART_USERS_REPLICA`, `QUICKSTART_ORDERS` and `QUICKSTART_USERS_V2`
//! (`host:port` or just a port). The users v1 backend runs as two replicas
//! that the gateway balances (admin `/routes` lists both endpoints).

mod backends;

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use protogate::config::upstreams::{Balance, UpstreamSettings};
use protogate::config::values::parse_date;
use protogate::config::{Config, Deprecation, UpstreamRule, VersionConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let users = bind("QUICKSTART_USERS", "127.0.0.1:50051").await?;
    let orders = bind("QUICKSTART_ORDERS", "127.0.0.1:50052").await?;
    let users_v2 = bind("QUICKSTART_USERS_V2", "127.0.0.1:50053").await?;
    // A second replica of the users v1 backend: the gateway spreads calls
    // over both (docs/upstreams.md).
    let users_replica = bind("QUICKSTART_USERS_REPLICA", "127.0.0.1:50054").await?;
    let gateway_listener = bind("QUICKSTART_GATEWAY", "127.0.0.1:8080").await?;
    let admin_listener = bind("QUICKSTART_ADMIN", "127.0.0.1:9901").await?;
    let (users_addr, orders_addr, users_v2_addr) = (users.local_addr()?, orders.local_addr()?, users_v2.local_addr()?);
    let users_replica_addr = users_replica.local_addr()?;

    // The backends outlive the gateway by a moment so that calls it is
    // draining on Ctrl-C still reach them.
    let (stop, stopped) = watch::channel(());
    // Each also serves gRPC reflection for its own services, which grpcurl
    // can list and `descriptors.reflection` can route without files.
    // The two users replicas share one service, as replicas share a
    // database: a user created through one is read through the other.
    let users_service = backends::users_v1();
    let users_routes = Routes::new(users_service.clone()).add_service(backends::reflection(&[backends::USERS_V1_SET])?);
    let users_replica_routes = Routes::new(users_service);
    let orders_routes =
        Routes::new(backends::orders_v1()).add_service(backends::reflection(&[backends::ORDERS_V1_SET])?);
    let users_v2_routes =
        Routes::new(backends::users_v2()).add_service(backends::reflection(&[backends::USERS_V2_SET])?);
    let users_task = tokio::spawn(backends::serve(users, users_routes, until_closed(stopped.clone())));
    let users_replica_task =
        tokio::spawn(backends::serve(users_replica, users_replica_routes, until_closed(stopped.clone())));
    let orders_task = tokio::spawn(backends::serve(orders, orders_routes, until_closed(stopped.clone())));
    let users_v2_task = tokio::spawn(backends::serve(users_v2, users_v2_routes, until_closed(stopped)));

    // Absolute, so the example works from any working directory.
    let descriptors = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/descriptors"));
    let config = Config {
        descriptors: descriptors.clone(),
        // One rule per package, the same as `--upstream acme.users.v2=…`:
        // v1 itself spans two backends (users, orders), so a single
        // `versions.v1.upstream` could not describe it, and per-package
        // rules keep every version's wiring in one list. For a version that
        // is one deployment, `versions.v2.upstream` says it in one line.
        upstreams: vec![
            // Two replicas, balanced in turn:
            // `acme.users.v1: { endpoints: [URL, URL], balance: round_robin }`.
            UpstreamRule {
                settings: UpstreamSettings {
                    endpoints: vec![
                        format!("http://{users_addr}").parse()?,
                        format!("http://{users_replica_addr}").parse()?,
                    ],
                    balance: Balance::RoundRobin,
                    ..UpstreamSettings::default()
                },
                ..UpstreamRule::new("acme.users.v1", format!("http://{users_addr}").parse()?)
            },
            UpstreamRule::new("acme.orders.v1", format!("http://{orders_addr}").parse()?),
            UpstreamRule::new("acme.users.v2", format!("http://{users_v2_addr}").parse()?),
        ],
        // `versions: { v1: { deprecated: { since: 2025-01-01, sunset: 2027-06-30 } } }`
        versions: [(
            "v1".to_owned(),
            VersionConfig {
                deprecated: Some(Deprecation {
                    since: Some(parse_date(V1_DEPRECATED_SINCE)?),
                    sunset: Some(parse_date(V1_SUNSET)?),
                }),
                ..VersionConfig::default()
            },
        )]
        .into(),
        // Written as it would be in protogate.yaml, and read by the same
        // loader, so that a mistake in it is reported the way `check` would.
        compositions: protogate::config::from_yaml(COMPOSITIONS, Path::new("examples/quickstart.rs"))?.compositions,
        ..Config::default()
    };
    let gateway = protogate::gateway::Gateway::load(config)?;

    let base = format!("http://{}", gateway_listener.local_addr()?);
    println!("users v1 backend  grpc://{users_addr} and grpc://{users_replica_addr} (two replicas)");
    println!("orders v1 backend grpc://{orders_addr}");
    println!("users v2 backend  grpc://{users_v2_addr}");
    println!("gateway           {base}   (Ctrl-C to stop)");
    println!(
        "admin             http://{}   (/healthz /readyz /routes /descriptors /openapi.json)\n",
        admin_listener.local_addr()?
    );
    let catalog = gateway.catalog();
    println!("{}", protogate::cli::route_table(&catalog));
    // Read from the catalog rather than written down: whether the v1/ folder
    // also prefixes automatic routes is the catalog's decision.
    let ping = catalog
        .routes
        .iter()
        .find(|route| route.grpc_method() == PING)
        .map_or_else(|| format!("/{PING}"), |route| route.template.to_string());
    drop(catalog);
    println!("{}", walkthrough(&base, &ping, &descriptors));

    // One Ctrl-C stops both listeners.
    let (quit, quitting) = watch::channel(());
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        drop(quit);
    });
    let admin =
        tokio::spawn(protogate::gateway::admin::serve(gateway.clone(), admin_listener, until_closed(quitting.clone())));
    gateway.serve(gateway_listener, until_closed(quitting)).await?;
    admin.await??;

    drop(stop);
    users_task.await??;
    users_replica_task.await??;
    orders_task.await??;
    users_v2_task.await??;
    Ok(())
}

/// The quickstart's one composition (docs/compositions.md). `user` and
/// `orders` read only the request, so they start together; `details` reads
/// `orders`, so it starts as soon as the list has arrived, one GetOrder per
/// order. `orders` is optional, and so is `details`, which needs it: when
/// they fail the answer is partial (200, `x-protogate-partial: true`, the
/// failures under `errors`). `user` is required: its failure is the route's.
const COMPOSITIONS: &str = r#"
compositions:
  - name: user-overview
    get: /v1/users/{id}/overview
    timeout: 2s
    calls:
      user:
        method: acme.users.v1.UserService/GetUser
        request: { id: "{path.id}" }
      orders:
        method: acme.orders.v1.OrderService/ListOrders
        request: { user_id: "{path.id}", status: "{query.status}" }
        timeout: 500ms
        optional: true
      details:
        method: acme.orders.v1.OrderService/GetOrder
        for_each: "{orders.orders}"
        request: { id: "{item.id}" }
        max_concurrency: 4
        optional: true
    response:
      name: "{user.display_name}"
      email: "{user.email}"
      orders: "{details}"
"#;

/// v1's deprecation window, shown in its `Deprecation` and `Sunset` headers.
const V1_DEPRECATED_SINCE: &str = "2025-01-01";
const V1_SUNSET: &str = "2027-06-30";

/// Resolves once the sender is dropped.
async fn until_closed(mut stopped: watch::Receiver<()>) {
    while stopped.changed().await.is_ok() {}
}

/// Binds the address in `var` (`host:port`, or a bare port on 127.0.0.1),
/// else `default`, with an error that says how to pick another one.
async fn bind(var: &str, default: &str) -> Result<TcpListener, BoxError> {
    let raw = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let addr: SocketAddr = match raw.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => raw.parse().map_err(|e| format!("{var}={raw}: expected host:port or a port ({e})"))?,
    };
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e} (set {var} to use another address)").into())
}

/// The README's curl walk-through; `{gateway}`, `{ws}`, `{json}`,
/// `{page_token}`, `{ping}`, `{descriptors}` and `{parked}` are filled in by
/// [`walkthrough`].
const WALKTHROUGH: &str = r#"Try:

# Get a user. v1 is deprecated: -i shows its Deprecation and Sunset headers
curl -i {gateway}/v1/users/1001

# The same user through the additional binding
curl -s {gateway}/v1/accounts/1001

# List members whose name starts with "gr" (query parameters fill the request)
curl -s '{gateway}/v1/users?role=ROLE_MEMBER&name_prefix=gr'

# Page through users two at a time; pass nextPageToken back as page_token
curl -s '{gateway}/v1/users?page_size=2'
curl -s '{gateway}/v1/users?page_size=2&page_token={page_token}'

# Create a user (body: "*"; the int64 loginCount comes back as a string)
curl -s -X POST {gateway}/v1/users {json} \
  -d '{"displayName": "Barbara Liskov", "email": "barbara@example.com", "role": "ROLE_ADMIN", "labels": {"team": "languages"}}'

# Update only the masked fields (body: "user", update_mask from the query)
curl -s -X PATCH '{gateway}/v1/users/1002?update_mask=displayName,email' {json} \
  -d '{"displayName": "Rear Admiral Grace Hopper", "email": "hopper@example.com", "role": "ROLE_ADMIN"}'

# Call a custom verb
curl -s -X POST {gateway}/v1/users/1002:deactivate {json} -d '{"reason": "retired"}'

# Delete the user created above (google.protobuf.Empty comes back as {})
curl -s -X DELETE {gateway}/v1/users/1004

# Place an order on the orders backend, which computes totalCents; list them
curl -s -X POST {gateway}/v1/orders {json} \
  -d '{"userId": "1001", "items": [{"sku": "BOOK-001", "quantity": 2, "unitPriceCents": 2999}]}'
curl -s {gateway}/v1/users/1001/orders

# --- Streaming: every kind of gRPC method, framed by what the client asks ---
# Watch a user's order events (server streaming). Each event is one JSON
# line (NDJSON, the default) written the moment the backend sends it; -N
# keeps curl from buffering. Ends after `limit` events (default 5).
curl -N {gateway}/v1/users/1001/orders:watch

# The same stream as Server-Sent Events, faster
curl -N -H 'Accept: text/event-stream' '{gateway}/v1/users/1001/orders:watch?limit=3&interval_ms=100'

# ...or as one JSON array, `[` first, elements as they arrive
curl -N -H 'Accept: application/json' '{gateway}/v1/users/1001/orders:watch?limit=2'

# A watch stays open for live events: start this one, then place an order
# for user 1002 (the POST /v1/orders above, with "userId": "1002") in
# another terminal and watch it arrive
curl -N '{gateway}/v1/users/1002/orders:watch?limit=2'

# An unknown user fails before the first event: an ordinary 404
curl -si {gateway}/v1/users/9999/orders:watch

# Import users from an NDJSON body (client streaming: each line goes to the
# backend as soon as it is complete; all or none are created)
curl -s -X POST {gateway}/v1/users:import -H 'Content-Type: application/x-ndjson' \
  --data-binary $'{"displayName": "Edsger Dijkstra", "email": "edsger@example.com"}\n{"displayName": "Frances Allen", "email": "frances@example.com"}\n'

# Track orders over a WebSocket (bidirectional): type one JSON message per
# line, e.g. {"orderId": "5001"}, and each answer comes back at once;
# Ctrl-D half-closes and the call's status arrives as the close frame
websocat {ws}/v1/orders:track
cargo run --example ws_client -- {ws}/v1/orders:track

# --- A composition: one route, several calls, one JSON object ---
# user-overview (docs/compositions.md): the user and their orders at once
# (neither needs the other), then each order's details (a GetOrder per
# order) as soon as the list is in
curl -s {gateway}/v1/users/1001/overview

# Query parameters reach the calls too: only the paid orders
curl -s '{gateway}/v1/users/1001/overview?status=ORDER_STATUS_PAID'

# orders (and details, which needs it) are optional: when they fail, here
# on a status the orders service does not know, the answer is partial:
# 200, x-protogate-partial: true, and each missing call's Status in "errors"
curl -si '{gateway}/v1/users/1001/overview?status=9'

# user is required: its failure is the route's (404), and the calls still
# running are cancelled
curl -si {gateway}/v1/users/9999/overview

# Call a method without an HTTP annotation through its automatic route
curl -s -X POST {gateway}{ping} {json} -d '{"message": "hello"}'

# Errors are google.rpc.Status JSON with typed details:
# 404 + ResourceInfo, 400 + BadRequest, 400 FAILED_PRECONDITION + PreconditionFailure
curl -si {gateway}/v1/users/9999
curl -si -X POST {gateway}/v1/users {json} -d '{"displayName": "", "email": "not-an-email"}'
curl -si -X POST {gateway}/v1/users/1003:deactivate {json} -d '{}'

# --- v2, served beside v1 by its own backend (descriptors/v2/users.binpb) ---
# The same person in v2's shape: givenName/familyName, accessLevel; no
# Deprecation header here
curl -i {gateway}/v2/users/1001
curl -s '{gateway}/v2/users?page_size=2'

# Create a v2 user (v1 and v2 keep separate stores, as two deployments would)
curl -s -X POST {gateway}/v2/users {json} \
  -d '{"givenName": "Barbara", "familyName": "Liskov", "email": "barbara@example.com", "accessLevel": "ACCESS_LEVEL_EDITOR"}'

# SearchUsers' template is "/users:search": the v2/ folder adds the prefix
curl -s '{gateway}/v2/users:search?query=hop'

# Live reload: take v2's descriptor out of the folder and v2 is gone (404)
# while v1 keeps serving; put it back and v2 returns, no restart
mv {descriptors}/v2/users.binpb {parked}
curl -si {gateway}/v2/users/1001
mv {parked} {descriptors}/v2/users.binpb
curl -si {gateway}/v2/users/1001
"#;

/// The method without an HTTP annotation, called through its automatic route.
const PING: &str = "acme.orders.v1.OrderService/Ping";

fn walkthrough(gateway: &str, ping: &str, descriptors: &Path) -> String {
    let parked = std::env::temp_dir().join("protogate-quickstart-users-v2.binpb");
    WALKTHROUGH
        .replace("{gateway}", gateway)
        .replace("{ws}", &gateway.replacen("http://", "ws://", 1))
        .replace("{json}", "-H 'content-type: application/json'")
        .replace("{page_token}", &backends::page_token("1002"))
        .replace("{ping}", ping)
        .replace("{descriptors}", &descriptors.display().to_string())
        .replace("{parked}", &parked.display().to_string())
}
