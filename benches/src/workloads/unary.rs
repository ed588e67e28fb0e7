//! `unary`: Echo with a 32-byte payload on one connection, 1 and 64 calls in flight.
//! `head-of-line`: sequential Echo probes on an idle connection, then while four uploads (one
//! case) or four downloads (the other) saturate the same connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::Opts;
use crate::common::{KIB, Transport, mbps};
use crate::ferry::{self, Settings};
use crate::grpc;
use crate::raw;
use crate::report::{Better, Collector, Record};
use crate::runner::Runner;
use crate::workloads::peers::{AnyServer, Peer, peers, rotated};
use crate::workloads::streams::Direction;
use futures::future::LocalBoxFuture;

const PAYLOAD: usize = 32;
const IN_FLIGHT: [usize; 2] = [1, 64];

pub(crate) fn payload() -> Bytes {
    Bytes::from_static(&[7u8; PAYLOAD])
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("a histogram with 3 significant digits")
}

/// Latencies and wall time of `calls` calls made by `in_flight` concurrent callers.
pub struct Run {
    pub elapsed: Duration,
    pub latencies: Histogram<u64>,
}

impl Run {
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        self.latencies.value_at_quantile(q) as f64 / 1e3
    }

    fn max_us(&self) -> f64 {
        self.latencies.max() as f64 / 1e3
    }
}

/// Makes `calls` calls with `in_flight` callers; each `call()` returns its own latency.
pub async fn drive<F, Fut>(calls: u64, in_flight: usize, call: F) -> Run
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    drive_for(calls, in_flight, None, call).await
}

