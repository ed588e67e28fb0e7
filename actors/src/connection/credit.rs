//! Credit for the streams one side of a connection receives (a server's uploads, a client's
//! downloads): how much the peer may still send on each (its allowance), what its consumer
//! drained and is owed back, and how that debt is paid in turn within the connection's budget
//! (`connection_window`). The budget bounds the bytes in flight towards this side on the
//! connection, in the kernel's queues ahead of a small call's CALL or REPLY; one stream alone
//! still gets its whole window. Server and client use it alike, so a probe call waits behind
//! at most about one connection window of bulk data in either direction.

use std::collections::{HashMap, VecDeque};

use ferry_codec::Route;

/// The credit of one received stream.
struct Window {
    route: Route,
    /// Credit the peer may still spend on data for us.
    allowance: u64,
    /// Credit the consumer drained that is not yet granted back: held while the connection's
    /// streams together hold `connection_window` (see [`ReceiveCredit::distribute`]).
    owed: u64,
}

/// The credit windows of the streams a connection receives, by serial.
pub(crate) struct ReceiveCredit {
    windows: HashMap<u32, Window>,
    /// Streams with credit owed, in the order they are to be paid.
    owing: VecDeque<u32>,
    stream_window: u32,
    connection_window: u64,
}

impl ReceiveCredit {
    pub fn new(stream_window: u32, connection_window: u64) -> Self {
        Self {
            windows: HashMap::new(),
            owing: VecDeque::new(),
            stream_window,
            connection_window,
        }
    }

    /// Opens the window of a new stream and returns its first grant (which also accepts the
    /// stream): the window, or what the connection's budget has left (at least a grant step);
    /// the rest is owed.
    pub fn open(&mut self, serial: u32, route: Route) -> u64 {
        let window = u64::from(self.stream_window);
        let first = window.min(self.budget_left().max(self.grant_floor()));
        if first < window {
            self.owing.push_back(serial);
        }
        self.windows.insert(
            serial,
            Window {
                route,
                allowance: first,
                owed: window - first,
            },
        );
        first
    }

    /// The credit the peer may still spend on a stream, for the frame it sends to spend.
    pub fn allowance_mut(&mut self, serial: u32) -> Option<&mut u64> {
        self.windows.get_mut(&serial).map(|w| &mut w.allowance)
    }

    /// The consumer drained `grant` bytes: they are owed to the peer.
    pub fn owe(&mut self, serial: u32, grant: u32) {
        let Some(window) = self.windows.get_mut(&serial) else {
            return;
        };
        if window.owed == 0 {
            self.owing.push_back(serial);
        }
        window.owed += u64::from(grant);
    }

    /// The stream is over for this side (answered, or aborted): nothing more is paid to it,
    /// though what it still holds counts against the budget until its serial is freed.
    pub fn stop(&mut self, serial: u32) {
        if let Some(window) = self.windows.get_mut(&serial) {
            window.owed = 0;
        }
    }

    /// The serial was freed.
    pub fn close(&mut self, serial: u32) {
        self.windows.remove(&serial);
    }

    /// Credit the connection's streams may still be granted before they hold
    /// `connection_window` together.
    fn budget_left(&self) -> u64 {
        let held: u64 = self.windows.values().map(|w| w.allowance).sum();
        let budget = self.connection_window.max(u64::from(self.stream_window));
        budget.saturating_sub(held)
    }

    /// A stream may always hold this much credit, whatever the budget: a quarter window, the
    /// step in which consumers return credit. It keeps every stream moving (no stream waits
    /// for credit that idle streams hold) and caps the budget's overshoot.
    fn grant_floor(&self) -> u64 {
        u64::from(self.stream_window / 4).max(1)
    }

    /// Pays owed credit, in turn, as far as the connection's budget allows; `grant` sends each
    /// CREDIT frame.
    pub fn distribute(&mut self, mut grant: impl FnMut(Route, u32, u32)) {
        if self.owing.is_empty() {
            return;
        }
        let floor = self.grant_floor();
        let mut left = self.budget_left();
        for _ in 0..self.owing.len() {
            let serial = self.owing.pop_front().expect("counted");
            let Some(window) = self.windows.get_mut(&serial).filter(|w| w.owed > 0) else {
                continue;
            };
            let paying = window
                .owed
                .min(left.max(floor.saturating_sub(window.allowance)));
            // Not in crumbs: a grant is worth a frame once it is a step, or all that is owed.
            let paid = paying > 0 && paying >= window.owed.min(floor);
            if paid {
                window.owed -= paying;
                window.allowance += paying;
                left = left.saturating_sub(paying);
            }
            if window.owed > 0 {
                self.owing.push_back(serial);
            }
            if paid {
                grant(window.route, serial, paying as u32);
            }
        }
    }
}
