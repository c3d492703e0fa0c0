//! The W3C trace context of one request (Trace Context Level 1):
//! `traceparent` read strictly, `tracestate` kept only beside a valid
//! `traceparent`, and a new trace when the client sent none that holds.
//!
//! Invalid means: not exactly `00-<32 hex>-<16 hex>-<2 hex>` in lowercase
//! (a later version may append `-…`, which is ignored), version `ff`, an
//! all-zero trace id or parent id, or the header sent more than once — a
//! request is never resolved by which copy comes first.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `vv-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;
/// The one trace flag defined by Level 1; the others are reserved and
/// must not be passed on.
pub const SAMPLED: u8 = 0x01;
/// At most this many `tracestate` members; more and the list is dropped.
const MAX_MEMBERS: usize = 32;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// One `traceparent` value: the trace, the span it names and its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: TraceId,
    /// The span of the sender: the parent of whoever receives it.
    pub parent_id: SpanId,
    pub flags: u8,
}

impl Traceparent {
    /// Parses a header value; `None` when it is not a valid traceparent.
    pub fn parse(value: &[u8]) -> Option<Self> {
        if value.len() < LEN {
            return None;
        }
        let version = hex_byte(&value[0..2])?;
        let tail_ok = match version {
            0xff => false,
            0x00 => value.len() == LEN,
            // A later version is read as this one: what follows must start
            // a new field.
            _ => value.len() == LEN || value[LEN] == b'-',
        };
        if !tail_ok || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let trace_id: TraceId = decode(&value[3..35])?;
        let parent_id: SpanId = decode(&value[36..52])?;
        let flags = hex_byte(&value[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// The value as sent: always version `00`, reserved flags cleared.
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [b'-'; LEN];
        out[0] = b'0';
        out[1] = b'0';
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.parent_id);
        write_hex(&mut out[53..55], &[self.flags & SAMPLED]);
        out
    }

    pub fn to_header(self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_bytes(&self.encode()).ok()?;
        // New on every request: HTTP/2 sends it as a literal never put in
        // the connection's HPACK table, where it would only push out the
        // values that repeat.
        value.set_sensitive(true);
        Some(value)
    }

    /// The same trace and flags, sent by the span `span_id`.
    pub fn with_parent(self, span_id: SpanId) -> Self {
        Self { parent_id: span_id, ..self }
    }
}

/// The trace context of one request, in its extensions for the handlers.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// The trace, the gateway's own span of the request (the parent of its
    /// upstream calls) and the flags. While spans are exported, the
    /// exported span's ids stand instead (see [`TraceContext::current`]).
    pub(super) own: Traceparent,
    /// The client's span, when its `traceparent` was valid.
    pub(super) client: Option<SpanId>,
    /// The client's `tracestate`, only beside a valid `traceparent`.
    pub(super) state: Option<HeaderValue>,
    /// The request's exported span; `None` unless exporting.
    pub(super) span: Option<tracing::Span>,
}

impl TraceContext {
    /// The context of a request with `headers`: the client's trace, or a
    /// new one (sampled: the gateway is its root).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut sent = headers.get_all(TRACEPARENT).iter();
        let client = match (sent.next(), sent.next()) {
            (Some(value), None) => Traceparent::parse(value.as_bytes()),
            // Absent, or more than one.
            _ => None,
        };
        match client {
            Some(client) => Self {
                own: Traceparent { flags: client.flags & SAMPLED, ..client }.with_parent(random_span_id()),
                client: Some(client.parent_id),
                state: tracestate(headers),
                span: None,
            },
            None => Self::new_trace(),
        }
    }

    /// A new trace with random ids.
    pub fn new_trace() -> Self {
        Self {
            own: Traceparent { trace_id: random_trace_id(), parent_id: random_span_id(), flags: SAMPLED },
            client: None,
            state: None,
            span: None,
        }
    }

    /// Whether the client's `traceparent` was taken (else a new trace).
    pub fn continues_client(&self) -> bool {
        self.client.is_some()
    }

    /// The client's `tracestate`, as passed on.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.state.as_ref()
    }
}

/// A random, non-zero trace id.
pub fn random_trace_id() -> TraceId {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// A random, non-zero span id.
pub fn random_span_id() -> SpanId {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

/// The client's `tracestate` if it is a valid list; several header lines
/// are one list, joined in order (RFC 9110 §5.3).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return valid_tracestate(first.as_bytes()).then(|| first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    if !valid_tracestate(&joined) {
        return None;
    }
    HeaderValue::from_bytes(&joined).ok()
}

/// A `tracestate` list: 1 to 32 `key=value` members with unique keys,
/// empty members and blanks around them allowed.
fn valid_tracestate(list: &[u8]) -> bool {
    let mut keys: [&[u8]; MAX_MEMBERS] = [&[]; MAX_MEMBERS];
    let mut count = 0;
    for member in list.split(|&b| b == b',') {
        let member = trim_blanks(member);
        if member.is_empty() {
            continue;
        }
        if count == MAX_MEMBERS {
            return false;
        }
        let Some(eq) = member.iter().position(|&b| b == b'=') else {
            return false;
        };
        let (key, value) = (&member[..eq], &member[eq + 1..]);
        if !valid_key(key) || !valid_value(value) || keys[..count].contains(&key) {
            return false;
        }
        keys[count] = key;
        count += 1;
    }
    count > 0
}

