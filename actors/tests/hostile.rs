//! Hostile peers on real TCP sockets. Each row of the table sends one kind of bad input on its
//! own raw connection(s) and checks the outcome docs/PROTOCOL.md documents for it (sections 2,
//! 5, 7, 8 and 10), while a well-behaved client (the library's `TestClient`) on the same server
//! keeps getting Echo replies during every row and completes a 16 MiB upload across all of
//! them. Rows also hold the server's memory to its limits: `stream_buffered_bytes` within the
//! configured windows, streams refused past `max_streams_per_connection` and
//! `max_buffered_per_connection`, and the process's resident memory within a generous bound.
//!
//! Nothing here sleeps to synchronise: every wait is on an event (a frame, a closed socket, a
//! gauge) and bounded.
//!
//! At the end, ignored tests pin down bugs found by fuzz/fuzz_targets/connection.rs and by this
//! suite, each asserting what docs/PROTOCOL.md promises; run them with `--ignored`.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    PROMPTLY, RawFrame, TestServer, Via, quick_server_config, raw_connect, raw_frame,
    read_non_ping, send, start,
};
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::metrics::Counters;
use ferry_actors::stream::{Chunk, ContentHash};
use ferry_actors::test_program::proto::{
    EchoRequest, SinkReply, SinkRequest, SleepRequest, SourceReply, SourceRequest,
};
use ferry_actors::test_program::{TestClient, pattern};
use ferry_actors::{ClientStream, ErrorCode, ServerConfig};
use futures::future::{LocalBoxFuture, join_all};
use prost::Message;
use tokio::net::TcpStream;

const TEST: u32 = 0x7465_7374;
const CONTROL: u32 = 0x6672_7279;
const GOAWAY: u32 = 2;

const ECHO: u32 = 1;
const SLEEP: u32 = 2;
const SINK: u32 = 4;
const SOURCE: u32 = 5;
const ECHO_STREAM: u32 = 6;

const CALL: u32 = 0;
const REPLY: u32 = 1;
const MESSAGE: u32 = 2;
const STREAM: u32 = 3;
const STREAM_HOLE: u32 = 6;
const CREDIT: u32 = 7;
const CANCEL: u32 = 8;

const OK: u32 = 0;
const ERROR: u32 = 1;
const CONTINUE: u32 = 2;

const WINDOW: u32 = 256 * 1024;
const MAX_STREAMS: usize = 8;
/// Four upload windows per connection.
const MAX_BUFFERED: u64 = 4 * WINDOW as u64;
/// Long enough to open 2,000 connections before the first is timed out; short enough that the
/// rows waiting for it stay quick.
const HANDSHAKE: Duration = Duration::from_secs(3);
const IDLE: Duration = Duration::from_secs(3);

const UPLOAD: u64 = 16 << 20;
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Upload chunks the well-behaved client sends during one row at most, so the upload spans
/// all the rows (the rest is sent after the last).
const CHUNKS_PER_ROW: u32 = 16;
/// How often the well-behaved client calls Echo while a row runs.
const PACE: Duration = Duration::from_millis(5);
const IDLE_CONNECTIONS: usize = 2000;
/// Resident memory the whole suite may add to the process (server and clients together).
const RSS_GROWTH_LIMIT: u64 = 200 << 20;

/// The largest stream frame the server sends: a default `max_chunk` of data and its head.
const MAX_STREAM_FRAME: u64 = 256 * 1024 + 28;

fn config() -> ServerConfig {
    ServerConfig {
        handshake_timeout: HANDSHAKE,
        idle_timeout: IDLE,
        stream_window: WINDOW,
        max_streams_per_connection: MAX_STREAMS,
        max_buffered_per_connection: MAX_BUFFERED,
        max_connections: 4 * IDLE_CONNECTIONS,
        max_connections_per_address: 4 * IDLE_CONNECTIONS,
        stream_abort_grace: Duration::from_millis(50),
        ..quick_server_config()
    }
}

// ---------------------------------------------------------------------------------------------
// Frames and expectations.

fn call(procedure: u32, serial: u32, body: &[u8]) -> Bytes {
    raw_frame(TEST, 1, procedure, CALL, serial, OK, body)
}

fn frame(procedure: u32, kind: u32, serial: u32, status: u32, payload: &[u8]) -> Bytes {
    raw_frame(TEST, 1, procedure, kind, serial, status, payload)
}

fn echo_body(text: &[u8]) -> Vec<u8> {
    EchoRequest {
        payload: Bytes::copy_from_slice(text),
    }
    .encode_to_vec()
}

