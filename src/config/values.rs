//! Scalar values of the config file that validate themselves.
//!
//! Each value is checked by a serde `Visitor` while the YAML scalar is being
//! read, not afterwards: serde_yaml_ng only attaches the key path and the
//! line to errors raised inside the scalar's own deserializer, so this is
//! what lets a bad value point at its line. The `parse_*` functions are the
//! single definition of each rule; command-line flags go through the same
//! functions, so a value means the same thing in the file and on the
//! command line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use http::uri::{Scheme, Uri};
use http::{HeaderName, Method};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A deadline: `30s`, `1.5s`, `250ms`, `2m`, `1h`, or a bare integer of
/// seconds. Zero is rejected: a zero deadline fails every call.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(duration_problem(text, "expected a number followed by a unit"));
    }
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        // A bare integer is seconds; a bare fraction is more likely a typo
        // than a deliberate choice, so it must say its unit.
        "" if !number.contains('.') => 1_000_000_000,
        "" => return Err(duration_problem(text, "a fraction needs a unit, e.g. 1.5s")),
        other => return Err(duration_problem(text, &format!("unknown unit `{other}` (use ms, s, m or h)"))),
    };
    let nanos =
        scale_decimal(number, nanos_per_unit).ok_or_else(|| duration_problem(text, "not a number or too large"))?;
    if nanos == 0 {
        return Err(duration_problem(text, "must be greater than zero"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| duration_problem(text, "too large"))?;
    // The remainder is below 10^9, so it always fits.
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

fn duration_problem(text: &str, problem: &str) -> String {
    format!("invalid duration `{text}`: {problem}")
}

/// A byte count: `4MiB`, `512KiB`, `1GiB`, `1MB` (10^6), `100kB`, `1.5MiB`,
/// or a bare integer of bytes. Zero is rejected: a zero limit refuses every
/// body, which is never what a limit is for.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return Err(size_problem(text, "expected a number optionally followed by a unit"));
    }
    let multiplier: u128 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(size_problem(text, &format!("unknown unit `{other}` (use B, kB, MB, GB, KiB, MiB or GiB)")))
        }
    };
    let bytes = scale_decimal(number, multiplier).ok_or_else(|| size_problem(text, "not a number or too large"))?;
    if bytes == 0 {
        return Err(size_problem(text, "must be at least 1 byte"));
    }
    usize::try_from(bytes).map_err(|_| size_problem(text, "too large"))
}

fn size_problem(text: &str, problem: &str) -> String {
    format!("invalid size `{text}`: {problem}")
}

/// Splits `1.5 MiB` into `("1.5", "MiB")`.
fn split_number(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    (&text[..end], text[end..].trim_start())
}

/// `digits[.digits] × multiplier`, computed exactly in integers (floats
/// would turn `0.1s` into 99 999 999 ns) and truncated toward zero.
fn scale_decimal(number: &str, multiplier: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (number.contains('.') && fraction.is_empty())
    {
        return None;
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add(u128::from(digit - b'0'))?;
    }
    let divisor = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    Some(mantissa.checked_mul(multiplier)? / divisor)
}

/// A listener address. Host names are refused on purpose: a listener binds
/// an interface, and resolving a name at start-up hides which one.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid address `{text}`: expected IP:PORT such as 127.0.0.1:8080 or [::]:8080"))
}

/// The URL of a gRPC backend, normalised to `scheme://host:port/` so that
/// the upstream module never has to guess a default port.
pub fn parse_upstream_url(text: &str) -> Result<Uri, String> {
    let text = text.trim();
    // Checked before parsing so that the problem, never the credentials,
    // ends up in the message.
    if authority_part(text).contains('@') {
        return Err("credentials in the URL are not supported".into());
    }
    let uri: Uri = text.parse().map_err(|e| format!("invalid URL `{text}`: {e}"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        Some(other) => {
            return Err(format!("URL scheme must be http or https, not `{other}`"));
        }
        None => return Err(format!("invalid URL `{text}`: it must start with http:// (h2c) or https:// (TLS)")),
    };
    let authority = uri.authority().ok_or_else(|| format!("URL `{text}` has no host"))?;
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("URL `{text}` has no host"));
    }
    let port = authority.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(format!("URL `{text}` has port 0"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("URL `{text}` must not have a path or query: gRPC sets the path of every call"));
    }
    let scheme = if default_port == 443 { Scheme::HTTPS } else { Scheme::HTTP };
    Uri::builder()
        .scheme(scheme)
        .authority(format!("{host}:{port}"))
        .path_and_query("/")
        .build()
        .map_err(|e| format!("invalid URL `{text}`: {e}"))
}

