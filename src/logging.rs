//! Logging set-up ([`init`]) and the access log's writer ([`access`]):
//! one line per request on stderr, JSON or key=value, shaped as a
//! `tracing` event of target [`ACCESS_TARGET`] would be, written in
//! batches under load.
//!
//! Access lines do not go through `tracing`: its dispatch (the filter,
//! every layer's look at the event, the visitor) and its general-purpose
//! formatter cost more than the line itself. The writer knows the line's
//! shape (strings, integers, one float) and appends them to one buffer.
//! Every other event goes through the ordinary formatter.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{Config, LogFormat};
use crate::telemetry::{self, Exporter};

/// The target access lines name, as a `tracing` event's would.
pub const ACCESS_TARGET: &str = "protogate::access";

/// How access lines are written once [`init`] has set the log up: not at
/// all (`logging.access: false`, or no log installed), key=value or JSON.
static ACCESS: AtomicU8 = AtomicU8::new(ACCESS_OFF);
const ACCESS_OFF: u8 = 0;
const ACCESS_TEXT: u8 = 1;
const ACCESS_JSON: u8 = 2;

/// Installs the process's subscriber: log events on stderr under
/// `logging.level` (`RUST_LOG` wins), the access log under
/// `logging.access` whatever the level, and with `tracing.otlp_endpoint`
/// the span exporter, returned so that `serve` can flush it before exiting.
/// Each output has a filter of its own: spans never reach the log lines,
/// and the log level never hides them from the collector.
pub fn init(config: &Config) -> Option<Exporter> {
    let exporter = match config.tracing.otlp_endpoint {
        None => None,
        Some(_) => Exporter::start(&config.tracing).unwrap_or_else(|err| {
            eprintln!("protogate: {err}; no spans are exported");
            None
        }),
    };
    // One global filter, so that whatever it turns off (hyper's and h2's
    // spans and events among them) costs a cached callsite check. With
    // per-layer filters instead, the registry tracks every span for the
    // layer that might want it: that doubled the instructions per request.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = if exporter.is_some() { "trace" } else { "off" };
    let filter = [format!("{}={spans}", telemetry::SPAN_TARGET)]
        .iter()
        .filter_map(|directive| directive.parse().ok())
        .fold(filter, EnvFilter::add_directive);
    // A terminal gets colours; a file or a pipe plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match config.logging.format {
        // Fields at the top level: one flat JSON object per line; the
        // exported spans stay out of it.
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).with_span_list(false).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let otel = exporter.as_ref().map(Exporter::layer);
    let installed = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    if installed.is_ok() && config.logging.access {
        let format = if config.logging.format == LogFormat::Json { ACCESS_JSON } else { ACCESS_TEXT };
        ACCESS.store(format, Ordering::Relaxed);
        start_flusher();
    }
    if installed.is_ok() && exporter.is_some() {
        telemetry::start_exporting();
    }
    exporter
}

/// One request's access line: its values, in the order they are written.
pub struct AccessLine<'a> {
    pub request_id: &'a str,
    pub peer: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub grpc_method: &'a str,
    pub status: u16,
    pub grpc_code: &'a str,
    pub latency_ms: f64,
    pub upstream: &'a str,
    pub consumer: &'a str,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Writes `fields` as one access line, if the access log is on.
pub fn access(fields: &AccessLine<'_>) {
    let json = match ACCESS.load(Ordering::Relaxed) {
        ACCESS_TEXT => false,
        ACCESS_JSON => true,
        _ => return,
    };
    LINE.with_borrow_mut(|out| {
        out.clear();
        let mut line = Line { out: std::mem::take(out), json };
        line.start("INFO");
        line.fields(fields);
        line.end();
        PENDING.lock().unwrap_or_else(PoisonError::into_inner).push(line.out.as_bytes());
        *out = line.out;
    });
}

