//! The server's directory of open connections: each one's figures and where its orders go
//! (drain for a shutdown, close for an admin's disconnect). A connection lists itself when it
//! starts and leaves when it stops; the server handle and programs (through
//! [`ServerView`](crate::ServerView)) read it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Message, Recipient};

use crate::metrics::ConnectionStats;

/// Begin draining: tell the client, refuse new calls, close once open calls are done or the
/// drain time is over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginShutdown {
    pub drain: Duration,
}

/// Close this connection now (admin "disconnect").
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

/// A connection as the server lists it: where its orders go, and its figures.
pub(crate) struct Listed {
    pub shutdown: Recipient<BeginShutdown>,
    pub disconnect: Recipient<Disconnect>,
    pub stats: Arc<ConnectionStats>,
}

/// The open connections of one server, by id.
pub(crate) struct Directory {
    connections: Mutex<HashMap<u64, Listed>>,
    /// Ids of connections, for admin views and logs.
    next_id: AtomicU64,
}

impl Directory {
    pub fn new() -> Self {
        Self {
            connections: Mutex::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// The id of the next connection.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn insert(&self, id: u64, listed: Listed) {
        self.connections.lock().unwrap().insert(id, listed);
    }

    pub fn remove(&self, id: u64) {
        self.connections.lock().unwrap().remove(&id);
    }

    /// Figures of every open connection, by id.
    pub fn stats(&self) -> Vec<Arc<ConnectionStats>> {
        let mut all: Vec<_> = self
            .connections
            .lock()
            .unwrap()
            .values()
            .map(|listed| listed.stats.clone())
            .collect();
        all.sort_by_key(|stats| stats.id);
        all
    }

    /// Tells one connection to close; false if no such connection is open.
    pub fn disconnect(&self, id: u64) -> bool {
        match self.connections.lock().unwrap().get(&id) {
            Some(listed) => {
                listed.disconnect.do_send(Disconnect);
                true
            }
            None => false,
        }
    }

    /// Tells every open connection to drain.
    pub fn begin_shutdown(&self, drain: Duration) {
        for listed in self.connections.lock().unwrap().values() {
            listed.shutdown.do_send(BeginShutdown { drain });
        }
    }
}
