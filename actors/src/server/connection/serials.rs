//! The serial table of one server connection: every serial the server has not freed yet, with
//! its running call, its stream and what its CALL is charged to the memory budget. A serial is
//! freed once its REPLY is out and the client sent its last frame for it
//! (docs/PROTOCOL.md section 5); the router ([`super::router`]) decides when.

use std::collections::HashMap;
use std::collections::hash_map::Drain;
use std::sync::Arc;
use std::time::Instant;

use ferry_codec::Route;

use crate::memory::Charge;
use crate::metrics::ConnectionStats;
use crate::server::call::RunningCall;
use crate::stream::{Direction, StreamLink};

/// A serial the server has not freed yet.
pub(super) struct OpenCall {
    pub route: Route,
    pub started: Instant,
    /// The running handler; `None` once the REPLY was sent.
    pub call: Option<RunningCall>,
    pub stream: Option<OpenStream>,
    /// What the CALL's payload is charged to the connection's budget; the REPLY takes it on.
    pub charge: Option<Arc<Charge>>,
}

/// The stream of an open call, as the connection routes it. Its credit is kept by the
/// connection's `ReceiveCredit` (`crate::connection::credit`).
pub(super) struct OpenStream {
    pub link: StreamLink,
    pub direction: Direction,
    /// STREAM/OK frames received from the client (its finish, then its confirmation).
    pub client_oks: u8,
    /// The client has not sent its last frame for this serial yet.
    pub client_open: bool,
    /// The client aborted the stream (so the REPLY/ERROR that follows is not a server abort).
    pub aborted_by_client: bool,
}

/// The open serials of one connection, and when one last opened or closed (for the idle
/// timeout).
pub(super) struct SerialTable {
    calls: HashMap<u32, OpenCall>,
    last_activity: Instant,
}

impl SerialTable {
    pub fn new() -> Self {
        Self {
            calls: HashMap::new(),
            last_activity: Instant::now(),
        }
    }

    pub fn get(&self, serial: &u32) -> Option<&OpenCall> {
        self.calls.get(serial)
    }

    pub fn get_mut(&mut self, serial: &u32) -> Option<&mut OpenCall> {
        self.calls.get_mut(serial)
    }

    pub fn contains(&self, serial: &u32) -> bool {
        self.calls.contains_key(serial)
    }

    pub fn insert(&mut self, serial: u32, open: OpenCall) {
        self.calls.insert(serial, open);
    }

    pub fn remove(&mut self, serial: &u32) -> Option<OpenCall> {
        self.calls.remove(serial)
    }

    pub fn drain(&mut self) -> Drain<'_, u32, OpenCall> {
        self.calls.drain()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The open streams.
    pub fn streams(&self) -> impl Iterator<Item = &OpenStream> {
        self.calls.values().filter_map(|open| open.stream.as_ref())
    }

    /// A call was admitted or a serial freed: the connection is not idle.
    pub fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// When a call was last admitted or a serial last freed (the connection's start at first).
    pub fn last_activity(&self) -> Instant {
        self.last_activity
    }

    /// Keeps the admin figures of this connection current.
    pub fn update_stats(&self, stats: &ConnectionStats) {
        stats.calls_in_flight.set(self.calls.len() as u64);
        let streams = self
            .calls
            .values()
            .filter(|open| open.stream.is_some())
            .count();
        stats.streams_open.set(streams as u64);
    }
}