fn abort_body() -> Vec<u8> {
    ErrorBody {
        code: ErrorCode::Aborted as i32,
        message: "client closes its side".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn error_body(frame: &RawFrame) -> ErrorBody {
    ErrorBody::decode(&frame.payload[..]).expect("an error body")
}

/// The next frame that is not a keepalive PING; the connection must not close first.
async fn next(stream: &mut TcpStream, what: &str) -> RawFrame {
    tokio::time::timeout(PROMPTLY, read_non_ping(stream))
        .await
        .unwrap_or_else(|_| panic!("waited in vain for {what}"))
        .unwrap_or_else(|| panic!("the connection closed before {what}"))
}

/// The next frame is REPLY/ERROR for `serial` with `code`; returns its error body.
async fn expect_refusal(stream: &mut TcpStream, serial: u32, code: ErrorCode) -> ErrorBody {
    let reply = next(stream, &format!("REPLY/ERROR {code:?} for serial {serial}")).await;
    assert_eq!(
        (reply.kind, reply.serial, reply.status),
        (REPLY, serial, ERROR),
        "expected REPLY/ERROR {code:?} for serial {serial}, got {reply:?}"
    );
    let body = error_body(&reply);
    assert_eq!(body.code, code as i32, "{}", body.message);
    body
}

/// The next frame is REPLY/OK for `serial`; returns its payload.
async fn expect_ok(stream: &mut TcpStream, serial: u32) -> Vec<u8> {
    let reply = next(stream, &format!("REPLY/OK for serial {serial}")).await;
    assert_eq!(
        (reply.kind, reply.serial, reply.status),
        (REPLY, serial, OK),
        "expected REPLY/OK for serial {serial}, got {reply:?}"
    );
    reply.payload
}

/// An Echo on `serial` is answered, and its REPLY is the next frame: the connection is up and
/// nothing else was pending for it.
async fn echo_works(stream: &mut TcpStream, serial: u32) {
    send(stream, &call(ECHO, serial, &echo_body(b"still here"))).await;
    let payload = expect_ok(stream, serial).await;
    assert_eq!(payload, echo_body(b"still here"));
}

/// GOAWAY (MESSAGE/ERROR, control program, serial 0) with `code`, then the server closes.
async fn expect_goaway_then_close(stream: &mut TcpStream, code: ErrorCode) {
    let goaway = next(stream, &format!("GOAWAY {code:?}")).await;
    assert_eq!(
        (
            goaway.program,
            goaway.procedure,
            goaway.kind,
            goaway.serial,
            goaway.status
        ),
        (CONTROL, GOAWAY, MESSAGE, 0, ERROR),
        "expected GOAWAY, got {goaway:?}"
    );
    let body = error_body(&goaway);
    assert_eq!(body.code, code as i32, "{}", body.message);
    let after = tokio::time::timeout(PROMPTLY, read_non_ping(stream))
        .await
        .expect("the server did not close after its GOAWAY");
    assert!(after.is_none(), "a frame after GOAWAY: {after:?}");
}

/// Skips CREDIT frames (grants for uploads that are draining) and returns the next frame.
async fn skip_credit(stream: &mut TcpStream, what: &str) -> RawFrame {
    loop {
        let frame = next(stream, what).await;
        if frame.kind != CREDIT {
            return frame;
        }
    }
}

/// The initial CREDIT of an accepted upload, the server's window (after any grants for other
/// uploads).
async fn expect_window(stream: &mut TcpStream, serial: u32) {
    let credit = loop {
        let frame = next(stream, &format!("the window of upload {serial}")).await;
        if frame.kind != CREDIT || frame.serial == serial {
            break frame;
        }
    };
    assert_eq!(
        (credit.kind, credit.serial, credit.status),
        (CREDIT, serial, OK),
        "expected the initial CREDIT of serial {serial}, got {credit:?}"
    );
    assert_eq!(credit.payload, WINDOW.to_be_bytes());
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Raises the soft open-files limit so 2,000 connections (both ends in this process) fit.
fn raise_open_files_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            assert!(
                limit.rlim_max >= needed,
                "RLIMIT_NOFILE hard limit {} is below the {needed} this test needs",
                limit.rlim_max
            );
            limit.rlim_cur = needed;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The well-behaved client.

struct WellBehaved {
    client: TestClient,
    upload: Option<ClientStream<SinkReply>>,
    sent: u64,
    hash: ContentHash,
    echoes: u64,
}

impl WellBehaved {
    async fn new(server: &TestServer) -> Self {
        let client = server.test_client(Via::Tcp).await;
        let upload = client.sink(&SinkRequest::default()).await.unwrap();
        Self {
            client,
            upload: Some(upload),
            sent: 0,
            hash: ContentHash::default(),
            echoes: 0,
        }
    }

    /// One Echo, answered correctly and promptly.
    async fn echo(&mut self) {
        let payload = Bytes::from(format!("echo {}", self.echoes));
        let reply = tokio::time::timeout(
            PROMPTLY,
            self.client.echo(&EchoRequest {
                payload: payload.clone(),
            }),
        )
        .await
        .expect("the well-behaved client's Echo stalled")
        .expect("the well-behaved client's Echo failed");
        assert_eq!(reply.payload, payload);
        self.echoes += 1;
    }

    async fn send_chunk(&mut self) {
        let n = (UPLOAD - self.sent).min(UPLOAD_CHUNK as u64) as usize;
        let chunk = pattern(self.sent, n);
        self.hash.update(&Chunk::Data(chunk.clone()));
        let upload = self.upload.as_mut().expect("the upload is open");
        tokio::time::timeout(PROMPTLY, upload.send(chunk))
            .await
            .expect("the well-behaved upload stalled")
            .expect("the well-behaved upload failed");
        self.sent += n as u64;
    }

    /// Sends what is left of the 16 MiB and checks the server received all of it, intact.
    async fn finish_upload(&mut self) {
        while self.sent < UPLOAD {
            self.send_chunk().await;
        }
        let upload = self.upload.take().expect("the upload is open");
        let reply = tokio::time::timeout(PROMPTLY, upload.finish())
            .await
            .expect("the well-behaved upload's REPLY stalled")
            .expect("the well-behaved upload failed");
        assert_eq!(reply.bytes, UPLOAD);
        assert_eq!(reply.checksum, self.hash.finish());
    }
}

/// Runs a row while the well-behaved client keeps working: an Echo every `PACE` until the row
/// is done (at least one), with a chunk of the upload after each of the first
/// `CHUNKS_PER_ROW`. The pace only spares the CPU (a client calling flat out slows the rows
/// that race a timeout); nothing waits on it.
async fn during<T>(well: &mut WellBehaved, row: impl Future<Output = T>) -> T {
    let done = Cell::new(false);
    let row = async {
        let out = row.await;
        done.set(true);
        out
    };
    let work = async {
        let mut pace = tokio::time::interval(PACE);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut chunks = 0;
        loop {
            well.echo().await;
            if chunks < CHUNKS_PER_ROW && well.sent < UPLOAD {
                well.send_chunk().await;
                chunks += 1;
            }
            if done.get() {
                break;
            }
            pace.tick().await;
        }
    };
    tokio::join!(row, work).0
}

// ---------------------------------------------------------------------------------------------
// The rows.

struct Ctx {
    server: TestServer,
    counters: Arc<Counters>,
}

impl Ctx {
    /// Stream bytes the server may hold besides a row's: the well-behaved upload's window.
    fn others_buffered(&self) -> u64 {
        u64::from(WINDOW)
    }

    fn assert_buffered_at_most(&self, limit: u64, row: &str) {
        let held = self.counters.stream_buffered_bytes.get();
        assert!(
            held <= limit + self.others_buffered(),
            "{row}: the server holds {held} stream bytes, over {limit} (+ one window for the \
             well-behaved upload)"
        );
    }
}

type Row = for<'a> fn(&'a Ctx) -> LocalBoxFuture<'a, ()>;

/// Framing errors (section 2): GOAWAY PROTOCOL_VIOLATION, then the server closes.
async fn framing_error(ctx: &Ctx, bytes: &[u8]) {
    let mut stream = raw_connect(&ctx.server).await;
    send(&mut stream, bytes).await;
    expect_goaway_then_close(&mut stream, ErrorCode::ProtocolViolation).await;
}

fn oversized_length(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        // The length word says 16 MiB + 1: more than max_frame. Only the header is sent; the
        // server judges it before waiting for the payload.
        let mut bytes = call(ECHO, 1, &[]).to_vec();
        let max = ctx.server.handle.view().config().limits.max_frame;
        bytes[..4].copy_from_slice(&(max + 1).to_be_bytes());
        framing_error(ctx, &bytes).await;
    })
}

