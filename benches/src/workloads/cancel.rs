//! `cancel`: how long until the other side observes a cancel, from each side, and the bytes
//! that still crossed after it.
//!
//! - client-cancel: the client uploads (256 KiB chunks) and, in full flight, drops the
//!   upload. Latency: from the drop to the server observing it (Ferry: the Sink handler is
//!   dropped, counted in `sinks_discarded`; tonic: the request stream fails; raw: EOF). Bytes
//!   after: what the client's socket still wrote after the drop (Ferry: `bytes_out`; tonic: a
//!   counting socket; raw: none, the close is the cancel).
//! - server-abort: a download that the server fails once it has sent `fail_after` bytes
//!   (Ferry: Source with `fail_after`). Latency: from the server's abort to the client's
//!   `recv` returning the error. Bytes after: data the client still received after the abort.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::Opts;
use crate::common::{ABORTED_AT, CANCEL_SEEN, KIB, MIB, Transport, Via, pattern};
use crate::ferry::{self, Settings};
use crate::grpc;
use crate::raw;
use crate::report::{Better, Collector, Record};
use crate::runner::Runner;
use crate::workloads::peers::{AnyServer, Peer, peers, rotated};
use ferry_actors::test_program::proto::{SinkRequest, SourceRequest};

const CHUNK: u64 = 256 * KIB;
/// Give up waiting for an observation after this long (reported as the latency then).
const PATIENCE: Duration = Duration::from_secs(5);
/// Time for in-flight bytes to settle before counting them.
const SETTLE: Duration = Duration::from_millis(100);

/// One cancel: latency until observed, and bytes after.
#[derive(Debug, Clone, Copy)]
struct Observed {
    latency: Duration,
    bytes_after: Option<u64>,
}

