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
    assert_eq!(
        error_code(&reply.payload),
        ferry_actors::ErrorCode::Cancelled as i32
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