fn trim_blanks(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `simple-key` or `tenant@system`.
fn valid_key(key: &[u8]) -> bool {
    let key_char = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    match key.iter().position(|&b| b == b'@') {
        None => key.len() <= 256 && key.first().is_some_and(u8::is_ascii_lowercase) && key.iter().all(key_char),
        Some(at) => {
            let (tenant, system) = (&key[..at], &key[at + 1..]);
            (1..=241).contains(&tenant.len())
                && tenant.first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && tenant.iter().all(key_char)
                && (1..=14).contains(&system.len())
                && system.first().is_some_and(u8::is_ascii_lowercase)
                && system.iter().all(key_char)
        }
    }
}

/// Up to 256 printable characters but `,` and `=`, not ending in a blank.
fn valid_value(value: &[u8]) -> bool {
    (1..=256).contains(&value.len())
        && value.iter().all(|&b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && value.last() != Some(&b' ')
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(super) fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Each byte's value as a lowercase hex digit, [`NOT_HEX`] for any other
/// (uppercase is invalid in a traceparent).
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_HEX: u8 = 0x80;

fn hex_byte(pair: &[u8]) -> Option<u8> {
    decode::<1>(pair).map(|[byte]| byte)
}

/// `2 * N` lowercase hex digits as `N` bytes. No branch per digit: the
/// request path parses every client's traceparent.
fn decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return None;
    }
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (HEX_VALUE[usize::from(pair[0])], HEX_VALUE[usize::from(pair[1])]);
        seen |= high | low;
        *byte = high << 4 | low;
    }
    (seen & NOT_HEX == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parsed = Traceparent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.parent_id, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
        assert_eq!(&parsed.encode()[..], VALID.as_bytes());
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0x",
            "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ] {
            assert_eq!(Traceparent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version is read as 00, whatever it appends.
        let later = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-next";
        assert!(Traceparent::parse(later.as_bytes()).is_some());
    }

    #[test]
    fn the_client_trace_is_continued_with_a_span_of_the_gateway() {
        let ctx = TraceContext::from_headers(&headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]));
        assert!(ctx.continues_client());
        let current = ctx.current();
        let client = Traceparent::parse(VALID.as_bytes()).expect("valid");
        assert_eq!(current.trace_id, client.trace_id);
        assert_ne!(current.parent_id, client.parent_id);
        assert_eq!(ctx.tracestate().map(|v| v.as_bytes()), Some(&b"congo=t61rcWkgMzE"[..]));

        let mut md = HeaderMap::new();
        ctx.propagate(&mut md);
        let sent = md.get(TRACEPARENT).expect("traceparent");
        assert_eq!(Traceparent::parse(sent.as_bytes()), Some(current));
        assert_eq!(md.get(TRACESTATE).map(|v| v.as_bytes()), Some(&b"congo=t61rcWkgMzE"[..]));
    }

    #[test]
    fn absent_invalid_or_repeated_traceparents_start_a_new_trace() {
        let zero = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
        for sent in [vec![], vec![("traceparent", zero)], vec![("traceparent", VALID), ("traceparent", VALID)]] {
            let mut pairs = sent.clone();
            pairs.push(("tracestate", "congo=t61rcWkgMzE"));
            let ctx = TraceContext::from_headers(&headers(&pairs));
            assert!(!ctx.continues_client(), "{sent:?}");
            assert!(ctx.tracestate().is_none(), "no tracestate without its traceparent: {sent:?}");
            let current = ctx.current();
            assert_ne!(current.trace_id, [0; 16]);
            assert_ne!(current.trace_id, Traceparent::parse(VALID.as_bytes()).expect("valid").trace_id);
            assert_eq!(current.flags, SAMPLED);
            let mut md = HeaderMap::new();
            ctx.propagate(&mut md);
            assert!(md.get(TRACESTATE).is_none());
        }
        let a = TraceContext::new_trace().current();
        let b = TraceContext::new_trace().current();
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[test]
    fn reserved_flags_are_cleared() {
        let sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff";
        let ctx = TraceContext::from_headers(&headers(&[("traceparent", sent)]));
        assert_eq!(ctx.current().flags, 0x01);
        assert!(ctx.current().encode().ends_with(b"-01"));
    }

    #[test]
    fn tracestate_lists() {
        for good in ["a=1", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", " a=1 ,, b=2 ", "t@sys=x y", "a1_-*/=v"] {
            assert!(valid_tracestate(good.as_bytes()), "{good:?}");
        }
        let many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        for bad in ["", " , ", "a", "A=1", "1a=1", "a=1,a=2", "a=", "a=b=c", "a=x\ty", "@s=1", "t@=1", many.as_str()] {
            assert!(!valid_tracestate(bad.as_bytes()), "{bad:?}");
        }
        let joined = tracestate(&headers(&[("tracestate", "a=1"), ("tracestate", "b=2")]));
        assert_eq!(joined.as_ref().map(|v| v.as_bytes()), Some(&b"a=1,b=2"[..]));
        assert!(tracestate(&headers(&[("tracestate", "a=1"), ("tracestate", "a=2")])).is_none());
    }
}
