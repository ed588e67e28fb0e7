//! Every limit and timer of the runtime, with the defaults docs/PROTOCOL.md promises.

use std::time::Duration;

use ferry_codec::Limits;

/// Keepalive: a PING after `interval` of silence; the peer is dead after `count` silent
/// intervals, so a silent peer is detected within `interval × (count + 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    pub interval: Duration,
    pub count: u32,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            count: 5,
        }
    }
}

/// How a server treats its connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Frame and chunk size limits.
    pub limits: Limits,
    /// CALLs beyond this many open calls on one connection are answered RESOURCE_EXHAUSTED
    /// at once; the socket keeps being read, so other calls' cancels and keepalives flow.
    pub max_in_flight_calls: usize,
    /// Connections beyond this many are sent GOAWAY RESOURCE_EXHAUSTED and closed.
    pub max_connections: usize,
    /// TCP connections from one source address beyond this many are refused the same way.
    pub max_connections_per_address: usize,
    /// A connection must finish its TLS handshake, and send its first frame, within this time.
    pub handshake_timeout: Duration,
    /// A connection with no open call and no CALL received for this long is closed.
    pub idle_timeout: Duration,
    /// `None` turns keepalive off (the peer may still ping; it is always answered).
    pub keepalive: Option<KeepaliveConfig>,
    /// Actix arbiters (threads) that connections are spread over.
    pub arbiters: usize,
    /// Frames queued for one connection's writer before senders wait.
    pub write_queue: usize,
    /// Stream bytes queued for one connection's socket and not yet written, over all its
    /// streams; a stream with credit waits for room beyond this. Credit alone does not bound
    /// it (a client may grant 2^32-1 bytes per stream and stop reading).
    pub max_send_queue: u32,
    /// Credit granted to the client per upload stream: the most the server buffers for it.
    pub stream_window: u32,
    /// Credit all of one connection's uploads may hold together (at least `stream_window` is
    /// used; each upload may always hold a quarter of `stream_window`). One upload alone gets
    /// its whole window; several share this, which bounds the bytes in flight ahead of a
    /// small call on the same connection (head-of-line latency).
    pub connection_window: u64,
    /// Streams open at once on one connection; more are refused RESOURCE_EXHAUSTED.
    pub max_streams_per_connection: usize,
    /// Stream bytes one connection may have buffered on the server: a stream that receives
    /// data is refused RESOURCE_EXHAUSTED when its window would take the connection's total
    /// of windows past this. Together with credit this bounds what a peer that opens streams
    /// and never sends, or sends and never lets them drain, can make the server hold.
    pub max_buffered_per_connection: u64,
    /// Memory one connection's data may hold beyond its windows and send queue: the large
    /// blocks its frames are read into, for as long as any chunk cut from them is held, and
    /// its downloads' read-ahead (crate::memory). When it is full the connection's frames are
    /// read into allocations of their own size, and downloads wait to read ahead.
    pub max_memory_per_connection: usize,
    /// When a streaming call ends early (abort, lost connection), how long its handler may
    /// still run to observe why (from its stream handle) and clean up before it is dropped.
    pub stream_abort_grace: Duration,
}

/// Default stream window: 1 MiB. A window should be at least the connection's round-trip
/// time multiplied by the rate one stream should reach (1 MiB covers 1 GB/s at 1 ms).
pub const DEFAULT_STREAM_WINDOW: u32 = 1024 * 1024;

/// Default send queue per connection: 4 MiB, four 1 MiB windows. The socket's own buffers
/// hold the rest of what is in flight; more queued in user space buys no speed.
pub const DEFAULT_MAX_SEND_QUEUE: u32 = 4 * 1024 * 1024;

/// Default memory budget per connection: 64 MiB, thirty-two read blocks of 8 maximum chunks,
/// or the read-ahead of 25 downloads. Sixteen blocks in use already keep a 10 Gb/s stream
/// flowing; the rest is room for chunks that streams hold.
pub const DEFAULT_MAX_MEMORY_PER_CONNECTION: usize = 64 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_in_flight_calls: 1024,
            max_connections: 1024,
            max_connections_per_address: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive: Some(KeepaliveConfig::default()),
            arbiters: std::thread::available_parallelism().map_or(1, |n| n.get()),
            write_queue: 1024,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: u64::from(DEFAULT_STREAM_WINDOW),
            max_streams_per_connection: 256,
            max_buffered_per_connection: 256 * 1024 * 1024,
            max_memory_per_connection: DEFAULT_MAX_MEMORY_PER_CONNECTION,
            stream_abort_grace: Duration::from_secs(2),
        }
    }
}

/// How a client treats its connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub limits: Limits,
    /// Connecting (TCP connect and TLS handshake) must finish within this time.
    pub connect_timeout: Duration,
    /// Calls beyond this many wait locally for a free slot instead of being sent.
    pub max_in_flight_calls: usize,
    /// Default deadline of every call; `None` means calls wait as long as the connection lives.
    pub default_deadline: Option<Duration>,
    pub keepalive: Option<KeepaliveConfig>,
    pub write_queue: usize,
    /// As [`ServerConfig::max_send_queue`], for this connection's uploads.
    pub max_send_queue: u32,
    /// MESSAGE frames queued per event subscriber; further events are dropped for that
    /// subscriber (and counted) so a slow subscriber never stalls the connection.
    pub subscriber_queue: usize,
    /// Credit granted to the server per download stream.
    pub stream_window: u32,
    /// As [`ServerConfig::connection_window`], for this connection's downloads: one download
    /// alone gets its whole window, several share this, which bounds the bytes in flight ahead
    /// of a REPLY to a small call on the same connection.
    pub connection_window: u64,
    /// As [`ServerConfig::max_memory_per_connection`], for what the server sends.
    pub max_memory_per_connection: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            max_in_flight_calls: 1024,
            default_deadline: None,
            keepalive: Some(KeepaliveConfig::default()),
            write_queue: 1024,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
            subscriber_queue: 256,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: u64::from(DEFAULT_STREAM_WINDOW),
            max_memory_per_connection: DEFAULT_MAX_MEMORY_PER_CONNECTION,
        }
    }
}
