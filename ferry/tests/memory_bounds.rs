//! The memory-bound suite: hostile peers against a real `ferryd` process, with the node's
//! resident memory (VmRSS from /proc) held to the budgets SECURITY.md documents.
//!
//! Each test starts its own node with small budgets, so that what the budgets allow and what
//! an unbounded node would hold are far apart:
//!
//! - `max_memory_per_connection` = [`BUDGET`] (read blocks and download read-ahead);
//! - `max_send_queue` at its default (4 MiB), `max_buffered_per_connection` at its default,
//!   the windows the node grants being what bounds held upload data;
//! - keepalive off, so a peer that never reads is not closed while it is measured.
//!
//! A peer here is a raw unix socket speaking frames built with the codec (common/raw.rs; the
//! node's own client library would be a well-behaved peer). The measurement: the node's RSS before the
//! hostile peers start, then its largest RSS while they hold everything they can make it
//! hold, taken once the node has gone quiet (its CPU time stops advancing: there is no event
//! for "done all it will do", so that is polled, boundedly). The growth must stay within what
//! the budgets allow plus [`OVERHEAD`], a fixed allowance for the node's own bookkeeping
//! (blocking-pool threads, allocator slack, per-stream state), documented in SECURITY.md.
//!
//! Figures from today's main before these bounds existed, same patterns: see SECURITY.md.
//!
//! The hole tests check the CPU side of the same promise: work a 40-byte frame asks for
//! (hashing a hole of terabytes) stops when its stream ends.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::Daemon;
use common::raw::{DOWNLOAD, ECHO, FRAME_HEAD, PROMPTLY, Peer, SINK, UPLOAD, test, volume};
use ferry_actors::ErrorCode;
use ferry_actors::codec::proto::ErrorBody;
use ferry_actors::codec::{Credit, Frame, FrameCodec, Hole, MessageType, Status};
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest};
use ferry_node::proto::volume::{DownloadRequest, UploadRequest};
use prost::Message;
use tokio_util::codec::Encoder;

const MIB: u64 = 1 << 20;
/// `max_memory_per_connection` of every node here.
const BUDGET: u64 = 4 * MIB;
/// The default stream window and the quarter of it each upload may always hold.
const WINDOW: u64 = MIB;
const UPLOAD_FLOOR: u64 = WINDOW / 4;
/// What the node may hold beyond its budgets under these patterns: its own bookkeeping.
const OVERHEAD: u64 = 32 * MIB;

// ---------------------------------------------------------------------------------------------
// The node and what it holds.

/// A node with the suite's budgets on a fresh data dir.
fn node(dir: &Path) -> Daemon {
    let config = dir.join("ferryd.toml");
    std::fs::write(
        &config,
        format!("[limits]\nmax_memory_per_connection = {BUDGET}\nkeepalive_interval_secs = 0\n"),
    )
    .unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    Daemon::start(&data, Some(&config))
}

/// One numeric field of /proc/PID/status, in bytes.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

fn resident(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// CPU time the process has used (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as u64 }
}