fn undersized_length(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut bytes = call(ECHO, 1, &[]).to_vec();
        bytes[..4].copy_from_slice(&27u32.to_be_bytes());
        framing_error(ctx, &bytes).await;
    })
}

fn unknown_type(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        // 4 is libvirt's CALL_WITH_FDS, not part of Ferry.
        framing_error(ctx, &frame(ECHO, 4, 1, OK, &[])).await;
    })
}

fn unknown_status(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        framing_error(ctx, &frame(ECHO, CALL, 1, 3, &[])).await;
    })
}

fn bad_protobuf(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut stream = raw_connect(&ctx.server).await;
        // 0xff: field 31 with wire type 7, which does not exist.
        send(&mut stream, &call(ECHO, 1, &[0xff, 0xff, 0xff])).await;
        expect_refusal(&mut stream, 1, ErrorCode::BadRequest).await;
        // A streaming procedure too: refused before its stream opens, so no CREDIT first.
        send(&mut stream, &call(SINK, 2, &[0x08])).await;
        expect_refusal(&mut stream, 2, ErrorCode::BadRequest).await;
        echo_works(&mut stream, 1).await;
        echo_works(&mut stream, 2).await;
    })
}

fn duplicate_serial(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut stream = raw_connect(&ctx.server).await;
        let sleep = SleepRequest { millis: 60_000 }.encode_to_vec();
        send(&mut stream, &call(SLEEP, 5, &sleep)).await;
        send(&mut stream, &call(ECHO, 5, &echo_body(b"dup"))).await;
        expect_refusal(&mut stream, 5, ErrorCode::ProtocolViolation).await;
        // The original call was left alone: it is still open, and cancelling it answers it.
        send(&mut stream, &frame(SLEEP, CANCEL, 5, OK, &[])).await;
        expect_refusal(&mut stream, 5, ErrorCode::Cancelled).await;
        echo_works(&mut stream, 5).await;
    })
}

fn stream_data_for_unknown_serial(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let violations = ctx.counters.protocol_violations.get();
        let mut stream = raw_connect(&ctx.server).await;
        let hole = ferry_actors::codec::Hole::new(4096).encode();
        let mut bytes = Vec::new();
        // Data and a hole for a serial that is not open: discarded and counted, never answered.
        bytes.extend_from_slice(&frame(SINK, STREAM, 77, CONTINUE, b"orphan data"));
        bytes.extend_from_slice(&frame(SINK, STREAM_HOLE, 77, CONTINUE, &hole));
        // Finish, abort, credit and cancel for it race with a call's end by design: ignored.
        bytes.extend_from_slice(&frame(SINK, STREAM, 77, OK, &[]));
        bytes.extend_from_slice(&frame(SINK, STREAM, 77, ERROR, &abort_body()));
        bytes.extend_from_slice(&frame(SINK, CREDIT, 77, OK, &WINDOW.to_be_bytes()));
        bytes.extend_from_slice(&frame(SINK, CANCEL, 77, OK, &[]));
        send(&mut stream, &bytes).await;
        // Frames are handled in order: once this Echo is answered (as the first frame), all of
        // the above were handled without an answer.
        echo_works(&mut stream, 1).await;
        assert_eq!(ctx.counters.protocol_violations.get() - violations, 2);
    })
}

fn window_overrun(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut stream = raw_connect(&ctx.server).await;
        // The sink reads one chunk and stalls, so it grants back that chunk's credit once.
        let stalled = SinkRequest { stall_after: 1 }.encode_to_vec();
        send(&mut stream, &call(SINK, 1, &stalled)).await;
        expect_window(&mut stream, 1).await;
        // Eight 64 KiB chunks cost 8 × 65,564 bytes: more than the window plus one grant.
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..8 {
            send(&mut stream, &frame(SINK, STREAM, 1, CONTINUE, &chunk)).await;
        }
        let reply = skip_credit(&mut stream, "the overrun upload's REPLY").await;
        assert_eq!((reply.kind, reply.serial, reply.status), (REPLY, 1, ERROR));
        let body = error_body(&reply);
        assert_eq!(body.code, ErrorCode::ProtocolViolation as i32);
        assert!(body.message.contains("credit"), "{}", body.message);
        ctx.assert_buffered_at_most(u64::from(WINDOW), "window overrun");
        // The client closes its side; the serial is free and the connection keeps serving,
        // with nothing more for serial 1 (the REPLY was its last frame).
        send(&mut stream, &frame(SINK, STREAM, 1, ERROR, &abort_body())).await;
        echo_works(&mut stream, 1).await;
    })
}

