//! `stream-upload`, `stream-download`: one stream of `--size` bytes, chunks of 64 KiB, 256 KiB
//! and 1 MiB, over TCP and a unix socket. `stream-tls`: the same, up and down, over TLS, Ferry
//! and raw only. `streams-8`: eight concurrent uploads on one connection (raw: eight sockets, it
//! has no multiplexing).

use std::time::{Duration, Instant};

use crate::Opts;
use crate::common::{Cost, KIB, MIB, Transport, cpu_per_gb, mbps, process_cpu};
use crate::ferry::{self, Settings};
use crate::grpc;
use crate::raw;
use crate::report::{Better, Collector, Record};
use crate::runner::Runner;
use crate::workloads::peers::{AnyServer, Peer, peers, rotated};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

pub const CHUNKS: [u64; 3] = [64 * KIB, 256 * KIB, MIB];

pub fn chunk_name(chunk: u64) -> String {
    if chunk >= MIB {
        format!("{}MiB", chunk / MIB)
    } else {
        format!("{}KiB", chunk / KIB)
    }
}

/// Bytes moved before timing starts, on the same connection.
fn warm_up_size(size: u64) -> u64 {
    (size / 16).clamp(MIB, 32 * MIB).min(size)
}

pub fn one_stream(opts: &Opts, direction: Direction) -> Vec<Record> {
    let name = match direction {
        Direction::Upload => "stream-upload",
        Direction::Download => "stream-download",
    };
    let mut results = Collector::new(name);
    let peers = peers(
        opts,
        &[Peer::Ferry, Peer::Raw, Peer::TonicDefault, Peer::TonicTuned],
    );
    let client = Runner::new("bench-client");
    for transport in [Transport::Tcp, Transport::Unix] {
        for chunk in CHUNKS {
            let case = format!("{}-{}", transport.name(), chunk_name(chunk));
            let one = Case {
                transport,
                chunk,
                direction,
            };
            one.measure(opts, &client, &peers, &case, &mut results);
        }
    }
    results.finish()
}

/// `stream-tls`: one upload and one download over TLS, Ferry against the raw peer's same
/// transfer over a bare tokio-openssl stream (same handshake, certificate and settings).
pub fn tls(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("stream-tls");
    let peers = peers(opts, &[Peer::Ferry, Peer::Raw]);
    let client = Runner::new("bench-client");
    for direction in [Direction::Upload, Direction::Download] {
        for chunk in CHUNKS {
            let case = format!("{}-{}", direction.name(), chunk_name(chunk));
            let one = Case {
                transport: Transport::Tls,
                chunk,
                direction,
            };
            one.measure(opts, &client, &peers, &case, &mut results);
        }
    }
    results.finish()
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
        }
    }
}

/// One stream case: every round, each peer in turn moves `--size` bytes.
struct Case {
    transport: Transport,
    chunk: u64,
    direction: Direction,
}

impl Case {
    /// Runs the case's rounds unless `--transport`/`--chunk` exclude it.
    fn measure(
        &self,
        opts: &Opts,
        client: &Runner,
        peers: &[Peer],
        case: &str,
        results: &mut Collector,
    ) {
        let Self {
            transport,
            chunk,
            direction,
        } = *self;
        if opts
            .transport
            .as_deref()
            .is_some_and(|t| t != transport.name())
            || opts.chunk.is_some_and(|c| c != chunk)
        {
            return;
        }
        for round in 0..opts.rounds {
            for peer in rotated(peers, round) {
                let cost = one_transfer(client, peer, transport, chunk, opts.size, direction);
                results.add(
                    case,
                    peer.name(),
                    "throughput",
                    "MB/s",
                    Better::Higher,
                    mbps(opts.size, cost.wall),
                );
                results.add(
                    case,
                    peer.name(),
                    "CPU per GB",
                    "s/GB",
                    Better::Lower,
                    cost.cpu_per_gb(opts.size),
                );
            }
        }
        for peer in peers {
            results.param(case, peer.name(), "transport", transport.name());
            results.param(case, peer.name(), "chunk", chunk);
            results.param(case, peer.name(), "size", opts.size);
            if transport == Transport::Tls {
                results.param(case, peer.name(), "tls", crate::tls::openssl_version());
            }
            if *peer == Peer::Ferry {
                let settings = Settings::for_chunk(chunk);
                results.param(case, "ferry", "max_chunk", settings.max_chunk);
                results.param(case, "ferry", "window", settings.window);
            }
        }
    }
}

