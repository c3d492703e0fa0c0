//! The resolved configuration: the YAML file (if any) with the
//! command-line flags laid over it.
//!
//! Everything that can be wrong with a configuration is found here, at
//! start-up, with a message that names the file, the key and the line (or
//! the flag): the rest of the gateway receives a [`Config`] whose values are
//! already valid and never re-checks them. The file's shape lives in
//! `schema`, the rules for single values in [`values`]; this module owns
//! the resolved types, the choice of file and the precedence of flags.
//! The user-facing reference is `docs/config.md`.

pub mod auth;
pub(crate) mod check;
pub mod compositions;
pub mod cors;
pub mod rate_limits;
mod schema;
pub mod secret;
pub mod selector;
#[cfg(test)]
mod tests;
pub mod tls;
pub mod upstreams;
pub mod values;

pub use self::selector::{RouteFacts, RouteSelector};

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every setting, checked and with defaults filled in. See `docs/config.md`
/// for what each one does.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Already resolved: a relative path from the file is joined to the
    /// file's folder; one from `--descriptors` is left relative to the CWD.
    pub descriptors: PathBuf,
    /// `descriptors.reflection`: upstreams whose services are discovered
    /// with gRPC server reflection.
    pub reflection: Vec<http::Uri>,
    /// `descriptors.reflection_interval`: how often they are asked again.
    pub reflection_interval: std::time::Duration,
    /// `None`: one worker per core.
    pub threads: Option<usize>,
    /// How long in-flight requests and streams may run after shutdown is
    /// asked for; streams still open then end with an in-band UNAVAILABLE.
    pub shutdown_timeout: Duration,
    /// In the order given: the file's entries (URLs replaced by flags with
    /// the same pattern), then new patterns from flags. Patterns are unique.
    pub upstreams: Vec<UpstreamRule>,
    pub json: JsonOptions,
    pub routes: RoutesConfig,
    pub limits: Limits,
    pub forward_headers: Vec<http::HeaderName>,
    pub logging: Logging,
    /// `tracing:` — W3C trace context and OTLP export.
    pub tracing: Tracing,
    /// `rate_limits:` — rules, backends, trusted proxies.
    pub rate_limits: rate_limits::RateLimitsConfig,
    /// `auth:` — JWT providers, API keys, what the backend is told.
    pub auth: auth::AuthConfig,
    /// `policies:` — which routes need which credentials.
    pub policies: auth::PoliciesConfig,
    /// `versions.vN`: settings of the routes mounted under `/vN`.
    pub versions: std::collections::BTreeMap<String, VersionConfig>,
    /// `compositions:` — routes that call several methods, in file order.
    /// Checked as far as possible without descriptors; the catalog
    /// compiles them against the descriptors.
    pub compositions: Vec<compositions::Composition>,
    /// `cors:` — which browser origins may call; `None`: CORS is off.
    pub cors: Option<cors::CorsConfig>,
    /// `tls:` — the public listener speaks TLS; `None`: h2c and HTTP/1.1.
    pub tls: Option<tls::TlsConfig>,
    /// `upstream_tls:` — private CAs and client certificates for `https://`
    /// upstreams.
    pub upstream_tls: Vec<tls::UpstreamTlsConfig>,
}

/// Settings of one URL version (`versions.v2`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionConfig {
    /// Backend of every service mounted under this version; wins over
    /// `--upstream` patterns.
    pub upstream: Option<http::Uri>,
    /// Its long form's settings (DESIGN §4b).
    pub upstream_settings: upstreams::UpstreamSettings,
    pub deprecated: Option<Deprecation>,
}

/// `versions.vN.deprecated`: adds `Deprecation` (and `Sunset`) headers to
/// the version's responses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deprecation {
    /// When the version was deprecated (`Deprecation: @<unix seconds>`);
    /// unset: `Deprecation: true`.
    pub since: Option<std::time::SystemTime>,
    /// When it goes away (`Sunset: <HTTP date>`).
    pub sunset: Option<std::time::SystemTime>,
}

/// `PATTERN=URL`: a fully-qualified service, a package, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRule {
    pub pattern: String,
    /// Always `http://` or `https://`, with an explicit port and path `/`.
    /// With a fixed `endpoints` list, the first of them (the label).
    pub url: http::Uri,
    /// The long form's settings; defaults for `PATTERN: URL`.
    pub settings: upstreams::UpstreamSettings,
}

impl UpstreamRule {
    /// The short form: every address `url`'s host resolves to, defaults.
    pub fn new(pattern: impl Into<String>, url: http::Uri) -> Self {
        Self { pattern: pattern.into(), url, settings: upstreams::UpstreamSettings::default() }
    }
}

/// What to do with input that names no field: refuse it with 400, or drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strictness {
    #[default]
    Reject,
    Ignore,
}