thread_local! {
    /// The access line being written on this thread, its buffer kept.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

/// Access lines go out together rather than one `write` each: a line is
/// written at once when nothing was written for [`FLUSH_EVERY`] (an idle
/// gateway logs as it serves), otherwise it waits with the others for the
/// flusher thread, at most that long, or until [`FLUSH_AT`] bytes wait.
/// Under load that is one write for many requests instead of one each.
/// Lines are whole in every write; [`flush`] empties the buffer at exit.
/// What waits is lost if the process aborts (as Envoy's buffered access
/// logs are).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
const FLUSH_AT: usize = 64 * 1024;

static PENDING: Mutex<Pending> = Mutex::new(Pending { bytes: Vec::new(), written: None, out: to_stderr });

struct Pending {
    bytes: Vec<u8>,
    /// When the buffer was last written out (`None`: never).
    written: Option<Instant>,
    out: fn(&[u8]),
}

fn to_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

impl Pending {
    fn push(&mut self, line: &[u8]) {
        self.bytes.extend_from_slice(line);
        let idle = self.written.is_none_or(|at| at.elapsed() >= FLUSH_EVERY);
        if idle || self.bytes.len() >= FLUSH_AT {
            self.write();
        }
    }

    /// Writes what waits, under the buffer's lock: writes never interleave
    /// or reorder.
    fn write(&mut self) {
        if !self.bytes.is_empty() {
            (self.out)(&self.bytes);
            self.bytes.clear();
        }
        self.written = Some(Instant::now());
    }
}

/// Writes the access lines that wait (at exit; the flusher thread does it
/// meanwhile).
pub fn flush() {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner).write();
}

/// The thread that writes waiting access lines every [`FLUSH_EVERY`].
fn start_flusher() {
    let spawned = std::thread::Builder::new().name("access-log".into()).spawn(|| loop {
        std::thread::sleep(FLUSH_EVERY);
        let mut pending = PENDING.lock().unwrap_or_else(PoisonError::into_inner);
        if !pending.bytes.is_empty() {
            pending.write();
        }
    });
    if let Err(err) = spawned {
        eprintln!("protogate: no access-log flusher thread ({err}); lines wait for the next request");
    }
}

/// A field's name as each format writes it before the value, spelled
/// out at compile time.
#[derive(Clone, Copy)]
struct Key {
    json: &'static str,
    text: &'static str,
}

macro_rules! key {
    ($name:literal) => {
        Key { json: concat!(",\"", $name, "\":"), text: concat!(" ", $name, "=") }
    };
}

/// One access line being written.
struct Line {
    out: String,
    json: bool,
}

impl Line {
    fn start(&mut self, level: &str) {
        match self.json {
            true => {
                self.out.push_str("{\"timestamp\":\"");
                timestamp(&mut self.out);
                self.out.push_str("\",\"level\":\"");
                self.out.push_str(level);
                self.out.push_str("\",\"target\":\"");
                self.out.push_str(ACCESS_TARGET);
                self.out.push('"');
            }
            false => {
                timestamp(&mut self.out);
                self.out.push_str("  ");
                self.out.push_str(level);
                self.out.push(' ');
                self.out.push_str(ACCESS_TARGET);
                self.out.push(':');
            }
        }
    }

    fn key(&mut self, key: Key) {
        self.out.push_str(if self.json { key.json } else { key.text });
    }

    /// The fields after the level and target; `message` first, as a
    /// `tracing` event has it.
    fn fields(&mut self, fields: &AccessLine<'_>) {
        self.str(key!("message"), "access");
        self.str(key!("request_id"), fields.request_id);
        self.str(key!("peer"), fields.peer);
        self.str(key!("method"), fields.method);
        self.str(key!("route"), fields.route);
        self.str(key!("grpc_method"), fields.grpc_method);
        self.u64(key!("status"), u64::from(fields.status));
        self.str(key!("grpc_code"), fields.grpc_code);
        self.f64(key!("latency_ms"), fields.latency_ms);
        self.str(key!("upstream"), fields.upstream);
        self.str(key!("consumer"), fields.consumer);
        self.u64(key!("bytes_in"), fields.bytes_in);
        self.u64(key!("bytes_out"), fields.bytes_out);
    }

