//! A tonic codec for messages known only by their descriptor: tonic's own
//! `ProstCodec` needs `Default`, which a `DynamicMessage` cannot provide.
//! It encodes owned messages, or shared ones (`Arc`) that a retry can send
//! again without a copy. Answers are not decoded here: they come out as
//! their wire bytes (a slice of tonic's buffer, no copy), which the
//! response side renders directly or decodes itself.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes request messages (`E`: a `DynamicMessage` or an [`Outgoing`],
/// owned or in an `Arc`); yields each answer's bytes.
#[derive(Debug)]
pub struct DynamicCodec<E = DynamicMessage> {
    response: MessageDescriptor,
    encodes: PhantomData<fn(E)>,
}

impl<E> Clone for DynamicCodec<E> {
    fn clone(&self) -> Self {
        Self { response: self.response.clone(), encodes: PhantomData }
    }
}

impl DynamicCodec {
    pub fn new(response: MessageDescriptor) -> Self {
        Self { response, encodes: PhantomData }
    }

    /// The same codec for shared unary requests.
    pub fn shared(self) -> DynamicCodec<Arc<Outgoing>> {
        DynamicCodec { response: self.response, encodes: PhantomData }
    }
}

impl<E> DynamicCodec<E> {
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

/// What the encoder can write.
pub trait Encode {
    fn encode_into(&self, dst: &mut EncodeBuf<'_>);
}

impl Encode for DynamicMessage {
    fn encode_into(&self, dst: &mut EncodeBuf<'_>) {
        // `Message::encode` first walks the whole message for its length,
        // only to check that the buffer has room (about 40% of encoding a
        // `DynamicMessage`). An `EncodeBuf` grows as it is written, so that
        // check cannot fail: `encode_raw` writes the same bytes without it.
        self.encode_raw(dst);
    }
}

impl Encode for Outgoing {
    fn encode_into(&self, dst: &mut EncodeBuf<'_>) {
        match self {
            Outgoing::Message(message) => message.encode_into(dst),
            Outgoing::Encoded(bytes) => dst.put_slice(bytes),
        }
    }
}

impl<T: Encode> Encode for Arc<T> {
    fn encode_into(&self, dst: &mut EncodeBuf<'_>) {
        T::encode_into(self, dst);
    }
}

impl<E: Encode + Send + 'static> Codec for DynamicCodec<E> {
    type Encode = E;
    type Decode = Bytes;
    type Encoder = DynamicEncoder<E>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

#[derive(Debug)]
pub struct DynamicEncoder<E>(PhantomData<fn(E)>);

impl<E: Encode> Encoder for DynamicEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode_into(dst);
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
