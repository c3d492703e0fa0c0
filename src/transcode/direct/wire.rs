//! Writing protobuf wire format, shared by the direct encoders: field keys
//! encoded once at load, varints, and lengths of submessages written after
//! their content.

/// A field key (number and wire type), encoded once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tag {
    bytes: [u8; 5],
    len: u8,
}

impl Tag {
    pub(super) fn new(number: u32, wire_type: u32) -> Tag {
        let mut bytes = [0u8; 5];
        let mut v = (u64::from(number) << 3) | u64::from(wire_type);
        let mut len = 0;
        while v >= 0x80 && len < 4 {
            bytes[len] = (v as u8) | 0x80;
            v >>= 7;
            len += 1;
        }
        bytes[len] = v as u8;
        Tag { bytes, len: len as u8 + 1 }
    }

    pub(super) fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.bytes[..usize::from(self.len)]);
    }
}

pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes the length of what follows the placeholder byte at `len_at`,
/// widening it when the length needs more than one byte.
pub(super) fn close_len(out: &mut Vec<u8>, len_at: usize) {
    let len = out.len() - len_at - 1;
    if len < 0x80 {
        out[len_at] = len as u8;
        return;
    }
    let mut bytes = [0u8; 10];
    let mut n = 0;
    let mut v = len as u64;
    while v >= 0x80 {
        bytes[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    bytes[n] = v as u8;
    out[len_at] = bytes[0];
    out.splice(len_at + 1..len_at + 1, bytes[1..=n].iter().copied());
}