/// Splits a URL-like text into `scheme://`, `user:pass@host:port` and the
/// rest, for the credentials check and for redaction only.
fn split_authority(text: &str) -> (&str, &str, &str) {
    let (prefix, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (prefix, &rest[..end], &rest[end..])
}

fn authority_part(text: &str) -> &str {
    split_authority(text).1
}

/// Hides credentials in a URL given on the command line before it is echoed
/// in an error message.
pub fn redact_url(text: &str) -> String {
    let (prefix, authority, tail) = split_authority(text);
    match authority.rfind('@') {
        Some(at) => format!("{prefix}***{}{tail}", &authority[at..]),
        None => text.to_owned(),
    }
}

/// `*`, a package (`acme.users.v1`) or a fully-qualified service
/// (`acme.users.v1.UserService`) that selects an upstream.
pub fn parse_upstream_pattern(text: &str) -> Result<String, String> {
    if text == "*" || is_dotted_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid upstream pattern `{text}`: expected `*`, a package (acme.users.v1) \
             or a service (acme.users.v1.UserService)"
        ))
    }
}

/// A fully-qualified protobuf service name, without a leading dot.
pub fn parse_service_name(text: &str) -> Result<String, String> {
    if is_dotted_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("invalid service `{text}`: expected a fully-qualified name such as acme.users.v1.UserService"))
    }
}

/// A fully-qualified method in gRPC path form, `pkg.Service/Method`.
pub fn parse_method_name(text: &str) -> Result<String, String> {
    match text.split_once('/') {
        Some((service, method)) if is_dotted_name(service) && is_identifier(method) => Ok(text.to_owned()),
        _ => Err(format!("invalid method `{text}`: expected SERVICE/METHOD such as acme.users.v1.UserService/GetUser")),
    }
}

/// The start of a request path; compared against the raw path, so it must
/// look like one.
pub fn parse_path_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("invalid path prefix `{text}`: it must start with /"));
    }
    if text.bytes().any(|b| b == b'?' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("invalid path prefix `{text}`: no spaces, `?` or `#` allowed"));
    }
    Ok(text.to_owned())
}

fn is_identifier(text: &str) -> bool {
    let mut bytes = text.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_dotted_name(text: &str) -> bool {
    !text.is_empty() && text.split('.').all(is_identifier)
}

/// Headers that describe one hop of the HTTP connection (RFC 9110 §7.6.1);
/// forwarding them to a backend would be wrong by definition.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// Headers the gateway itself sets on the gRPC call.
const SET_BY_GATEWAY: &[&str] = &["host", "content-type", "content-length"];

/// A request header to forward to backends as gRPC metadata, lowercased.
pub fn parse_forward_header(text: &str) -> Result<HeaderName, String> {
    let name =
        HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| format!("`{text}` is not a valid header name"))?;
    let s = name.as_str();
    if HOP_BY_HOP.contains(&s) || s.starts_with("proxy-") {
        return Err(format!("`{s}` is a hop-by-hop header and is never forwarded"));
    }
    if SET_BY_GATEWAY.contains(&s) {
        return Err(format!("`{s}` is set by the gateway on the gRPC call and cannot be forwarded"));
    }
    if s.starts_with("grpc-") {
        return Err(format!("`{s}` is reserved by gRPC (send `grpc-metadata-NAME` to pass NAME)"));
    }
    if s.ends_with("-bin") {
        return Err(format!("`{s}` would be binary gRPC metadata, which cannot be forwarded from a header"));
    }
    Ok(name)
}

/// An HTTP method token as it appears on the wire: uppercase, because
/// methods are case-sensitive and a lowercase `get` would match nothing.
pub fn parse_http_method(text: &str) -> Result<Method, String> {
    let method = Method::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a valid HTTP method"))?;
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("HTTP method `{text}` must be uppercase: `{}`", text.to_ascii_uppercase()));
    }
    Ok(method)
}

/// An `EnvFilter` directive string such as `info` or
/// `protogate=debug,hyper=warn`.
pub fn parse_log_level(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("invalid log filter `{text}`: {e}"))
}

/// A worker thread count; zero threads would run nothing.
pub fn check_threads(n: u64) -> Result<usize, String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    usize::try_from(n).map_err(|_| format!("{n} is too large"))
}

/// A visitor for values written as a YAML string and checked by one of the
/// `parse_*` functions above.
struct ParsedStr<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for ParsedStr<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

macro_rules! str_value {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:path, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(ParsedStr { expecting: $expecting, parse: $parse })
                    .map($name)
            }
        }
    };
}

