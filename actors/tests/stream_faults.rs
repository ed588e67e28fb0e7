//! Streams under trouble: a stalled consumer, aborts from either side, a peer that overruns
//! its credit, and a connection killed mid-stream. Each stays confined to its own stream.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{PROMPTLY, quick_server_config, raw_connect, raw_frame, read_non_ping, send, start};
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest, SourceRequest};
use ferry_actors::test_program::{TestClient, pattern};
use ferry_actors::{Client, ClientConfig, ErrorCode, Layer, ServerConfig, Side};
use prost::Message;
use tokio::net::TcpListener;

const WINDOW: u32 = 256 * 1024;

fn small_window() -> ServerConfig {
    ServerConfig {
        stream_window: WINDOW,
        ..quick_server_config()
    }
}

#[actix_rt::test]
async fn a_stalled_consumer_stalls_only_its_own_stream_and_holds_at_most_its_window() {
    let server = start(small_window()).await;
    let counters = server.handle.counters();
    let raw = server
        .client(common::Via::Tcp, ClientConfig::default())
        .await;
    let client = TestClient::new(raw.clone());

    let mut stalled = client.sink(&SinkRequest { stall_after: 1 }).await.unwrap();
    let mut stalled_send = Box::pin(async {
        let mut offset = 0;
        loop {
            stalled.send(pattern(offset, 64 * 1024)).await?;
            offset += 64 * 1024;
        }
        #[allow(unreachable_code)]
        Ok::<_, ferry_actors::CallError>(())
    });
    // Drive the stalled upload until the server holds a window's worth and credit runs out.
    tokio::select! {
        _ = &mut stalled_send => panic!("the stalled upload ended"),
        _ = tokio::time::timeout(PROMPTLY, counters.stream_buffered_bytes.wait_for(|n| *n > 0)) => {}
    }
    // The sender runs out of credit and waits; give it a moment to (wrongly) push more.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut stalled_send).await;
    assert!(
        raw.counters().credit_stalls.get() > 0,
        "the sender never waited for credit"
    );
    let held = counters.stream_buffered_bytes.get();
    assert!(
        held <= u64::from(WINDOW),
        "server holds {held} bytes for a {WINDOW}-byte window"
    );

    // Meanwhile another stream and calls on the same connection run at full speed.
    let mut other = client.sink(&SinkRequest::default()).await.unwrap();
    for i in 0..64u64 {
        other
            .send(pattern(i * 256 * 1024, 256 * 1024))
            .await
            .unwrap();
    }
    assert_eq!(other.finish().await.unwrap().bytes, 64 * 256 * 1024);
    for _ in 0..50 {
        client
            .echo(&EchoRequest {
                payload: Bytes::from_static(b"x"),
            })
            .await
            .unwrap();
    }
    assert!(counters.stream_buffered_bytes.get() <= u64::from(WINDOW));

    // Dropping the stalled stream aborts it; the server discards what it held.
    let discarded = server
        .service
        .observations
        .sinks_discarded_signal
        .notified();
    futures::pin_mut!(discarded);
    discarded.as_mut().enable();
    drop(stalled_send);
    drop(stalled);
    tokio::time::timeout(PROMPTLY, discarded)
        .await
        .expect("the stalled sink was not discarded");
    common::reach(&counters.stream_buffered_bytes, 0).await;
    common::reach(&counters.calls_in_flight, 0).await;
}

#[actix_rt::test]
async fn a_client_abort_mid_upload_is_seen_by_the_server_which_discards_the_partial_data() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Unix).await;
    let mut survivor = client.sink(&SinkRequest::default()).await.unwrap();
    survivor.send(pattern(0, 100_000)).await.unwrap();

    let mut victim = client.sink(&SinkRequest::default()).await.unwrap();
    victim.send(pattern(0, 500_000)).await.unwrap();
    let discarded = server
        .service
        .observations
        .sinks_discarded_signal
        .notified();
    futures::pin_mut!(discarded);
    discarded.as_mut().enable();
    drop(victim);
    tokio::time::timeout(PROMPTLY, discarded)
        .await
        .expect("the server did not see the abort");
    assert_eq!(server.service.observations.sinks_discarded.get(), 1);

    survivor.send(pattern(100_000, 100_000)).await.unwrap();
    assert_eq!(survivor.finish().await.unwrap().bytes, 200_000);
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
}

