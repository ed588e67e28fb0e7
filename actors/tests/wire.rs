//! A client written against docs/PROTOCOL.md alone, with hand-built frames: the spec and the
//! server agree, and misbehaviour gets the documented answer.

mod common;

use common::{PROMPTLY, quick_server_config, raw_connect, raw_frame, read_non_ping, send, start};
use ferry_actors::ServerConfig;
use ferry_actors::codec::proto::ErrorBody;
use prost::Message;
use std::time::Duration;

const TEST: u32 = 0x7465_7374;
const CALL: u32 = 0;
const REPLY: u32 = 1;
const MESSAGE: u32 = 2;
const OK: u32 = 0;
const ERROR: u32 = 1;
const ECHO: u32 = 1;
const SLEEP: u32 = 2;

fn error_code(payload: &[u8]) -> i32 {
    ErrorBody::decode(payload).unwrap().code
}

#[actix_rt::test]
async fn a_hand_built_echo_call_gets_its_reply() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    // EchoRequest { payload: "hi" }: field 1, wire type 2, length 2.
    send(
        &mut stream,
        &raw_frame(TEST, 1, ECHO, CALL, 1, OK, &[0x0a, 0x02, b'h', b'i']),
    )
    .await;
    let reply = read_non_ping(&mut stream).await.unwrap();
    assert_eq!(
        (
            reply.program,
            reply.version,
            reply.procedure,
            reply.kind,
            reply.serial,
            reply.status
        ),
        (TEST, 1, ECHO, REPLY, 1, OK)
    );
    assert_eq!(reply.payload, [0x0a, 0x02, b'h', b'i']);
}

#[actix_rt::test]
async fn a_call_reusing_an_open_serial_is_refused_and_the_original_call_completes() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    // SleepRequest { millis: 300 }: field 1 varint 300 = ac 02.
    send(
        &mut stream,
        &raw_frame(TEST, 1, SLEEP, CALL, 5, OK, &[0x08, 0xac, 0x02]),
    )
    .await;
    send(&mut stream, &raw_frame(TEST, 1, ECHO, CALL, 5, OK, &[])).await;
    let refused = read_non_ping(&mut stream).await.unwrap();
    assert_eq!(
        (refused.serial, refused.kind, refused.status),
        (5, REPLY, ERROR)
    );
    assert_eq!(
        error_code(&refused.payload),
        ferry_actors::ErrorCode::ProtocolViolation as i32
    );
    let slept = read_non_ping(&mut stream).await.unwrap();
    assert_eq!(
        (slept.serial, slept.procedure, slept.status),
        (5, SLEEP, OK)
    );
    // The serial is free again and the connection serves the next call.
    send(&mut stream, &raw_frame(TEST, 1, ECHO, CALL, 5, OK, &[])).await;
    let echoed = read_non_ping(&mut stream).await.unwrap();
    assert_eq!(
        (echoed.serial, echoed.procedure, echoed.status),
        (5, ECHO, OK)
    );
}

#[actix_rt::test]
async fn cancel_for_a_finished_call_is_ignored_and_cancel_for_an_open_one_is_answered() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(TEST, 1, ECHO, 8, 9, OK, &[])).await; // CANCEL, nothing open
    send(
        &mut stream,
        &raw_frame(TEST, 1, SLEEP, CALL, 3, OK, &[0x08, 0xe0, 0xd4, 0x03]),
    )
    .await; // 60 s
    send(&mut stream, &raw_frame(TEST, 1, SLEEP, 8, 3, OK, &[])).await;
    let reply = read_non_ping(&mut stream).await.unwrap();
    assert_eq!((reply.serial, reply.kind, reply.status), (3, REPLY, ERROR));
    let body = ErrorBody::decode(&reply.payload[..]).unwrap();
    assert_eq!(body.code, ferry_actors::ErrorCode::Cancelled as i32);
    // The client raised it (section 6.2).
    assert_eq!(body.side, ferry_actors::Side::Client as i32, "{body:?}");
}

const SINK: u32 = 4;
const SOURCE: u32 = 5;
const STREAM: u32 = 3;
const CREDIT: u32 = 7;
const CONTINUE: u32 = 2;

