//! The serial table of one client connection: every call whose REPLY has not come yet, with
//! its stream, and the counters that pick the next serial and call id.

use std::collections::HashMap;
use std::collections::hash_map::Drain;

use bytes::Bytes;
use ferry_codec::Route;
use tokio::sync::oneshot;

use crate::error::CallError;
use crate::stream::{Direction, StreamLink};

/// A call whose REPLY has not arrived yet.
pub(super) struct Pending {
    pub route: Route,
    /// Tells this call apart from a later call that reuses the serial.
    pub id: u64,
    /// Where the REPLY goes; `None` once the caller gave up: the serial stays reserved until
    /// its REPLY arrives, which is then dropped.
    pub reply: Option<oneshot::Sender<Result<Bytes, CallError>>>,
    pub stream: Option<PendingStream>,
}

pub(super) struct PendingStream {
    pub link: StreamLink,
    pub direction: Direction,
    /// STREAM/OK frames we sent (our finish, then our confirmation).
    pub oks_sent: u8,
    /// We have not sent our last frame for this serial yet.
    pub open: bool,
}

/// The calls in flight on one connection, by serial.
pub(super) struct PendingCalls {
    calls: HashMap<u32, Pending>,
    next_serial: u32,
    next_call_id: u64,
}

impl PendingCalls {
    pub fn new() -> Self {
        Self {
            calls: HashMap::new(),
            next_serial: 1,
            next_call_id: 0,
        }
    }

    /// The next serial not in use, skipping 0.
    pub fn allocate_serial(&mut self) -> u32 {
        loop {
            let serial = self.next_serial;
            self.next_serial = self.next_serial.wrapping_add(1).max(1);
            if !self.calls.contains_key(&serial) {
                return serial;
            }
        }
    }

    /// The id of the next call: tells it apart from a later call on the same serial.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_call_id;
        self.next_call_id += 1;
        id
    }

    pub fn insert(&mut self, serial: u32, pending: Pending) {
        self.calls.insert(serial, pending);
    }

    pub fn get_mut(&mut self, serial: &u32) -> Option<&mut Pending> {
        self.calls.get_mut(serial)
    }

    pub fn remove(&mut self, serial: &u32) -> Option<Pending> {
        self.calls.remove(serial)
    }

    pub fn drain(&mut self) -> Drain<'_, u32, Pending> {
        self.calls.drain()
    }
}