str_value!(
    /// `listen` addresses.
    Addr(SocketAddr),
    parse_socket_addr,
    "an address such as 127.0.0.1:8080 (quote IPv6 addresses: \"[::]:8080\")"
);
str_value!(
    /// Upstream URLs.
    UpstreamUrl(Uri),
    parse_upstream_url,
    "a URL such as http://127.0.0.1:50051"
);
str_value!(
    /// Keys of `versions`.
    VersionName(String),
    parse_version,
    "a version such as v1, v2beta1 or v3alpha2"
);
str_value!(
    /// `deprecated.sunset` and `deprecated.since`.
    DateValue(std::time::SystemTime),
    parse_date,
    "a date such as 2027-06-30"
);
str_value!(
    /// Route selector `service`.
    ServiceName(String),
    parse_service_name,
    "a fully-qualified service name"
);
str_value!(
    /// Route selector `method`.
    MethodName(String),
    parse_method_name,
    "a method such as acme.users.v1.UserService/GetUser"
);
str_value!(
    /// Route selector `path_prefix`.
    PathPrefix(String),
    parse_path_prefix,
    "a path prefix such as /v1/users"
);
str_value!(
    /// Route selector `http_method`.
    HttpMethod(Method),
    parse_http_method,
    "an HTTP method such as GET"
);
str_value!(
    /// `logging.level`.
    LogLevel(String),
    parse_log_level,
    "a log filter such as info or protogate=debug"
);

/// A non-empty path, kept as written; resolved against the config file's
/// folder later, once the file's location is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathText(pub std::path::PathBuf);

impl<'de> Deserialize<'de> for PathText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn non_empty(text: &str) -> Result<std::path::PathBuf, String> {
            if text.is_empty() {
                Err("the path must not be empty".into())
            } else {
                Ok(text.into())
            }
        }
        d.deserialize_str(ParsedStr { expecting: "a path", parse: non_empty }).map(PathText)
    }
}

/// A visitor for values that may be a bare YAML integer or a string with a
/// unit (durations and sizes).
struct Quantity<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    /// Suggested for a bare fraction, which is never accepted.
    unit: &'static str,
}

impl<T> Visitor<'_> for Quantity<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.parse)(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("`{v}` must be greater than zero")));
        }
        self.visit_u64(v.unsigned_abs())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(E::custom(format!("`{v}` needs a unit, e.g. {v}{}", self.unit)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        if v.trim_start().starts_with('-') {
            return Err(E::custom(format!("`{v}` must be greater than zero")));
        }
        (self.parse)(v).map_err(E::custom)
    }
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Quantity {
            expecting: "a duration such as 30s, 250ms or 2m",
            parse: parse_duration,
            unit: "s",
        })
        .map(DurationValue)
    }
}

/// A period that can be turned off: a duration, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodValue(pub Option<Duration>);

impl<'de> Deserialize<'de> for PeriodValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn parse(text: &str) -> Result<Option<Duration>, String> {
            match text.trim() {
                "off" => Ok(None),
                text => parse_duration(text).map(Some),
            }
        }
        d.deserialize_any(Quantity { expecting: "a duration such as 30s, or off", parse, unit: "s" }).map(PeriodValue)
    }
}

/// Body limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeValue(pub usize);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Quantity {
            expecting: "a size such as 4MiB, 512KiB or 1000000",
            parse: parse_size,
            unit: "MiB",
        })
        .map(SizeValue)
    }
}

/// `threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads(pub usize);

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ThreadsVisitor;
        impl Visitor<'_> for ThreadsVisitor {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of threads, at least 1")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                check_threads(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                check_threads(u64::try_from(v).unwrap_or(0)).map_err(E::custom)
            }
        }
        // `any`, not `u64`: a negative number should get the "at least 1"
        // message rather than a type error.
        d.deserialize_any(ThreadsVisitor).map(Threads)
    }
}

impl PartialOrd for VersionName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for VersionName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// A URL version segment: `v` and a number, optionally followed by `alpha`
/// or `beta` and a number (`v1`, `v2beta1`, `v3alpha2`).
pub fn is_version(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    if rest.is_empty() {
        return true;
    }
    let Some(number) = rest.strip_prefix("alpha").or_else(|| rest.strip_prefix("beta")) else {
        return false;
    };
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

pub fn parse_version(text: &str) -> Result<String, String> {
    if is_version(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a version (v1, v2beta1, v3alpha2, ...)"))
    }
}

/// `YYYY-MM-DD`, midnight UTC.
pub fn parse_date(text: &str) -> Result<std::time::SystemTime, String> {
    let invalid = || format!("{text:?} is not a date of the form YYYY-MM-DD");
    let mut parts = text.trim().splitn(3, '-');
    let mut next = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i64>().ok())
            .ok_or_else(invalid)
    };
    let (year, month, day) = (next(4)?, next(2)?, next(2)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month[(month - 1) as usize] || year < 1970 {
        return Err(invalid());
    }
    // Days since 1970-01-01 (the civil-from-days algorithm, inverted).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(days as u64 * 86_400))
}

/// `base/path` for a relative `path`, without the `./` noise that a plain
/// `join` would keep (`/etc/pg/./descriptors`).
pub(super) fn relative_to(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let mut out = base.to_path_buf();
    for component in path.components() {
        if component != Component::CurDir {
            out.push(component);
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}