fn half_a_frame_before_any(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut stream = raw_connect(&ctx.server).await;
        let echo = call(ECHO, 1, &echo_body(b"never finished"));
        send(&mut stream, &echo[..14]).await;
        // No frame ever completes: the handshake timeout closes the connection.
        expect_goaway_then_close(&mut stream, ErrorCode::DeadlineExceeded).await;
    })
}

fn half_a_frame_after_a_call(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut stream = raw_connect(&ctx.server).await;
        echo_works(&mut stream, 1).await;
        let echo = call(ECHO, 2, &echo_body(b"never finished"));
        send(&mut stream, &echo[..30]).await;
        // No call open and no CALL completed since: the idle timeout closes the connection.
        expect_goaway_then_close(&mut stream, ErrorCode::DeadlineExceeded).await;
    })
}

fn credit_flood_on_a_download(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        const LENGTH: u64 = 4 << 20;
        let mut stream = raw_connect(&ctx.server).await;
        let request = SourceRequest {
            length: LENGTH,
            ..Default::default()
        }
        .encode_to_vec();
        send(&mut stream, &call(SOURCE, 1, &request)).await;
        // Grants far beyond 2^32 - 1 in total (the sender caps what it holds), thousands of
        // tiny ones, and credit for serials that are not open (ignored).
        let mut flood = Vec::new();
        for _ in 0..1000 {
            flood.extend_from_slice(&frame(SOURCE, CREDIT, 1, OK, &u32::MAX.to_be_bytes()));
        }
        for _ in 0..5000 {
            flood.extend_from_slice(&frame(SOURCE, CREDIT, 1, OK, &1u32.to_be_bytes()));
        }
        for serial in 100..2100 {
            flood.extend_from_slice(&frame(SOURCE, CREDIT, serial, OK, &WINDOW.to_be_bytes()));
        }
        send(&mut stream, &flood).await;
        // The download arrives whole, then its finish; the confirmation gets the REPLY.
        let mut received = 0u64;
        loop {
            let frame = next(&mut stream, "the download's data").await;
            assert_eq!(frame.serial, 1, "a frame for another serial: {frame:?}");
            match (frame.kind, frame.status) {
                (STREAM, CONTINUE) => received += frame.payload.len() as u64,
                (STREAM, OK) => break,
                other => panic!("unexpected {other:?} in the download"),
            }
        }
        assert_eq!(received, LENGTH);
        send(&mut stream, &frame(SOURCE, STREAM, 1, OK, &[])).await;
        let reply = SourceReply::decode(&expect_ok(&mut stream, 1).await[..]).unwrap();
        assert_eq!(reply.bytes, LENGTH);
        echo_works(&mut stream, 1).await;
    })
}

fn cancel_floods(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let cancelled = ctx.counters.calls_cancelled.get();
        let mut stream = raw_connect(&ctx.server).await;
        // 10,000 CANCELs for serials that are not open: ignored, never answered.
        let mut flood = Vec::new();
        for serial in 1000..11_000 {
            flood.extend_from_slice(&frame(SLEEP, CANCEL, serial, OK, &[]));
        }
        send(&mut stream, &flood).await;
        echo_works(&mut stream, 1).await;
        assert_eq!(ctx.counters.calls_cancelled.get(), cancelled);

        // 1,000 CANCELs for one open call: one REPLY/ERROR CANCELLED, nothing else.
        let sleep = SleepRequest { millis: 60_000 }.encode_to_vec();
        let mut flood = call(SLEEP, 2, &sleep).to_vec();
        for _ in 0..1000 {
            flood.extend_from_slice(&frame(SLEEP, CANCEL, 2, OK, &[]));
        }
        send(&mut stream, &flood).await;
        expect_refusal(&mut stream, 2, ErrorCode::Cancelled).await;
        echo_works(&mut stream, 3).await;
        assert_eq!(ctx.counters.calls_cancelled.get() - cancelled, 1);

        // The same for an upload: its window, one REPLY/ERROR CANCELLED; the client then
        // closes its side (section 5) and the serial is free.
        let mut flood = call(SINK, 4, &[]).to_vec();
        for _ in 0..1000 {
            flood.extend_from_slice(&frame(SINK, CANCEL, 4, OK, &[]));
        }
        send(&mut stream, &flood).await;
        expect_window(&mut stream, 4).await;
        expect_refusal(&mut stream, 4, ErrorCode::Cancelled).await;
        send(&mut stream, &frame(SINK, STREAM, 4, ERROR, &abort_body())).await;
        echo_works(&mut stream, 4).await;
        assert_eq!(ctx.counters.calls_cancelled.get() - cancelled, 2);
    })
}

fn idle_connections(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        raise_open_files_limit(4 * IDLE_CONNECTIONS as u64 + 512);
        let open = ctx.counters.connections_open.get();
        let rss = resident_bytes();
        let started = Instant::now();
        let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
        for _ in 0..IDLE_CONNECTIONS {
            idle.push(raw_connect(&ctx.server).await);
        }
        let opened = started.elapsed();
        let target = open + IDLE_CONNECTIONS as u64;
        tokio::time::timeout(
            PROMPTLY,
            ctx.counters.connections_open.wait_for(|n| *n >= target),
        )
        .await
        .expect("the server did not take all the idle connections");
        let now_open = ctx.counters.connections_open.get();
        assert!(
            started.elapsed() < HANDSHAKE,
            "opening the connections took longer than the handshake timeout"
        );
        // While they are all open: nothing buffered for them, memory bounded.
        assert_eq!(now_open, target);
        ctx.assert_buffered_at_most(0, "idle connections");
        let grown = resident_bytes().saturating_sub(rss);
        eprintln!(
            "  {IDLE_CONNECTIONS} idle connections opened in {} ms, all taken in {} ms: +{} KiB \
             resident ({} B each)",
            opened.as_millis(),
            started.elapsed().as_millis(),
            grown / 1024,
            grown / IDLE_CONNECTIONS as u64
        );
        assert!(
            grown < RSS_GROWTH_LIMIT,
            "{grown} bytes for idle connections"
        );
        // Each is closed by the handshake timeout, with GOAWAY DEADLINE_EXCEEDED.
        join_all(
            idle.iter_mut()
                .map(|stream| expect_goaway_then_close(stream, ErrorCode::DeadlineExceeded)),
        )
        .await;
        common::reach(&ctx.counters.connections_open, open).await;
    })
}

