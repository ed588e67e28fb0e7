//! Cancellation: dropping a call's future (or its deadline passing) stops the server's handler
//! and frees the serial, and nothing else on the connection notices.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{BOTH, PROMPTLY, quick_server_config, start};
use ferry_actors::test_program::proto::{EchoRequest, SleepRequest};
use ferry_actors::{CallOptions, ErrorCode, Side};

#[actix_rt::test]
async fn dropping_a_sleep_call_drops_its_handler_and_frees_its_slot() {
    let server = start(quick_server_config()).await;
    let counters = server.handle.counters();
    let observations = server.service.observations.clone();
    for (round, via) in BOTH.into_iter().enumerate() {
        let client = server.test_client(via).await;
        let mut sleep = Box::pin(client.sleep(&SleepRequest { millis: 60_000 }));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        common::reach(&counters.calls_in_flight, 1).await;

        let dropped = observations.sleeps_dropped_signal.notified();
        futures::pin_mut!(dropped);
        dropped.as_mut().enable();
        drop(sleep);
        tokio::time::timeout(PROMPTLY, dropped)
            .await
            .expect("the handler was not dropped");
        assert_eq!(observations.sleeps_dropped.get(), round as u64 + 1);
        common::reach(&counters.calls_in_flight, 0).await;

        // The connection is unaffected.
        let reply = client
            .echo(&EchoRequest {
                payload: Bytes::from_static(b"after"),
            })
            .await
            .unwrap();
        assert_eq!(&reply.payload[..], b"after");
    }
    assert_eq!(counters.calls_cancelled.get(), 2);
}

#[actix_rt::test]
async fn cancelling_one_call_leaves_concurrent_calls_running() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Unix).await;
    let mut survivor = Box::pin(client.sleep(&SleepRequest { millis: 200 }));
    let mut victim = Box::pin(client.sleep(&SleepRequest { millis: 60_000 }));
    assert!(futures::poll!(survivor.as_mut()).is_pending());
    assert!(futures::poll!(victim.as_mut()).is_pending());
    common::reach(&server.handle.counters().calls_in_flight, 2).await;
    let dropped = server.service.observations.sleeps_dropped_signal.notified();
    futures::pin_mut!(dropped);
    dropped.as_mut().enable();
    drop(victim);
    tokio::time::timeout(PROMPTLY, dropped)
        .await
        .expect("the victim's handler was not dropped");
    let reply = tokio::time::timeout(PROMPTLY, survivor)
        .await
        .unwrap()
        .unwrap();
    assert!(reply.slept_millis >= 200, "the survivor was cut short");
    assert_eq!(server.service.observations.sleeps_dropped.get(), 1);
}

#[actix_rt::test]
async fn a_deadline_fails_the_call_locally_and_cancels_it_on_the_server() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Tcp).await;
    let dropped = server.service.observations.sleeps_dropped_signal.notified();
    futures::pin_mut!(dropped);
    dropped.as_mut().enable();
    let error = client
        .with_options(CallOptions {
            deadline: Some(Duration::from_millis(100)),
        })
        .sleep(&SleepRequest { millis: 60_000 })
        .await
        .unwrap_err();
    assert_eq!(
        (error.code, error.side),
        (ErrorCode::DeadlineExceeded, Side::Client),
        "{error}"
    );
    tokio::time::timeout(PROMPTLY, dropped)
        .await
        .expect("the server kept running the handler");
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
}
