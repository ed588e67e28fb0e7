//! Feeds a whole server connection arbitrary frame sequences.
//!
//! One actix `System` and one `Server` (the test program, small limits) live for the whole
//! process; each input opens a connection with `ServerHandle::serve_io` over an in-memory
//! pipe, writes the frames the input describes (interleaved with yields, so the server acts
//! between them), reads and checks everything the server writes, closes its end, and waits
//! (bounded) for the connection to end. Besides "never panics" it asserts that:
//! - the exchange ends: the server keeps reading and writing until the client is done (a
//!   deadlocked connection fails after `IO_BOUND`);
//! - the connection ends promptly after the client closes, before any server timer could
//!   have ended it (no stuck actor, no lost EOF);
//! - `calls_in_flight`, `streams_open`, `stream_buffered_bytes` and `held_bytes` return to 0
//!   and the server lists no open connection (nothing leaks per connection);
//! - `stream_buffered_bytes` never exceeds `max_buffered_per_connection`, nor `held_bytes`
//!   `max_memory_per_connection`, while the input runs;
//! - everything the server writes is a well-formed frame of a type a server may send (never
//!   CALL, CANCEL or STREAM/ERROR);
//! - for a serial the input opened with exactly one CALL, the server sends at most one REPLY
//!   and nothing after it (the REPLY is the serial's last server frame);
//! - the server never sends more stream data for a serial than the credit granted for it.
//!
//! The input is a byte program, read with `arbitrary::Unstructured` primitives (little-endian
//! integers, zero when the input runs out) so `fuzz/make_seed_corpus.py` can write meaningful
//! seeds: a sequence of steps, each an opcode byte and its arguments (see `Step::parse`).
//! Set `FERRY_FUZZ_DEBUG=1` to print the steps and the server's frames of an input.
//!
//! The bugs this target found (fuzz/README.md, "Findings") are fixed, and it checks for each
//! again: the control lane is small (16 frames) so bursts of replies make the connection wait
//! for its writer, holes of any length are sent, and nothing may follow a serial's REPLY.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::codec::{Frame, FrameCodec, Limits, MessageType, Status, encode_message};
use ferry_actors::metrics::Gauge;
use ferry_actors::test_program::proto::{
    EchoRequest, FailRequest, SinkRequest, SleepRequest, SourceRequest, TicksRequest,
};
use ferry_actors::test_program::{TestProgram, TestService};
use ferry_actors::{KeepaliveConfig, Server, ServerConfig, ServerHandle};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Decoder;

const TEST: u32 = 0x7465_7374;
const KEEPALIVE: u32 = 0x6b65_6570;
const CONTROL: u32 = 0x6672_7279;

const MAX_FRAME: u32 = 256 * 1024;
const MAX_CHUNK: u32 = 16 * 1024;
const WINDOW: u32 = 64 * 1024;
const MAX_BUFFERED: u64 = 3 * WINDOW as u64;
/// Four of the reader's large blocks (8 maximum chunks each): small, so inputs fill it and the
/// reader's budget-full path and refused large calls are exercised.
const MAX_MEMORY: usize = 4 * 8 * (MAX_CHUNK as usize + 28);
const MAX_STREAMS: usize = 4;
const MAX_IN_FLIGHT: usize = 16;
/// Steps of one input at most.
const MAX_STEPS: usize = 256;
/// Longest Source download a garbage CALL body may ask for. The server makes that much data
/// (within the credit the input grants, up to 2^32-1 per grant), which takes time per input and
/// finds nothing a short download does not.
const SOURCE_CAP: u64 = 4 << 20;
/// Frames one flood step writes at most.
const MAX_FLOOD: u16 = 2048;
/// Bound on how long the connection may take to end after the client closed its side. Every
/// server timer (handshake, idle, keepalive) is longer, so a connection that only ends because
/// a timer fired fails here.
const END_BOUND: Duration = Duration::from_secs(2);
/// Bound on writing the input and reading the server's output to its end. An input takes
/// milliseconds; a connection that stops both reading and writing (a deadlock) fails here.
const IO_BOUND: Duration = Duration::from_secs(10);
/// Bound on the gauges returning to 0 once the connection ended (handlers of streaming calls
/// get `stream_abort_grace` first).
const SETTLE_BOUND: Duration = Duration::from_secs(2);