/// `routes.invalid_bindings`: what a binding that breaks http.proto costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidBindings {
    /// The whole load is refused.
    #[default]
    Reject,
    /// That binding alone is left out, and listed with its reason.
    Skip,
}

/// `json.query_path_conflict`: a query parameter naming a field a path
/// variable binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryPathConflict {
    /// 400: the request says two things about one field.
    #[default]
    Reject,
    /// The path's value is kept and the parameter dropped, as grpc-gateway
    /// and Envoy's transcoder do.
    PathWins,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOptions {
    pub use_proto_names: bool,
    pub emit_unpopulated: bool,
    pub enums_as_ints: bool,
    pub int64_as_numbers: bool,
    pub unknown_fields: Strictness,
    pub unknown_query_params: Strictness,
    pub query_path_conflict: QueryPathConflict,
    pub pretty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesConfig {
    pub auto_map: bool,
    pub invalid_bindings: InvalidBindings,
    /// The deadline of a unary call (a streaming call has none unless an
    /// override gives one).
    pub timeout: Duration,
    /// A stream silent in both directions this long is ended.
    pub stream_idle_timeout: Duration,
    /// An SSE stream sends a comment line after this much silence.
    pub sse_keep_alive: Duration,
    /// A PATCH that sends no `update_mask` gets one made of its body's
    /// fields (AIP-134, as grpc-gateway does).
    pub autofill_update_mask: bool,
    pub overrides: Vec<RouteOverride>,
}

/// Settings for the routes a selector matches; `None` keeps the global
/// value. At least one setting is `Some`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOverride {
    pub selector: RouteSelector,
    /// For a streaming route, its total deadline.
    pub timeout: Option<Duration>,
    pub max_body: Option<usize>,
    pub stream_idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body: usize,
    /// Largest single message of a streamed request body.
    pub max_message: usize,
    /// How long a connection may take, from its first byte, to complete a
    /// request's headers (HTTP/1) or the preface and first SETTINGS
    /// (HTTP/2); also each later HTTP/1 request's headers.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight is kept open.
    pub idle_timeout: Duration,
    /// Requests served at once (streams until they end); more are shed
    /// with a 503 before any work. `None`: no limit.
    pub max_concurrent_requests: Option<std::num::NonZeroUsize>,
    /// A request's header fields, names and values together; more is a 431.
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once, at least 1
    /// (advertised in the server's SETTINGS).
    pub http2_max_concurrent_streams: u32,
    /// How often an HTTP/2 connection is pinged; `None` (`off`): never.
    pub http2_keep_alive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed.
    pub http2_keep_alive_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    pub level: String,
    /// `logging.access`: one event per request (DESIGN §9).
    pub access: bool,
}

/// `tracing:` — spans are exported only when `otlp_endpoint` is set; the
/// trace context is propagated to backends either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// OTLP/gRPC collector URL (`http://host:4317`); `None`: no export.
    pub otlp_endpoint: Option<http::Uri>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for Tracing {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "protogate".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            descriptors: PathBuf::from("./descriptors"),
            threads: None,
            shutdown_timeout: Duration::from_secs(30),
            upstreams: Vec::new(),
            json: JsonOptions::default(),
            routes: RoutesConfig {
                auto_map: true,
                invalid_bindings: InvalidBindings::Reject,
                timeout: Duration::from_secs(30),
                stream_idle_timeout: Duration::from_secs(300),
                sse_keep_alive: Duration::from_secs(15),
                autofill_update_mask: true,
                overrides: Vec::new(),
            },
            limits: Limits {
                max_body: 4 << 20,
                max_message: 1 << 20,
                max_concurrent_requests: None,
                max_header_bytes: 16 << 10,
                header_read_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(60),
                http2_max_concurrent_streams: 256,
                http2_keep_alive_interval: Some(Duration::from_secs(30)),
                http2_keep_alive_timeout: Duration::from_secs(20),
            },
            forward_headers: Vec::new(),
            logging: Logging { format: LogFormat::Pretty, level: "info".into(), access: true },
            tracing: Tracing::default(),
            versions: std::collections::BTreeMap::new(),
            reflection: Vec::new(),
            reflection_interval: Duration::from_secs(30),
            auth: Default::default(),
            policies: Default::default(),
            rate_limits: Default::default(),
            compositions: Vec::new(),
            cors: None,
            tls: None,
            upstream_tls: Vec::new(),
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
    #[arg(long, value_name = "ADDR", value_parser = values::parse_socket_addr)]
    pub listen: Option<SocketAddr>,
    /// Address of the admin listener (default: 127.0.0.1:9901).
    #[arg(long, value_name = "ADDR", value_parser = values::parse_socket_addr)]
    pub admin_listen: Option<SocketAddr>,
    /// `PATTERN=URL`: service, package or `*` to an upstream URL; repeatable.
    #[arg(long = "upstream", value_name = "PATTERN=URL")]
    pub upstreams: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// The file read when `--config` is not given, if it exists in the working
/// directory.
pub const DEFAULT_FILE: &str = "protogate.yaml";

/// Why a configuration was refused. Each message is one line that says
/// where the problem is (file and line, or flag) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A problem in the file. `message` carries the key path and, where
    /// the YAML parser knows it, "at line N column M".
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String, line: Option<usize>, column: Option<usize> },
    /// A bad command-line value; `value` is as given, with any URL
    /// credentials hidden.
    #[error("{flag} {value}: {problem}")]
    Flag { flag: &'static str, value: String, problem: String },
}