pub fn cancel(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("cancel");
    let peers = peers(
        opts,
        &[Peer::Ferry, Peer::Raw, Peer::TonicDefault, Peer::TonicTuned],
    );
    let client = Runner::new("bench-client");
    // In full flight: past the windows of every peer.
    let flowing = if opts.smoke { 2 * MIB } else { 64 * MIB };
    for (case, server_side) in [("client-cancel", false), ("server-abort", true)] {
        for round in 0..opts.rounds {
            for peer in rotated(&peers, round) {
                let mut latencies = Vec::new();
                let mut after = Vec::new();
                for _ in 0..opts.cancel_reps {
                    let observed = if server_side {
                        server_abort(&client, peer, flowing)
                    } else {
                        client_cancel(&client, peer, flowing)
                    };
                    latencies.push(observed.latency.as_secs_f64() * 1e6);
                    if let Some(bytes) = observed.bytes_after {
                        after.push(bytes as f64);
                    }
                }
                results.add(
                    case,
                    peer.name(),
                    "latency",
                    "µs",
                    Better::Lower,
                    median(&latencies),
                );
                if !after.is_empty() {
                    results.add(
                        case,
                        peer.name(),
                        "bytes after",
                        "B",
                        Better::Lower,
                        median(&after),
                    );
                }
            }
        }
        for peer in &peers {
            results.param(case, peer.name(), "transport", "tcp");
            results.param(case, peer.name(), "chunk", CHUNK);
            results.param(case, peer.name(), "cancel_after", flowing);
            results.param(case, peer.name(), "reps_per_round", opts.cancel_reps);
        }
        results.param(case, "ferry", "window", Settings::default().window);
        for peer in [Peer::TonicDefault, Peer::TonicTuned] {
            if peers.contains(&peer) && !server_side {
                results.param(
                    case,
                    peer.name(),
                    "note",
                    "tonic gives the handler a client's RST_STREAM(CANCEL) as a clean end of \
                     stream: the server observes the end, not a cancel",
                );
            }
        }
    }
    results.finish()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn client_cancel(client: &Runner, peer: Peer, flowing: u64) -> Observed {
    let server = AnyServer::start(peer, Settings::default());
    let via = server.addrs().via(Transport::Tcp);
    let observations = match &server {
        AnyServer::Ferry(s) => Some(s.observations.clone()),
        _ => None,
    };
    CANCEL_SEEN.clear();
    let observed = client.run(move || async move {
        match peer {
            Peer::Ferry => {
                let observations = observations.expect("ferry server");
                let c = ferry::connect_client(&via, Settings::default()).await;
                let test = ferry_actors::test_program::TestClient::new(c.clone());
                let mut stream = test.sink(&SinkRequest::default()).await.unwrap();
                let mut offset = 0;
                while offset < flowing {
                    stream.send(pattern(offset, CHUNK as usize)).await.unwrap();
                    offset += CHUNK;
                }
                let mut discarded = pin!(observations.sinks_discarded_signal.notified());
                discarded.as_mut().enable();
                let before = c.counters().bytes_out.get();
                let cancelled = Instant::now();
                drop(stream);
                let _ = tokio::time::timeout(PATIENCE, discarded).await;
                let seen = CANCEL_SEEN.wait(PATIENCE).await;
                tokio::time::sleep(SETTLE).await;
                let after = c.counters().bytes_out.get() - before;
                Observed {
                    latency: seen.map_or(PATIENCE, |at| at - cancelled),
                    bytes_after: Some(after),
                }
            }
            Peer::Raw => {
                let cancelled = raw::upload_then_drop(&via, CHUNK, flowing).await;
                let seen = CANCEL_SEEN.wait(PATIENCE).await;
                Observed {
                    latency: seen.map_or(PATIENCE, |at| at.saturating_duration_since(cancelled)),
                    bytes_after: None,
                }
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let Via::Tcp(address) = &via else {
                    unreachable!("tcp")
                };
                let written = Arc::new(AtomicU64::new(0));
                let c = grpc::connect_counting(address, peer.tuning(), written.clone()).await;
                let sent = Arc::new(AtomicU64::new(0));
                let mut call = c.clone();
                let body = grpc::endless_chunks(CHUNK, sent.clone());
                let upload = actix_rt::spawn(async move {
                    let _ = call.upload(body).await;
                });
                while sent.load(Ordering::Relaxed) < flowing {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                let before = written.load(Ordering::Relaxed);
                let cancelled = Instant::now();
                upload.abort();
                let seen = CANCEL_SEEN.wait(PATIENCE).await;
                tokio::time::sleep(SETTLE).await;
                let after = written.load(Ordering::Relaxed) - before;
                Observed {
                    latency: seen.map_or(PATIENCE, |at| at - cancelled),
                    bytes_after: Some(after),
                }
            }
        }
    });
    drop(server);
    observed
}

fn server_abort(client: &Runner, peer: Peer, flowing: u64) -> Observed {
    let server = AnyServer::start(peer, Settings::default());
    let via = server.addrs().via(Transport::Tcp);
    ABORTED_AT.clear();
    let observed = client.run(move || async move {
        // (instant, bytes received so far) of every piece received.
        let mut timeline: Vec<(Instant, u64)> = Vec::new();
        let mut received = 0u64;
        let failed = match peer {
            Peer::Ferry => {
                let c = ferry::connect(&via, Settings::default()).await;
                let mut stream = c
                    .source(&SourceRequest {
                        length: u64::MAX / 2,
                        chunk: CHUNK as u32,
                        fail_after: flowing,
                        ..SourceRequest::default()
                    })
                    .await
                    .unwrap();
                loop {
                    match stream.recv().await {
                        Ok(Some(piece)) => {
                            received += piece.len();
                            timeline.push((Instant::now(), received));
                        }
                        Ok(None) => panic!("the source should fail"),
                        Err(_) => break Instant::now(),
                    }
                }
            }
            Peer::Raw => {
                let (mut read, mut write) = raw::connect(&via).await;
                let mut head = vec![b'D'];
                head.extend_from_slice(&(u64::MAX / 2).to_be_bytes());
                head.extend_from_slice(&(CHUNK as u32).to_be_bytes());
                head.extend_from_slice(&flowing.to_be_bytes());
                tokio::io::AsyncWriteExt::write_all(&mut write, &head)
                    .await
                    .unwrap();
                let mut buffer = vec![0u8; CHUNK as usize];
                loop {
                    match read.read(&mut buffer).await {
                        Ok(0) | Err(_) => break Instant::now(),
                        Ok(n) => {
                            received += n as u64;
                            timeline.push((Instant::now(), received));
                        }
                    }
                }
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let c = grpc::connect(&via, peer.tuning()).await;
                let mut stream = grpc::failing_download(&c, CHUNK, flowing).await.unwrap();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            received += message.data.len() as u64;
                            timeline.push((Instant::now(), received));
                        }
                        Ok(None) => panic!("the download should fail"),
                        Err(_) => break Instant::now(),
                    }
                }
            }
        };
        let aborted = ABORTED_AT.wait(PATIENCE).await.expect("the server aborted");
        let before = timeline
            .iter()
            .take_while(|(at, _)| *at <= aborted)
            .last()
            .map_or(0, |(_, bytes)| *bytes);
        Observed {
            latency: failed.saturating_duration_since(aborted),
            bytes_after: Some(received - before),
        }
    });
    drop(server);
    observed
}
