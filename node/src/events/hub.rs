//! The event hub: what happens on the node, fanned out to the events program's subscribers.
//! Clients subscribe and receive what happens on the node as MESSAGE
//! frames (volumes created, deleted, uploaded; transfers progressing, finished, failed).
//!
//! A slow subscriber never stalls the node: each subscriber has a bounded queue, and an event
//! that does not fit is dropped for that subscriber only. The next event it does get says how
//! many it lost (`dropped_before`), and `ferry_events_dropped_total` counts them all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::proto::events::{Event, event};
struct Subscriber {
    tx: mpsc::Sender<Event>,
    /// Events lost since the last one queued for it: reported on the next one that fits.
    dropped: u64,
}

/// Fans events out to subscribers.
pub struct EventHub {
    subscribers: Mutex<Vec<Subscriber>>,
    queue: usize,
    /// Events dropped for slow subscribers, all subscribers together.
    dropped_total: AtomicU64,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.subscribers())
            .field("queue", &self.queue)
            .finish()
    }
}

/// One subscriber's end of the hub.
pub struct Subscription {
    rx: mpsc::Receiver<Event>,
}

impl Subscription {
    /// The next event; its `dropped_before` says how many were lost just before it.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl EventHub {
    /// `queue`: events held per subscriber before further ones are dropped for it.
    pub fn new(queue: usize) -> Self {
        Self {
            subscribers: Mutex::default(),
            queue: queue.max(1),
            dropped_total: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue);
        self.subscribers
            .lock()
            .unwrap()
            .push(Subscriber { tx, dropped: 0 });
        Subscription { rx }
    }

    /// Sends an event to every subscriber that has room; never waits.
    pub fn publish(&self, kind: event::Kind) {
        let event = Event {
            at_millis: now_millis(),
            dropped_before: 0,
            kind: Some(kind),
        };
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain(|s| !s.tx.is_closed());
        for subscriber in subscribers.iter_mut() {
            let mut copy = event.clone();
            copy.dropped_before = subscriber.dropped;
            if subscriber.tx.try_send(copy).is_ok() {
                subscriber.dropped = 0;
            } else {
                subscriber.dropped += 1;
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap()
            .iter()
            .filter(|s| !s.tx.is_closed())
            .count()
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
