//! Every frame constructor survives Encoder -> Decoder unchanged, and the header fields each
//! constructor sets are the ones the protocol assigns to that kind of frame.

use bytes::{Bytes, BytesMut};
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};
use ferry_codec::{
    Credit, Frame, FrameCodec, Hole, MIN_FRAME_LEN, MessageType, Route, Status, decode_message,
};
use tokio_util::codec::{Decoder, Encoder};

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);

fn error_body() -> ErrorBody {
    ErrorBody {
        code: ErrorCode::Aborted as i32,
        message: "disk went away".into(),
        side: Side::Server as i32,
        layer: Layer::Application as i32,
    }
}

/// Encodes `frame`, decodes it back and returns the decoded frame, asserting that exactly the
/// encoded bytes were consumed and that the encoder's bytes equal `wire_parts`.
fn round_trip(frame: &Frame) -> Frame {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(frame.clone(), &mut buf).expect("encode");
    assert_eq!(buf.len(), frame.wire_len());

    let (head, payload) = frame.wire_parts();
    assert_eq!(&buf[..MIN_FRAME_LEN], &head[..]);
    assert_eq!(&buf[MIN_FRAME_LEN..], &payload[..]);

    let decoded = codec
        .decode(&mut buf)
        .expect("decode")
        .expect("a whole frame");
    assert!(buf.is_empty(), "decoder left {} bytes behind", buf.len());
    assert_eq!(codec.decode(&mut buf).expect("decode empty"), None);
    decoded
}

fn assert_kind(frame: &Frame, kind: MessageType, serial: u32, status: Status) {
    assert_eq!(frame.header.kind, kind);
    assert_eq!(frame.header.serial, serial);
    assert_eq!(frame.header.status, status);
    assert_eq!(frame.route(), ROUTE);
}

#[test]
fn call() {
    let frame = Frame::call(ROUTE, 1, Bytes::from_static(b"request body"));
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Call, 1, Status::Ok);
    assert_eq!(decoded.payload, &b"request body"[..]);
}

#[test]
fn reply_ok() {
    let frame = Frame::reply_ok(ROUTE, 2, Bytes::from_static(b"answer"));
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Reply, 2, Status::Ok);
}

#[test]
fn reply_error_carries_a_decodable_error_body() {
    let frame = Frame::reply_error(ROUTE, 3, &error_body());
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Reply, 3, Status::Error);
    let body: ErrorBody = decode_message(&decoded.payload).expect("ErrorBody");
    assert_eq!(body, error_body());
}

#[test]
fn message() {
    let frame = Frame::message(ROUTE, 0, Bytes::from_static(b"event"));
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Message, 0, Status::Ok);
}

#[test]
fn stream_data() {
    let data = Bytes::from(vec![0xa5; 4096]);
    let frame = Frame::stream_data(ROUTE, 7, data.clone());
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Stream, 7, Status::Continue);
    assert_eq!(decoded.payload, data);
}

#[test]
fn stream_finish_is_empty() {
    let frame = Frame::stream_finish(ROUTE, 7);
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Stream, 7, Status::Ok);
    assert!(decoded.payload.is_empty());
    assert_eq!(decoded.wire_len(), MIN_FRAME_LEN);
}

#[test]
fn stream_abort_carries_a_decodable_error_body() {
    let frame = Frame::stream_abort(ROUTE, 7, &error_body());
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Stream, 7, Status::Error);
    let body: ErrorBody = decode_message(&decoded.payload).expect("ErrorBody");
    assert_eq!(body, error_body());
}

#[test]
fn hole() {
    let hole = Hole {
        length: u64::MAX - 1,
        flags: 0xdead_beef,
    };
    let frame = Frame::hole(ROUTE, 7, hole);
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::StreamHole, 7, Status::Continue);
    assert_eq!(Hole::decode(&decoded.payload).expect("hole"), hole);
    assert_eq!(
        Hole::new(42),
        Hole {
            length: 42,
            flags: 0
        }
    );
}

#[test]
fn credit() {
    let frame = Frame::credit(ROUTE, 7, Credit(1 << 20));
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Credit, 7, Status::Ok);
    assert_eq!(
        Credit::decode(&decoded.payload).expect("credit"),
        Credit(1 << 20)
    );
}

#[test]
fn cancel_is_empty() {
    let frame = Frame::cancel(ROUTE, 3);
    let decoded = round_trip(&frame);
    assert_eq!(decoded, frame);
    assert_kind(&decoded, MessageType::Cancel, 3, Status::Ok);
    assert!(decoded.payload.is_empty());
}

/// Stream, credit and cancel frames reuse the call's routing; `sibling` must keep program,
/// version, procedure and serial and replace only type, status and payload.
#[test]
fn sibling_keeps_routing_and_serial() {
    let call = Frame::call(ROUTE, 9, Bytes::from_static(b"open"));
    let data = call.sibling(
        MessageType::Stream,
        Status::Continue,
        Bytes::from_static(b"x"),
    );
    assert_eq!(data, Frame::stream_data(ROUTE, 9, Bytes::from_static(b"x")));
    assert_eq!(round_trip(&data), data);
}

/// Frames that arrive back to back in one read must come out one by one, in order, with the
/// remainder of the buffer left for the next call.
#[test]
fn several_frames_in_one_buffer_decode_in_order() {
    let frames = vec![
        Frame::call(ROUTE, 1, Bytes::from_static(b"first")),
        Frame::stream_data(ROUTE, 1, Bytes::from(vec![1u8; 300])),
        Frame::hole(ROUTE, 1, Hole::new(1 << 30)),
        Frame::credit(ROUTE, 1, Credit(65536)),
        Frame::stream_finish(ROUTE, 1),
        Frame::cancel(ROUTE, 2),
        Frame::reply_error(ROUTE, 1, &error_body()),
        Frame::message(ROUTE, 0, Bytes::new()),
    ];
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for frame in &frames {
        codec.encode(frame.clone(), &mut buf).expect("encode");
    }
    let total: usize = frames.iter().map(Frame::wire_len).sum();
    assert_eq!(buf.len(), total);

    let mut decoded = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("decode") {
        decoded.push(frame);
    }
    assert_eq!(decoded, frames);
    assert!(buf.is_empty());
}
