//! Fixed-layout payloads (STREAM_HOLE, CREDIT) accept exactly their size, and protobuf bodies
//! that do not parse are reported as `PayloadError::Protobuf` naming the expected message.

use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Shutdown, Side};
use ferry_codec::{
    CREDIT_LEN, Credit, HOLE_LEN, Hole, PayloadError, decode_message, encode_message,
};

#[test]
fn hole_layout_is_u64_length_then_u32_flags_big_endian() {
    let hole = Hole {
        length: 0x0102_0304_0506_0708,
        flags: 0x090a_0b0c,
    };
    let bytes = hole.encode();
    assert_eq!(bytes.len(), HOLE_LEN);
    assert_eq!(&bytes[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(Hole::decode(&bytes).expect("hole"), hole);
}

#[test]
fn hole_of_the_wrong_length_is_rejected() {
    for len in [0usize, 1, 8, 11, 13, 24] {
        match Hole::decode(&vec![0u8; len]) {
            Err(PayloadError::HoleLength(got)) => assert_eq!(got, len),
            other => panic!("length {len}: expected HoleLength, got {other:?}"),
        }
    }
}

#[test]
fn credit_layout_is_u32_big_endian() {
    let bytes = Credit(0x0010_0000).encode();
    assert_eq!(bytes.len(), CREDIT_LEN);
    assert_eq!(&bytes[..], &[0x00, 0x10, 0x00, 0x00]);
    assert_eq!(Credit::decode(&bytes).expect("credit"), Credit(0x0010_0000));
}

#[test]
fn credit_of_the_wrong_length_is_rejected() {
    for len in [0usize, 1, 3, 5, 8] {
        match Credit::decode(&vec![0u8; len]) {
            Err(PayloadError::CreditLength(got)) => assert_eq!(got, len),
            other => panic!("length {len}: expected CreditLength, got {other:?}"),
        }
    }
}

#[test]
fn protobuf_bodies_round_trip() {
    let error = ErrorBody {
        code: ErrorCode::ResourceExhausted as i32,
        message: "too many streams".into(),
        side: Side::Client as i32,
        layer: Layer::Stream as i32,
    };
    assert_eq!(
        decode_message::<ErrorBody>(&encode_message(&error)).expect("decode"),
        error
    );

    let shutdown = Shutdown {
        drain_millis: 30_000,
        reason: "upgrade".into(),
    };
    assert_eq!(
        decode_message::<Shutdown>(&encode_message(&shutdown)).expect("decode"),
        shutdown
    );
}

/// An empty payload is a valid protobuf message with every field at its default.
#[test]
fn an_empty_payload_decodes_to_defaults() {
    assert_eq!(
        decode_message::<ErrorBody>(&[]).expect("empty"),
        ErrorBody::default()
    );
}

#[test]
fn malformed_protobuf_is_a_protobuf_error_naming_the_message() {
    let malformed: [&[u8]; 4] = [
        // Field 2 (string) announces 14 bytes, only 2 follow.
        &[0x12, 0x0e, b'n', b'o'],
        // A varint that never ends.
        &[0x08, 0xff, 0xff, 0xff],
        // Wire type 7 does not exist.
        &[0x0f],
        // Field number 0 is invalid.
        &[0x00, 0x01],
    ];
    for bytes in malformed {
        match decode_message::<ErrorBody>(bytes) {
            Err(PayloadError::Protobuf { message, .. }) => {
                assert!(message.ends_with("ErrorBody"), "named {message}");
            }
            other => panic!("{bytes:02x?}: expected Protobuf error, got {other:?}"),
        }
    }
}

/// A string field that is not UTF-8 is malformed too; it must not be accepted lossily.
#[test]
fn invalid_utf8_in_a_string_field_is_rejected() {
    let bytes = [0x12, 0x02, 0xff, 0xfe];
    assert!(matches!(
        decode_message::<ErrorBody>(&bytes),
        Err(PayloadError::Protobuf { .. })
    ));
}