/// The next frame that is not a keepalive PING, within PROMPTLY.
async fn next(stream: &mut tokio::net::TcpStream) -> common::RawFrame {
    tokio::time::timeout(PROMPTLY, read_non_ping(stream))
        .await
        .expect("the server answers in time")
        .expect("the connection stays open")
}

fn abort_body(code: ferry_actors::ErrorCode) -> Vec<u8> {
    ErrorBody {
        code: code as i32,
        message: "client side".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Section 7.6: a client's STREAM/ERROR on an upload is answered with its own reason,
/// CANCELLED for a cancel and ABORTED for anything else, raised by the client.
#[actix_rt::test]
async fn a_client_abort_of_an_upload_is_answered_with_its_reason() {
    use ferry_actors::ErrorCode::{Aborted, Cancelled, Internal};
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    for (serial, sent, answered) in [
        (1, Cancelled, Cancelled),
        (2, Aborted, Aborted),
        (3, Internal, Aborted),
    ] {
        send(
            &mut stream,
            &raw_frame(TEST, 1, SINK, CALL, serial, OK, &[]),
        )
        .await;
        let credit = next(&mut stream).await;
        assert_eq!((credit.kind, credit.serial), (CREDIT, serial), "{credit:?}");
        send(
            &mut stream,
            &raw_frame(TEST, 1, SINK, STREAM, serial, CONTINUE, b"some data"),
        )
        .await;
        send(
            &mut stream,
            &raw_frame(TEST, 1, SINK, STREAM, serial, ERROR, &abort_body(sent)),
        )
        .await;
        let reply = loop {
            let frame = next(&mut stream).await;
            if frame.kind == REPLY {
                break frame;
            }
        };
        assert_eq!((reply.serial, reply.status), (serial, ERROR), "{reply:?}");
        let body = ErrorBody::decode(&reply.payload[..]).unwrap();
        assert_eq!(body.code, answered as i32, "client sent {sent:?}: {body:?}");
        assert_eq!(body.side, ferry_actors::Side::Client as i32, "{body:?}");
        assert_eq!(body.layer, ferry_actors::Layer::Stream as i32, "{body:?}");
    }
}

/// Section 7.6: a download whose client sink fails (STREAM/ERROR instead of the confirmation)
/// is answered REPLY/ERROR ABORTED.
#[actix_rt::test]
async fn a_download_whose_client_sink_fails_is_answered_aborted() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    let request = ferry_actors::test_program::proto::SourceRequest {
        length: 1000,
        ..Default::default()
    };
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, CALL, 4, OK, &request.encode_to_vec()),
    )
    .await;
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, CREDIT, 4, OK, &(1u32 << 20).to_be_bytes()),
    )
    .await;
    // The data, then the server's finish.
    loop {
        let frame = next(&mut stream).await;
        assert_eq!((frame.serial, frame.kind), (4, STREAM), "{frame:?}");
        if frame.status == OK {
            break;
        }
    }
    let failed = abort_body(ferry_actors::ErrorCode::Aborted);
    send(
        &mut stream,
        &raw_frame(TEST, 1, SOURCE, STREAM, 4, ERROR, &failed),
    )
    .await;
    let reply = next(&mut stream).await;
    assert_eq!((reply.serial, reply.kind, reply.status), (4, REPLY, ERROR));
    assert_eq!(
        error_code(&reply.payload),
        ferry_actors::ErrorCode::Aborted as i32
    );
}

#[actix_rt::test]
async fn framing_errors_get_goaway_then_close_while_other_clients_are_served() {
    let server = start(ServerConfig {
        limits: ferry_actors::codec::Limits {
            max_frame: 1024,
            ..Default::default()
        },
        ..quick_server_config()
    })
    .await;
    let well_behaved = server.test_client(common::Via::Unix).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("length below 28", 27u32.to_be_bytes().to_vec()),
        (
            "length above max_frame",
            0x7fff_ffffu32.to_be_bytes().to_vec(),
        ),
        (
            "unknown type",
            raw_frame(TEST, 1, ECHO, 4, 1, OK, &[]).to_vec(),
        ),
        (
            "unknown status",
            raw_frame(TEST, 1, ECHO, CALL, 1, 9, &[]).to_vec(),
        ),
    ];
    for (name, bytes) in cases {
        let mut stream = raw_connect(&server).await;
        // For the short lengths, pad so the server has a whole header to judge.
        let mut bytes = bytes;
        bytes.resize(bytes.len().max(28), 0);
        send(&mut stream, &bytes).await;
        let goaway = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
            .await
            .unwrap()
            .expect(name);
        assert_eq!(
            (goaway.program, goaway.procedure, goaway.kind, goaway.status),
            (0x6672_7279, 2, MESSAGE, ERROR),
            "{name}"
        );
        assert_eq!(
            error_code(&goaway.payload),
            ferry_actors::ErrorCode::ProtocolViolation as i32,
            "{name}"
        );
        assert!(
            tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
                .await
                .unwrap()
                .is_none(),
            "{name}: not closed"
        );
        well_behaved.echo(&Default::default()).await.unwrap();
    }
    assert_eq!(server.handle.counters().protocol_violations.get(), 4);
}