#[actix_rt::test]
async fn a_server_abort_mid_download_reaches_the_client_and_spares_other_streams() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Tcp).await;
    let mut failing = client
        .source(&SourceRequest {
            length: 64 << 20,
            fail_after: 1 << 20,
            chunk: 64 * 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut healthy = client
        .source(&SourceRequest {
            length: 4 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let error = tokio::time::timeout(PROMPTLY, async {
        loop {
            match failing.recv().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the failing download finished"),
                Err(error) => return error,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(error.code, ErrorCode::Aborted, "{error}");
    assert!(error.message.contains("on purpose"), "{error}");
    let mut received = 0;
    while let Some(chunk) = healthy.recv().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, 4 << 20);
    healthy.finish().await.unwrap();
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
}

#[actix_rt::test]
async fn a_raw_peer_that_overruns_its_window_gets_that_stream_aborted_only() {
    let server = start(small_window()).await;
    let mut stream = raw_connect(&server).await;
    const TEST: u32 = 0x7465_7374;
    const SINK: u32 = 4;
    // SinkRequest { stall_after: 1 }: the sink consumes one chunk, so the server grants
    // back that chunk's credit once and then no more.
    send(
        &mut stream,
        &raw_frame(TEST, 1, SINK, 0, 1, 0, &[0x08, 0x01]),
    )
    .await;
    let credit = read_non_ping(&mut stream).await.unwrap();
    assert_eq!((credit.kind, credit.serial), (7, 1));
    let window = u32::from_be_bytes(credit.payload[..4].try_into().unwrap());
    assert_eq!(window, WINDOW);
    // Chunks of 64 KiB cost 65,564 credit each: 4 fit the window, 1 more fits the one grant,
    // the sixth overruns.
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..6 {
        send(&mut stream, &raw_frame(TEST, 1, SINK, 3, 1, 2, &chunk)).await;
    }
    let reply = loop {
        let frame = read_non_ping(&mut stream).await.unwrap();
        if frame.kind != 7 {
            break frame;
        }
    };
    assert_eq!((reply.kind, reply.serial, reply.status), (1, 1, 1));
    let body = ErrorBody::decode(&reply.payload[..]).unwrap();
    assert_eq!(
        body.code,
        ErrorCode::ProtocolViolation as i32,
        "{}",
        body.message
    );
    assert!(body.message.contains("credit"), "{}", body.message);
    // Section 6.2: credit violations are the STREAM layer's, raised by the server.
    assert_eq!(
        (body.side, body.layer),
        (Side::Server as i32, Layer::Stream as i32),
        "{body:?}"
    );
    // The client closes its side; the serial is free and the connection keeps serving.
    send(&mut stream, &raw_frame(TEST, 1, SINK, 3, 1, 1, &[])).await;
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
    send(
        &mut stream,
        &raw_frame(TEST, 1, 1, 0, 1, 0, &[0x0a, 1, b'k']),
    )
    .await;
    let echoed = read_non_ping(&mut stream).await.unwrap();
    assert_eq!(
        (
            echoed.kind,
            echoed.serial,
            echoed.status,
            echoed.payload.as_slice()
        ),
        (1, 1, 0, &[0x0a, 1, b'k'][..])
    );
    assert_eq!(server.handle.counters().stream_buffered_bytes.get(), 0);
}

#[actix_rt::test]
async fn a_connection_killed_mid_stream_fails_both_sides_with_connection_lost() {
    let server = start(quick_server_config()).await;
    // A forwarder between client and server that the test can cut.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let upstream = server.tcp.clone();
    let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
    actix_rt::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            _ = cut_rx => {}
        }
    });
    let client = TestClient::new(
        Client::connect_tcp(&proxy, ClientConfig::default())
            .await
            .unwrap(),
    );
    let mut upload = client.sink(&SinkRequest::default()).await.unwrap();
    upload.send(pattern(0, 1 << 20)).await.unwrap();
    let mut download = client
        .source(&SourceRequest {
            length: 1 << 30,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(download.recv().await.unwrap().is_some());
    common::reach(&server.handle.counters().calls_in_flight, 2).await;

    let discarded = server
        .service
        .observations
        .sinks_discarded_signal
        .notified();
    futures::pin_mut!(discarded);
    discarded.as_mut().enable();
    cut.send(()).unwrap();

    let error = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Err(error) = download.recv().await {
                return error;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(error.code, ErrorCode::ConnectionLost, "{error}");
    let error = tokio::time::timeout(PROMPTLY, upload.finish())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ConnectionLost, "{error}");
    tokio::time::timeout(PROMPTLY, discarded)
        .await
        .expect("the server kept the partial upload");
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
    common::reach(&server.handle.counters().streams_open, 0).await;
}
