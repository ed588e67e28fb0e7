//! The runtime's counters, kept in one place so the daemon can expose them to Prometheus.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ferry_codec::Route;
use ferry_codec::proto::{ErrorCode, Side};
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
    /// Calls refused as unauthenticated or not permitted, and connections closed for not
    /// authenticating in time.
    pub auth_refusals: Counter,
    /// Connections dropped before they started: failed or timed-out TLS handshakes.
    pub handshake_failures: Counter,
    pub keepalive_timeouts: Counter,
    pub streams_open: Gauge,
    /// Stream bytes (counted as credit: whole frames) received and not yet consumed.
    pub stream_buffered_bytes: Gauge,
    /// Times a stream's sender had data but no credit and had to wait.
    pub credit_stalls: Counter,
    /// Stream bytes (whole frames) queued for the socket and not yet written; at most
    /// `max_send_queue` per connection.
    pub send_queued_bytes: Gauge,
    /// Times a stream's sender had data and credit but its connection's send queue was full.
    pub send_queue_stalls: Counter,
    /// Bytes charged to connections' memory budgets (`max_memory_per_connection`): large read
    /// blocks until the last chunk cut from them is dropped, and download read-ahead.
    pub held_bytes: Gauge,
    /// Times a connection's reader found its memory budget full and read a frame into an
    /// allocation of its own size instead of a large block.
    pub memory_full: Counter,
    /// Stream data payload bytes received and sent (holes not counted).
    pub stream_bytes_in: Counter,
    pub stream_bytes_out: Counter,
    /// MESSAGE frames dropped because a subscriber's queue was full.
    pub events_dropped: Counter,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

/// Figures of one server connection, for the admin program.
#[derive(Debug)]
pub struct ConnectionStats {
    pub id: u64,
    /// `tcp:ADDR` or `unix:uid=N`.
    pub peer: Arc<str>,
    pub since: SystemTime,
    pub calls_in_flight: Counter,
    pub streams_open: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

impl ConnectionStats {
    pub fn new(id: u64, peer: Arc<str>) -> Self {
        Self {
            id,
            peer,
            since: SystemTime::now(),
            calls_in_flight: Counter::default(),
            streams_open: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
        }
    }
}

impl Counter {
    /// Sets the value: for levels its owner recomputes (calls open on a connection).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// Where a connection's traffic is counted: its owner's totals and, on a server, the
/// connection's own figures.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub total: Arc<Counters>,
    pub connection: Option<Arc<ConnectionStats>>,
}

impl Traffic {
    pub fn sent(&self, frames: u64, bytes: u64, stream_bytes: u64) {
        self.total.stream_bytes_out.add(stream_bytes);
        self.total.frames_out.add(frames);
        self.total.bytes_out.add(bytes);
        if let Some(connection) = &self.connection {
            connection.bytes_out.add(bytes);
        }
    }

    pub fn received(&self, frame: &ferry_codec::Frame) {
        let bytes = frame.wire_len() as u64;
        let h = &frame.header;
        if h.kind == ferry_codec::MessageType::Stream && h.status == ferry_codec::Status::Continue {
            self.total.stream_bytes_in.add(frame.payload.len() as u64);
        }
        self.total.frames_in.inc();
        self.total.bytes_in.add(bytes);
        if let Some(connection) = &self.connection {
            connection.bytes_in.add(bytes);
        }
    }
}

/// Hooks for metrics that need labels (program, procedure, outcome). The runtime calls them;
/// the daemon turns them into Prometheus families. Every method has a no-op default.
///
/// Each hook gets the route's numbers and its names from the program's declaration
/// ([`RouteNames`]), so labels say `volume`/`upload` as the logs do.
pub trait Observer: Send + Sync + 'static {
    /// A call's REPLY was sent: `outcome` is `None` for OK, else the error code.
    fn call_finished(
        &self,
        _route: Route,
        _names: &RouteNames<'_>,
        _outcome: Option<ErrorCode>,
        _elapsed: Duration,
    ) {
    }
    /// A stream was aborted; `by` is the side that started the abort.
    fn stream_aborted(&self, _route: Route, _names: &RouteNames<'_>, _by: Side, _code: ErrorCode) {}
}

/// The observer used when none is configured.
pub struct NoObserver;

impl Observer for NoObserver {}

/// A route as logs and metrics name it, so both say `program=volume procedure=upload` where
/// the wire says `0x766f6c75` and `4`. Programs and procedures the server does not serve keep
/// their numbers (the program in hex), so a label set stays bounded by what clients send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteNames<'a> {
    pub program: Cow<'a, str>,
    pub procedure: Cow<'a, str>,
}