    fn end(&mut self) {
        if self.json {
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

impl Line {
    /// A string value: JSON-quoted, or in key=value quoted only when it
    /// must be (empty, or with a space, quote or `=`).
    fn string(&mut self, value: &str) {
        match self.json {
            true => json_string(&mut self.out, value),
            false if value.is_empty() => self.out.push_str("\"\""),
            false if needs_quotes(value) => {
                let _ = write!(self.out, "{value:?}");
            }
            false => self.out.push_str(value),
        }
    }
}

/// Whether a key=value value must be quoted: it has a space, a quote or
/// `=`.
fn needs_quotes(value: &str) -> bool {
    any_byte(
        value.as_bytes(),
        |word| has_byte(word, b' ') | has_byte(word, b'"') | has_byte(word, b'='),
        |b| matches!(b, b' ' | b'"' | b'='),
    )
}

/// Whether a JSON string must escape something in `value`: a quote, a
/// backslash or a control character.
fn needs_escapes(value: &str) -> bool {
    any_byte(
        value.as_bytes(),
        |word| has_byte(word, b'"') | has_byte(word, b'\\') | has_below(word, 0x20),
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
}

/// Eight bytes at a time: a line's values are short, too short for memchr
/// to pay, and a byte loop costs several instructions a byte.
fn any_byte(bytes: &[u8], word: impl Fn(u64) -> bool, byte: impl Fn(u8) -> bool) -> bool {
    let mut words = bytes.chunks_exact(8);
    let found = words.any(|chunk| <[u8; 8]>::try_from(chunk).is_ok_and(|w| word(u64::from_le_bytes(w))));
    found || words.remainder().iter().any(|&b| byte(b))
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `word` is `byte`.
fn has_byte(word: u64, byte: u8) -> bool {
    has_below(word ^ (ONES * u64::from(byte)), 1)
}

/// Whether a byte of `word` is below `bound` (at most 128).
fn has_below(word: u64, bound: u8) -> bool {
    word.wrapping_sub(ONES * u64::from(bound)) & !word & HIGHS != 0
}

impl Line {
    fn str(&mut self, key: Key, value: &str) {
        self.key(key);
        self.string(value);
    }

    fn u64(&mut self, key: Key, value: u64) {
        self.key(key);
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    fn f64(&mut self, key: Key, value: f64) {
        self.key(key);
        // Three decimals (milliseconds to the microsecond), without the
        // float formatter.
        match (0.0..1e15).contains(&value) {
            true => {
                let thousandths = (value * 1000.0).round() as u64;
                self.out.push_str(itoa::Buffer::new().format(thousandths / 1000));
                self.out.push('.');
                push_digits(&mut self.out, thousandths % 1000, 3);
            }
            false => {
                let _ = write!(self.out, "{value}");
            }
        }
    }
}

/// `value` as a JSON string, quotes included.
fn json_string(out: &mut String, value: &str) {
    out.push('"');
    if !needs_escapes(value) {
        out.push_str(value);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (at, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[start..at]);
        match escape {
            "" => {
                let _ = write!(out, "\\u{byte:04x}");
            }
            escape => out.push_str(escape),
        }
        start = at + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// Now as RFC 3339 UTC with microseconds: `2026-12-07T12:00:00.123456Z`.
fn timestamp(out: &mut String) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    write_timestamp(out, now.as_secs(), now.subsec_micros());
}

thread_local! {
    /// The date and time to the second of the last timestamp written on
    /// this thread: it changes once a second, lines come far more often.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

fn write_timestamp(out: &mut String, secs: u64, micros: u32) {
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            text.clear();
            let days = (secs / 86_400) as i64;
            let of_day = secs % 86_400;
            let (year, month, day) = civil_from_days(days);
            let _ = write!(
                text,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
                of_day / 3600,
                of_day / 60 % 60,
                of_day % 60
            );
            *cached = secs;
        }
        out.push_str(text);
    });
    push_digits(out, u64::from(micros), 6);
    out.push('Z');
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let width = width.min(digits.len());
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or_default());
}

/// Days since 1970-01-01 as a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut out = String::new();
        write_timestamp(&mut out, 0, 0);
        assert_eq!(out, "1970-01-01T00:00:00.000000Z");
        out.clear();
        // 2026-12-07T12:34:56Z, and a leap day.
        write_timestamp(&mut out, 1_796_646_896, 42);
        assert_eq!(out, "2026-12-07T12:34:56.000042Z");
        out.clear();
        write_timestamp(&mut out, 951_782_400, 0);
        assert_eq!(out, "2000-02-29T00:00:00.000000Z");
    }

    thread_local! {
        static WRITTEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn to_test(bytes: &[u8]) {
        WRITTEN.with(|w| w.borrow_mut().push(String::from_utf8_lossy(bytes).into_owned()));
    }

    #[test]
    fn access_lines_are_written_at_once_when_idle_and_batched_under_load() {
        let mut pending = Pending { bytes: Vec::new(), written: None, out: to_test };
        let writes = || WRITTEN.with(|w| w.borrow().clone());
        // Nothing written yet: the first line goes out at once.
        pending.push(b"a\n");
        assert_eq!(writes(), ["a\n"]);
        // Right after a write, lines wait and then leave together, whole.
        pending.push(b"b\n");
        pending.push(b"c\n");
        assert_eq!(writes(), ["a\n"]);
        pending.write();
        assert_eq!(writes(), ["a\n", "b\nc\n"]);
        // A full buffer does not wait for the flusher.
        let long = vec![b'x'; FLUSH_AT];
        pending.push(&long);
        assert_eq!(writes().len(), 3);
        // Idle again for long enough: at once.
        pending.written = Some(Instant::now() - FLUSH_EVERY);
        pending.push(b"d\n");
        assert_eq!(writes().last().map(String::as_str), Some("d\n"));
    }

    fn line(json: bool, fields: &AccessLine<'_>) -> String {
        let mut line = Line { out: String::new(), json };
        line.start("INFO");
        line.fields(fields);
        line.end();
        line.out
    }

    const FIELDS: AccessLine<'static> = AccessLine {
        request_id: "4bf92f3577b34da6a3ce929d0e0e4736",
        peer: "127.0.0.1:53514",
        method: "GET",
        route: "/v1/users/{id}",
        grpc_method: "acme.users.v1.UserService/GetUser",
        status: 200,
        grpc_code: "OK",
        latency_ms: 1.2044,
        upstream: "http://127.0.0.1:50051",
        consumer: "",
        bytes_in: 0,
        bytes_out: 58,
    };

    #[test]
    fn access_lines_have_the_shape_of_a_tracing_event() {
        let text = line(false, &FIELDS);
        let (time, rest) = text.split_at(27);
        assert!(time.ends_with('Z'), "{text}");
        assert_eq!(
            rest,
            "  INFO protogate::access: message=access request_id=4bf92f3577b34da6a3ce929d0e0e4736 \
             peer=127.0.0.1:53514 method=GET route=/v1/users/{id} grpc_method=acme.users.v1.UserService/GetUser \
             status=200 grpc_code=OK latency_ms=1.204 upstream=http://127.0.0.1:50051 consumer=\"\" bytes_in=0 \
             bytes_out=58\n"
        );
        let json = line(true, &FIELDS);
        let (time, rest) = json.split_at(42);
        assert!(time.starts_with("{\"timestamp\":\"") && time.ends_with("Z\""), "{json}");
        assert_eq!(
            rest,
            ",\"level\":\"INFO\",\"target\":\"protogate::access\",\"message\":\"access\",\
             \"request_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"peer\":\"127.0.0.1:53514\",\"method\":\"GET\",\
             \"route\":\"/v1/users/{id}\",\"grpc_method\":\"acme.users.v1.UserService/GetUser\",\"status\":200,\
             \"grpc_code\":\"OK\",\"latency_ms\":1.204,\"upstream\":\"http://127.0.0.1:50051\",\"consumer\":\"\",\
             \"bytes_in\":0,\"bytes_out\":58}\n"
        );
        let json: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
        assert_eq!(json["status"], 200);
        assert_eq!(json["latency_ms"], 1.204);
        assert_eq!(json["consumer"], "");
    }

    #[test]
    fn key_value_fields_are_quoted_only_when_they_must_be() {
        let mut line = Line { out: String::new(), json: false };
        line.str(key!("empty"), "");
        line.str(key!("spaced"), "a b");
        line.str(key!("plain"), "x");
        line.str(key!("eq"), "é=1");
        assert_eq!(line.out, r#" empty="" spaced="a b" plain=x eq="é=1""#);
        let mut line = Line { out: String::new(), json: true };
        line.str(key!("s"), "q\"");
        line.str(key!("t"), "plain");
        assert_eq!(line.out, r#","s":"q\"","t":"plain""#);
    }

    #[test]
    fn the_word_at_a_time_checks_agree_with_a_byte_loop() {
        let naive_quotes = |v: &str| v.bytes().any(|b| matches!(b, b' ' | b'"' | b'='));
        let naive_escapes = |v: &str| v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
        let mut values: Vec<String> = vec![String::new(), "a".into(), "é=".into(), "\u{7f}\u{80}ÿ".into()];
        // Each special byte at each place of a value of every length to 20,
        // among bytes that are near it but not it.
        for len in 1..20 {
            for at in 0..len {
                for special in [' ', '"', '=', '\\', '\n', '\u{1f}', '!', '<', '>', '\u{7f}', 'é'] {
                    let mut value: String = "#".repeat(len);
                    value.replace_range(at..at + 1, &special.to_string());
                    values.push(value);
                }
            }
        }
        for value in &values {
            assert_eq!(needs_quotes(value), naive_quotes(value), "{value:?}");
            assert_eq!(needs_escapes(value), naive_escapes(value), "{value:?}");
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
        // Nothing to escape, or only at the last byte.
        for (value, quoted) in [("plain/é", r#""plain/é""#), ("", r#""""#), ("abc\t", r#""abc\t""#)] {
            out.clear();
            json_string(&mut out, value);
            assert_eq!(out, quoted);
        }
    }
}