/// Waits until the node has gone quiet (no CPU time used for half a second) and returns the
/// largest RSS seen meanwhile. Panics if it is still busy after `within`.
fn settle(pid: u32, within: Duration) -> u64 {
    const STEP: Duration = Duration::from_millis(100);
    const QUIET_STEPS: u32 = 5;
    let deadline = Instant::now() + within;
    let mut peak = resident(pid);
    let mut last = cpu_ticks(pid);
    let mut quiet = 0;
    while quiet < QUIET_STEPS {
        assert!(
            Instant::now() < deadline,
            "the node was still busy after {within:?}"
        );
        std::thread::sleep(STEP);
        peak = peak.max(resident(pid));
        let now = cpu_ticks(pid);
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    peak
}

/// What a pattern made the node hold, against what it may.
struct Measured {
    baseline: u64,
    peak: u64,
}

impl Measured {
    fn growth(&self) -> u64 {
        self.peak.saturating_sub(self.baseline)
    }

    /// Asserts the growth is within `allowed` (what the budgets let the pattern hold) plus
    /// [`OVERHEAD`], and prints the figures for the record.
    fn within(&self, pattern: &str, allowed: u64) {
        let limit = allowed + OVERHEAD;
        eprintln!(
            "{pattern}: RSS {} MiB -> peak {} MiB, growth {:.1} MiB; budgets allow {:.1} MiB + {} MiB overhead",
            self.baseline / MIB,
            self.peak / MIB,
            self.growth() as f64 / MIB as f64,
            allowed as f64 / MIB as f64,
            OVERHEAD / MIB
        );
        assert!(
            self.growth() <= limit,
            "{pattern}: the node grew by {:.1} MiB, more than the {:.1} MiB its budgets allow \
             ({:.1} MiB) plus {} MiB overhead",
            self.growth() as f64 / MIB as f64,
            limit as f64 / MIB as f64,
            allowed as f64 / MIB as f64,
            OVERHEAD / MIB
        );
    }
}

/// A volume of `len` bytes of data (no holes) on the node, uploaded with the CLI.
fn data_volume(node: &Daemon, dir: &Path, name: &str, len: u64) {
    let file = dir.join(name);
    common::random_file(&file, len, 7);
    let output = common::run(node, &["vol", "upload", file.to_str().unwrap(), name]);
    assert!(
        output.status.success(),
        "uploading {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Opens `streams` downloads of `name` on `peer`, grants each 2^32 - 1 bytes and never reads.
fn stalled_downloads(peer: &mut Peer, name: &str, streams: u32) {
    for serial in 1..=streams {
        let request = DownloadRequest {
            name: name.into(),
            ..Default::default()
        };
        peer.call(volume(DOWNLOAD), serial, &request);
        peer.send(Frame::credit(volume(DOWNLOAD), serial, Credit(u32::MAX)));
    }
}

// ---------------------------------------------------------------------------------------------
// Memory.

/// Defect 1 of issue 13: each stalled download read ahead of its consumer outside any budget
/// (2.5 MiB per stream). Two connections, 64 downloads each, of a 16 MiB volume.
#[test]
fn stalled_downloads_hold_no_more_than_the_memory_budget() {
    const CONNECTIONS: u64 = 2;
    const STREAMS: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    data_volume(&node, dir.path(), "big", 16 * MIB);
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peers: Vec<Peer> = (0..CONNECTIONS).map(|_| Peer::connect(&node)).collect();
    for peer in &mut peers {
        stalled_downloads(peer, "big", STREAMS);
    }
    let peak = settle(pid, PROMPTLY);
    // Read-ahead and what waits in the send queue are both charged to the budget.
    Measured { baseline, peak }.within("stalled downloads", CONNECTIONS * BUDGET);
    // The node still serves others meanwhile.
    let list = common::run(&node, &["vol", "list"]);
    assert!(list.status.success());
}

/// The same, spread over many connections: each is held to its own budget.
#[test]
fn many_connections_with_stalled_downloads_each_hold_their_budget() {
    const CONNECTIONS: u64 = 32;
    const STREAMS: u32 = 8;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    data_volume(&node, dir.path(), "big", 16 * MIB);
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peers: Vec<Peer> = (0..CONNECTIONS).map(|_| Peer::connect(&node)).collect();
    for peer in &mut peers {
        stalled_downloads(peer, "big", STREAMS);
    }
    let peak = settle(pid, PROMPTLY);
    Measured { baseline, peak }.within("many connections", CONNECTIONS * BUDGET);
}

/// Credit floods: thousands of grants, tiny and huge, on stalled downloads change nothing
/// about what the node holds (credit is a number, not a buffer).
#[test]
fn credit_floods_on_stalled_downloads_hold_nothing_more() {
    const STREAMS: u32 = 64;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    data_volume(&node, dir.path(), "big", 16 * MIB);
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peer = Peer::connect(&node);
    stalled_downloads(&mut peer, "big", STREAMS);
    let mut flood = BytesMut::new();
    for round in 0..20_000u32 {
        let serial = 1 + round % STREAMS;
        let grant = if round % 2 == 0 { 1 } else { u32::MAX };
        let frame = Frame::credit(volume(DOWNLOAD), serial, Credit(grant));
        peer.codec.encode(frame, &mut flood).unwrap();
    }
    peer.socket.write_all(&flood).unwrap();
    let peak = settle(pid, PROMPTLY);
    Measured { baseline, peak }.within("credit floods", BUDGET);
}

/// Defect 2 of issue 13: held chunks pinned whole read blocks. On one connection Sink A
/// consumes while Sink B holds what it gets; each small chunk for B lands in a block that
/// A's 2 MiB fill, so before the fix 300 one-byte chunks held 300 blocks.
fn pinned_blocks(held_chunk: usize, rounds: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peer = Peer::connect(&node);
    let (a, b) = (2, 1);
    peer.call(test(SINK), b, &SinkRequest { stall_after: 1 });
    peer.accepted(b);
    peer.call(test(SINK), a, &SinkRequest { stall_after: 0 });
    peer.accepted(a);
    for _ in 0..rounds {
        // B holds its chunks only while it has credit for them: it stops when it has none.
        if peer.credit[&b] < FRAME_HEAD + held_chunk as u64 {
            break;
        }
        peer.data(test(SINK), b, Bytes::from(vec![0x11; held_chunk]));
        peer.stream(test(SINK), a, 2 * MIB);
    }
    let peak = settle(pid, PROMPTLY);
    drop(peer);
    Measured { baseline, peak }
}

#[test]
fn one_byte_chunks_held_by_a_stalled_stream_pin_no_blocks() {
    // B's window (a quarter window at least) bounds what it holds; its chunks pin nothing.
    pinned_blocks(1, 300).within("pinned blocks, 1-byte chunks", UPLOAD_FLOOR + WINDOW);
}

#[test]
fn page_sized_chunks_held_by_a_stalled_stream_pin_no_more_than_the_budget() {
    // 4 KiB chunks are not copied out: their blocks are charged, up to the budget, and then
    // frames are read at their own size.
    pinned_blocks(4096, 300).within(
        "pinned blocks, 4 KiB chunks",
        BUDGET + UPLOAD_FLOOR + WINDOW,
    );
}

/// Stalled uploads: 2 connections × 255 uploads (and one more: the stream limit is 256), each of which sends one page that its Sink
/// takes and then holds (it stalls after it), while an upload on the same connection that is
/// consumed sends 250 KiB between them. Before the fix each held page kept its read block
/// alive: +130 MiB for 2 MiB of held data.
#[test]
fn stalled_uploads_hold_what_they_hold_and_the_budget() {
    const CONNECTIONS: u64 = 2;
    const UPLOADS: u32 = 255;
    const HELD: usize = 4096;
    const BETWEEN: u64 = 250 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peers: Vec<Peer> = (0..CONNECTIONS).map(|_| Peer::connect(&node)).collect();
    let consumed = UPLOADS + 1;
    for peer in &mut peers {
        peer.call(test(SINK), consumed, &SinkRequest { stall_after: 0 });
        peer.accepted(consumed);
        for serial in 1..=UPLOADS {
            peer.call(test(SINK), serial, &SinkRequest { stall_after: 1 });
            peer.accepted(serial);
            peer.data(test(SINK), serial, Bytes::from(vec![0x5a; HELD]));
            peer.stream(test(SINK), consumed, BETWEEN);
        }
    }
    let peak = settle(pid, PROMPTLY);
    let held = CONNECTIONS * u64::from(UPLOADS) * (HELD as u64 + FRAME_HEAD);
    // The consumed upload's window may be full of data not yet taken, too.
    let in_flight = CONNECTIONS * WINDOW;
    Measured { baseline, peak }.within("stalled uploads", held + in_flight + CONNECTIONS * BUDGET);
}

/// Replies never read: a peer sends large Echo calls and never reads. Each call's payload is
/// charged to the budget until its REPLY (which carries it back) is written, and calls that do
/// not fit are refused RESOURCE_EXHAUSTED at once. Before, the node held every one.
#[test]
fn replies_never_read_hold_no_more_than_the_budget() {
    const CALLS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let pid = node.pid();
    let baseline = settle(pid, PROMPTLY);
    let mut peer = Peer::connect(&node);
    // Written from another thread: once the node stops reading, this one would block.
    let mut socket = peer.socket.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let payload = Bytes::from(vec![0x33; MIB as usize]);
        let mut codec = FrameCodec::default();
        for serial in 1..=CALLS {
            let request = EchoRequest {
                payload: payload.clone(),
            };
            let mut out = BytesMut::new();
            let frame = Frame::call(test(ECHO), serial, request.encode_to_vec().into());
            codec.encode(frame, &mut out).unwrap();
            if socket.write_all(&out).is_err() {
                break;
            }
        }
    });
    let peak = settle(pid, PROMPTLY);
    // The calls being read and answered: at most the budget, and one call being assembled.
    Measured { baseline, peak }.within("replies never read", BUDGET + 2 * MIB);
    writer.join().unwrap();
    // Reading now gets a reply to every call: the echo for those that fitted, a refusal that
    // names the budget for the others.
    // Refusals are written at once, echoes when their handler ran: replies come in any order.
    let (mut echoed, mut refused) = (0, 0);
    let mut answered = std::collections::HashSet::new();
    while answered.len() < CALLS as usize {
        let reply = peer.next();
        if reply.header.kind != MessageType::Reply {
            continue;
        }
        assert!(
            answered.insert(reply.header.serial),
            "two replies to serial {}",
            reply.header.serial
        );
        if reply.header.status == Status::Ok {
            echoed += 1;
            continue;
        }
        let body = ErrorBody::decode(&reply.payload[..]).unwrap();
        assert_eq!(body.code, ErrorCode::ResourceExhausted as i32, "{body:?}");
        assert!(
            body.message.contains("max_memory_per_connection"),
            "{body:?}"
        );
        refused += 1;
    }
    assert!(
        echoed >= 1 && refused >= 1,
        "{echoed} echoed, {refused} refused"
    );
}

// ---------------------------------------------------------------------------------------------
// CPU: work a hole asks for stops with its stream.

/// A hole of 1 TiB (within `max_volume_size`): hashing it takes the node minutes.
const HUGE_HOLE: u64 = 1 << 40;

/// CPU time the node may spend after the stream ended (hashing the rest of a 1 TiB hole
/// would take minutes).
const AFTER_END: Duration = Duration::from_secs(1);

/// Waits (boundedly) until the node has used a fifth of a second of CPU from now on: it is
/// at work on what it was just sent.
fn busy(node: &Daemon) {
    let start = cpu_ticks(node.pid());
    let deadline = Instant::now() + PROMPTLY;
    while cpu_ticks(node.pid()) < start + ticks_per_second() / 5 {
        assert!(Instant::now() < deadline, "the node never got to work");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens an upload, sends a huge hole and waits until the node is hashing it.
fn upload_a_huge_hole(node: &Daemon) -> Peer {
    let mut peer = Peer::connect(node);
    let request = UploadRequest {
        name: "holey".into(),
        ..Default::default()
    };
    peer.call(volume(UPLOAD), 1, &request);
    peer.accepted(1);
    peer.send(Frame::hole(
        volume(UPLOAD),
        1,
        Hole {
            length: HUGE_HOLE,
            flags: 0,
        },
    ));
    busy(node);
    peer
}

/// Asserts the node goes quiet soon after `ended`, having spent little CPU since.
fn stops_working(node: &Daemon, ended: u64, what: &str) {
    settle(node.pid(), PROMPTLY);
    let spent =
        Duration::from_secs_f64((cpu_ticks(node.pid()) - ended) as f64 / ticks_per_second() as f64);
    eprintln!("{what}: {spent:?} of CPU after the stream ended");
    assert!(
        spent <= AFTER_END,
        "{what}: the node spent {spent:?} of CPU after the stream ended"
    );
}

/// Defect 3 of issue 13: the hole's hashing went on after the abort.
#[test]
fn an_aborted_upload_stops_hashing_its_hole() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let mut peer = upload_a_huge_hole(&node);
    let abort = ErrorBody {
        code: ErrorCode::Cancelled as i32,
        message: "changed my mind".into(),
        ..Default::default()
    };
    peer.send(Frame::stream_abort(volume(UPLOAD), 1, &abort));
    let reply = peer.reply(1);
    let ended = cpu_ticks(node.pid());
    assert_eq!(reply.header.status, Status::Error, "{reply:?}");
    stops_working(&node, ended, "aborted upload");
    // Nothing of it is visible.
    let list = common::run_json(&node, &["vol", "list"]);
    assert_eq!(list, serde_json::json!([]), "{list}");
}

/// The same when the peer just goes away.
#[test]
fn an_upload_whose_peer_disconnects_stops_hashing_its_hole() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let peer = upload_a_huge_hole(&node);
    drop(peer);
    let ended = cpu_ticks(node.pid());
    stops_working(&node, ended, "disconnected upload");
}

/// And a download of a volume that is one huge hole, cancelled after its first frame: the
/// read-ahead's hashing of the hole stops too.
#[test]
fn a_cancelled_download_stops_hashing_its_hole() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let create = common::run(&node, &["vol", "create", "sparse", "4TiB"]);
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    let mut peer = Peer::connect(&node);
    let request = DownloadRequest {
        name: "sparse".into(),
        ..Default::default()
    };
    peer.call(volume(DOWNLOAD), 1, &request);
    peer.send(Frame::credit(volume(DOWNLOAD), 1, Credit(u32::MAX)));
    let first = peer.next();
    assert_eq!(first.header.kind, MessageType::StreamHole, "{first:?}");
    peer.send(Frame::cancel(volume(DOWNLOAD), 1));
    peer.reply(1);
    let ended = cpu_ticks(node.pid());
    stops_working(&node, ended, "cancelled download");
}
