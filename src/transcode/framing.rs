//! How a stream of JSON messages is laid out in one HTTP response body
//! (DESIGN §6): newline-delimited JSON, server-sent events or one JSON
//! array, chosen per request from `Accept`. Only bytes here: the messages
//! arrive rendered, and so does the error that may end the stream.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue};

/// One framing of a response stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One message per line, `application/x-ndjson`.
    Ndjson,
    /// The same lines, labelled `application/jsonl` for clients that ask so.
    Jsonl,
    /// `text/event-stream`: `id: N` and `data: <json>` per message.
    Sse,
    /// `application/json`: one array, its elements sent as they come.
    Array,
}

/// The media types each framing answers to, in the order that breaks ties.
const OFFERS: [(&str, &str, Framing); 4] = [
    ("application", "x-ndjson", Framing::Ndjson),
    ("application", "jsonl", Framing::Jsonl),
    ("text", "event-stream", Framing::Sse),
    ("application", "json", Framing::Array),
];

impl Framing {
    /// The framing `Accept` prefers, q-values and specificity considered
    /// (RFC 9110 §12.5.1); NDJSON when nothing is preferred (no `Accept`,
    /// `*/*`, or only types no framing matches). On equal preference the
    /// more specific range wins, then the order of [`OFFERS`].
    pub fn negotiate(headers: &HeaderMap) -> Self {
        // Best (q in thousandths, specificity) per offer.
        let mut best = [None::<(u16, u8)>; OFFERS.len()];
        for value in headers.get_all(ACCEPT) {
            let Ok(text) = value.to_str() else { continue };
            for range in text.split(',') {
                let Some((ty, sub, q)) = media_range(range) else { continue };
                for (slot, (offer_ty, offer_sub, _)) in best.iter_mut().zip(OFFERS) {
                    let specificity = match (ty, sub) {
                        ("*", "*") => 0,
                        (t, "*") if t.eq_ignore_ascii_case(offer_ty) => 1,
                        (t, s) if t.eq_ignore_ascii_case(offer_ty) && s.eq_ignore_ascii_case(offer_sub) => 2,
                        _ => continue,
                    };
                    // The most specific matching range sets the offer's q.
                    if slot.is_none_or(|(_, known)| specificity > known) {
                        *slot = Some((q, specificity));
                    }
                }
            }
        }
        let mut chosen = None::<((u16, u8), Framing)>;
        for (slot, (_, _, framing)) in best.iter().zip(OFFERS) {
            if let Some(score) = slot.filter(|(q, _)| *q > 0) {
                if chosen.is_none_or(|(known, _)| score > known) {
                    chosen = Some((score, framing));
                }
            }
        }
        chosen.map_or(Self::Ndjson, |(_, framing)| framing)
    }

    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Jsonl => "application/jsonl",
            Self::Sse => "text/event-stream",
            Self::Array => "application/json",
        })
    }
}

/// `type/subtype;params` → (type, subtype, q in thousandths), `None` when
/// malformed.
fn media_range(range: &str) -> Option<(&str, &str, u16)> {
    let mut parts = range.split(';');
    let (ty, sub) = parts.next()?.trim().split_once('/')?;
    let (ty, sub) = (ty.trim(), sub.trim());
    if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        if let Some((name, value)) = param.split_once('=') {
            if name.trim().eq_ignore_ascii_case("q") {
                q = parse_q(value.trim())?;
            }
        }
    }
    Some((ty, sub, q))
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Writes one response stream in its framing: the messages, then either a
/// clean end or the error that ended it.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    /// Messages written so far (SSE ids count from 1).
    sent: u64,
    /// The array's `[` is out.
    opened: bool,
}

impl Framer {
    pub fn new(framing: Framing) -> Self {
        Self { framing, sent: 0, opened: false }
    }

    /// One rendered message (compact JSON: no newline inside).
    pub fn message(&mut self, json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(json.len() + 24);
        let written: Result<(), Infallible> = self.write_message(&mut out, |out| {
            out.extend_from_slice(json);
            Ok(())
        });
        match written {
            Ok(()) => Bytes::from(out),
        }
    }

    /// Appends one message to `out`, its compact JSON written by `json`:
    /// a stream writes the messages already at hand into one buffer.
    pub fn write_message<E>(
        &mut self,
        out: &mut Vec<u8>,
        json: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let prior = self.sent > 0;
        self.sent += 1;
        match self.framing {
            Framing::Ndjson | Framing::Jsonl => {
                json(out)?;
                out.push(b'\n');
            }
            Framing::Sse => {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(itoa::Buffer::new().format(self.sent).as_bytes());
                out.extend_from_slice(b"\ndata: ");
                json(out)?;
                out.extend_from_slice(b"\n\n");
            }
            Framing::Array => {
                self.separator(out, prior);
                json(out)?;
            }
        }
        Ok(())
    }