/// Loads the config file (if any) and applies the flags on top.
///
/// The file is `--config` when given (a missing file is an error), else
/// `./protogate.yaml` when it exists, else none and every value starts at
/// its default.
pub fn load(args: &ConfigArgs) -> Result<Config, ConfigError> {
    load_with_default(args, Path::new(DEFAULT_FILE))
}

/// [`load`] with the implicit file's location as a parameter, so that tests
/// need not change the process's working directory.
fn load_with_default(args: &ConfigArgs, default_file: &Path) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(path) => Some(path.clone()),
        None => {
            let path = default_file.to_path_buf();
            match std::fs::metadata(&path) {
                Ok(_) => Some(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(source) => return Err(ConfigError::Read { path, source }),
            }
        }
    };
    let mut config = match file {
        Some(path) => load_file(&path)?,
        None => Config::default(),
    };
    apply_flags(&mut config, args)?;
    Ok(config)
}

/// Reads and parses one config file, without flags.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    from_yaml(&text, path)
}

/// Parses the text of one config file. `origin` is the file's path: it
/// names the file in messages, and relative paths in the file are resolved
/// against its folder.
pub fn from_yaml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let file: schema::FileConfig = serde_yaml_ng::from_str(text).map_err(|e| file_error(origin, &e))?;
    if let Some(problem) = file.problem() {
        return Err(file_error(origin, &check::locate(text, &problem)));
    }
    let base = origin.parent().unwrap_or(Path::new(""));
    Ok(file.resolve(base))
}

fn file_error(origin: &Path, err: &serde_yaml_ng::Error) -> ConfigError {
    let location = err.location();
    let mut message = err.to_string();
    // serde_yaml_ng leaves the position out of the text when it is line 1
    // column 1; the user still deserves to be told.
    if let Some(loc) = &location {
        if !message.contains(" at line ") {
            message.push_str(&format!(" at line {} column {}", loc.line(), loc.column()));
        }
    }
    ConfigError::File {
        file: origin.to_path_buf(),
        message,
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// Lays the flags over `config`. Flags are checked by the same rules as the
/// file's values.
fn apply_flags(config: &mut Config, args: &ConfigArgs) -> Result<(), ConfigError> {
    // Relative to the working directory: that is where the user typed it.
    if let Some(dir) = &args.descriptors {
        config.descriptors = dir.clone();
    }
    if let Some(addr) = args.listen {
        config.listen = addr;
    }
    if let Some(addr) = args.admin_listen {
        config.admin_listen = addr;
    }
    if let Some(n) = args.threads {
        let n = values::check_threads(n as u64).map_err(|problem| ConfigError::Flag {
            flag: "--threads",
            value: n.to_string(),
            problem,
        })?;
        config.threads = Some(n);
    }
    let flag_rules = parse_upstream_flags(&args.upstreams)?;
    merge_upstreams(&mut config.upstreams, flag_rules);
    Ok(())
}

fn parse_upstream_flags(flags: &[String]) -> Result<Vec<UpstreamRule>, ConfigError> {
    let mut rules: Vec<UpstreamRule> = Vec::with_capacity(flags.len());
    for flag in flags {
        let error =
            |problem: String| ConfigError::Flag { flag: "--upstream", value: values::redact_url(flag), problem };
        let (pattern, url) = flag.split_once('=').ok_or_else(|| error("expected PATTERN=URL".into()))?;
        let pattern = values::parse_upstream_pattern(pattern.trim()).map_err(error)?;
        let url = values::parse_upstream_url(url).map_err(error)?;
        if rules.iter().any(|r| r.pattern == pattern) {
            return Err(error(format!("upstream pattern `{pattern}` is given twice on the command line")));
        }
        rules.push(UpstreamRule::new(pattern, url));
    }
    Ok(rules)
}

/// A flag's rule replaces the file's rule for the same pattern in place;
/// new patterns follow the file's, in the order given.
fn merge_upstreams(rules: &mut Vec<UpstreamRule>, flags: Vec<UpstreamRule>) {
    for flag in flags {
        match rules.iter_mut().find(|r| r.pattern == flag.pattern) {
            Some(existing) => existing.url = flag.url,
            None => rules.push(flag),
        }
    }
}
