//! `cargo run --example quickstart`: the whole picture in one process.
//!
//! Starts the example users backend (gRPC, 127.0.0.1:50051) and orders
//! backend (127.0.0.1:50052), then protogate on 127.0.0.1:8080 serving the
//! descriptor sets in `descriptors/`, prints curl commands to try, and runs
//! until Ctrl-C. Override the addresses with `QUICKSTART_GATEWAY`,
//! `QUICKSTART_USERS` and `QUICKSTART_ORDERS` (`host:port` or just a port).

mod backends;

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;

use protogate::config::{Config, UpstreamRule};
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
    let gateway_listener = bind("QUICKSTART_GATEWAY", "127.0.0.1:8080").await?;
    let (users_addr, orders_addr) = (users.local_addr()?, orders.local_addr()?);

    // The backends outlive the gateway by a moment so that calls it is
    // draining on Ctrl-C still reach them.
    let (stop, stopped) = watch::channel(());
    let users_task =
        tokio::spawn(backends::serve(users, Routes::new(backends::users_v1()), until_closed(stopped.clone())));
    let orders_task = tokio::spawn(backends::serve(orders, Routes::new(backends::orders_v1()), until_closed(stopped)));

    let config = Config {
        // Absolute, so the example works from any working directory.
        descriptors: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/descriptors")),
        upstreams: vec![
            UpstreamRule { pattern: "acme.users.v1".into(), url: format!("http://{users_addr}").parse()? },
            UpstreamRule { pattern: "acme.orders.v1".into(), url: format!("http://{orders_addr}").parse()? },
        ],
        ..Config::default()
    };
    let gateway = protogate::server::Gateway::load(config)?;

    let base = format!("http://{}", gateway_listener.local_addr()?);
    println!("users backend  grpc://{users_addr}");
    println!("orders backend grpc://{orders_addr}");
    println!("gateway        {base}   (Ctrl-C to stop)\n");
    println!("{}", walkthrough(&base));

    gateway
        .serve(gateway_listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    drop(stop);
    users_task.await??;
    orders_task.await??;
    Ok(())
}

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

/// The README's curl walk-through; `{gateway}`, `{json}` and `{page_token}`
/// are filled in by [`walkthrough`].
const WALKTHROUGH: &str = r#"Try:

# Get a user, and the same user through the additional binding
curl -s {gateway}/v1/users/1001
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

# Call a method without an HTTP annotation through its automatic route
curl -s -X POST {gateway}/acme.orders.v1.OrderService/Ping {json} -d '{"message": "hello"}'

# Errors are google.rpc.Status JSON with typed details:
# 404 + ResourceInfo, 400 + BadRequest, 400 FAILED_PRECONDITION + PreconditionFailure
curl -si {gateway}/v1/users/9999
curl -si -X POST {gateway}/v1/users {json} -d '{"displayName": "", "email": "not-an-email"}'
curl -si -X POST {gateway}/v1/users/1003:deactivate {json} -d '{}'
"#;

fn walkthrough(gateway: &str) -> String {
    WALKTHROUGH
        .replace("{gateway}", gateway)
        .replace("{json}", "-H 'content-type: application/json'")
        .replace("{page_token}", &backends::page_token("1002"))
}
