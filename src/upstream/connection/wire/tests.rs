//! The connection's own parts; calls end to end are in `connection`'s tests.

use super::*;

#[test]
fn integers_take_their_prefix_then_seven_bits_a_byte() {
    // RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix.
    let mut out = Vec::new();
    integer(&mut out, 0, 5, 10);
    assert_eq!(out, [10]);
    out.clear();
    integer(&mut out, 0, 5, 1337);
    assert_eq!(out, [31, 154, 10]);
    out.clear();
    integer(&mut out, 0xe0, 5, 31);
    assert_eq!(out, [0xff, 0]);
}

#[test]
fn what_this_side_encodes_decodes_to_the_same_fields() {
    let target = Target::new(&"https://backend.example:8443".parse().expect("uri"), None);
    let (head, path_at) = head_block(&target);
    let mut block = head[..path_at].to_vec();
    indexed_name(&mut block, 4, b"/pkg.Service/Method");
    block.extend_from_slice(&head[path_at..]);
    new_name(&mut block, b"x-request-id", &[b'a'; 300]);
    let mut decoder = loona_hpack::Decoder::new();
    let fields = decoder.decode(&block).expect("decodes");
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).expect("name"), String::from_utf8(v).expect("value")))
        .collect();
    let expected = [
        (":method", "POST".to_owned()),
        // No TLS configured: the scheme follows the connection, not the URL.
        (":scheme", "http".to_owned()),
        (":authority", "backend.example:8443".to_owned()),
        (":path", "/pkg.Service/Method".to_owned()),
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
        ("user-agent", concat!("protogate/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("x-request-id", "a".repeat(300)),
    ];
    let expected: Vec<(String, String)> = expected.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    assert_eq!(fields, expected);
}

#[test]
fn padding_is_cut_off_and_padding_past_the_frame_refused() {
    let padded = Bytes::from_static(&[2, b'h', b'i', 0, 0]);
    assert_eq!(&unpad(PADDED, padded).ok().expect("unpadded")[..], b"hi");
    assert_eq!(&unpad(0, Bytes::from_static(b"as is")).ok().expect("as is")[..], b"as is");
    assert!(unpad(PADDED, Bytes::from_static(&[4, 1, 2])).is_err());
    assert!(unpad(PADDED, Bytes::new()).is_err());
}
