//! Reload under load: how long a catalog rebuild of a large descriptor set
//! takes, and whether any request in flight fails meanwhile.
//!
//! Starts the users v1 example backend and the gateway on loopback ports,
//! keeps CLIENTS concurrent HTTP clients calling `GET /v1/users/1001`, and
//! forces ROUNDS reloads while a generated set of SERVICES × METHODS
//! annotated methods (default 50 × 100 = 5 000) is added to and removed from
//! the folder. Prints reload times and the request/error counts.
//!
//!     cargo run --release --example reload_bench [-- SERVICES METHODS ROUNDS CLIENTS]

#[path = "backends/mod.rs"]
mod backends;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protogate::config::{Config, UpstreamRule};
use protogate::gateway::Gateway;

fn big_proto(services: usize, methods: usize) -> String {
    let mut text = String::from(
        "syntax = \"proto3\";\npackage bench.big.v1;\nimport \"google/api/annotations.proto\";\n\
         message Req { string id = 1; int64 n = 2; repeated string tags = 3; }\n\
         message Res { string id = 1; int64 n = 2; }\n",
    );
    for s in 0..services {
        let _ = writeln!(text, "service Service{s} {{");
        for m in 0..methods {
            let _ = writeln!(
                text,
                "  rpc Method{m}(Req) returns (Res) {{ option (google.api.http) = {{ get: \"/big/s{s}/m{m}/{{id}}\" }}; }}"
            );
        }
        text.push_str("}\n");
    }
    text
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (services, methods, rounds, clients) = (
        args.first().copied().unwrap_or(50),
        args.get(1).copied().unwrap_or(100),
        args.get(2).copied().unwrap_or(10),
        args.get(3).copied().unwrap_or(8),
    );

    // The big set, compiled once to a FileDescriptorSet the way protoc would.
    let src = tempfile::tempdir()?;
    std::fs::write(src.path().join("big.proto"), big_proto(services, methods))?;
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut compiler = protox::Compiler::new([src.path().to_path_buf(), manifest.join("proto")])?;
    compiler.include_imports(true);
    compiler.open_file("big.proto")?;
    let big_set = compiler.encode_file_descriptor_set();

    let folder = tempfile::tempdir()?;
    std::fs::create_dir(folder.path().join("v1"))?;
    std::fs::copy(manifest.join("descriptors/v1/users.binpb"), folder.path().join("v1/users.binpb"))?;

    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    let routes = tonic::service::Routes::new(backends::users_v1());
    tokio::spawn(backends::serve(backend, routes, std::future::pending()));

    let config = Config {
        descriptors: folder.path().to_path_buf(),
        upstreams: vec![UpstreamRule::new("*", format!("http://{backend_addr}").parse()?)],
        ..Config::default()
    };
    let gateway = Gateway::load(config)?;
    let reloader = gateway.reloader().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/users/1001", listener.local_addr()?);
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..clients {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), url.clone());
        load.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().expect("client");
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    let mut times = Vec::new();
    let big_path = folder.path().join("big.binpb");
    for round in 0..rounds {
        if round % 2 == 0 {
            std::fs::write(&big_path, &big_set)?;
        } else {
            std::fs::remove_file(&big_path)?;
        }
        let started = Instant::now();
        reloader.reload(true).await.map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }

    let with_big: Vec<_> = times.iter().step_by(2).collect();
    let avg = |ts: &[&Duration]| ts.iter().map(|t| t.as_secs_f64()).sum::<f64>() / ts.len().max(1) as f64 * 1000.0;
    let max = with_big.iter().map(|t| t.as_secs_f64() * 1000.0).fold(0.0, f64::max);
    println!("methods in the big set: {}", services * methods);
    println!(
        "reload with the big set: avg {:.1} ms, max {:.1} ms over {} reloads",
        avg(&with_big),
        max,
        with_big.len()
    );
    println!(
        "requests: {} ok, {} failed ({} clients)",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        clients
    );
    Ok(())
}
