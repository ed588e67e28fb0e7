//! Test vectors: frames built with the library must encode to exactly these bytes, and these
//! bytes must decode to exactly those frames. The hex was written by hand from the wire spec
//! (length word counting itself, then program, version, procedure, type, serial, status as
//! big-endian u32), not produced by the code under test, so it pins the wire format.
//!
//! The constants are grouped in 4-byte words so they can be pasted into docs/PROTOCOL.md.

use bytes::{Bytes, BytesMut};
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};
use ferry_codec::{Credit, Frame, FrameCodec, Hole, Route, decode_message, encode_message};
use tokio_util::codec::{Decoder, Encoder};

/// CALL test/1/Echo, serial 1, payload EchoRequest{payload: "hi"} = 0a 02 68 69.
const CALL_ECHO: &str = "00000020 74657374 00000001 00000001 00000000 00000001 00000000 \
                             0a026869";

/// REPLY serial 1, status ERROR, payload ErrorBody{code: NOT_FOUND, message: "no such volume",
/// side: SERVER, layer: APPLICATION} = 08 05 | 12 0e "no such volume" | 18 02 | 20 04.
const REPLY_ERROR_NOT_FOUND: &str = "00000032 74657374 00000001 00000001 00000001 \
                                         00000001 00000001 0805120e 6e6f2073 75636820 \
                                         766f6c75 6d651802 2004";

/// STREAM CONTINUE test/1/4, serial 7, 5 bytes of data "ferry".
const STREAM_DATA: &str = "00000021 74657374 00000001 00000004 00000003 00000007 \
                               00000002 66657272 79";

/// STREAM_HOLE CONTINUE test/1/4, serial 7, hole of 1 GiB (u64 length), flags 0.
const STREAM_HOLE_1GIB: &str = "00000028 74657374 00000001 00000004 00000006 00000007 \
                                    00000002 00000000 40000000 00000000";

/// STREAM_HOLE CONTINUE volu/1/5 (UPLOAD), serial 9, a KEEP range of 256 KiB: flags 1.
const STREAM_KEEP_256KIB: &str = "00000028 766f6c75 00000001 00000005 00000006 00000009 \
                                  00000002 00000000 00040000 00000001";

/// CREDIT OK test/1/4, serial 7, granting 1 MiB.
const CREDIT_1MIB: &str = "00000020 74657374 00000001 00000004 00000007 00000007 \
                               00000000 00100000";

/// CANCEL OK test/1/2, serial 3, empty.
const CANCEL: &str = "0000001c 74657374 00000001 00000002 00000008 00000003 00000000";

/// STREAM OK (finish) test/1/4, serial 7, empty.
const STREAM_FINISH: &str = "0000001c 74657374 00000001 00000004 00000003 00000007 00000000";

/// STREAM OK (finish) volu/1/5 (UPLOAD), serial 9, with a trailer: UploadFinish{checksum:
/// BLAKE3 of the empty content} = 0a 20 + 32 bytes.
const STREAM_FINISH_TRAILER: &str = "0000003e 766f6c75 00000001 00000005 00000003 00000009 \
                                     00000000 0a20af13 49b9f5f9 a1a6a040 4dea36dc c9499bcb \
                                     25c9adc1 12b7cc9a 93cae41f 3262";

/// STREAM ERROR (abort) test/1/4, serial 7, payload ErrorBody{code: CANCELLED, message: "stop",
/// side: CLIENT, layer: STREAM} = 08 0a | 12 04 "stop" | 18 01 | 20 03.
const STREAM_ABORT: &str = "00000028 74657374 00000001 00000004 00000003 00000007 \
                                00000001 080a1204 73746f70 18012003";

/// Keepalive PING: MESSAGE keep/1/1, serial 0, status OK, empty.
const KEEPALIVE_PING: &str = "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000";

/// The test program, "test" in ASCII.
const TEST_PROGRAM: u32 = 0x7465_7374;
/// The keepalive program, "keep" in ASCII.
const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
/// The volume program, "volu" in ASCII.
const VOLUME_PROGRAM: u32 = 0x766f_6c75;

/// The test program's Echo request (owned by the test program's .proto, not the wire
/// protocol); mirrored here so the vector exercises a real protobuf encoder.
#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(bytes = "bytes", tag = "1")]
    payload: Bytes,
}

fn unhex(vector: &str) -> Vec<u8> {
    let digits: String = vector.split_whitespace().collect();
    hex::decode(digits).expect("vector is valid hex")
}

