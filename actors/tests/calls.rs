//! Many calls on one connection, out-of-order completion and error replies, over TCP and unix.

mod common;

use bytes::Bytes;
use common::{BOTH, quick_server_config, start};
use ferry_actors::codec::Route;
use ferry_actors::test_program::TestProgram;
use ferry_actors::test_program::proto::{EchoRequest, FailRequest, SleepRequest};
use ferry_actors::{CallOptions, ErrorCode, Layer, Side};
use futures::stream::{self, StreamExt};

#[actix_rt::test]
async fn ten_thousand_echoes_with_256_in_flight_are_each_matched_to_their_call() {
    let server = start(quick_server_config()).await;
    for via in BOTH {
        let client = server.test_client(via).await;
        let answered = stream::iter(0..10_000u32)
            .map(|i| {
                let client = client.clone();
                async move {
                    let payload = Bytes::from(format!("call {i}"));
                    let reply = client
                        .echo(&EchoRequest {
                            payload: payload.clone(),
                        })
                        .await
                        .unwrap();
                    assert_eq!(
                        reply.payload, payload,
                        "{via:?}: reply of call {i} mismatched"
                    );
                }
            })
            .buffer_unordered(256)
            .count()
            .await;
        assert_eq!(answered, 10_000);
    }
    assert_eq!(server.handle.counters().calls_in_flight.get(), 0);
}

#[actix_rt::test]
async fn a_slow_call_does_not_delay_fast_calls_issued_after_it() {
    let server = start(quick_server_config()).await;
    for via in BOTH {
        let client = server.test_client(via).await;
        let slow = client.sleep(&SleepRequest { millis: 3_000 });
        futures::pin_mut!(slow);
        // Start the slow call, then answer 100 fast ones while it is still running.
        assert!(futures::poll!(slow.as_mut()).is_pending());
        for i in 0..100u32 {
            let payload = Bytes::from(i.to_be_bytes().to_vec());
            assert_eq!(
                client
                    .echo(&EchoRequest {
                        payload: payload.clone()
                    })
                    .await
                    .unwrap()
                    .payload,
                payload
            );
        }
        assert!(
            futures::poll!(slow.as_mut()).is_pending(),
            "{via:?}: the slow call finished before the fast ones"
        );
        let slept = slow.await.unwrap().slept_millis;
        assert!(slept >= 3_000);
    }
}

#[actix_rt::test]
async fn unknown_program_version_procedure_and_bad_payloads_fail_only_that_call() {
    let server = start(quick_server_config()).await;
    for via in BOTH {
        let client = server.client(via, Default::default()).await;
        let cases = [
            (
                Route::new(0x0bad_0bad, 1, 1),
                Bytes::new(),
                ErrorCode::UnknownProgram,
            ),
            (
                Route::new(TestProgram::NUMBER, 9, 1),
                Bytes::new(),
                ErrorCode::UnknownVersion,
            ),
            (
                Route::new(TestProgram::NUMBER, 1, 999),
                Bytes::new(),
                ErrorCode::UnknownProcedure,
            ),
            // Field 1 announced as 100 bytes long, with only 1 byte present.
            (
                Route::new(TestProgram::NUMBER, 1, 1),
                Bytes::from_static(&[0x0a, 100, 1]),
                ErrorCode::BadRequest,
            ),
        ];
        for (route, payload, code) in cases {
            let error = client
                .call_raw(route, payload, CallOptions::default())
                .await
                .unwrap_err();
            assert_eq!(
                (error.code, error.side, error.layer),
                (code, Side::Server, Layer::Call),
                "{via:?}: {error}"
            );
            // The connection still serves the next call.
            let test = ferry_actors::test_program::TestClient::new(client.clone());
            let echoed = test
                .echo(&EchoRequest {
                    payload: Bytes::from_static(b"still here"),
                })
                .await
                .unwrap();
            assert_eq!(&echoed.payload[..], b"still here");
        }
    }
}

#[actix_rt::test]
async fn a_handler_error_reaches_the_caller_with_its_code_and_message() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Tcp).await;
    let error = client
        .fail(&FailRequest {
            code: ErrorCode::NotFound as i32,
            message: "no such volume".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    assert_eq!(error.message, "no such volume");
    assert_eq!(
        (error.side, error.layer),
        (Side::Server, Layer::Application)
    );
}

#[actix_rt::test]
async fn calls_over_the_in_flight_limit_are_refused_with_resource_exhausted() {
    let server = start(ferry_actors::ServerConfig {
        max_in_flight_calls: 2,
        ..quick_server_config()
    })
    .await;
    let client = server.test_client(common::Via::Tcp).await;
    let mut first = Box::pin(client.sleep(&SleepRequest { millis: 60_000 }));
    let mut second = Box::pin(client.sleep(&SleepRequest { millis: 60_000 }));
    assert!(futures::poll!(first.as_mut()).is_pending());
    assert!(futures::poll!(second.as_mut()).is_pending());
    common::reach(&server.handle.counters().calls_in_flight, 2).await;
    let error = client.echo(&EchoRequest::default()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ResourceExhausted, "{error}");
    assert_eq!(server.handle.counters().limit_rejections.get(), 1);
    // Cancelling one frees a slot.
    drop(first);
    common::reach(&server.handle.counters().calls_in_flight, 1).await;
    client.echo(&EchoRequest::default()).await.unwrap();
}