fn uploads_that_never_send(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let streams = ctx.counters.streams_open.get();
        let rss = resident_bytes();
        let mut stream = raw_connect(&ctx.server).await;
        // Four uploads take the four windows of max_buffered_per_connection…
        for serial in 1..=4 {
            send(&mut stream, &call(SINK, serial, &[])).await;
            expect_window(&mut stream, serial).await;
        }
        // …so a fifth, and a bidirectional stream (which uploads too), are refused.
        send(&mut stream, &call(SINK, 5, &[])).await;
        let refusal = expect_refusal(&mut stream, 5, ErrorCode::ResourceExhausted).await;
        assert!(
            refusal.message.contains("max_buffered_per_connection"),
            "{}",
            refusal.message
        );
        send(&mut stream, &call(ECHO_STREAM, 6, &[])).await;
        expect_refusal(&mut stream, 6, ErrorCode::ResourceExhausted).await;
        // Downloads that never get credit fill the rest of max_streams_per_connection: they
        // are accepted silently (the server has no credit to send anything)…
        let download = SourceRequest {
            length: 1 << 30,
            ..Default::default()
        }
        .encode_to_vec();
        for serial in 7..=10 {
            send(&mut stream, &call(SOURCE, serial, &download)).await;
        }
        // …and the ninth stream is refused: the first frame the server sends since.
        send(&mut stream, &call(SOURCE, 11, &download)).await;
        let refusal = expect_refusal(&mut stream, 11, ErrorCode::ResourceExhausted).await;
        assert!(
            refusal.message.contains("max_streams_per_connection"),
            "{}",
            refusal.message
        );
        // Many more connections holding uploads that never send.
        let mut others = Vec::new();
        for _ in 0..32 {
            let mut other = raw_connect(&ctx.server).await;
            for serial in 1..=4 {
                send(&mut other, &call(SINK, serial, &[])).await;
                expect_window(&mut other, serial).await;
            }
            others.push(other);
        }
        common::reach(
            &ctx.counters.streams_open,
            streams + MAX_STREAMS as u64 + 32 * 4,
        )
        .await;
        // Open streams that receive nothing hold nothing.
        ctx.assert_buffered_at_most(0, "uploads that never send");
        let grown = resident_bytes().saturating_sub(rss);
        assert!(grown < RSS_GROWTH_LIMIT, "{grown} bytes for idle streams");
        // Closing the connections ends every stream.
        drop(stream);
        drop(others);
        common::reach(&ctx.counters.streams_open, streams).await;
    })
}

fn uploads_that_never_drain(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let streams = ctx.counters.streams_open.get();
        let mut stream = raw_connect(&ctx.server).await;
        // Four sinks that read one chunk and stall; each gets three chunks, which fit its
        // window, so the server holds two of them per stream and never more than its windows.
        let stalled = SinkRequest { stall_after: 1 }.encode_to_vec();
        let chunk = vec![9u8; 64 * 1024];
        for serial in 1..=4 {
            send(&mut stream, &call(SINK, serial, &stalled)).await;
            expect_window(&mut stream, serial).await;
            for _ in 0..3 {
                send(&mut stream, &frame(SINK, STREAM, serial, CONTINUE, &chunk)).await;
            }
        }
        let held = 4 * 2 * (28 + chunk.len() as u64);
        tokio::time::timeout(
            PROMPTLY,
            ctx.counters.stream_buffered_bytes.wait_for(|n| *n >= held),
        )
        .await
        .expect("the server did not buffer the stalled uploads' data");
        ctx.assert_buffered_at_most(MAX_BUFFERED, "uploads that never drain");
        // A fifth upload on this connection is refused.
        send(&mut stream, &call(SINK, 5, &stalled)).await;
        let refusal = skip_credit(&mut stream, "the fifth upload's refusal").await;
        assert_eq!(
            (refusal.kind, refusal.serial, refusal.status),
            (REPLY, 5, ERROR),
            "{refusal:?}"
        );
        assert_eq!(
            error_body(&refusal).code,
            ErrorCode::ResourceExhausted as i32
        );
        // Closing the connection drops what it held.
        drop(stream);
        common::reach(&ctx.counters.streams_open, streams).await;
        ctx.assert_buffered_at_most(0, "uploads that never drain, closed");
    })
}