/// Like [`drive`], but stops starting calls once `budget` has passed.
pub async fn drive_for<F, Fut>(
    calls: u64,
    in_flight: usize,
    budget: Option<Duration>,
    call: F,
) -> Run
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let left = Cell::new(calls);
    let deadline = budget.map(|b| Instant::now() + b);
    let take = || {
        let n = left.get();
        if n == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        left.set(n - 1);
        true
    };
    // One histogram for all callers: creating and merging one per caller would cost the
    // harness more than a raw call.
    let latencies = RefCell::new(histogram());
    let started = Instant::now();
    futures::future::join_all((0..in_flight).map(|_| async {
        while take() {
            let latency = call().await;
            latencies
                .borrow_mut()
                .record(latency.as_nanos() as u64)
                .expect("record");
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let latencies = latencies.into_inner();
    Run { elapsed, latencies }
}

pub fn unary(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("unary");
    let peers = peers(
        opts,
        &[Peer::Ferry, Peer::Raw, Peer::TonicDefault, Peer::TonicTuned],
    );
    let client = Runner::new("bench-client");
    for in_flight in IN_FLIGHT {
        let case = format!("tcp-{in_flight}-in-flight");
        let calls = if in_flight == 1 {
            opts.calls
        } else {
            opts.calls * 5
        };
        for round in 0..opts.rounds {
            for peer in rotated(&peers, round) {
                let run = echo_run(&client, peer, calls, in_flight);
                let name = peer.name();
                results.add(
                    &case,
                    name,
                    "calls/s",
                    "1/s",
                    Better::Higher,
                    calls as f64 / run.elapsed.as_secs_f64(),
                );
                results.add(
                    &case,
                    name,
                    "p50",
                    "µs",
                    Better::Lower,
                    run.quantile_us(0.5),
                );
                results.add(
                    &case,
                    name,
                    "p99",
                    "µs",
                    Better::Lower,
                    run.quantile_us(0.99),
                );
                results.add(&case, name, "max", "µs", Better::Lower, run.max_us());
            }
        }
        for peer in &peers {
            results.param(&case, peer.name(), "transport", "tcp");
            results.param(&case, peer.name(), "payload", PAYLOAD);
            results.param(&case, peer.name(), "in_flight", in_flight);
            results.param(&case, peer.name(), "calls", calls);
        }
    }
    results.finish()
}

fn echo_run(client: &Runner, peer: Peer, calls: u64, in_flight: usize) -> Run {
    let server = AnyServer::start(peer, Settings::default());
    let via = server.addrs().via(Transport::Tcp);
    let warm = (calls / 10).clamp(100, 2_000);
    let run = client.run(move || async move {
        let payload = payload();
        match peer {
            Peer::Ferry => {
                let c = ferry::connect(&via, Settings::default()).await;
                drive(warm, in_flight, || ferry::echo(&c, &payload)).await;
                drive(calls, in_flight, || ferry::echo(&c, &payload)).await
            }
            Peer::Raw => {
                let c = raw::EchoClient::connect(&via).await;
                drive(warm, in_flight, || c.echo(&payload)).await;
                drive(calls, in_flight, || c.echo(&payload)).await
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let c = grpc::connect(&via, peer.tuning()).await;
                drive(warm, in_flight, || grpc::echo(&c, &payload)).await;
                drive(calls, in_flight, || grpc::echo(&c, &payload)).await
            }
        }
    });
    drop(server);
    run
}

const LOADERS: usize = 4;
const PROBE_BUDGET: Duration = Duration::from_secs(3);
const LOAD_CHUNK: u64 = 256 * KIB;

/// Idle and loaded probe runs, and the load's throughput.
struct HeadOfLine {
    idle: Run,
    loaded: Run,
    load_mb_s: f64,
}

pub fn head_of_line(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("head-of-line");
    let peers = peers(opts, &[Peer::Ferry, Peer::TonicDefault, Peer::TonicTuned]);
    let client = Runner::new("bench-client");
    for direction in [Direction::Upload, Direction::Download] {
        let case = format!("tcp-{LOADERS}-{}s", direction.name());
        load_case(opts, &client, &peers, direction, &case, &mut results);
    }
    results.finish()
}

/// One head-of-line case: probes while `LOADERS` streams move data in `direction`.
fn load_case(
    opts: &Opts,
    client: &Runner,
    peers: &[Peer],
    direction: Direction,
    case: &str,
    results: &mut Collector,
) {
    let case = case.to_owned();
    for round in 0..opts.rounds {
        for peer in rotated(peers, round) {
            let hol = probe(client, peer, opts.probes, direction);
            let name = peer.name();
            let idle_p99 = hol.idle.quantile_us(0.99);
            let loaded_p99 = hol.loaded.quantile_us(0.99);
            results.add(
                &case,
                name,
                "idle p50",
                "µs",
                Better::Lower,
                hol.idle.quantile_us(0.5),
            );
            results.add(&case, name, "idle p99", "µs", Better::Lower, idle_p99);
            results.add(
                &case,
                name,
                "loaded p50",
                "µs",
                Better::Lower,
                hol.loaded.quantile_us(0.5),
            );
            results.add(&case, name, "loaded p99", "µs", Better::Lower, loaded_p99);
            results.add(
                &case,
                name,
                "loaded/idle p99",
                "x",
                Better::Lower,
                loaded_p99 / idle_p99,
            );
            results.add(&case, name, "load", "MB/s", Better::Higher, hol.load_mb_s);
            results.add(
                &case,
                name,
                "loaded probes",
                "calls",
                Better::Higher,
                hol.loaded.latencies.len() as f64,
            );
        }
    }
    for peer in peers {
        results.param(&case, peer.name(), "transport", "tcp");
        results.param(&case, peer.name(), "probes", opts.probes);
        results.param(&case, peer.name(), "probe_budget_s", PROBE_BUDGET.as_secs());
        results.param(&case, peer.name(), direction.name(), LOADERS);
        results.param(&case, peer.name(), "chunk", LOAD_CHUNK);
    }
}

fn probe(client: &Runner, peer: Peer, probes: u64, direction: Direction) -> HeadOfLine {
    let server = AnyServer::start(peer, Settings::default());
    let via = server.addrs().via(Transport::Tcp);
    // Let the uploads reach full speed before probing under load.
    let ramp = Duration::from_millis(50);
    // Each phase stops after this long even if not all probes ran (loaded probes can take
    // tens of milliseconds each); the count made is reported.
    let budget = PROBE_BUDGET;
    let hol = client.run(move || async move {
        let payload = payload();
        match peer {
            Peer::Ferry => {
                let c = ferry::connect(&via, Settings::default()).await;
                drive(200, 1, || ferry::echo(&c, &payload)).await;
                let idle = drive_for(probes, 1, Some(budget), || ferry::echo(&c, &payload)).await;
                let stop = Cell::new(false);
                let started = Instant::now();
                let load =
                    futures::future::join_all((0..LOADERS).map(|_| -> LocalBoxFuture<'_, _> {
                        match direction {
                            Direction::Upload => {
                                Box::pin(ferry::upload_until(&c, LOAD_CHUNK, &stop))
                            }
                            Direction::Download => {
                                Box::pin(ferry::download_until(&c, LOAD_CHUNK, &stop))
                            }
                        }
                    }));
                let probing = async {
                    tokio::time::sleep(ramp).await;
                    let run =
                        drive_for(probes, 1, Some(budget), || ferry::echo(&c, &payload)).await;
                    stop.set(true);
                    run
                };
                let (sent, loaded) = futures::future::join(load, probing).await;
                let bytes: u64 = sent.into_iter().map(|r| r.expect("upload")).sum();
                HeadOfLine {
                    idle,
                    loaded,
                    load_mb_s: mbps(bytes, started.elapsed()),
                }
            }
            Peer::TonicDefault | Peer::TonicTuned => {
                let c = grpc::connect(&via, peer.tuning()).await;
                drive(200, 1, || grpc::echo(&c, &payload)).await;
                let idle = drive_for(probes, 1, Some(budget), || grpc::echo(&c, &payload)).await;
                let stop = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let load =
                    futures::future::join_all((0..LOADERS).map(|_| -> LocalBoxFuture<'_, _> {
                        match direction {
                            Direction::Upload => {
                                Box::pin(grpc::upload_until(&c, LOAD_CHUNK, stop.clone()))
                            }
                            Direction::Download => {
                                Box::pin(grpc::download_until(&c, LOAD_CHUNK, stop.clone()))
                            }
                        }
                    }));
                let probing = async {
                    tokio::time::sleep(ramp).await;
                    let run = drive_for(probes, 1, Some(budget), || grpc::echo(&c, &payload)).await;
                    stop.store(true, Ordering::Relaxed);
                    run
                };
                let (sent, loaded) = futures::future::join(load, probing).await;
                let bytes: u64 = sent.into_iter().map(|r| r.expect("upload")).sum();
                HeadOfLine {
                    idle,
                    loaded,
                    load_mb_s: mbps(bytes, started.elapsed()),
                }
            }
            Peer::Raw => unreachable!("raw has no multiplexing: no head-of-line workload"),
        }
    });
    drop(server);
    hol
}
