//! Server-to-client MESSAGE frames reach the subscribers of their program and event.

mod common;

use common::{PROMPTLY, quick_server_config, start};
use ferry_actors::test_program::proto::{Tick, TicksRequest};
use ferry_actors::test_program::{TICK_EVENT, TestClient, TestProgram};
use prost::Message;

#[actix_rt::test]
async fn subscribers_receive_a_calls_events_in_order_and_others_do_not() {
    let server = start(quick_server_config()).await;
    for via in common::BOTH {
        let client = server.client(via, Default::default()).await;
        let mut ticks = client
            .subscribe(TestProgram::NUMBER, TICK_EVENT)
            .await
            .unwrap();
        let mut other = client
            .subscribe(TestProgram::NUMBER, TICK_EVENT + 1)
            .await
            .unwrap();
        let reply = TestClient::new(client.clone())
            .ticks(&TicksRequest { count: 20 })
            .await
            .unwrap();
        assert_eq!(reply.sent, 20);
        for expected in 0..20 {
            let frame = tokio::time::timeout(PROMPTLY, ticks.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(Tick::decode(frame.payload).unwrap().n, expected, "{via:?}");
        }
        assert!(ticks.try_recv().is_err(), "more events than emitted");
        assert!(
            other.try_recv().is_err(),
            "an event reached the wrong subscriber"
        );
    }
}