fn downloads_that_never_read(ctx: &Ctx) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let streams = ctx.counters.streams_open.get();
        let rss = resident_bytes();
        let download = SourceRequest {
            length: 1 << 30,
            ..Default::default()
        }
        .encode_to_vec();
        // Two connections, each with four 1 GiB downloads: two never granted credit, two
        // granted the most there is; neither connection ever reads a byte.
        let mut peers = Vec::new();
        for _ in 0..2 {
            let mut stream = raw_connect(&ctx.server).await;
            let mut bytes = Vec::new();
            for serial in 1..=4 {
                bytes.extend_from_slice(&call(SOURCE, serial, &download));
            }
            for serial in 3..=4 {
                bytes.extend_from_slice(&frame(
                    SOURCE,
                    CREDIT,
                    serial,
                    OK,
                    &u32::MAX.to_be_bytes(),
                ));
            }
            send(&mut stream, &bytes).await;
            peers.push(stream);
        }
        common::reach(&ctx.counters.streams_open, streams + 8).await;
        // The credited downloads fill their sockets, then their connection's send queue, and
        // wait there: the server queues at most `max_send_queue` per connection, whatever
        // credit it was given. (Before that limit the writer's data lane grew by the full
        // 2^32-1 bytes of credit.)
        let limit = u64::from(config().max_send_queue);
        let nearly_full = 2 * (limit - MAX_STREAM_FRAME);
        tokio::time::timeout(
            PROMPTLY,
            ctx.counters
                .send_queued_bytes
                .wait_for(|n| *n >= nearly_full),
        )
        .await
        .expect("both connections' send queues fill up");
        let queued = ctx.counters.send_queued_bytes.get();
        assert!(
            queued <= 2 * limit,
            "{queued} bytes queued for two connections that never read"
        );
        // Each connection's credited downloads then stall on its full queue: once they have
        // their next frame ready, which on a loaded machine can come after the queue filled.
        common::count_reaches(&ctx.counters.send_queue_stalls, 2, "send-queue stalls").await;
        // The server buffers nothing for them, and its memory stays bounded.
        ctx.assert_buffered_at_most(0, "downloads that never read");
        let grown = resident_bytes().saturating_sub(rss);
        assert!(
            grown < RSS_GROWTH_LIMIT,
            "{grown} bytes for unread downloads"
        );
        drop(peers);
        common::reach(&ctx.counters.streams_open, streams).await;
    })
}

