//! `memory`: RSS (from /proc/self/statm) and live heap (from the counting allocator) per idle
//! stream, with `--idle` Sink streams open on one connection, and per idle connection, with
//! `--idle` connections that each made one Echo call. The server runs in a process of its own,
//! so each side is measured alone; both processes trim their heap before the baseline.
//!
//! `copies`: bytes allocated per payload byte on the send and the receive path (Ferry only),
//! each side counted in its own process: one read buffer per byte received means no copy after
//! the socket read; nothing per byte sent means no copy before the socket write.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::Opts;
use crate::alloc;
use crate::child::{Child, Stats};
use crate::common::{KIB, MIB, Via};
use crate::ferry::{self, Settings};
use crate::grpc::{self, Tuning};
use crate::raw;
use crate::report::{Better, Collector, Record};
use crate::runner::Runner;
use crate::workloads::peers::{Peer, peers, rotated};
use ferry_actors::test_program::proto::SinkRequest;

/// Keeps `value` alive on the current runner until the returned sender fires (or drops).
fn hold<T: 'static>(value: T) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    actix_rt::spawn(async move {
        let _ = rx.await;
        drop(value);
    });
    tx
}

/// Settings that let one connection hold `--idle` calls.
fn ferry_settings() -> Settings {
    Settings {
        max_in_flight: 1 << 20,
        max_connections: 1 << 20,
        max_streams: 1 << 20,
        max_buffered: u64::MAX,
        ..Settings::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Idle {
    Streams,
    Connections,
}

/// Per idle item: (server RSS, server heap, client RSS, client heap), in bytes.
struct PerItem([f64; 4]);

pub fn memory(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("memory");
    let n = opts.idle;
    for (case, idle, candidates) in [
        (
            "idle-streams",
            Idle::Streams,
            &[Peer::Ferry, Peer::TonicDefault][..],
        ),
        (
            "idle-connections",
            Idle::Connections,
            &[Peer::Ferry, Peer::Raw, Peer::TonicDefault][..],
        ),
    ] {
        let peers = peers(opts, candidates);
        for round in 0..opts.rounds {
            for peer in rotated(&peers, round) {
                let PerItem(values) = measure(peer, idle, n);
                let names = ["server rss", "server heap", "client rss", "client heap"];
                for (name, value) in names.iter().zip(values) {
                    results.add(case, peer.name(), name, "B/item", Better::Lower, value);
                }
            }
        }
        for peer in &peers {
            results.param(case, peer.name(), "items", n);
            results.param(case, peer.name(), "transport", "tcp");
        }
    }
    results.finish()
}

fn wait_for(child: &mut Child, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = child.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "the server never reached {what}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn measure(peer: Peer, idle: Idle, n: usize) -> PerItem {
    let mut child = Child::spawn(peer.name());
    let via = Via::Tcp(child.addr.clone());
    let client = Runner::new("memory-client");
    let settings = ferry_settings();
    // One connection with one call, and for streams a few opened and closed: every lazily
    // built structure exists before the baseline.
    enum Conn {
        Ferry(ferry_actors::test_program::TestClient),
        Grpc(grpc::Client),
        Raw,
    }
    let conn = {
        let via = via.clone();
        client.run(move || async move {
            let payload = bytes::Bytes::from_static(&[7u8; 32]);
            match peer {
                Peer::Ferry => {
                    let c = ferry::connect(&via, settings).await;
                    ferry::echo(&c, &payload).await;
                    for _ in 0..16 {
                        let stream = c.sink(&SinkRequest::default()).await.unwrap();
                        drop(stream);
                    }
                    Conn::Ferry(c)
                }
                Peer::TonicDefault | Peer::TonicTuned => {
                    let c = grpc::connect(&via, Tuning::Default).await;
                    grpc::echo(&c, &payload).await;
                    Conn::Grpc(c)
                }
                Peer::Raw => Conn::Raw,
            }
        })
    };
    let base = wait_for(&mut child, "its warm-up state", |s| s.streams == 0);
    std::thread::sleep(Duration::from_millis(100));
    child.trim();
    alloc::trim();
    let server_before = child.stats();
    let (client_rss, client_heap) = (alloc::rss(), alloc::live());
    let release = client.run(move || async move {
        let payload = bytes::Bytes::from_static(&[7u8; 32]);
        match (idle, conn) {
            (Idle::Streams, Conn::Ferry(c)) => {
                let mut streams = Vec::with_capacity(n);
                for _ in 0..n {
                    streams.push(c.sink(&SinkRequest::default()).await.unwrap());
                }
                hold((c, streams))
            }
            (Idle::Streams, Conn::Grpc(c)) => {
                let calls: Vec<_> = (0..n)
                    .map(|_| actix_rt::spawn(grpc::idle_upload(&c)))
                    .collect();
                let (tx, rx) = oneshot::channel::<()>();
                actix_rt::spawn(async move {
                    let _ = rx.await;
                    for call in calls {
                        call.abort();
                    }
                    drop(c);
                });
                tx
            }
            (Idle::Connections, Conn::Ferry(c)) => {
                let mut clients = Vec::with_capacity(n);
                for _ in 0..n {
                    let client = ferry::connect(&via, settings).await;
                    ferry::echo(&client, &payload).await;
                    clients.push(client);
                }
                hold((c, clients))
            }
            (Idle::Connections, Conn::Grpc(c)) => {
                let mut clients = Vec::with_capacity(n);
                for _ in 0..n {
                    let client = grpc::connect(&via, Tuning::Default).await;
                    grpc::echo(&client, &payload).await;
                    clients.push(client);
                }
                hold((c, clients))
            }
            (Idle::Connections, Conn::Raw) => hold(raw::idle_connections(&via, n, &payload).await),
            (Idle::Streams, Conn::Raw) => unreachable!("raw has no streams"),
        }
    });
    let target_streams = server_before.streams + n as u64;
    let target_connections = server_before.connections + n as u64;
    match idle {
        Idle::Streams => wait_for(&mut child, "all idle streams", |s| {
            s.streams >= target_streams
        }),
        Idle::Connections => wait_for(&mut child, "all idle connections", |s| {
            s.connections >= target_connections
        }),
    };
    // Let timers, credits and acknowledgements settle.
    std::thread::sleep(Duration::from_millis(300));
    let server_after = child.stats();
    let (client_rss_after, client_heap_after) = (alloc::rss(), alloc::live());
    let _ = base;
    let _ = release.send(());
    drop(client);
    drop(child);
    let per = |after: u64, before: u64| (after as f64 - before as f64) / n as f64;
    PerItem([
        per(server_after.rss, server_before.rss),
        per(server_after.heap, server_before.heap),
        per(client_rss_after, client_rss),
        per(client_heap_after, client_heap),
    ])
}

const COPIES_CHUNK: u64 = 256 * KIB;

pub fn copies(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("copies");
    let size = opts.copies_size;
    let upload_case = "tcp-256KiB-upload";
    let download_case = "tcp-256KiB-download";
    for _ in 0..opts.rounds {
        let mut child = Child::spawn("ferry");
        let via = Via::Tcp(child.addr.clone());
        let client = Runner::new("copies-client");
        let c = client.run(move || async move {
            let c = ferry::connect(&via, Settings::default()).await;
            ferry::upload(&c, 8 * MIB, COPIES_CHUNK).await.unwrap();
            ferry::download(&c, 8 * MIB, COPIES_CHUNK).await.unwrap();
            c
        });
        let per_byte = |after: u64, before: u64| (after - before) as f64 / size as f64;

        let (client_before, server_before) = (alloc::allocated(), child.stats().allocated);
        let up = c.clone();
        client.run(move || async move { ferry::upload(&up, size, COPIES_CHUNK).await.unwrap() });
        let (client_after, server_after) = (alloc::allocated(), child.stats().allocated);
        results.add(
            upload_case,
            "ferry",
            "send path (client)",
            "B/B",
            Better::Lower,
            per_byte(client_after, client_before),
        );
        results.add(
            upload_case,
            "ferry",
            "receive path (server)",
            "B/B",
            Better::Lower,
            per_byte(server_after, server_before),
        );

        let (client_before, server_before) = (alloc::allocated(), child.stats().allocated);
        let down = c.clone();
        client.run(move || async move {
            ferry::download(&down, size, COPIES_CHUNK).await.unwrap();
        });
        let (client_after, server_after) = (alloc::allocated(), child.stats().allocated);
        results.add(
            download_case,
            "ferry",
            "send path (server)",
            "B/B",
            Better::Lower,
            per_byte(server_after, server_before),
        );
        results.add(
            download_case,
            "ferry",
            "receive path (client)",
            "B/B",
            Better::Lower,
            per_byte(client_after, client_before),
        );
        client.run(move || async move { drop(c) });
    }
    for case in [upload_case, download_case] {
        results.param(case, "ferry", "size", size);
        results.param(case, "ferry", "chunk", COPIES_CHUNK);
    }
    results.finish()
}
