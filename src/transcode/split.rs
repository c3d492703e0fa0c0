//! A streamed request body cut into messages as its bytes arrive (DESIGN
//! §6, client streaming): NDJSON lines, or the elements of one JSON array
//! (a lone JSON object is one message). The cutter only finds where each
//! message ends — strings, escapes and nesting — and leaves the JSON itself
//! to the request plan, so a message is parsed once, by the code that
//! parses every other body.

use bytes::{Buf, Bytes, BytesMut};

/// How the body separates its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiting {
    /// `application/x-ndjson`, `application/jsonl`: one message per line;
    /// blank lines are skipped.
    Lines,
    /// `application/json`: `[msg, msg, ...]`, or one message alone.
    Array,
}

impl Delimiting {
    /// From the request's content type: NDJSON types cut lines; anything
    /// else is JSON (the same types the unary body accepts).
    pub fn of(content_type: Option<&str>) -> Self {
        let essence = content_type.and_then(|ct| ct.split(';').next()).unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-ndjson")
            || essence.eq_ignore_ascii_case("application/jsonl")
            || essence.eq_ignore_ascii_case("application/json-seq")
        {
            Self::Lines
        } else {
            Self::Array
        }
    }
}

/// Why the body cannot be cut into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("message {index} exceeds the limit of {limit} bytes")]
    TooLarge { index: usize, limit: usize },
    #[error("{0}")]
    Syntax(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet.
    Start,
    /// Inside `[`, before an element or the closing `]`.
    BeforeElement { first: bool },
    /// Inside an element; `depth` counts open brackets.
    Element { depth: u32, in_string: bool, escaped: bool },
    /// After an element: `,` or `]`.
    AfterElement,
    /// A lone message (not an array) is being read.
    Lone { depth: u32, in_string: bool, escaped: bool },
    /// The array (or the lone message) is complete: only whitespace may follow.
    Done,
}

/// Cuts one body into messages; feed it chunks with [`Splitter::push`],
/// take messages with [`Splitter::next_message`], and call
/// [`Splitter::finish`] at the end of the body.
#[derive(Debug)]
pub struct Splitter {
    delimiting: Delimiting,
    max_message: usize,
    buf: BytesMut,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// Where the current element starts in `buf` (array mode).
    start: usize,
    state: State,
    /// Messages handed out so far: the index of the next one.
    index: usize,
}

impl Splitter {
    pub fn new(delimiting: Delimiting, max_message: usize) -> Self {
        Self { delimiting, max_message, buf: BytesMut::new(), scanned: 0, start: 0, state: State::Start, index: 0 }
    }

