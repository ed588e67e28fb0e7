//! Graceful shutdown: in-flight calls finish, new calls get SHUTTING_DOWN, then the server
//! closes every connection.

mod common;

use std::time::Duration;

use common::{PROMPTLY, quick_server_config, start};
use ferry_actors::ErrorCode;
use ferry_actors::test_program::proto::{EchoRequest, SleepRequest};

#[actix_rt::test]
async fn shutdown_lets_open_calls_finish_and_refuses_new_ones() {
    let server = start(quick_server_config()).await;
    for via in common::BOTH {
        let client = server.test_client(via).await;
        client.echo(&EchoRequest::default()).await.unwrap();
    }
    let client = server.test_client(common::Via::Tcp).await;
    let mut in_flight = Box::pin(client.sleep(&SleepRequest { millis: 500 }));
    assert!(futures::poll!(in_flight.as_mut()).is_pending());
    common::reach(&server.handle.counters().calls_in_flight, 1).await;

    let shutdown = server.handle.shutdown(Duration::from_secs(5));
    futures::pin_mut!(shutdown);
    assert!(futures::poll!(shutdown.as_mut()).is_pending());
    // Each Echo is answered before the next is sent, so within a few calls the notice (or the
    // server's refusal) has arrived; the bound only stops a broken build from looping.
    let mut refusal = None;
    for _ in 0..1_000 {
        match client.echo(&EchoRequest::default()).await {
            Ok(_) => continue,
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("new calls were never refused");
    assert_eq!(refusal.code, ErrorCode::ShuttingDown, "{refusal}");

    let slept = tokio::time::timeout(PROMPTLY, in_flight)
        .await
        .unwrap()
        .expect("the open call was cut short");
    assert!(slept.slept_millis >= 500);
    tokio::time::timeout(PROMPTLY, shutdown).await.unwrap();
    assert_eq!(server.handle.counters().connections_open.get(), 0);
    let after = client.echo(&EchoRequest::default()).await.unwrap_err();
    assert!(
        matches!(
            after.code,
            ErrorCode::ShuttingDown | ErrorCode::ConnectionLost
        ),
        "{after}"
    );
}