#[actix_rt::test]
async fn hostile_peers_get_the_documented_outcome_while_a_good_client_is_served() {
    let rss = resident_bytes();
    let server = start(config()).await;
    let counters = server.handle.counters();
    let ctx = Ctx { server, counters };
    let mut well = WellBehaved::new(&ctx.server).await;
    let started = Instant::now();
    let rows: [(&str, &str, Row); 16] = [
        (
            "oversized length",
            "GOAWAY PROTOCOL_VIOLATION, close",
            oversized_length,
        ),
        (
            "undersized length",
            "GOAWAY PROTOCOL_VIOLATION, close",
            undersized_length,
        ),
        (
            "unknown type",
            "GOAWAY PROTOCOL_VIOLATION, close",
            unknown_type,
        ),
        (
            "unknown status",
            "GOAWAY PROTOCOL_VIOLATION, close",
            unknown_status,
        ),
        (
            "bad protobuf body",
            "REPLY/ERROR BAD_REQUEST, stays up",
            bad_protobuf,
        ),
        (
            "duplicate serial",
            "REPLY/ERROR PROTOCOL_VIOLATION, original call untouched",
            duplicate_serial,
        ),
        (
            "stream data for an unknown serial",
            "discarded and counted, never answered",
            stream_data_for_unknown_serial,
        ),
        (
            "window overrun on a Sink upload",
            "REPLY/ERROR PROTOCOL_VIOLATION for that stream, stays up",
            window_overrun,
        ),
        (
            "half a frame, then silence (first frame)",
            "handshake timeout: GOAWAY DEADLINE_EXCEEDED, close",
            half_a_frame_before_any,
        ),
        (
            "half a frame, then silence (after a call)",
            "idle timeout: GOAWAY DEADLINE_EXCEEDED, close",
            half_a_frame_after_a_call,
        ),
        (
            "CREDIT flood on a Source download",
            "capped; the download completes, REPLY/OK",
            credit_flood_on_a_download,
        ),
        (
            "CANCEL floods",
            "unknown serials ignored; one REPLY/ERROR CANCELLED per open call",
            cancel_floods,
        ),
        (
            "2,000 idle connections",
            "held within memory bounds, then GOAWAY DEADLINE_EXCEEDED",
            idle_connections,
        ),
        (
            "uploads that never send",
            "RESOURCE_EXHAUSTED past the stream limits; nothing buffered",
            uploads_that_never_send,
        ),
        (
            "uploads that never drain",
            "at most the windows buffered; RESOURCE_EXHAUSTED past them",
            uploads_that_never_drain,
        ),
        (
            "downloads never read or credited",
            "nothing buffered, memory bounded",
            downloads_that_never_read,
        ),
    ];
    for (name, outcome, row) in rows {
        // Each row starts from a settled server: the connections of earlier rows are gone, and
        // only the well-behaved client's connection and upload are open.
        common::reach(&ctx.counters.connections_open, 1).await;
        common::reach(&ctx.counters.streams_open, 1).await;
        let row_started = Instant::now();
        during(&mut well, row(&ctx)).await;
        eprintln!(
            "row {name:<45} {outcome:<64} {:>6} ms",
            row_started.elapsed().as_millis()
        );
    }
    well.finish_upload().await;
    eprintln!(
        "well-behaved client: {} Echo replies and a {} MiB upload, all rows in {} ms",
        well.echoes,
        UPLOAD >> 20,
        started.elapsed().as_millis()
    );
    common::reach(&ctx.counters.calls_in_flight, 0).await;
    common::reach(&ctx.counters.streams_open, 0).await;
    common::reach(&ctx.counters.stream_buffered_bytes, 0).await;
    let grown = resident_bytes().saturating_sub(rss);
    eprintln!("resident memory grew by {} MiB", grown >> 20);
    assert!(
        grown < RSS_GROWTH_LIMIT,
        "the process grew by {grown} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Regressions for bugs found by fuzz/fuzz_targets/connection.rs and by this suite, all fixed;
// each documents how the bug showed and the outcome docs/PROTOCOL.md promises.

/// A connection that has more control frames to queue than `write_queue` holds deadlocks:
/// `Router::send` (actors/src/server/connection/router.rs) waits for room with `ctx.wait`,
/// which also stops the actor's spawned futures, among them the connection's writer, the only
/// thing that makes room. The connection then neither reads nor writes nor runs its timers,
/// forever, even after the peer closes: it keeps its slot in `connections_open`. With the
/// default `write_queue` (1024) a client that pipelines calls and reads its replies slowly
/// (or an event subscriber that falls behind while the connection must send a REPLY, CREDIT or
/// PONG) gets there the same way; a small queue only makes it quick to show.
#[actix_rt::test]
async fn a_burst_of_replies_larger_than_the_write_queue_does_not_deadlock_the_connection() {
    let server = start(ServerConfig {
        write_queue: 4,
        ..quick_server_config()
    })
    .await;
    let mut stream = raw_connect(&server).await;
    let mut calls = Vec::new();
    for serial in 1..=64 {
        calls.extend_from_slice(&call(ECHO, serial, &echo_body(b"x")));
    }
    send(&mut stream, &calls).await;
    for n in 0..64 {
        let reply = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("the connection is stuck after {n} of 64 replies"))
            .expect("the connection closed");
        assert_eq!((reply.kind, reply.status), (REPLY, OK), "{reply:?}");
    }
    drop(stream);
    common::reach(&server.handle.counters().connections_open, 0).await;
}

/// Section 4: "Every combination not listed here is a protocol violation: it is answered for
/// that serial where a serial is known". The server checks the status of CALL frames only:
/// it takes CANCEL with any status as a cancel, CREDIT with any status as a grant, and
/// STREAM_HOLE with any status as a hole (actors/src/server/connection/router.rs `on_cancel`,
/// `on_credit`, `on_stream_frame`).
#[actix_rt::test]
async fn type_status_pairs_outside_section_4_are_protocol_violations() {
    let server = start(config()).await;
    let mut stream = raw_connect(&server).await;
    // CANCEL/ERROR for an open call.
    let sleep = SleepRequest { millis: 60_000 }.encode_to_vec();
    send(&mut stream, &call(SLEEP, 1, &sleep)).await;
    send(&mut stream, &frame(SLEEP, CANCEL, 1, ERROR, &[])).await;
    expect_refusal(&mut stream, 1, ErrorCode::ProtocolViolation).await;
    // CREDIT/CONTINUE for an open download.
    let download = SourceRequest {
        length: 1024,
        ..Default::default()
    }
    .encode_to_vec();
    send(&mut stream, &call(SOURCE, 2, &download)).await;
    send(
        &mut stream,
        &frame(SOURCE, CREDIT, 2, CONTINUE, &WINDOW.to_be_bytes()),
    )
    .await;
    expect_refusal(&mut stream, 2, ErrorCode::ProtocolViolation).await;
    // STREAM_HOLE/OK for an open upload.
    send(&mut stream, &call(SINK, 3, &[])).await;
    expect_window(&mut stream, 3).await;
    let hole = ferry_actors::codec::Hole::new(4096).encode();
    send(&mut stream, &frame(SINK, STREAM_HOLE, 3, OK, &hole)).await;
    expect_refusal(&mut stream, 3, ErrorCode::ProtocolViolation).await;
}

/// A STREAM_HOLE frame costs 40 bytes of credit whatever length it claims (up to 2^64 - 1),
/// while a consumer that hashes holes spends CPU in proportion to the length. The test
/// program's Sink hashed them in its handler, on the connection's arbiter thread, so one
/// 40-byte frame claiming 2^50 bytes kept that thread busy for days and every connection on it
/// stalled (found by fuzz/fuzz_targets/connection.rs, as a timeout). Holes are now hashed in
/// slices with yields between (`ContentHash::absorb`).
#[actix_rt::test]
async fn a_huge_hole_does_not_stall_other_connections() {
    let server = start(ServerConfig {
        arbiters: 1,
        ..config()
    })
    .await;
    let well = server.test_client(Via::Tcp).await;
    let mut stream = raw_connect(&server).await;
    send(&mut stream, &call(SINK, 1, &[])).await;
    expect_window(&mut stream, 1).await;
    let hole = ferry_actors::codec::Hole::new(1 << 50).encode();
    send(&mut stream, &frame(SINK, STREAM_HOLE, 1, CONTINUE, &hole)).await;
    // The hole reaches the Sink within milliseconds; the other connection (on the same, only,
    // arbiter) must keep being served meanwhile.
    for n in 0..20 {
        tokio::time::timeout(PROMPTLY, well.echo(&EchoRequest::default()))
            .await
            .unwrap_or_else(|_| panic!("Echo {n} stalled behind the hole"))
            .unwrap();
    }
}

/// Section 5: "The REPLY is always the server's last frame for a serial." When a download is
/// cancelled (or aborted) while its stream actor still has a credit message queued, the actor
/// spends it after the connection queued the REPLY: `Router::conclude`
/// (actors/src/server/connection/router.rs) sends `FromPeer::End` to the stream actor and queues the
/// REPLY, but the `FromPeer::Credit` ahead of `End` in the actor's mailbox runs `pump` first,
/// and the data it queues is no longer purged by the writer (`purge_if_final`,
/// actors/src/connection/writer.rs, only drops data queued before the REPLY). The data goes out
/// after the REPLY; a client that already reused the serial takes it for the new call's. Found
/// by fuzz/fuzz_targets/connection.rs. (Streams have no mailbox now: the connection hands them
/// credit and their end at once, and a sender checks `halted` before it queues; the test keeps
/// that so.)
#[actix_rt::test]
async fn a_cancelled_download_sends_nothing_after_its_reply() {
    let server = start(config()).await;
    let mut stream = raw_connect(&server).await;
    let download = SourceRequest {
        length: 4 << 20,
        ..Default::default()
    }
    .encode_to_vec();
    // The download opens and its handler waits for credit (an Echo round trip later it has).
    send(&mut stream, &call(SOURCE, 1, &download)).await;
    echo_works(&mut stream, 2).await;
    // Credit, and at once a CANCEL.
    let mut bytes = frame(SOURCE, CREDIT, 1, OK, &WINDOW.to_be_bytes()).to_vec();
    bytes.extend_from_slice(&frame(SOURCE, CANCEL, 1, OK, &[]));
    send(&mut stream, &bytes).await;
    loop {
        let frame = next(&mut stream, "the cancelled download's REPLY").await;
        if frame.kind == REPLY {
            assert_eq!((frame.serial, frame.status), (1, ERROR));
            break;
        }
    }
    // The client closes its side; then nothing more may come for serial 1.
    send(&mut stream, &frame(SOURCE, STREAM, 1, ERROR, &abort_body())).await;
    send(&mut stream, &call(ECHO, 3, &echo_body(b"after"))).await;
    let frame = next(&mut stream, "the Echo's REPLY").await;
    assert_eq!(
        (frame.kind, frame.serial, frame.status),
        (REPLY, 3, OK),
        "a frame of {} bytes after serial 1's REPLY",
        frame.payload.len()
    );
}

/// Section 2: after a framing error the server writes out the whole frames it queued, then
/// GOAWAY. A peer that closed its side inside a frame used to be dropped at once, cutting a
/// download's frame off mid-write (found by fuzz/fuzz_targets/connection.rs once it checked
/// that the server's output ends on a frame boundary).
#[actix_rt::test]
async fn a_peer_that_closes_inside_a_frame_gets_whole_frames_then_goaway() {
    let server = start(config()).await;
    let mut stream = raw_connect(&server).await;
    let download = SourceRequest {
        length: 64 << 20,
        ..Default::default()
    }
    .encode_to_vec();
    send(&mut stream, &call(SOURCE, 1, &download)).await;
    send(
        &mut stream,
        &frame(SOURCE, CREDIT, 1, OK, &u32::MAX.to_be_bytes()),
    )
    .await;
    let first = next(&mut stream, "the download's first chunk").await;
    assert_eq!((first.kind, first.serial), (STREAM, 1));
    // Half an Echo, then the client closes its side while the download still flows.
    let echo = call(ECHO, 2, &echo_body(b"cut short"));
    send(&mut stream, &echo[..echo.len() / 2]).await;
    tokio::io::AsyncWriteExt::shutdown(&mut stream)
        .await
        .unwrap();
    // Whole frames of the download (`next` fails on a cut frame), then GOAWAY and the close.
    loop {
        let frame = next(&mut stream, "GOAWAY PROTOCOL_VIOLATION").await;
        if frame.kind == MESSAGE {
            assert_eq!((frame.program, frame.procedure), (CONTROL, GOAWAY));
            let body = error_body(&frame);
            assert_eq!(body.code, ErrorCode::ProtocolViolation as i32);
            break;
        }
        assert_eq!(frame.serial, 1, "only the download was open: {frame:?}");
    }
    let after = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .expect("the server did not close after its GOAWAY");
    assert!(after.is_none(), "a frame after GOAWAY: {after:?}");
}

/// Uploads on one connection share `connection_window`: the first gets its whole window, the
/// next a quarter window each (what every upload may always hold), however many there are.
/// What a client can have in flight towards the server, ahead of its small calls, is bounded
/// by the connection's budget plus a quarter window per upload, not a window per upload.
#[actix_rt::test]
async fn uploads_share_the_connection_window() {
    let server = start(ServerConfig {
        connection_window: u64::from(WINDOW),
        ..config()
    })
    .await;
    let mut stream = raw_connect(&server).await;
    let mut calls = Vec::new();
    for serial in 1..=4 {
        calls.extend_from_slice(&call(SINK, serial, &[]));
    }
    send(&mut stream, &calls).await;
    let mut first = std::collections::BTreeMap::new();
    while first.len() < 4 {
        let frame = next(&mut stream, "the uploads' first CREDITs").await;
        assert_eq!((frame.kind, frame.status), (CREDIT, OK), "{frame:?}");
        let grant = u32::from_be_bytes(frame.payload[..].try_into().unwrap());
        assert!(
            first.insert(frame.serial, grant).is_none(),
            "two first CREDITs"
        );
    }
    let quarter = WINDOW / 4;
    assert_eq!(
        first.into_iter().collect::<Vec<_>>(),
        [(1, WINDOW), (2, quarter), (3, quarter), (4, quarter)]
    );
    // Nothing more until credit is spent: the budget is taken.
    echo_works(&mut stream, 9).await;
}

/// The client mirrors the server: its downloads share `ClientConfig::connection_window`. A raw
/// server sees the first grants of four downloads as the window and three quarter windows, and
/// no more credit while nothing is spent.
#[actix_rt::test]
async fn downloads_share_the_client_connection_window() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = ferry_actors::ClientConfig {
        stream_window: WINDOW,
        connection_window: u64::from(WINDOW),
        keepalive: None,
        ..ferry_actors::ClientConfig::default()
    };
    let client = TestClient::new(
        ferry_actors::Client::connect_tcp(&address, config)
            .await
            .unwrap(),
    );
    let (mut server, _) = listener.accept().await.unwrap();
    // A download's handle comes as soon as its CALL is queued; dropping it would cancel.
    let mut downloads = Vec::new();
    for _ in 0..4 {
        downloads.push(client.source(&SourceRequest::default()).await.unwrap());
    }
    let mut calls = 0;
    let mut first = std::collections::BTreeMap::new();
    while calls < 4 || first.len() < 4 {
        let frame = next(&mut server, "the downloads' CALLs and first CREDITs").await;
        match (frame.kind, frame.status) {
            (CALL, OK) => calls += 1,
            (CREDIT, OK) => {
                let grant = u32::from_be_bytes(frame.payload[..].try_into().unwrap());
                assert!(
                    first.insert(frame.serial, grant).is_none(),
                    "two first CREDITs"
                );
            }
            other => panic!("unexpected {other:?}: {frame:?}"),
        }
    }
    let quarter = WINDOW / 4;
    assert_eq!(
        first.into_values().collect::<Vec<_>>(),
        [WINDOW, quarter, quarter, quarter]
    );
    // Nothing more is granted while no credit is spent: the next frame is a later call's.
    actix_rt::spawn(async move {
        let _ = client.echo(&EchoRequest::default()).await;
    });
    let frame = next(&mut server, "the echo's CALL").await;
    assert_eq!((frame.kind, frame.procedure), (CALL, ECHO), "{frame:?}");
    drop(downloads);
}