fn config() -> ServerConfig {
    ServerConfig {
        limits: Limits {
            max_frame: MAX_FRAME,
            max_chunk: MAX_CHUNK,
        },
        max_in_flight_calls: MAX_IN_FLIGHT,
        max_connections: 64,
        max_connections_per_address: 64,
        handshake_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        keepalive: Some(KeepaliveConfig {
            interval: Duration::from_secs(1),
            count: 3,
        }),
        arbiters: 1,
        // Small, so that bursts of replies exercise the path where the connection waits for
        // its writer (the deadlock in fuzz/README.md, "Findings").
        write_queue: 16,
        // Small too, so that credit floods on downloads make streams wait for room.
        max_send_queue: 64 * 1024,
        stream_window: WINDOW,
        // One window for all uploads, so several exercise the credit held back and paid later.
        connection_window: u64::from(WINDOW),
        max_streams_per_connection: MAX_STREAMS,
        max_buffered_per_connection: MAX_BUFFERED,
        max_memory_per_connection: MAX_MEMORY,
        stream_abort_grace: Duration::from_millis(10),
    }
}

// ---------------------------------------------------------------------------------------------
// The input: a byte program of steps.

/// One thing the fuzzed client does.
#[derive(Debug)]
enum Step {
    /// A CALL with a well-formed header; `body` is a request or garbage.
    Call {
        program: u32,
        version: u32,
        procedure: u32,
        serial: u32,
        body: Vec<u8>,
    },
    /// `count` STREAM/CONTINUE frames of `len` bytes.
    Data {
        serial: u32,
        len: usize,
        count: u16,
    },
    /// A STREAM_HOLE/CONTINUE with this payload (12 bytes when well formed).
    Hole {
        serial: u32,
        payload: Vec<u8>,
    },
    /// STREAM/OK: a finish or a confirmation.
    StreamOk {
        serial: u32,
    },
    /// STREAM/ERROR: an abort, with a (possibly garbage) error body.
    StreamError {
        serial: u32,
        payload: Vec<u8>,
    },
    /// `count` CREDIT/OK frames of `grant` bytes each.
    Credit {
        serial: u32,
        grant: u32,
        count: u16,
    },
    /// A CREDIT/OK with a payload that is probably not 4 bytes.
    CreditRaw {
        serial: u32,
        payload: Vec<u8>,
    },
    /// `count` CANCELs, on `serial` or spread over serials 1..=8.
    Cancel {
        serial: u32,
        count: u16,
        spread: bool,
    },
    /// Any well-framed frame: valid type and status, any combination, any payload.
    Frame {
        program: u32,
        version: u32,
        procedure: u32,
        kind: MessageType,
        serial: u32,
        status: Status,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    /// MESSAGE/ERROR GOAWAY on the control program.
    GoAway {
        payload: Vec<u8>,
    },
    /// MESSAGE/OK SHUTDOWN, which only servers send.
    Shutdown {
        payload: Vec<u8>,
    },
    /// A header that is a framing error: its length word, type and status as given.
    BadHeader {
        length: u32,
        kind: u32,
        status: u32,
    },
    /// Part of a frame: the first `cut` bytes of a frame whose payload is `len` bytes.
    Partial {
        len: u16,
        cut: u32,
    },
    /// Raw bytes.
    Garbage(Vec<u8>),
    /// Let the server run: yield this many times.
    Yield(u8),
}

fn byte(u: &mut Unstructured) -> u8 {
    u8::arbitrary(u).unwrap_or(0)
}

fn word16(u: &mut Unstructured) -> u16 {
    u16::arbitrary(u).unwrap_or(0)
}

fn word32(u: &mut Unstructured) -> u32 {
    u32::arbitrary(u).unwrap_or(0)
}

/// A length (`u16` mod `max + 1`) and that many bytes, fewer if the input runs out.
fn blob(u: &mut Unstructured, max: u16) -> Vec<u8> {
    let len = usize::from(word16(u) % (max + 1)).min(u.len());
    u.bytes(len).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A serial: mostly 1..=8 so that serials collide and get reused; sometimes 0, the top of the
/// range, or any.
fn serial(u: &mut Unstructured) -> u32 {
    match byte(u) {
        b @ 0..0xf0 => u32::from(b % 8) + 1,
        0xf0..0xf8 => 0,
        b @ 0xf8..0xfc => u32::MAX - u32::from(b - 0xf8),
        _ => word32(u),
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A CALL payload of `len` bytes of `EchoRequest`, so the whole frame is exactly that long.
fn echo_of_frame_len(frame_len: usize) -> Vec<u8> {
    let total = frame_len - 28;
    // Tag (1 byte) + varint length + payload = total.
    let mut payload_len = total - 1;
    loop {
        let mut head = vec![0x0a];
        varint(&mut head, payload_len as u64);
        if head.len() + payload_len == total {
            head.resize(total, b'x');
            return head;
        }
        payload_len -= 1;
    }
}

impl Step {
    fn parse(u: &mut Unstructured) -> Step {
        match byte(u) % 17 {
            0 => Self::parse_call(u),
            1 => Step::Data {
                serial: serial(u),
                len: usize::from(word16(u)) % (MAX_CHUNK as usize + 1024),
                count: u16::from(byte(u) % 16) + 1,
            },
            2 => {
                let serial = serial(u);
                let payload = if byte(u) % 4 == 0 {
                    blob(u, 64)
                } else {
                    let mut p = Vec::with_capacity(12);
                    p.extend_from_slice(&u64::from(word32(u)).to_be_bytes());
                    p.extend_from_slice(&word32(u).to_be_bytes());
                    p
                };
                Step::Hole { serial, payload }
            }
            3 => Step::StreamOk { serial: serial(u) },
            4 => Step::StreamError {
                serial: serial(u),
                payload: blob(u, 256),
            },
            5 => {
                let serial = serial(u);
                let grant = match byte(u) % 6 {
                    0 => 0,
                    1 => u32::MAX,
                    2 => WINDOW,
                    3 => word32(u),
                    4 => u32::from(word16(u)),
                    _ => 1,
                };
                Step::Credit {
                    serial,
                    grant,
                    count: word16(u) % MAX_FLOOD + 1,
                }
            }
            6 => Step::CreditRaw {
                serial: serial(u),
                payload: blob(u, 16),
            },
            7 => Step::Cancel {
                serial: serial(u),
                count: word16(u) % MAX_FLOOD + 1,
                spread: byte(u) % 2 == 1,
            },
            8 => {
                let program = match byte(u) % 4 {
                    0 => TEST,
                    1 => KEEPALIVE,
                    2 => CONTROL,
                    _ => word32(u),
                };
                let version = match byte(u) {
                    0 => 1,
                    v => u32::from(v),
                };
                let procedure = u32::from(byte(u));
                let kind = [
                    MessageType::Call,
                    MessageType::Reply,
                    MessageType::Message,
                    MessageType::Stream,
                    MessageType::StreamHole,
                    MessageType::Credit,
                    MessageType::Cancel,
                ][usize::from(byte(u) % 7)];
                let serial = serial(u);
                let status =
                    [Status::Ok, Status::Error, Status::Continue][usize::from(byte(u) % 3)];
                Step::Frame {
                    program,
                    version,
                    procedure,
                    kind,
                    serial,
                    status,
                    payload: blob(u, 1024),
                }
            }
            9 => Step::Ping,
            10 => Step::Pong,
            11 => Step::GoAway {
                payload: blob(u, 64),
            },
            12 => Step::Shutdown {
                payload: blob(u, 64),
            },
            13 => {
                let (length, kind, status) = match byte(u) % 4 {
                    0 => (u32::from(byte(u) % 28), 0, 0),
                    1 => (MAX_FRAME + 1 + u32::from(word16(u)), 0, 0),
                    2 => (28, [4, 5, 9, 0xffff_ffff][usize::from(byte(u) % 4)], 0),
                    _ => (28, 0, 3 + u32::from(byte(u))),
                };
                Step::BadHeader {
                    length,
                    kind,
                    status,
                }
            }
            14 => Step::Partial {
                len: word16(u),
                cut: word32(u),
            },
            15 => Step::Garbage(blob(u, 512)),
            _ => Step::Yield(byte(u) % 64 + 1),
        }
    }

    fn parse_call(u: &mut Unstructured) -> Step {
        let which = byte(u) % 9;
        let serial = serial(u);
        let mode = byte(u) % 4;
        let (program, version, procedure) = match which {
            0..=6 => (TEST, 1, u32::from(which) + 1),
            7 => (TEST, 1, 8 + u32::from(byte(u))),
            _ => match byte(u) % 2 {
                0 => (word32(u), 1, 1),
                _ => (TEST, 2 + u32::from(byte(u)), 1),
            },
        };
        let body = match mode {
            0 => tame_source(procedure, blob(u, 4096)),
            // A frame of exactly the maximum size, one byte over it (a framing error), or
            // large but within it.
            3 => echo_of_frame_len(match byte(u) % 3 {
                0 => MAX_FRAME as usize,
                1 => MAX_FRAME as usize + 1,
                _ => 100_000,
            }),
            _ => match procedure {
                1 => encode(&EchoRequest {
                    payload: blob(u, 4096).into(),
                }),
                2 => encode(&SleepRequest {
                    millis: match byte(u) {
                        255 => 60_000,
                        m => u64::from(m % 20),
                    },
                }),
                3 => encode(&FailRequest {
                    code: i32::from(byte(u)),
                    message: String::from_utf8_lossy(&blob(u, 64)).into_owned(),
                }),
                4 => encode(&SinkRequest {
                    stall_after: u64::from(word16(u)) * 16,
                }),
                5 => encode(&SourceRequest {
                    length: u64::from(word16(u)) * 64,
                    data_run: u64::from(word16(u)),
                    hole_run: u64::from(word16(u)),
                    chunk: u32::from(word16(u)),
                    fail_after: u64::from(word16(u)) * 64,
                }),
                7 => encode(&TicksRequest {
                    count: u32::from(byte(u)),
                }),
                _ => Vec::new(),
            },
        };
        Step::Call {
            program,
            version,
            procedure,
            serial,
            body,
        }
    }
}

/// A garbage body that happens to be a SourceRequest asks for at most `SOURCE_CAP` bytes.
fn tame_source(procedure: u32, body: Vec<u8>) -> Vec<u8> {
    match SourceRequest::decode(&body[..]) {
        Ok(mut request) if procedure == 5 && request.length > SOURCE_CAP => {
            request.length = SOURCE_CAP;
            encode(&request)
        }
        _ => body,
    }
}

fn encode<M: prost::Message>(message: &M) -> Vec<u8> {
    encode_message(message).to_vec()
}

fn parse_steps(data: &[u8]) -> Vec<Step> {
    let mut u = Unstructured::new(data);
    let mut steps = Vec::new();
    while !u.is_empty() && steps.len() < MAX_STEPS {
        steps.push(Step::parse(&mut u));
    }
    steps
}

// ---------------------------------------------------------------------------------------------
// From steps to bytes on the wire.

/// What the client does, in order.
enum Action {
    Write(Bytes),
    Yield(u8),
}

fn raw_frame(words: [u32; 6], payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(28 + payload.len());
    out.put_u32(28 + payload.len() as u32);
    for word in words {
        out.put_u32(word);
    }
    out.put_slice(payload);
    out.freeze()
}

/// Turns steps into writes. Frames of a call repeat its program, version and procedure (of the
/// serial's latest CALL), as a client would; receivers route by serial only.
fn actions(steps: &[Step]) -> Vec<Action> {
    let mut routes: HashMap<u32, (u32, u32, u32)> = HashMap::new();
    let mut out = Vec::new();
    let route = |routes: &HashMap<u32, (u32, u32, u32)>, serial: u32| {
        routes.get(&serial).copied().unwrap_or((TEST, 1, 4))
    };
    for step in steps {
        let mut frames = BytesMut::new();
        let mut push = |(program, version, procedure): (u32, u32, u32),
                        kind: u32,
                        serial: u32,
                        status: u32,
                        payload: &[u8]| {
            frames.extend_from_slice(&raw_frame(
                [program, version, procedure, kind, serial, status],
                payload,
            ));
        };
        match step {
            Step::Call {
                program,
                version,
                procedure,
                serial,
                body,
            } => {
                routes.insert(*serial, (*program, *version, *procedure));
                push((*program, *version, *procedure), 0, *serial, 0, body);
            }
            Step::Data { serial, len, count } => {
                let data = vec![0x5a; *len];
                for _ in 0..*count {
                    push(route(&routes, *serial), 3, *serial, 2, &data);
                }
            }
            Step::Hole { serial, payload } => {
                push(route(&routes, *serial), 6, *serial, 2, payload)
            }
            Step::StreamOk { serial } => push(route(&routes, *serial), 3, *serial, 0, &[]),
            Step::StreamError { serial, payload } => {
                push(route(&routes, *serial), 3, *serial, 1, payload)
            }
            Step::Credit {
                serial,
                grant,
                count,
            } => {
                for _ in 0..*count {
                    push(route(&routes, *serial), 7, *serial, 0, &grant.to_be_bytes());
                }
            }
            Step::CreditRaw { serial, payload } => {
                push(route(&routes, *serial), 7, *serial, 0, payload)
            }
            Step::Cancel {
                serial,
                count,
                spread,
            } => {
                for i in 0..u32::from(*count) {
                    let serial = if *spread { i % 8 + 1 } else { *serial };
                    push(route(&routes, serial), 8, serial, 0, &[]);
                }
            }
            Step::Frame {
                program,
                version,
                procedure,
                kind,
                serial,
                status,
                payload,
            } => {
                push(
                    (*program, *version, *procedure),
                    *kind as u32,
                    *serial,
                    *status as u32,
                    payload,
                )
            }
            Step::Ping => push((KEEPALIVE, 1, 1), 2, 0, 0, &[]),
            Step::Pong => push((KEEPALIVE, 1, 2), 2, 0, 0, &[]),
            Step::GoAway { payload } => push((CONTROL, 1, 2), 2, 0, 1, payload),
            Step::Shutdown { payload } => push((CONTROL, 1, 1), 2, 0, 0, payload),
            Step::BadHeader {
                length,
                kind,
                status,
            } => {
                frames.put_u32(*length);
                for word in [TEST, 1, 1, *kind, 1, *status] {
                    frames.put_u32(word);
                }
            }
            Step::Partial { len, cut } => {
                let whole = raw_frame([TEST, 1, 1, 0, 1, 0], &vec![0; usize::from(*len)]);
                let cut = *cut as usize % whole.len();
                frames.extend_from_slice(&whole[..cut]);
            }
            Step::Garbage(bytes) => frames.extend_from_slice(bytes),
            Step::Yield(n) => {
                out.push(Action::Yield(*n));
                continue;
            }
        }
        out.push(Action::Write(frames.freeze()));
    }
    out
}

/// What the server saw of the client's byte stream: its frames until the first framing error
/// (after which it reads nothing more), summarised per serial.
#[derive(Default)]
struct Sent {
    /// CALL frames per serial (any status).
    calls: HashMap<u32, u32>,
    /// Credit granted per serial, counted only after that serial's first CALL.
    credit: HashMap<u32, u64>,
}

fn what_the_server_saw(actions: &[Action]) -> Sent {
    let mut stream = BytesMut::new();
    for action in actions {
        if let Action::Write(bytes) = action {
            stream.extend_from_slice(bytes);
        }
    }
    let mut codec = FrameCodec::new(config().limits);
    let mut sent = Sent::default();
    while let Ok(Some(frame)) = codec.decode(&mut stream) {
        let h = frame.header;
        match h.kind {
            MessageType::Call => *sent.calls.entry(h.serial).or_default() += 1,
            MessageType::Credit if sent.calls.contains_key(&h.serial) => {
                if let Ok(grant) = <[u8; 4]>::try_from(&frame.payload[..]) {
                    *sent.credit.entry(h.serial).or_default() +=
                        u64::from(u32::from_be_bytes(grant));
                }
            }
            _ => {}
        }
    }
    sent
}

// ---------------------------------------------------------------------------------------------
// Checking what the server writes.

#[derive(Default)]
struct SerialSeen {
    replies: u32,
    /// A frame for the serial arrived after its REPLY.
    after_reply: Option<(MessageType, Status)>,
    /// Credit the server spent on stream data for the serial.
    spent: u64,
}

#[derive(Default)]
struct Received {
    frames: u64,
    per_serial: HashMap<u32, SerialSeen>,
}

impl Received {
    fn record(&mut self, frame: &Frame, debug: bool) {
        let h = frame.header;
        if debug {
            let error = match (h.kind, h.status) {
                (MessageType::Reply | MessageType::Message, Status::Error) => {
                    match ErrorBody::decode(&frame.payload[..]) {
                        Ok(body) => format!(": code {} {:?}", body.code, body.message),
                        Err(_) => ": (not an error body)".into(),
                    }
                }
                _ => String::new(),
            };
            eprintln!(
                "  server: {:?}/{:?} serial {} program {:#x} procedure {} ({} bytes){error}",
                h.kind,
                h.status,
                h.serial,
                h.program,
                h.procedure,
                frame.payload.len()
            );
        }
        self.frames += 1;
        match (h.kind, h.status) {
            (MessageType::Call | MessageType::Cancel, _) => {
                panic!("the server sent a {:?} frame: {h:?}", h.kind)
            }
            (MessageType::Stream, Status::Error) => {
                panic!("the server sent STREAM/ERROR (a server aborts with its REPLY): {h:?}")
            }
            _ => {}
        }
        if h.serial == 0 {
            return;
        }
        let seen = self.per_serial.entry(h.serial).or_default();
        if seen.replies > 0 && seen.after_reply.is_none() {
            seen.after_reply = Some((h.kind, h.status));
        }
        match (h.kind, h.status) {
            (MessageType::Reply, _) => seen.replies += 1,
            (MessageType::Stream, Status::Continue) | (MessageType::StreamHole, _) => {
                seen.spent += frame.wire_len() as u64;
            }
            _ => {}
        }
    }

    fn check(&self, sent: &Sent) {
        for (serial, seen) in &self.per_serial {
            let calls = sent.calls.get(serial).copied().unwrap_or(0);
            assert!(
                calls > 0,
                "the server sent frames for serial {serial}, which no CALL opened"
            );
            if calls == 1 {
                assert!(
                    seen.replies <= 1,
                    "{} REPLYs for serial {serial}, opened by one CALL",
                    seen.replies
                );
                assert!(
                    seen.after_reply.is_none(),
                    "the server sent {:?} for serial {serial} after its REPLY",
                    seen.after_reply.unwrap()
                );
            }
            let granted = sent.credit.get(serial).copied().unwrap_or(0);
            assert!(
                seen.spent <= granted,
                "the server sent {} bytes of stream frames for serial {serial} with {granted} \
                 bytes of credit",
                seen.spent
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one input.

struct Fuzzer {
    runner: actix_rt::SystemRunner,
    server: ServerHandle,
    debug: bool,
}

thread_local! {
    static FUZZER: RefCell<Option<Fuzzer>> = const { RefCell::new(None) };
}

fn with_fuzzer(f: impl FnOnce(&Fuzzer)) {
    FUZZER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let fuzzer = cell.get_or_insert_with(|| {
            let runner = actix_rt::System::new();
            let server = runner
                .block_on(
                    Server::new(config())
                        .program(TestProgram::serve(TestService::default()))
                        .start(),
                )
                .expect("the server starts");
            Fuzzer {
                runner,
                server,
                debug: std::env::var_os("FERRY_FUZZ_DEBUG").is_some(),
            }
        });
        f(fuzzer)
    })
}

/// Waits, bounded, for a gauge to reach 0.
async fn settle(gauge: &Gauge, name: &str, bound: Duration) {
    if tokio::time::timeout(bound, gauge.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        panic!(
            "{name} stayed at {} after the connection ended",
            gauge.get()
        );
    }
}

async fn run(server: &ServerHandle, actions: Vec<Action>, sent: Sent, debug: bool) {
    let counters = server.counters();
    let buffered_ok = || {
        let held = counters.stream_buffered_bytes.get();
        assert!(
            held <= MAX_BUFFERED,
            "the server holds {held} stream bytes, over max_buffered_per_connection"
        );
        let charged = counters.held_bytes.get();
        assert!(
            charged <= MAX_MEMORY as u64,
            "the server holds {charged} bytes against a budget of {MAX_MEMORY} (max_memory_per_connection)"
        );
    };
    let (client, server_io) = tokio::io::duplex(64 * 1024);
    server.serve_io(server_io, "fuzz");
    let (mut read, mut write) = tokio::io::split(client);

    let writer = async {
        for action in &actions {
            match action {
                Action::Write(bytes) => {
                    // The server may close first (framing error, GOAWAY): stop writing then.
                    if write.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                Action::Yield(n) => {
                    for _ in 0..*n {
                        tokio::task::yield_now().await;
                    }
                }
            }
            buffered_ok();
        }
        let _ = write.shutdown().await;
    };
    let reader = async {
        let mut codec = FrameCodec::new(Limits::default());
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut received = Received::default();
        loop {
            match read.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => received.record(&frame, debug),
                    Ok(None) => break,
                    Err(error) => panic!("the server sent bytes that are not a frame: {error}"),
                }
            }
        }
        // The server flushes what it queued before it closes, so its output ends on a frame
        // boundary.
        assert!(
            buf.is_empty(),
            "the server's output ends inside a frame ({} bytes left over)",
            buf.len()
        );
        received
    };
    let Ok((_, received)) =
        tokio::time::timeout(IO_BOUND, async { tokio::join!(writer, reader) }).await
    else {
        panic!(
            "the server stopped reading or writing: the exchange did not end within {IO_BOUND:?}"
        );
    };
    buffered_ok();

    if tokio::time::timeout(END_BOUND, counters.connections_open.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        panic!(
            "the connection did not end within {END_BOUND:?} of the client closing (calls {}, \
             streams {})",
            counters.calls_in_flight.get(),
            counters.streams_open.get()
        );
    }
    settle(&counters.calls_in_flight, "calls_in_flight", SETTLE_BOUND).await;
    settle(&counters.streams_open, "streams_open", SETTLE_BOUND).await;
    settle(
        &counters.stream_buffered_bytes,
        "stream_buffered_bytes",
        SETTLE_BOUND,
    )
    .await;
    settle(&counters.held_bytes, "held_bytes", SETTLE_BOUND).await;
    assert!(
        server.view().connections().is_empty(),
        "the server still lists a connection"
    );
    received.check(&sent);
    if debug {
        eprintln!("  {} frames from the server", received.frames);
    }
}

fuzz_target!(|data: &[u8]| {
    let steps = parse_steps(data);
    with_fuzzer(|fuzzer| {
        if fuzzer.debug {
            for step in &steps {
                eprintln!("step: {}", describe(step));
            }
        }
        let actions = actions(&steps);
        let sent = what_the_server_saw(&actions);
        fuzzer
            .runner
            .block_on(run(&fuzzer.server, actions, sent, fuzzer.debug));
    });
});

/// A step for the debug output, with long byte strings shortened.
fn describe(step: &Step) -> String {
    let text = format!("{step:?}");
    let count = text.chars().count();
    if count > 200 {
        let head: String = text.chars().take(200).collect();
        format!("{head}… ({count} chars)")
    } else {
        text
    }
}
