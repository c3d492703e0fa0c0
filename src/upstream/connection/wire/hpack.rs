//! HPACK decoding (RFC 7541) of a backend's header blocks. The dynamic
//! table keeps each entry as the header name and value it stands for,
//! checked once when the backend adds it, so a field the backend sends from
//! its table (after the first call, most of them) costs a lookup and two
//! reference-count increments. Huffman-coded strings are decoded by
//! `httlib-huffman`'s table-driven decoder.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::OnceLock;

use http::{HeaderName, HeaderValue};

/// One decoded field.
pub enum Field<'a> {
    /// A pseudo-header (`:status`), name and value as sent.
    Pseudo(&'a [u8], &'a [u8]),
    Header(HeaderName, HeaderValue),
    /// Not a valid HTTP field (a bad name or value).
    Invalid,
}

/// Why a block did not decode: the connection cannot go on (its table is
/// out of step with the backend's).
#[derive(Debug, PartialEq, Eq)]
pub struct Error(pub &'static str);

/// The table size this side allows (SETTINGS_HEADER_TABLE_SIZE's default,
/// which it does not change).
pub const TABLE_SIZE: usize = 4096;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// A literal field's name: a table entry's, or its own.
enum Name<'b> {
    Indexed(usize),
    Literal(Cow<'b, [u8]>),
}

/// A table entry: the bytes, and what they are as an HTTP field (`None`
/// for a pseudo-header or an invalid one).
struct Entry {
    name: Box<[u8]>,
    value: Box<[u8]>,
    parsed: Option<(HeaderName, HeaderValue)>,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let parsed = match name.first() {
            Some(b':') => None,
            _ => HeaderName::from_bytes(name).ok().zip(HeaderValue::from_bytes(value).ok()),
        };
        Self { name: name.into(), value: value.into(), parsed }
    }

    /// RFC 7541 §4.1.
    fn size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }

    fn field(&self) -> Field<'_> {
        match &self.parsed {
            Some((name, value)) => Field::Header(name.clone(), value.clone()),
            None if self.name.first() == Some(&b':') => Field::Pseudo(&self.name, &self.value),
            None => Field::Invalid,
        }
    }
}

fn static_table() -> &'static [Entry] {
    static TABLE: OnceLock<Vec<Entry>> = OnceLock::new();
    TABLE.get_or_init(|| STATIC.iter().map(|(name, value)| Entry::new(name.as_bytes(), value.as_bytes())).collect())
}

/// One connection's decoder.
pub struct Decoder {
    /// Newest first.
    dynamic: VecDeque<Entry>,
    size: usize,
    /// The size the backend set (at most [`TABLE_SIZE`]).
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self { dynamic: VecDeque::new(), size: 0, max: TABLE_SIZE }
    }
}

impl Decoder {
    /// Decodes one whole header block, each field to `each` in order.
    pub fn decode(&mut self, mut block: &[u8], mut each: impl FnMut(Field<'_>)) -> Result<(), Error> {
        let mut first = true;
        while let Some(&octet) = block.first() {
            if octet & 0x80 != 0 {
                let index = integer(&mut block, 7)?;
                each(self.entry(index)?.field());
            } else if octet & 0x40 != 0 {
                let (name, value) = self.literal(&mut block, 6)?;
                let entry = Entry::new(self.name(&name)?, &value);
                each(entry.field());
                self.insert(entry);
            } else if octet & 0x20 != 0 {
                // A size update comes before any field of its block.
                if !first {
                    return Err(Error("a table size update after a field"));
                }
                let max = integer(&mut block, 5)?;
                if max > TABLE_SIZE {
                    return Err(Error("a table size over the one allowed"));
                }
                self.max = max;
                self.evict(0);
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001).
                let (name, value) = self.literal(&mut block, 4)?;
                let known = match name {
                    Name::Indexed(index) => self.entry(index)?.parsed.as_ref().map(|(name, _)| name.clone()),
                    Name::Literal(_) => None,
                };
                each(match known {
                    Some(name) => HeaderValue::from_bytes(&value).map_or(Field::Invalid, |v| Field::Header(name, v)),
                    None => {
                        let name = self.name(&name)?;
                        match name.first() {
                            Some(b':') => Field::Pseudo(name, &value),
                            _ => match (HeaderName::from_bytes(name), HeaderValue::from_bytes(&value)) {
                                (Ok(name), Ok(value)) => Field::Header(name, value),
                                _ => Field::Invalid,
                            },
                        }
                    }
                });
            }
            first = false;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<&Entry, Error> {
        match index {
            0 => Err(Error("index 0")),
            1..=61 => Ok(&static_table()[index - 1]),
            _ => self.dynamic.get(index - 62).ok_or(Error("an index past the table")),
        }
    }

    /// A literal field's name (by index, or a string when the index is 0)
    /// and value.
    fn literal<'b>(&self, block: &mut &'b [u8], prefix: u8) -> Result<(Name<'b>, Cow<'b, [u8]>), Error> {
        let name = match integer(block, prefix)? {
            0 => Name::Literal(string(block)?),
            index => Name::Indexed(index),
        };
        Ok((name, string(block)?))
    }

    fn name<'s>(&'s self, name: &'s Name<'_>) -> Result<&'s [u8], Error> {
        match name {
            Name::Indexed(index) => Ok(&self.entry(*index)?.name),
            Name::Literal(name) => Ok(name),
        }
    }

    fn insert(&mut self, entry: Entry) {
        let size = entry.size();
        if size > self.max {
            // Bigger than the table: it empties the table (§4.4).
            self.dynamic.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.dynamic.push_front(entry);
    }

    /// Drops the oldest entries until `room` more fits.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            match self.dynamic.pop_back() {
                Some(old) => self.size -= old.size(),
                None => break,
            }
        }
    }
}

/// An integer with an `n`-bit prefix (§5.1), taken off the front of
/// `block`.
fn integer(block: &mut &[u8], n: u8) -> Result<usize, Error> {
    let (&first, mut rest) = block.split_first().ok_or(Error("a block cut short"))?;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&byte, after) = rest.split_first().ok_or(Error("an integer cut short"))?;
            rest = after;
            if shift > 21 {
                return Err(Error("an integer too large"));
            }
            value += usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal (§5.2), Huffman-coded or not, taken off the front of
/// `block`; borrowed from it when not Huffman-coded.
fn string<'b>(block: &mut &'b [u8]) -> Result<Cow<'b, [u8]>, Error> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(Error("a string cut short"));
    }
    let (text, rest) = block.split_at(len);
    *block = rest;
    if !huffman {
        return Ok(Cow::Borrowed(text));
    }
    let mut decoded = Vec::with_capacity(len * 8 / 5 + 1);
    httlib_huffman::decode(text, &mut decoded, httlib_huffman::DecoderSpeed::FourBits)
        .map_err(|_| Error("a Huffman string that does not decode"))?;
    // The padding must be the EOS code's first bits, under 8 of them
    // (§5.2), which the decoder does not check: the string must be what
    // encoding its text gives.
    let mut again = Vec::with_capacity(len);
    if httlib_huffman::encode(&decoded, &mut again).is_err() || again != text {
        return Err(Error("a Huffman string with bad padding"));
    }
    Ok(Cow::Owned(decoded))
}

#[cfg(test)]
mod tests;