#[actix_rt::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let server = start(ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..quick_server_config()
    })
    .await;
    let mut stream = raw_connect(&server).await;
    let goaway = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((goaway.program, goaway.procedure), (0x6672_7279, 2));
    assert_eq!(
        error_code(&goaway.payload),
        ferry_actors::ErrorCode::DeadlineExceeded as i32
    );
    assert!(read_non_ping(&mut stream).await.is_none());
    common::reach(&server.handle.counters().connections_open, 0).await;
}

/// With one TCP connection open, a second one gets GOAWAY RESOURCE_EXHAUSTED and is closed,
/// and the first keeps being served.
async fn a_second_connection_is_refused(config: ServerConfig) {
    let server = start(config).await;
    let first = server.test_client(common::Via::Tcp).await;
    first.echo(&Default::default()).await.unwrap();
    let mut second = raw_connect(&server).await;
    let goaway = tokio::time::timeout(PROMPTLY, read_non_ping(&mut second))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        error_code(&goaway.payload),
        ferry_actors::ErrorCode::ResourceExhausted as i32
    );
    assert!(read_non_ping(&mut second).await.is_none());
    first.echo(&Default::default()).await.unwrap();
    assert_eq!(server.handle.counters().limit_rejections.get(), 1);
}

#[actix_rt::test]
async fn connections_over_the_limit_get_goaway_resource_exhausted() {
    a_second_connection_is_refused(ServerConfig {
        max_connections: 1,
        ..quick_server_config()
    })
    .await;
}

#[actix_rt::test]
async fn connections_from_one_address_over_its_limit_get_goaway_resource_exhausted() {
    a_second_connection_is_refused(ServerConfig {
        max_connections_per_address: 1,
        ..quick_server_config()
    })
    .await;
}

/// A STREAM frame whose payload exceeds `max_chunk` (within the stream's credit) aborts that
/// stream with PROTOCOL_VIOLATION; the connection keeps serving.
#[actix_rt::test]
async fn a_chunk_over_max_chunk_aborts_only_its_stream() {
    const SINK: u32 = 4;
    const STREAM: u32 = 3;
    const CONTINUE: u32 = 2;
    let server = start(quick_server_config()).await;
    let max_chunk = ServerConfig::default().limits.max_chunk as usize;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(TEST, 1, SINK, CALL, 1, OK, &[])).await;
    let credit = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap()
        .unwrap();
    let window = u32::from_be_bytes(credit.payload[..].try_into().unwrap()) as usize;
    assert!(
        window > max_chunk + 28,
        "the window must cover the oversized chunk"
    );
    let chunk = vec![1u8; max_chunk + 1];
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, STREAM, 1, CONTINUE, &chunk),
    )
    .await;
    let reply = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((reply.kind, reply.serial, reply.status), (REPLY, 1, ERROR));
    let body = ErrorBody::decode(&reply.payload[..]).unwrap();
    assert_eq!(body.code, ferry_actors::ErrorCode::ProtocolViolation as i32);
    assert!(body.message.contains("max_chunk"), "{}", body.message);
    let echo = ferry_actors::test_program::proto::EchoRequest {
        payload: b"still here".to_vec().into(),
    };
    send(
        &mut stream,
        &raw_frame(TEST, 1, ECHO, CALL, 2, OK, &echo.encode_to_vec()),
    )
    .await;
    let reply = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((reply.kind, reply.serial, reply.status), (REPLY, 2, OK));
}
