//! A tonic codec for messages known only by their descriptor: tonic's own
//! `ProstCodec` needs `Default`, which a `DynamicMessage` cannot provide.
//! It encodes owned messages, or shared ones (`Arc`) that a retry can send
//! again without a copy. Answers are not decoded here: they come out as
//! their wire bytes (a slice of tonic's buffer, no copy), which the
//! response side renders directly or decodes itself.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes any `DynamicMessage` (`E`: owned, or an `Arc` of one); yields
/// each answer's bytes.
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

    /// The same codec for shared request messages.
    pub fn shared(self) -> DynamicCodec<Arc<DynamicMessage>> {
        DynamicCodec { response: self.response, encodes: PhantomData }
    }
}

impl<E> DynamicCodec<E> {
    /// The message type of the answers.
    pub fn output(&self) -> &MessageDescriptor {
        &self.response
    }
}

impl<E: Borrow<DynamicMessage> + Send + 'static> Codec for DynamicCodec<E> {
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

impl<E: Borrow<DynamicMessage>> Encoder for DynamicEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        // `Message::encode` first walks the whole message for its length,
        // only to check that the buffer has room (about 40% of encoding a
        // `DynamicMessage`). An `EncodeBuf` grows as it is written, so that
        // check cannot fail: `encode_raw` writes the same bytes without it.
        item.borrow().encode_raw(dst);
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
