//! Points of docs/PROTOCOL.md that a peer written from it alone has to get right, checked on
//! the wire with hand-built frames: serial 0, frames a client never sends, CANCEL of a
//! streaming call, zero-length holes and grants.

mod common;

use common::{
    PROMPTLY, RawFrame, quick_server_config, raw_connect, raw_frame, read_non_ping, send, start,
};
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::test_program::proto::{EchoRequest, SinkReply, SourceRequest};
use ferry_actors::{ErrorCode, Side};
use prost::Message;
use tokio::net::TcpStream;

const TEST: u32 = 0x7465_7374;
const CONTROL: u32 = 0x6672_7279;
const GOAWAY: u32 = 2;
const ECHO: u32 = 1;
const SLEEP: u32 = 2;
const SINK: u32 = 4;
const SOURCE: u32 = 5;

const CALL: u32 = 0;
const REPLY: u32 = 1;
const MESSAGE: u32 = 2;
const STREAM: u32 = 3;
const STREAM_HOLE: u32 = 6;
const CREDIT: u32 = 7;
const CANCEL: u32 = 8;

const OK: u32 = 0;
const ERROR: u32 = 1;
const CONTINUE: u32 = 2;

/// Sleep for 60 s: a call that stays open.
const SIXTY_SECONDS: [u8; 4] = [0x08, 0xe0, 0xd4, 0x03];

async fn next(stream: &mut TcpStream) -> RawFrame {
    tokio::time::timeout(PROMPTLY, read_non_ping(stream))
        .await
        .expect("the server answers in time")
        .expect("the connection stays open")
}

/// The next frame that is not a CREDIT.
async fn next_but_credit(stream: &mut TcpStream) -> RawFrame {
    loop {
        let frame = next(stream).await;
        if frame.kind != CREDIT {
            return frame;
        }
    }
}

fn body(frame: &RawFrame) -> ErrorBody {
    ErrorBody::decode(&frame.payload[..]).expect("an error body")
}

/// An Echo on `serial` is answered and is the next frame: nothing else was pending.
async fn echo_is_next(stream: &mut TcpStream, serial: u32) {
    let request = EchoRequest {
        payload: b"ping".to_vec().into(),
    }
    .encode_to_vec();
    send(
        stream,
        &raw_frame(TEST, 1, ECHO, CALL, serial, OK, &request),
    )
    .await;
    let reply = next(stream).await;
    assert_eq!(
        (reply.kind, reply.serial, reply.status),
        (REPLY, serial, OK),
        "{reply:?}"
    );
}

/// Section 5: serial 0 is the connection's; a CALL on it gets GOAWAY PROTOCOL_VIOLATION and
/// the connection closes (there is no call to answer).
#[actix_rt::test]
async fn a_call_on_serial_zero_gets_goaway_protocol_violation() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(TEST, 1, ECHO, CALL, 0, OK, &[])).await;
    let goaway = next(&mut stream).await;
    assert_eq!(
        (
            goaway.program,
            goaway.procedure,
            goaway.kind,
            goaway.serial,
            goaway.status
        ),
        (CONTROL, GOAWAY, MESSAGE, 0, ERROR),
        "{goaway:?}"
    );
    assert_eq!(body(&goaway).code, ErrorCode::ProtocolViolation as i32);
    let after = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap();
    assert!(after.is_none(), "a frame after GOAWAY: {after:?}");
}

/// Section 8: REPLY and MESSAGE (other than control messages) are never sent by a client. On
/// an open serial the call ends with REPLY/ERROR PROTOCOL_VIOLATION; on a serial that is not
/// open nothing is answered; the connection stays up either way.
#[actix_rt::test]
async fn a_reply_or_message_from_the_client_ends_that_call_only() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    for (serial, kind) in [(3, REPLY), (4, MESSAGE)] {
        send(
            &mut stream,
            &raw_frame(TEST, 1, SLEEP, CALL, serial, OK, &SIXTY_SECONDS),
        )
        .await;
        send(
            &mut stream,
            &raw_frame(TEST, 1, SLEEP, kind, serial, OK, &[]),
        )
        .await;
        let reply = next(&mut stream).await;
        assert_eq!(
            (reply.kind, reply.serial, reply.status),
            (REPLY, serial, ERROR),
            "{reply:?}"
        );
        assert_eq!(body(&reply).code, ErrorCode::ProtocolViolation as i32);
    }
    // Not open: ignored.
    send(&mut stream, &raw_frame(TEST, 1, ECHO, REPLY, 9, OK, &[])).await;
    send(&mut stream, &raw_frame(TEST, 1, ECHO, MESSAGE, 10, OK, &[])).await;
    echo_is_next(&mut stream, 11).await;
    assert_eq!(server.handle.counters().protocol_violations.get(), 4);
}

