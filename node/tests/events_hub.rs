//! The event hub never waits for a slow subscriber: it drops for that subscriber only and
//! says how many were lost.

use ferry_node::events::EventHub;
use ferry_node::proto::events::{VolumeDeleted, event};

fn deleted(name: &str) -> event::Kind {
    event::Kind::Deleted(VolumeDeleted { name: name.into() })
}

#[tokio::test]
async fn a_full_subscriber_loses_the_newest_events_and_is_told_how_many() {
    let hub = EventHub::new(4);
    let mut slow = hub.subscribe();
    let mut fast = hub.subscribe();
    for i in 0..10 {
        hub.publish(deleted(&format!("v{i}")));
        // The fast subscriber keeps up.
        let event = fast.next().await.unwrap();
        assert_eq!(event.dropped_before, 0);
    }
    assert_eq!(hub.dropped_total(), 6);
    for expected in ["v0", "v1", "v2", "v3"] {
        let event = slow.next().await.unwrap();
        assert_eq!(event.kind, Some(deleted(expected)));
        assert_eq!(
            event.dropped_before, 0,
            "nothing was lost before {expected}"
        );
    }
    hub.publish(deleted("v10"));
    let event = slow.next().await.unwrap();
    assert_eq!(event.kind, Some(deleted("v10")));
    assert_eq!(
        event.dropped_before, 6,
        "the loss is reported with the next event"
    );
}

#[tokio::test]
async fn subscribers_that_went_away_are_forgotten() {
    let hub = EventHub::new(4);
    let gone = hub.subscribe();
    let _kept = hub.subscribe();
    assert_eq!(hub.subscribers(), 2);
    drop(gone);
    hub.publish(deleted("x"));
    assert_eq!(hub.subscribers(), 1);
    assert_eq!(hub.dropped_total(), 0);
}
