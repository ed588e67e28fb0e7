//! The runtime's counters, kept in one place so the daemon can expose them to Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down and can be awaited (tests and shutdown wait for it to reach a
/// value instead of polling or sleeping).
#[derive(Debug)]
pub struct Gauge(watch::Sender<u64>);

impl Default for Gauge {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Gauge {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.sub(1);
    }

    pub fn add(&self, n: u64) {
        self.0.send_modify(|level| *level += n);
    }

    pub fn sub(&self, n: u64) {
        self.0.send_modify(|level| *level -= n);
    }

    pub fn get(&self) -> u64 {
        *self.0.borrow()
    }

    /// Resolves once the gauge satisfies `predicate`.
    pub async fn wait_for(&self, predicate: impl FnMut(&u64) -> bool) {
        let mut rx = self.0.subscribe();
        // The sender lives as long as `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(predicate).await;
    }
}

/// Counters of one server (or one client connection).
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub calls_in_flight: Gauge,
    pub calls_total: Counter,
    pub calls_failed: Counter,
    pub calls_cancelled: Counter,
    /// CALLs or connections refused because a configured limit was reached.
    pub limit_rejections: Counter,
    pub protocol_violations: Counter,
    pub keepalive_timeouts: Counter,
    pub streams_open: Gauge,
    /// Stream bytes (counted as credit: whole frames) received and not yet consumed.
    pub stream_buffered_bytes: Gauge,
    /// Times a stream's sender had data but no credit and had to wait.
    pub credit_stalls: Counter,
    /// MESSAGE frames dropped because a subscriber's queue was full.
    pub events_dropped: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}