    /// The last bytes of a stream that ended with `status` (the rendered
    /// `google.rpc.Status`).
    pub fn error(&mut self, status: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(status.len() + 24);
        match self.framing {
            Framing::Ndjson | Framing::Jsonl => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(status);
                out.extend_from_slice(b"}\n");
            }
            Framing::Sse => {
                out.extend_from_slice(b"event: error\ndata: ");
                out.extend_from_slice(status);
                out.extend_from_slice(b"\n\n");
            }
            Framing::Array => {
                self.separator(&mut out, self.sent > 0);
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(status);
                out.extend_from_slice(b"}]");
            }
        }
        Bytes::from(out)
    }

    /// The last bytes of a stream that ended well.
    pub fn end(&mut self) -> Bytes {
        match self.framing {
            Framing::Array if self.opened => Bytes::from_static(b"]"),
            Framing::Array => Bytes::from_static(b"[]"),
            _ => Bytes::new(),
        }
    }

    /// A line that keeps a silent stream alive, for framings that have one.
    pub fn keep_alive(&self) -> Option<Bytes> {
        (self.framing == Framing::Sse).then(|| Bytes::from_static(b": keep-alive\n\n"))
    }

    /// What goes before an array element: `[` first, `,` after another.
    fn separator(&mut self, out: &mut Vec<u8>, after_another: bool) {
        if !self.opened {
            out.push(b'[');
            self.opened = true;
        } else if after_another {
            out.push(b',');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate(accept: &[&str]) -> Framing {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, HeaderValue::from_str(value).expect("value"));
        }
        Framing::negotiate(&headers)
    }

    #[test]
    fn accept_picks_the_framing() {
        assert_eq!(negotiate(&[]), Framing::Ndjson);
        assert_eq!(negotiate(&["*/*"]), Framing::Ndjson);
        assert_eq!(negotiate(&["text/html, image/png"]), Framing::Ndjson);
        assert_eq!(negotiate(&["application/x-ndjson"]), Framing::Ndjson);
        assert_eq!(negotiate(&["application/jsonl"]), Framing::Jsonl);
        assert_eq!(negotiate(&["text/event-stream"]), Framing::Sse);
        assert_eq!(negotiate(&["Text/Event-Stream; charset=utf-8"]), Framing::Sse);
        assert_eq!(negotiate(&["application/json"]), Framing::Array);
        assert_eq!(negotiate(&["text/*"]), Framing::Sse);
        assert_eq!(negotiate(&["application/*"]), Framing::Ndjson);
        // Named beats a wildcard of the same q; q decides first.
        assert_eq!(negotiate(&["application/json, */*"]), Framing::Array);
        assert_eq!(negotiate(&["application/json;q=0.5, text/event-stream"]), Framing::Sse);
        assert_eq!(negotiate(&["text/event-stream;q=0.2, application/json;q=0.9"]), Framing::Array);
        assert_eq!(negotiate(&["text/event-stream", "application/json;q=0.1"]), Framing::Sse);
        // q=0 refuses; the most specific range sets an offer's q.
        assert_eq!(negotiate(&["application/json;q=0, application/*"]), Framing::Ndjson);
        assert_eq!(negotiate(&["*/*;q=0.1, application/x-ndjson;q=0"]), Framing::Jsonl);
        assert_eq!(negotiate(&["application/json;q=0"]), Framing::Ndjson);
        // Malformed ranges are skipped.
        assert_eq!(negotiate(&["application/json;q=2, text/event-stream;q=0.3"]), Framing::Sse);
        assert_eq!(negotiate(&["*/json, application/json"]), Framing::Array);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("0"), Some(0));
        for bad in ["1.5", "0.1234", "2", "", "x", "-0.5", "0.a"] {
            assert_eq!(parse_q(bad), None, "{bad:?}");
        }
    }

    fn whole(framing: Framing, messages: &[&str], error: Option<&str>) -> String {
        let mut framer = Framer::new(framing);
        let mut out = Vec::new();
        for m in messages {
            out.extend_from_slice(&framer.message(m.as_bytes()));
        }
        match error {
            Some(status) => out.extend_from_slice(&framer.error(status.as_bytes())),
            None => out.extend_from_slice(&framer.end()),
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn each_framing_writes_messages_and_its_end() {
        let status = r#"{"code":13,"message":"x","details":[]}"#;
        assert_eq!(whole(Framing::Ndjson, &[r#"{"a":1}"#, "{}"], None), "{\"a\":1}\n{}\n");
        assert_eq!(whole(Framing::Ndjson, &[], None), "");
        assert_eq!(whole(Framing::Ndjson, &["{}"], Some(status)), format!("{{}}\n{{\"error\":{status}}}\n"));
        assert_eq!(whole(Framing::Sse, &["{}", "[]"], None), "id: 1\ndata: {}\n\nid: 2\ndata: []\n\n");
        assert_eq!(
            whole(Framing::Sse, &["{}"], Some(status)),
            format!("id: 1\ndata: {{}}\n\nevent: error\ndata: {status}\n\n")
        );
        assert_eq!(whole(Framing::Array, &["1", "2"], None), "[1,2]");
        assert_eq!(whole(Framing::Array, &[], None), "[]");
        assert_eq!(whole(Framing::Array, &["1"], Some(status)), format!("[1,{{\"error\":{status}}}]"));
        assert_eq!(whole(Framing::Array, &[], Some(status)), format!("[{{\"error\":{status}}}]"));
    }

    #[test]
    fn only_sse_has_a_keep_alive_line() {
        assert!(Framer::new(Framing::Ndjson).keep_alive().is_none());
        assert_eq!(Framer::new(Framing::Sse).keep_alive().expect("sse"), ": keep-alive\n\n");
    }
}
