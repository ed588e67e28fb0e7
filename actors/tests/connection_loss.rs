//! Peers that vanish or go silent: pending calls fail with CONNECTION_LOST within the
//! keepalive bound, and nothing waits forever.

mod common;

use std::time::{Duration, Instant};

use common::{PROMPTLY, quick_server_config, raw_connect, raw_frame, read_raw_frame, send, start};
use ferry_actors::test_program::TestClient;
use ferry_actors::test_program::proto::SleepRequest;
use ferry_actors::{Client, ClientConfig, ErrorCode, KeepaliveConfig, ServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const KEEPALIVE: KeepaliveConfig = KeepaliveConfig {
    interval: Duration::from_millis(100),
    count: 2,
};

/// A fake server that accepts one connection and hands it to `behave`.
async fn fake_server<F, Fut>(behave: F) -> String
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    actix_rt::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        behave(stream).await;
    });
    address
}

#[actix_rt::test]
async fn a_server_that_closes_its_socket_mid_call_fails_the_call_with_connection_lost() {
    let address = fake_server(|mut stream| async move {
        let _call = read_raw_frame(&mut stream).await.unwrap();
    })
    .await;
    let client = TestClient::new(
        Client::connect_tcp(&address, ClientConfig::default())
            .await
            .unwrap(),
    );
    let error = tokio::time::timeout(PROMPTLY, client.sleep(&SleepRequest { millis: 1 }))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ConnectionLost, "{error}");
    // Calls after the loss fail at once too.
    let again = tokio::time::timeout(PROMPTLY, client.sleep(&SleepRequest { millis: 1 }))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::ConnectionLost, "{again}");
}

#[actix_rt::test]
async fn a_silent_server_is_detected_by_keepalive_within_its_bound() {
    let address = fake_server(|mut stream| async move {
        // Read and discard everything, answer nothing, keep the socket open.
        let mut sink = vec![0u8; 4096];
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let config = ClientConfig {
        keepalive: Some(KEEPALIVE),
        ..ClientConfig::default()
    };
    let client = TestClient::new(Client::connect_tcp(&address, config).await.unwrap());
    let started = Instant::now();
    let error = tokio::time::timeout(PROMPTLY, client.sleep(&SleepRequest { millis: 1 }))
        .await
        .unwrap()
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error.code, ErrorCode::ConnectionLost, "{error}");
    let bound = KEEPALIVE.interval * (KEEPALIVE.count + 1);
    assert!(
        took >= KEEPALIVE.interval * KEEPALIVE.count,
        "declared dead too early: {took:?}"
    );
    // One tick of slack: the timer is not aligned with the last received frame.
    assert!(
        took <= bound + KEEPALIVE.interval * 2,
        "took {took:?}, bound {bound:?}"
    );
}

#[actix_rt::test]
async fn a_silent_client_is_closed_by_the_server_keepalive() {
    let server = start(ServerConfig {
        keepalive: Some(KEEPALIVE),
        ..quick_server_config()
    })
    .await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &raw_frame(0x7465_7374, 1, 1, 0, 1, 0, &[])).await;
    let started = Instant::now();
    let mut pings = 0;
    let mut last = None;
    while let Some(frame) = tokio::time::timeout(PROMPTLY, read_raw_frame(&mut stream))
        .await
        .unwrap()
    {
        if frame.program == 0x6b65_6570 {
            pings += 1;
        }
        last = Some(frame);
    }
    assert_eq!(pings, KEEPALIVE.count, "one PING per silent interval");
    // Section 9.1: the last frame is GOAWAY DEADLINE_EXCEEDED (control program, procedure 2,
    // MESSAGE/ERROR on serial 0).
    let goaway = last.expect("frames before the close");
    assert_eq!(
        (
            goaway.program,
            goaway.procedure,
            goaway.kind,
            goaway.serial,
            goaway.status
        ),
        (0x6672_7279, 2, 2, 0, 1),
        "{goaway:?}"
    );
    let body =
        <ferry_actors::codec::proto::ErrorBody as prost::Message>::decode(&goaway.payload[..])
            .unwrap();
    assert_eq!(body.code, ErrorCode::DeadlineExceeded as i32, "{body:?}");
    assert!(started.elapsed() <= KEEPALIVE.interval * (KEEPALIVE.count + 3));
    assert_eq!(server.handle.counters().keepalive_timeouts.get(), 1);
    common::reach(&server.handle.counters().connections_open, 0).await;
}

#[actix_rt::test]
async fn a_client_that_vanishes_mid_call_has_its_handler_dropped() {
    let server = start(quick_server_config()).await;
    let mut stream = raw_connect(&server).await;
    let dropped = server.service.observations.sleeps_dropped_signal.notified();
    futures::pin_mut!(dropped);
    dropped.as_mut().enable();
    // Sleep 60 s, then hang up.
    send(
        &mut stream,
        &raw_frame(0x7465_7374, 1, 2, 0, 1, 0, &[0x08, 0xe0, 0xd4, 0x03]),
    )
    .await;
    common::reach(&server.handle.counters().calls_in_flight, 1).await;
    drop(stream);
    tokio::time::timeout(PROMPTLY, dropped)
        .await
        .expect("handler kept running");
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
}