/// One timed transfer on a fresh server and connection, after a warm-up on that connection.
fn one_transfer(
    client: &Runner,
    peer: Peer,
    transport: Transport,
    chunk: u64,
    size: u64,
    direction: Direction,
) -> Cost {
    let settings = Settings::for_chunk(chunk);
    let server = AnyServer::start(peer, settings);
    let via = server.addrs().via(transport);
    let warm = warm_up_size(size);
    let cost = client.run(move || async move {
        match peer {
            Peer::Ferry => {
                let c = ferry::connect(&via, settings).await;
                let run = |n| {
                    let c = c.clone();
                    async move {
                        match direction {
                            Direction::Upload => ferry::upload(&c, n, chunk).await.map(|_| ()),
                            Direction::Download => ferry::download(&c, n, chunk).await.map(|_| ()),
                        }
                        .expect("ferry transfer")
                    }
                };
                run(warm).await;
                Cost::of(run(size)).await
            }
            Peer::Raw => {
                let run = |n| {
                    let via = via.clone();
                    async move {
                        match direction {
                            Direction::Upload => raw::upload(&via, n, chunk).await,
                            Direction::Download => {
                                raw::download(&via, n, chunk, 0).await.map(|_| ())
                            }
                        }
                        .expect("raw transfer")
                    }
                };
                run(warm).await;
                // Raw opens its socket inside the timed part; on loopback that is ~50 µs.
                Cost::of(run(size)).await
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let c = grpc::connect(&via, peer.tuning()).await;
                let run = |n| {
                    let c = c.clone();
                    async move {
                        match direction {
                            Direction::Upload => grpc::upload(&c, n, chunk).await,
                            Direction::Download => grpc::download(&c, n, chunk).await.map(|_| ()),
                        }
                        .expect("tonic transfer")
                    }
                };
                run(warm).await;
                Cost::of(run(size)).await
            }
        }
    });
    drop(server);
    cost
}

const STREAMS: usize = 8;
const STREAMS_CHUNK: u64 = 256 * KIB;

pub fn eight_streams(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("streams-8");
    let peers = peers(
        opts,
        &[Peer::Ferry, Peer::Raw, Peer::TonicDefault, Peer::TonicTuned],
    );
    let client = Runner::new("bench-client");
    let per_stream = (opts.size / STREAMS as u64).max(MIB);
    let case = format!("tcp-{}x{}", STREAMS, chunk_name(STREAMS_CHUNK));
    for round in 0..opts.rounds {
        for peer in rotated(&peers, round) {
            let (times, cpu) = eight_uploads(&client, peer, per_stream);
            let slowest = times.iter().copied().max().unwrap();
            let fastest = times.iter().copied().min().unwrap();
            results.add(
                &case,
                peer.name(),
                "aggregate",
                "MB/s",
                Better::Higher,
                mbps(per_stream * STREAMS as u64, slowest),
            );
            results.add(
                &case,
                peer.name(),
                "CPU per GB",
                "s/GB",
                Better::Lower,
                cpu_per_gb(cpu, per_stream * STREAMS as u64),
            );
            results.add(
                &case,
                peer.name(),
                "spread",
                "slowest/fastest",
                Better::Lower,
                slowest.as_secs_f64() / fastest.as_secs_f64(),
            );
        }
    }
    for peer in &peers {
        results.param(&case, peer.name(), "transport", "tcp");
        results.param(&case, peer.name(), "chunk", STREAMS_CHUNK);
        results.param(&case, peer.name(), "size_per_stream", per_stream);
        if *peer == Peer::Raw {
            results.param(&case, "raw", "note", "8 sockets: raw has no multiplexing");
        }
    }
    results.finish()
}

/// Runs `uploads` together from one start: each one's completion time, and the process's CPU
/// time over all of them.
async fn together(
    uploads: impl IntoIterator<Item = impl Future<Output = ()>>,
) -> (Vec<Duration>, Duration) {
    let cpu = process_cpu();
    let started = Instant::now();
    let times = futures::future::join_all(uploads.into_iter().map(|upload| async move {
        upload.await;
        started.elapsed()
    }))
    .await;
    (times, process_cpu().saturating_sub(cpu))
}

/// Completion time of each of eight concurrent uploads, from their common start, and the
/// process's CPU time over all of them.
fn eight_uploads(client: &Runner, peer: Peer, per_stream: u64) -> (Vec<Duration>, Duration) {
    let settings = Settings::default();
    let server = AnyServer::start(peer, settings);
    let via = server.addrs().via(Transport::Tcp);
    let warm = warm_up_size(per_stream * STREAMS as u64);
    let chunk = STREAMS_CHUNK;
    let measured = client.run(move || async move {
        match peer {
            Peer::Ferry => {
                let c = ferry::connect(&via, settings).await;
                ferry::upload(&c, warm, chunk).await.unwrap();
                together((0..STREAMS).map(|_| {
                    let c = c.clone();
                    async move { ferry::upload(&c, per_stream, chunk).await.unwrap() }
                }))
                .await
            }
            Peer::Raw => {
                raw::upload(&via, warm, chunk).await.unwrap();
                let mut sockets = Vec::new();
                for _ in 0..STREAMS {
                    sockets.push(raw::connect(&via).await);
                }
                together(sockets.into_iter().map(|(mut r, mut w)| async move {
                    raw::upload_on(&mut r, &mut w, per_stream, chunk)
                        .await
                        .unwrap()
                }))
                .await
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let c = grpc::connect(&via, peer.tuning()).await;
                grpc::upload(&c, warm, chunk).await.unwrap();
                together((0..STREAMS).map(|_| {
                    let c = c.clone();
                    async move { grpc::upload(&c, per_stream, chunk).await.unwrap() }
                }))
                .await
            }
        }
    });
    drop(server);
    measured
}
