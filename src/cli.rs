//! The `protogate` command line: `serve`, `routes`, `openapi`, `check`.
//!
//! Exit codes: 0 ok, 1 invalid input (config or descriptors), 2 usage.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::auth::policy::RoutePolicy;
use crate::catalog::{Catalog, LoadError, Target};
use crate::config::{self, Config, ConfigArgs};
use crate::gateway::load::Loader;
use crate::gateway::Gateway;

#[derive(Debug, Parser)]
#[command(name = "protogate", version, about = "HTTP/JSON to gRPC gateway driven by protobuf descriptors")]
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
    /// Print the OpenAPI 3.1 document of the routes and exit.
    Openapi(ConfigArgs),
    /// Validate config and descriptors; exit 1 with the errors.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Exit 1 on warnings too (unrouted services, skipped bindings, an empty folder).
    #[arg(long)]
    strict: bool,
}

/// Entry point of the binary.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    let args = match &cli.command {
        Command::Serve(args) | Command::Routes(args) | Command::Openapi(args) => args,
        Command::Check(check) => &check.config,
    };
    let config = match config::load(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("protogate: {err}");
            return ExitCode::from(1);
        }
    };
    let threads = config.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One thread: the current-thread scheduler, which has no work-stealing
    // queues to keep in step (as Envoy runs one event loop per worker).
    let mut builder = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("protogate: starting the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => serve(config).await,
            Command::Routes(_) => routes(&config).await,
            Command::Openapi(_) => openapi(&config).await,
            Command::Check(CheckArgs { strict, .. }) => check(&config, strict).await,
        }
    })
}

async fn serve(config: Config) -> ExitCode {
    let exporter = crate::logging::init(&config);
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
    let admin_listener = match tokio::net::TcpListener::bind(config.admin_listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("protogate: admin listener on {}: {err}", config.admin_listen);
            return ExitCode::from(1);
        }
    };
    let catalog = gateway.catalog();
    tracing::info!(
        listen = %config.listen,
        admin = %config.admin_listen,
        routes = catalog.routes.len(),
        files = catalog.sources.len(),
        descriptors = %config.descriptors.display(),
        "protogate serving"
    );
    for unrouted in &catalog.unrouted {
        tracing::warn!(name = %unrouted.name, reason = %unrouted.reason, "not routed");
    }
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin = tokio::spawn(crate::gateway::admin::serve(gateway.clone(), admin_listener, wait(stopped.clone())));
    let result = gateway.serve(listener, wait(stopped)).await;
    let _ = admin.await;
    // The spans still queued reach the collector before the process ends,
    // and the access lines still waiting reach stderr.
    if let Some(exporter) = exporter {
        exporter.shutdown().await;
    }
    crate::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("protogate: {err}");
            ExitCode::from(1)
        }
    }
}

async fn load_catalog(config: &Config) -> Result<Catalog, LoadError> {
    Loader::inspect(config.clone()).await
}

async fn routes(config: &Config) -> ExitCode {
    match load_catalog(config).await {
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

/// The document admin `/openapi.json` serves for the same inputs.
async fn openapi(config: &Config) -> ExitCode {
    match load_catalog(config).await {
        Ok(catalog) => {
            let _ = std::io::stdout().write_all(&crate::openapi::document(&catalog, &config.auth));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("protogate: {err}");
            ExitCode::from(1)
        }
    }
}

/// Exit 0 with warnings on stderr, unless `strict` makes them fatal.
async fn check(config: &Config, strict: bool) -> ExitCode {
    match load_catalog(config).await {
        Ok(catalog) => {
            let mut warnings = Vec::new();
            if catalog.sources.is_empty() {
                warnings.push(format!("no descriptor files in {}", config.descriptors.display()));
            }
            for unrouted in &catalog.unrouted {
                warnings.push(format!("{} not routed: {}", unrouted.name, unrouted.reason));
            }
            for skipped in &catalog.skipped {
                warnings.push(format!("binding skipped (routes.invalid_bindings: skip): {skipped}"));
            }
            for warning in &warnings {
                eprintln!("protogate: warning: {warning}");
            }
            if strict && !warnings.is_empty() {
                eprintln!("error: {} warnings, and --strict makes warnings fatal", warnings.len());
                return ExitCode::from(1);
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

/// The route table as aligned text columns, then the unrouted services and
/// the skipped bindings.
pub fn route_table(catalog: &Catalog) -> String {
    let header = ["METHOD", "PATH", "VERSION", "GRPC METHOD", "UPSTREAM", "POLICY", "KIND"].map(String::from);
    let mut rows = vec![header];
    for route in &catalog.routes {
        rows.push([
            route.http_method.to_string(),
            route.template.to_string(),
            route.version.clone().unwrap_or_else(|| "-".into()),
            match &route.target {
                Target::Method(call) => call.grpc_method().to_owned(),
                Target::Composition(plan) => plan.summary(),
            },
            match &route.target {
                Target::Method(call) => call.upstream.url.to_string(),
                Target::Composition(plan) => plan.upstreams().join(","),
            },
            route.extensions.get::<Arc<RoutePolicy>>().map_or_else(|| "-".to_owned(), |p| p.to_string()),
            route.kind.as_str().to_owned(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:width$}  ");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let upstreams = catalog.upstreams();
    if !upstreams.is_empty() {
        out.push_str("\nupstreams:\n");
        for upstream in &upstreams {
            let endpoints: Vec<String> =
                upstream.cluster.endpoints().iter().map(|endpoint| endpoint.addr.to_string()).collect();
            let endpoints = if endpoints.is_empty() { "(none resolved)".to_owned() } else { endpoints.join(", ") };
            let _ = writeln!(out, "  {}: {endpoints}", upstream.label);
        }
    }
    if !catalog.unrouted.is_empty() {
        out.push_str("\nunrouted:\n");
        for unrouted in &catalog.unrouted {
            let _ = writeln!(out, "  {}: {}", unrouted.name, unrouted.reason);
        }
    }
    if !catalog.skipped.is_empty() {
        out.push_str("\nskipped bindings (routes.invalid_bindings: skip):\n");
        for skipped in &catalog.skipped {
            let _ = writeln!(out, "  {} {} ({}): {}", skipped.method, skipped.binding, skipped.source, skipped.reason);
        }
    }
    out
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
