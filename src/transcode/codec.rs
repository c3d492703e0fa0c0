//! A tonic codec for `DynamicMessage`: tonic's own `ProstCodec` needs
//! `Default`, which a message known only by its descriptor cannot provide.
//! It encodes owned messages, or shared ones (`Arc`) that a retry can send
//! again without a copy.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::Arc;

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Encodes any `DynamicMessage` (`E`: owned, or an `Arc` of one); decodes
/// into the descriptor it was built for.
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
    /// The message type it decodes.
    pub fn output(&self) -> &MessageDescriptor {
        &self.response
    }
}

impl<E: Borrow<DynamicMessage> + Send + 'static> Codec for DynamicCodec<E> {
    type Encode = E;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder<E>;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.response.clone())
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

#[derive(Debug)]
pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let mut msg = DynamicMessage::new(self.0.clone());
        msg.merge(src).map_err(|e| Status::internal(format!("decoding response: {e}")))?;
        Ok(Some(msg))
    }
}