    /// The index the next message will have (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message, if the bytes so far hold one.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, SplitError> {
        match self.delimiting {
            Delimiting::Lines => self.next_line(false),
            Delimiting::Array => self.next_element(false),
        }
    }

    /// At the end of the body: the last message (a line without its
    /// newline), or an error for an array left open. Call until `None`.
    pub fn finish(&mut self) -> Result<Option<Bytes>, SplitError> {
        match self.delimiting {
            Delimiting::Lines => self.next_line(true),
            Delimiting::Array => self.next_element(true),
        }
    }

    fn next_line(&mut self, at_end: bool) -> Result<Option<Bytes>, SplitError> {
        loop {
            let line = match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
                Some(at) => {
                    let end = self.scanned + at;
                    let line = self.buf.split_to(end + 1).freeze().slice(..end);
                    self.scanned = 0;
                    line
                }
                None if at_end && !self.buf.is_empty() => {
                    self.scanned = 0;
                    self.buf.split().freeze()
                }
                None => {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max_message {
                        return Err(self.too_large());
                    }
                    return Ok(None);
                }
            };
            let line = match line.last() {
                Some(b'\r') => line.slice(..line.len() - 1),
                _ => line,
            };
            if line.len() > self.max_message {
                return Err(self.too_large());
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.index += 1;
            return Ok(Some(line));
        }
    }

    fn next_element(&mut self, at_end: bool) -> Result<Option<Bytes>, SplitError> {
        while self.scanned < self.buf.len() {
            let byte = self.buf[self.scanned];
            let at = self.scanned;
            self.scanned += 1;
            match self.state {
                State::Start | State::BeforeElement { .. } | State::AfterElement | State::Done
                    if byte.is_ascii_whitespace() => {}
                State::Start => match byte {
                    b'[' => self.state = State::BeforeElement { first: true },
                    b'{' => {
                        self.start = at;
                        self.state = State::Lone { depth: 1, in_string: false, escaped: false };
                    }
                    _ => return Err(self.syntax("the body must be a JSON array of messages")),
                },
                State::BeforeElement { first } => match byte {
                    b']' if first => self.state = State::Done,
                    b']' | b',' => return Err(self.syntax("expected a message")),
                    _ => {
                        self.start = at;
                        match byte {
                            b'{' | b'[' => self.state = State::Element { depth: 1, in_string: false, escaped: false },
                            b'"' => self.state = State::Element { depth: 0, in_string: true, escaped: false },
                            _ => self.state = State::Element { depth: 0, in_string: false, escaped: false },
                        }
                    }
                },
                State::Element { depth, in_string, escaped } => {
                    let (depth, in_string, escaped, ended) = step(byte, depth, in_string, escaped);
                    // A scalar element ends at what follows it.
                    let scalar_end = depth == 0
                        && !in_string
                        && (byte == b',' || byte == b']' || byte.is_ascii_whitespace())
                        && ended.is_none();
                    if scalar_end {
                        let element = self.take(at);
                        self.state = State::AfterElement;
                        self.scanned -= 1; // see the delimiter again
                        return Ok(Some(element));
                    }
                    if ended == Some(true) {
                        let element = self.take(at + 1);
                        self.state = State::AfterElement;
                        return Ok(Some(element));
                    }
                    self.state = State::Element { depth, in_string, escaped };
                }
                State::AfterElement => match byte {
                    b',' => self.state = State::BeforeElement { first: false },
                    b']' => self.state = State::Done,
                    _ => return Err(self.syntax("expected `,` or `]` after a message")),
                },
                State::Lone { depth, in_string, escaped } => {
                    let (depth, in_string, escaped, ended) = step(byte, depth, in_string, escaped);
                    if ended == Some(true) {
                        let element = self.take(at + 1);
                        self.state = State::Done;
                        return Ok(Some(element));
                    }
                    self.state = State::Lone { depth, in_string, escaped };
                }
                State::Done => return Err(self.syntax("unexpected data after the end of the array")),
            }
            if self.scanned - self.start > self.max_message
                && matches!(self.state, State::Element { .. } | State::Lone { .. })
            {
                return Err(self.too_large());
            }
        }
        // Everything scanned: drop what is consumed, keep a partial element.
        match self.state {
            State::Element { .. } | State::Lone { .. } => {
                self.buf.advance(self.start);
                self.scanned -= self.start;
                self.start = 0;
            }
            _ => {
                self.buf.clear();
                self.scanned = 0;
                self.start = 0;
            }
        }
        if !at_end {
            return Ok(None);
        }
        match self.state {
            State::Done => Ok(None),
            // A scalar element ended by the end of the body.
            State::Start => Ok(None),
            _ => Err(self.syntax("the body ended before the array of messages was closed")),
        }
    }

    /// The element from `self.start` to `end`, counted as a message.
    fn take(&mut self, end: usize) -> Bytes {
        let element = self.buf.split_to(end).freeze().slice(self.start..);
        self.scanned -= end;
        self.start = 0;
        self.index += 1;
        element
    }

    fn too_large(&self) -> SplitError {
        SplitError::TooLarge { index: self.index, limit: self.max_message }
    }

    fn syntax(&self, what: &str) -> SplitError {
        SplitError::Syntax(what.to_owned())
    }
}

