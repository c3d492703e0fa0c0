//! A tonic codec for messages known only by their descriptor (streaming
//! calls): tonic's own `ProstCodec` needs `Default`, which a
//! `DynamicMessage` cannot provide. Answers are not decoded here: they come
//! out as their wire bytes (a slice of tonic's buffer, no copy), which the
//! response side renders directly or decodes itself. Unary calls do not go
//! through tonic: their request is framed by [`Outgoing::framed`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes request messages; yields each answer's bytes.
#[derive(Debug, Clone)]
pub struct DynamicCodec {
    response: MessageDescriptor,
}

impl DynamicCodec {
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response }
    }

    /// The message type of the answers.
    pub fn output(&self) -> &MessageDescriptor {
        &self.response
    }
}

/// A unary call's request: a message, or its wire bytes already written
/// (straight from the JSON body: `transcode::direct::json_in`).
#[derive(Debug, Clone)]
pub enum Outgoing {
    Message(DynamicMessage),
    Encoded(Bytes),
}

impl Outgoing {
    /// The message as one gRPC frame (uncompressed flag, length, bytes),
    /// ready to be sent as a unary call's whole request body.
    pub fn framed(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(match self {
            Outgoing::Message(_) => 256,
            Outgoing::Encoded(bytes) => 5 + bytes.len(),
        });
        out.put_bytes(0, 5);
        match self {
            // Written first and measured after: `encoded_len` would walk
            // the whole message once more.
            Outgoing::Message(message) => message.encode_raw(&mut out),
            Outgoing::Encoded(bytes) => out.put_slice(bytes),
        }
        let len = u32::try_from(out.len() - 5).unwrap_or(u32::MAX);
        out[1..5].copy_from_slice(&len.to_be_bytes());
        out.freeze()
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = Bytes;
    type Encoder = DynamicEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug)]
pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // `Message::encode` first walks the whole message for its length,
        // only to check that the buffer has room (about 40% of encoding a
        // `DynamicMessage`). An `EncodeBuf` grows as it is written, so that
        // check cannot fail: `encode_raw` writes the same bytes without it.
        item.encode_raw(dst);
        Ok(())
    }
}

/// An answer's wire bytes, as they came.
#[derive(Debug)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