/// Sections 7.3 and 7.6: a CANCEL of a streaming call is answered REPLY/ERROR CANCELLED (raised
/// by the client), and the serial stays the call's until the client's closing STREAM/ERROR;
/// then it may be reused.
#[actix_rt::test]
async fn a_cancel_of_an_upload_is_answered_cancelled_and_waits_for_its_closing_frame() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(TEST, 1, SINK, CALL, 5, OK, &[])).await;
    let credit = next(&mut stream).await;
    assert_eq!((credit.kind, credit.serial), (CREDIT, 5), "{credit:?}");
    send(&mut stream, &raw_frame(TEST, 1, SINK, CANCEL, 5, OK, &[])).await;
    let reply = next_but_credit(&mut stream).await;
    assert_eq!((reply.kind, reply.serial, reply.status), (REPLY, 5, ERROR));
    let error = body(&reply);
    assert_eq!(error.code, ErrorCode::Cancelled as i32, "{error:?}");
    assert_eq!(error.side, Side::Client as i32, "{error:?}");
    // Still open on the server: a CALL reusing serial 5 now is a protocol violation.
    send(&mut stream, &raw_frame(TEST, 1, ECHO, CALL, 5, OK, &[])).await;
    let early = next_but_credit(&mut stream).await;
    assert_eq!((early.kind, early.serial, early.status), (REPLY, 5, ERROR));
    assert_eq!(body(&early).code, ErrorCode::ProtocolViolation as i32);
    // Data in flight is discarded; the closing frame frees the serial.
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, STREAM, 5, CONTINUE, b"in flight"),
    )
    .await;
    let closing = ErrorBody {
        code: ErrorCode::Aborted as i32,
        ..Default::default()
    }
    .encode_to_vec();
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, STREAM, 5, ERROR, &closing),
    )
    .await;
    echo_is_next(&mut stream, 5).await;
}

/// Sections 7.4 and 7.5: a hole of length 0 is no data (it costs its 40 bytes of credit), and
/// a CREDIT of 0 grants nothing; neither is an error.
#[actix_rt::test]
async fn a_zero_length_hole_and_a_zero_credit_are_accepted_and_change_nothing() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(TEST, 1, SINK, CALL, 1, OK, &[])).await;
    let credit = next(&mut stream).await;
    assert_eq!((credit.kind, credit.serial), (CREDIT, 1), "{credit:?}");
    let empty_hole = [0u8; 12];
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, STREAM_HOLE, 1, CONTINUE, &empty_hole),
    )
    .await;
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, STREAM, 1, CONTINUE, b"five!"),
    )
    .await;
    send(&mut stream, &raw_frame(TEST, 1, SINK, STREAM, 1, OK, &[])).await;
    let reply = next_but_credit(&mut stream).await;
    assert_eq!(
        (reply.kind, reply.serial, reply.status),
        (REPLY, 1, OK),
        "{reply:?}"
    );
    let sunk = SinkReply::decode(&reply.payload[..]).unwrap();
    assert_eq!((sunk.bytes, sunk.hole_bytes), (5, 0));

    let request = SourceRequest {
        length: 100,
        ..Default::default()
    }
    .encode_to_vec();
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, CALL, 2, OK, &request),
    )
    .await;
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, CREDIT, 2, OK, &0u32.to_be_bytes()),
    )
    .await;
    // Nothing may be sent on a grant of 0: the next frame answers the Echo.
    echo_is_next(&mut stream, 3).await;
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, CREDIT, 2, OK, &(1u32 << 20).to_be_bytes()),
    )
    .await;
    let mut received = 0;
    loop {
        let frame = next(&mut stream).await;
        assert_eq!((frame.kind, frame.serial), (STREAM, 2), "{frame:?}");
        if frame.status == OK {
            break;
        }
        received += frame.payload.len();
    }
    assert_eq!(received, 100);
}
