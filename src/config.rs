//! STUB types — the config implementation replaces the loading part.
//! The resolved configuration: YAML file merged with command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub descriptors: PathBuf,
    pub threads: Option<usize>,
    pub upstreams: Vec<UpstreamRule>,
    pub json: JsonOptions,
    pub routes: RoutesConfig,
    pub limits: Limits,
    pub forward_headers: Vec<http::HeaderName>,
    pub logging: Logging,
    pub rate_limits: crate::middleware::ratelimit::config::RateLimitsConfig,
}

/// `PATTERN=URL`: a fully-qualified service, a package, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRule {
    pub pattern: String,
    pub url: http::Uri,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    #[default]
    Reject,
    Ignore,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOptions {
    pub use_proto_names: bool,
    pub emit_unpopulated: bool,
    pub enums_as_ints: bool,
    pub int64_as_numbers: bool,
    pub unknown_fields: Strictness,
    pub unknown_query_params: Strictness,
    pub pretty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesConfig {
    pub auto_map: bool,
    pub timeout: Duration,
    pub overrides: Vec<RouteOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOverride {
    pub selector: RouteSelector,
    pub timeout: Option<Duration>,
    pub max_body: Option<usize>,
}

/// Selects routes; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSelector {
    pub path_prefix: Option<String>,
    /// Fully-qualified service, `acme.users.v1.UserService`.
    pub service: Option<String>,
    /// Fully-qualified method, `acme.users.v1.UserService/GetUser`.
    pub method: Option<String>,
    pub http_method: Option<http::Method>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            descriptors: PathBuf::from("./descriptors"),
            threads: None,
            upstreams: Vec::new(),
            json: JsonOptions::default(),
            routes: RoutesConfig {
                auto_map: true,
                timeout: Duration::from_secs(30),
                overrides: Vec::new(),
            },
            limits: Limits { max_body: 4 << 20 },
            forward_headers: Vec::new(),
            logging: Logging {
                format: LogFormat::Pretty,
                level: "info".into(),
            },
            rate_limits: Default::default(),
        }
    }
}

/// Command-line inputs shared by every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// YAML config file (default: ./protogate.yaml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Descriptor folder (default: ./descriptors).
    #[arg(long, value_name = "DIR")]
    pub descriptors: Option<PathBuf>,
    /// Address of the HTTP listener (default: 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (default: 127.0.0.1:9901).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// `PATTERN=URL`: service, package or `*` to an upstream URL; repeatable.
    #[arg(long = "upstream", value_name = "PATTERN=URL")]
    pub upstreams: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Loads the config file (if any) and applies the flags on top.
pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    if let Some(d) = &args.descriptors {
        config.descriptors = d.clone();
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    for u in &args.upstreams {
        let (pattern, url) = u
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--upstream {u}: expected PATTERN=URL")))?;
        config.upstreams.push(UpstreamRule {
            pattern: pattern.into(),
            url: url
                .parse()
                .map_err(|e| ConfigError(format!("--upstream {u}: {e}")))?,
        });
    }
    config.threads = args.threads;
    Ok(config)
}