/// Asserts that `frame` encodes to `vector` and that `vector` decodes to `frame`.
fn check(frame: Frame, vector: &str) {
    let expected = unhex(vector);
    let mut codec = FrameCodec::default();

    let mut encoded = BytesMut::new();
    codec.encode(frame.clone(), &mut encoded).expect("encode");
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(&expected),
        "encoding of {frame:?}"
    );

    let (head, payload) = frame.wire_parts();
    assert_eq!(
        [&head[..], &payload[..]].concat(),
        expected,
        "wire_parts of {frame:?}"
    );

    let mut wire = BytesMut::from(&expected[..]);
    let decoded = codec
        .decode(&mut wire)
        .expect("decode")
        .expect("whole frame");
    assert_eq!(decoded, frame);
    assert!(wire.is_empty());
}

#[test]
fn call_echo() {
    let request = EchoRequest {
        payload: Bytes::from_static(b"hi"),
    };
    let frame = Frame::call(Route::new(TEST_PROGRAM, 1, 1), 1, encode_message(&request));
    check(frame, CALL_ECHO);
}

#[test]
fn reply_error_not_found() {
    let body = ErrorBody {
        code: ErrorCode::NotFound as i32,
        message: "no such volume".into(),
        side: Side::Server as i32,
        layer: Layer::Application as i32,
    };
    let frame = Frame::reply_error(Route::new(TEST_PROGRAM, 1, 1), 1, &body);
    check(frame, REPLY_ERROR_NOT_FOUND);

    let payload = &unhex(REPLY_ERROR_NOT_FOUND)[28..];
    assert_eq!(
        decode_message::<ErrorBody>(payload).expect("ErrorBody"),
        body
    );
}

#[test]
fn stream_data() {
    let frame = Frame::stream_data(
        Route::new(TEST_PROGRAM, 1, 4),
        7,
        Bytes::from_static(b"ferry"),
    );
    check(frame, STREAM_DATA);
}

#[test]
fn stream_hole_1gib() {
    let frame = Frame::hole(Route::new(TEST_PROGRAM, 1, 4), 7, Hole::new(0x4000_0000));
    check(frame, STREAM_HOLE_1GIB);
}

#[test]
fn stream_keep_256kib() {
    let keep = Hole::keep(256 * 1024);
    let frame = Frame::hole(Route::new(VOLUME_PROGRAM, 1, 5), 9, keep);
    check(frame, STREAM_KEEP_256KIB);
    let payload = &unhex(STREAM_KEEP_256KIB)[28..];
    let decoded = Hole::decode(payload).expect("a hole payload");
    assert!(decoded.is_keep() && decoded.length == 256 * 1024);
    assert!(!Hole::new(1).is_keep());
}

#[test]
fn credit_1mib() {
    let frame = Frame::credit(Route::new(TEST_PROGRAM, 1, 4), 7, Credit(0x0010_0000));
    check(frame, CREDIT_1MIB);
}

#[test]
fn cancel() {
    check(Frame::cancel(Route::new(TEST_PROGRAM, 1, 2), 3), CANCEL);
}

#[test]
fn stream_finish() {
    check(
        Frame::stream_finish(Route::new(TEST_PROGRAM, 1, 4), 7),
        STREAM_FINISH,
    );
}

/// The volume program's UploadFinish (owned by node/proto's volume.proto), mirrored like
/// EchoRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct UploadFinish {
    #[prost(bytes = "bytes", tag = "1")]
    checksum: Bytes,
}

#[test]
fn stream_finish_with_a_trailer() {
    let empty_content = Bytes::copy_from_slice(blake3_of_nothing());
    let trailer = encode_message(&UploadFinish {
        checksum: empty_content,
    });
    check(
        Frame::stream_finish_with(Route::new(VOLUME_PROGRAM, 1, 5), 9, trailer),
        STREAM_FINISH_TRAILER,
    );
}

/// BLAKE3 of no bytes, as published with the reference implementation.
fn blake3_of_nothing() -> &'static [u8] {
    &[
        0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9,
        0x49, 0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f,
        0x32, 0x62,
    ]
}

#[test]
fn stream_abort() {
    let body = ErrorBody {
        code: ErrorCode::Cancelled as i32,
        message: "stop".into(),
        side: Side::Client as i32,
        layer: Layer::Stream as i32,
    };
    check(
        Frame::stream_abort(Route::new(TEST_PROGRAM, 1, 4), 7, &body),
        STREAM_ABORT,
    );
}

#[test]
fn keepalive_ping() {
    let frame = Frame::message(Route::new(KEEPALIVE_PROGRAM, 1, 1), 0, Bytes::new());
    check(frame, KEEPALIVE_PING);
}

/// The program numbers are the ASCII spelling the docs give them.
#[test]
fn program_numbers_spell_their_names() {
    assert_eq!(&TEST_PROGRAM.to_be_bytes(), b"test");
    assert_eq!(&KEEPALIVE_PROGRAM.to_be_bytes(), b"keep");
    assert_eq!(&VOLUME_PROGRAM.to_be_bytes(), b"volu");
}