/// One byte of a JSON value: the new (depth, in_string, escaped), and
/// `Some(true)` when the byte closed the value's outermost bracket or
/// string.
fn step(byte: u8, depth: u32, in_string: bool, escaped: bool) -> (u32, bool, bool, Option<bool>) {
    if in_string {
        return match (escaped, byte) {
            (true, _) => (depth, true, false, None),
            (false, b'\\') => (depth, true, true, None),
            (false, b'"') => (depth, false, false, (depth == 0).then_some(true)),
            _ => (depth, true, false, None),
        };
    }
    match byte {
        b'"' => (depth, true, false, None),
        b'{' | b'[' => (depth + 1, false, false, None),
        b'}' | b']' if depth > 0 => (depth - 1, false, false, (depth == 1).then_some(true)),
        _ => (depth, false, false, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of `body` fed in chunks of `size` bytes.
    fn split(delimiting: Delimiting, body: &str, size: usize) -> Result<Vec<String>, SplitError> {
        let mut splitter = Splitter::new(delimiting, 64);
        let mut out = Vec::new();
        for chunk in body.as_bytes().chunks(size.max(1)) {
            splitter.push(chunk);
            while let Some(m) = splitter.next_message()? {
                out.push(String::from_utf8(m.to_vec()).expect("utf-8"));
            }
        }
        while let Some(m) = splitter.finish()? {
            out.push(String::from_utf8(m.to_vec()).expect("utf-8"));
        }
        Ok(out)
    }

    fn all_chunkings(delimiting: Delimiting, body: &str) -> Result<Vec<String>, SplitError> {
        let whole = split(delimiting, body, body.len());
        for size in 1..body.len().max(2) {
            assert_eq!(split(delimiting, body, size), whole, "chunks of {size}: {body:?}");
        }
        whole
    }

    #[test]
    fn lines() {
        let lines = |b| all_chunkings(Delimiting::Lines, b);
        assert_eq!(lines("{\"a\":1}\n{\"b\":2}\n").expect("ok"), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(lines("{\"a\":1}\n\n  \n{\"b\":2}").expect("ok"), ["{\"a\":1}", "{\"b\":2}"]);
        assert_eq!(lines("{}\r\n{}\r\n").expect("ok"), ["{}", "{}"]);
        assert_eq!(lines("").expect("ok"), Vec::<String>::new());
        let long = format!("{{\"a\":\"{}\"}}\n", "x".repeat(80));
        assert_eq!(lines(&format!("{{}}\n{long}")), Err(SplitError::TooLarge { index: 1, limit: 64 }));
    }

    #[test]
    fn arrays() {
        let array = |b| all_chunkings(Delimiting::Array, b);
        assert_eq!(
            array(r#"[{"a":"]}"}, {"b":[1,{"c":"\"}"}]}]"#).expect("ok"),
            [r#"{"a":"]}"}"#, r#"{"b":[1,{"c":"\"}"}]}"#]
        );
        assert_eq!(array(" [ ] ").expect("ok"), Vec::<String>::new());
        assert_eq!(array("").expect("ok"), Vec::<String>::new());
        assert_eq!(array(r#"{"lone":true}"#).expect("ok"), [r#"{"lone":true}"#]);
        // Non-object elements are cut too; the plan refuses them.
        assert_eq!(array(r#"[1, "two", null]"#).expect("ok"), ["1", "\"two\"", "null"]);
        assert!(matches!(array("[{},]"), Err(SplitError::Syntax(_))));
        assert!(matches!(array("[{}"), Err(SplitError::Syntax(_))));
        assert!(matches!(array("[{} {}]"), Err(SplitError::Syntax(_))));
        assert!(matches!(array("[{}] x"), Err(SplitError::Syntax(_))));
        assert!(matches!(array("nope"), Err(SplitError::Syntax(_))));
        assert!(matches!(array("[{\"a\":1"), Err(SplitError::Syntax(_))));
        let long = format!("[{{}}, {{\"a\":\"{}\"}}]", "x".repeat(80));
        assert_eq!(array(&long), Err(SplitError::TooLarge { index: 1, limit: 64 }));
    }

    #[test]
    fn content_types() {
        assert_eq!(Delimiting::of(Some("application/x-ndjson")), Delimiting::Lines);
        assert_eq!(Delimiting::of(Some("Application/JSONL; charset=utf-8")), Delimiting::Lines);
        assert_eq!(Delimiting::of(Some("application/json")), Delimiting::Array);
        assert_eq!(Delimiting::of(None), Delimiting::Array);
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::Value;

        use super::super::{Delimiting, Splitter};

        /// JSON values with the characters a cutter can trip on: quotes,
        /// backslashes, brackets and commas inside strings, nesting.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-z\\\\\"\\[\\]{},:\\n é]{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z\\\\\"\\]]{1,4}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn messages() -> impl Strategy<Value = Vec<Value>> {
            prop::collection::vec(
                prop::collection::btree_map("[a-z]{1,3}", json(), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                0..6,
            )
        }

        /// What the splitter hands out for `body` fed in chunks cut at `cuts`.
        fn split(delimiting: Delimiting, body: &[u8], cuts: &[usize]) -> Vec<Value> {
            let mut splitter = Splitter::new(delimiting, 1 << 20);
            let mut out = Vec::new();
            let mut at = 0;
            let mut ends: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
            ends.sort_unstable();
            ends.push(body.len());
            for end in ends {
                splitter.push(&body[at..end.max(at)]);
                at = end.max(at);
                while let Some(m) = splitter.next_message().expect("a valid body") {
                    out.push(serde_json::from_slice(&m).expect("each piece is one JSON value"));
                }
            }
            while let Some(m) = splitter.finish().expect("a valid body") {
                out.push(serde_json::from_slice(&m).expect("each piece is one JSON value"));
            }
            out
        }

        proptest! {
            #[test]
            fn an_array_comes_back_message_by_message(msgs in messages(), pretty in any::<bool>(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                let body = if pretty { serde_json::to_vec_pretty(&msgs) } else { serde_json::to_vec(&msgs) }.expect("json");
                prop_assert_eq!(split(Delimiting::Array, &body, &cuts), msgs);
            }

            #[test]
            fn ndjson_comes_back_line_by_line(msgs in messages(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
                let mut body = Vec::new();
                for m in &msgs {
                    body.extend(serde_json::to_vec(m).expect("json"));
                    body.push(b'\n');
                }
                prop_assert_eq!(split(Delimiting::Lines, &body, &cuts), msgs);
            }
        }
    }
}
