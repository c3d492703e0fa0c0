//! The `protogate` command line: `serve`, `routes`, `check`.
//!
//! Exit codes: 0 ok, 1 invalid input (config or descriptors), 2 usage.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::catalog::{Catalog, LoadError};
use crate::config::{self, Config, ConfigArgs, LogFormat};
use crate::server::Gateway;
use crate::upstream::Upstreams;

#[derive(Debug, Parser)]
#[command(
    name = "protogate",
    version,
    about = "HTTP/JSON to gRPC gateway driven by protobuf descriptors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway.
    Serve(ConfigArgs),
    /// Print the route table and exit.
    Routes(ConfigArgs),
    /// Validate config and descriptors; exit 1 with the errors.
    Check(ConfigArgs),
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (Command::Serve(args) | Command::Routes(args) | Command::Check(args)) = &cli.command;
    let config = match config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("protogate: {err}");
            return ExitCode::from(1);
        }
    };
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("protogate: starting the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => serve(config).await,
            Command::Routes(_) => routes(&config),
            Command::Check(_) => check(&config),
        }
    })
}

async fn serve(config: Config) -> ExitCode {
    init_logging(&config);
    let gateway = match Gateway::load(config.clone()) {
        Ok(gateway) => gateway,
        Err(err) => {
            eprintln!("protogate: {err}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("protogate: listening on {}: {err}", config.listen);
            return ExitCode::from(1);
        }
    };
    let catalog = gateway.catalog();
    tracing::info!(
        listen = %config.listen,
        routes = catalog.routes.len(),
        files = catalog.sources.len(),
        descriptors = %config.descriptors.display(),
        "protogate serving"
    );
    for unrouted in &catalog.unrouted {
        tracing::warn!(name = %unrouted.name, reason = %unrouted.reason, "not routed");
    }
    match gateway.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("protogate: {err}");
            ExitCode::from(1)
        }
    }
}

fn load_catalog(config: &Config) -> Result<Catalog, LoadError> {
    let upstreams = Upstreams::new(&config.upstreams)?;
    // Secrets and JWKS files are checked here too (URLs are not fetched).
    crate::middleware::auth::Authenticator::new(&config.auth).map_err(|err| LoadError {
        problems: vec![err.to_string()],
    })?;
    crate::catalog::load(config, &upstreams)
}

fn routes(config: &Config) -> ExitCode {
    match load_catalog(config) {
        Ok(catalog) => {
            let _ = std::io::stdout().write_all(route_table(&catalog).as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("protogate: {err}");
            ExitCode::from(1)
        }
    }
}

fn check(config: &Config) -> ExitCode {
    match load_catalog(config) {
        Ok(catalog) => {
            if catalog.sources.is_empty() {
                eprintln!(
                    "protogate: warning: no descriptor files in {}",
                    config.descriptors.display()
                );
            }
            for unrouted in &catalog.unrouted {
                eprintln!(
                    "protogate: warning: {} not routed: {}",
                    unrouted.name, unrouted.reason
                );
            }
            println!(
                "ok: {} routes from {} descriptor files in {}",
                catalog.routes.len(),
                catalog.sources.len(),
                config.descriptors.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            for problem in &err.problems {
                eprintln!("error: {problem}");
            }
            ExitCode::from(1)
        }
    }
}

/// The route table as aligned text columns, then the unrouted services.
pub fn route_table(catalog: &Catalog) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "METHOD".into(),
        "PATH".into(),
        "GRPC METHOD".into(),
        "UPSTREAM".into(),
        "POLICY".into(),
    ]];
    for route in &catalog.routes {
        rows.push([
            route.http_method.to_string(),
            route.template.to_string(),
            route.grpc_method().to_string(),
            route.upstream.url.to_string(),
            route.policy.to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line = format!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if !catalog.unrouted.is_empty() {
        out.push_str("\nunrouted:\n");
        for unrouted in &catalog.unrouted {
            let _ = writeln!(out, "  {}: {}", unrouted.name, unrouted.reason);
        }
    }
    out
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.logging.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
}
