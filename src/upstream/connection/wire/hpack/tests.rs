//! The decoder against loona-hpack's encoder (which indexes, so the
//! dynamic table and its evictions are exercised) and httlib-huffman's
//! encoder, and against random bytes.

use proptest::prelude::*;

use super::*;

/// A field as bytes.
type Bytes2 = (Vec<u8>, Vec<u8>);

/// Every field of `block` as bytes.
fn decoded(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<Bytes2>, Error> {
    let mut fields = Vec::new();
    decoder.decode(block, |field| {
        fields.push(match field {
            Field::Header(name, value) => (name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()),
            Field::Pseudo(name, value) => (name.to_vec(), value.to_vec()),
            Field::Invalid => (b"<invalid>".to_vec(), Vec::new()),
        });
    })?;
    Ok(fields)
}

#[test]
fn the_static_table_is_rfc_7541s() {
    // loona-hpack's table is the reference: each index decoded by both.
    let mut reference = loona_hpack::Decoder::new();
    for index in 1..=61u8 {
        let expected = reference.decode(&[0x80 | index]).expect("reference decodes");
        assert_eq!(decoded(&mut Decoder::default(), &[0x80 | index]).expect("decodes"), expected, "index {index}");
    }
    assert!(decoded(&mut Decoder::default(), &[0x80]).is_err(), "index 0");
    assert!(decoded(&mut Decoder::default(), &[0x80 | 62]).is_err(), "past an empty dynamic table");
}

#[test]
fn huffman_strings_decode() {
    for text in ["", "0", "application/grpc", "Mon, 07 Dec 2026 22:19:05 GMT", "naïve ünïcode \u{1}\u{ff}"] {
        let mut coded = Vec::new();
        httlib_huffman::encode(text.as_bytes(), &mut coded).expect("encodes");
        // Literal without indexing, new name `x-h`, value Huffman-coded.
        let mut block = vec![0x00, 3, b'x', b'-', b'h'];
        assert!(coded.len() < 127);
        block.push(0x80 | coded.len() as u8);
        block.extend_from_slice(&coded);
        let fields = decoded(&mut Decoder::default(), &block).expect("decodes");
        let expected = match HeaderValue::from_bytes(text.as_bytes()) {
            Ok(_) => (b"x-h".to_vec(), text.as_bytes().to_vec()),
            Err(_) => (b"<invalid>".to_vec(), Vec::new()),
        };
        assert_eq!(fields, [expected], "{text:?}");
    }
    // Padding that is not the EOS prefix.
    assert!(decoded(&mut Decoder::default(), &[0x00, 1, b'x', 0x81, 0x00]).is_err());
}

#[test]
fn table_size_updates_come_first_and_stay_within_the_limit() {
    let mut decoder = Decoder::default();
    // Add an entry (`x-a: 1`, with indexing), then shrink the table to 0:
    // the entry is gone.
    let added = [0x40, 3, b'x', b'-', b'a', 1, b'1'];
    assert_eq!(decoded(&mut decoder, &added).expect("decodes").len(), 1);
    assert!(decoded(&mut decoder, &[0x80 | 62]).is_ok());
    assert!(decoded(&mut decoder, &[0x20]).is_ok());
    assert!(decoded(&mut decoder, &[0x80 | 62]).is_err(), "evicted by the size update");
    // After a field, or over 4096: refused.
    assert!(decoded(&mut decoder, &[0x82, 0x20]).is_err());
    assert!(decoded(&mut decoder, &[0x3f, 0xe2, 0x1f]).is_err(), "4097");
    assert!(decoded(&mut decoder, &[0x3f, 0xe1, 0x1f]).is_ok(), "4096");
}

#[test]
fn integers_past_the_limit_or_cut_short_are_refused() {
    assert!(decoded(&mut Decoder::default(), &[0xff]).is_err());
    assert!(decoded(&mut Decoder::default(), &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
    // A string longer than what is left.
    assert!(decoded(&mut Decoder::default(), &[0x00, 5, b'x']).is_err());
}

fn field() -> impl Strategy<Value = Bytes2> {
    let name = prop_oneof![
        Just(b":status".to_vec()),
        Just(b"content-type".to_vec()),
        Just(b"grpc-status".to_vec()),
        Just(b"grpc-message".to_vec()),
        Just(b"date".to_vec()),
        "x-[a-z]{1,12}".prop_map(String::into_bytes),
    ];
    (name, "[ -~]{0,300}".prop_map(String::into_bytes))
}

proptest! {
    /// Blocks in sequence from one encoder, decoded by one decoder: the
    /// same fields, in order, while the table fills, evicts and indexes.
    #[test]
    fn what_an_indexing_encoder_sends_decodes_to_the_same_fields(
        blocks in proptest::collection::vec(proptest::collection::vec(field(), 0..12), 1..12),
    ) {
        let mut encoder = loona_hpack::Encoder::new();
        let mut decoder = Decoder::default();
        for fields in &blocks {
            let block = encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
            let got = decoded(&mut decoder, &block).expect("decodes");
            let expected: Vec<Bytes2> = fields
                .iter()
                .map(|(n, v)| match n.first() {
                    Some(b':') => (n.clone(), v.clone()),
                    _ if HeaderValue::from_bytes(v).is_ok() => (n.clone(), v.clone()),
                    _ => (b"<invalid>".to_vec(), Vec::new()),
                })
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    /// The decoder faces the backend: no input may panic it (the release
    /// build aborts on a panic), whatever state earlier blocks left.
    #[test]
    fn any_bytes_decode_or_fail_without_a_panic(blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..4)) {
        let mut decoder = Decoder::default();
        for block in &blocks {
            let _ = decoder.decode(block, |_| {});
        }
    }
}
