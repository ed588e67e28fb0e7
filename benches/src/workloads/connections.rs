//! `connections`: 1, 16, 256 and 1,024 connections at once, each moving one upload and making
//! Echo calls one after another while its upload runs, against the same number of raw sockets
//! each moving the same upload. Reported: the aggregate throughput and CPU per GB as the count
//! grows, and (Ferry) the p50 and p99 of every call made under that load. Ferry's server
//! spreads connections over one arbiter per core; the raw server has one thread, as in every
//! other workload. Memory per connection at 10,000 connections is the `memory` workload's
//! `idle-connections` case.

use std::cell::{Cell, RefCell};

use crate::Opts;
use crate::common::{Cost, KIB, MIB, Transport, mbps};
use crate::ferry::{self, Settings};
use crate::raw;
use crate::report::{Better, Collector, Record};
use crate::runner::Runner;
use crate::workloads::peers::{AnyServer, Peer, peers, rotated};
use crate::workloads::unary::{Run, histogram, payload};

/// The connection counts, as the issue asks.
const COUNTS: [usize; 4] = [1, 16, 256, 1024];
const CHUNK: u64 = 256 * KIB;
/// Each connection moves at least this much, so the largest counts are not only set-up.
const MIN_PER_CONNECTION: u64 = 4 * MIB;

/// One measurement: what all connections moved, its cost, and (Ferry) the calls' latencies.
struct Loaded {
    bytes: u64,
    cost: Cost,
    calls: Option<Run>,
}

pub fn connections(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("connections");
    let peers = peers(opts, &[Peer::Ferry, Peer::Raw]);
    let client = Runner::new("bench-client");
    let counts: Vec<usize> = if opts.smoke {
        vec![1, 4]
    } else {
        COUNTS.to_vec()
    };
    for count in counts {
        let case = format!("tcp-{count}");
        let per_connection = (opts.size / count as u64).max(MIN_PER_CONNECTION.min(opts.size));
        for round in 0..opts.rounds {
            for peer in rotated(&peers, round) {
                let loaded = one_run(&client, peer, count, per_connection);
                let name = peer.name();
                results.add(
                    &case,
                    name,
                    "aggregate",
                    "MB/s",
                    Better::Higher,
                    mbps(loaded.bytes, loaded.cost.wall),
                );
                results.add(
                    &case,
                    name,
                    "CPU per GB",
                    "s/GB",
                    Better::Lower,
                    loaded.cost.cpu_per_gb(loaded.bytes),
                );
                if let Some(calls) = loaded.calls {
                    results.add(
                        &case,
                        name,
                        "call p50",
                        "µs",
                        Better::Lower,
                        calls.quantile_us(0.5),
                    );
                    results.add(
                        &case,
                        name,
                        "call p99",
                        "µs",
                        Better::Lower,
                        calls.quantile_us(0.99),
                    );
                    results.add(
                        &case,
                        name,
                        "calls",
                        "calls",
                        Better::Higher,
                        calls.latencies.len() as f64,
                    );
                }
            }
        }
        for peer in &peers {
            results.param(&case, peer.name(), "connections", count);
            results.param(&case, peer.name(), "bytes_per_connection", per_connection);
            results.param(&case, peer.name(), "chunk", CHUNK);
        }
        results.param(
            &case,
            "ferry",
            "server_arbiters",
            server_settings().arbiters,
        );
    }
    results.finish()
}

/// Ferry's server for this workload: one arbiter per core, room for every connection.
fn server_settings() -> Settings {
    Settings {
        arbiters: std::thread::available_parallelism().map_or(1, |n| n.get()),
        max_connections: COUNTS[COUNTS.len() - 1] + 1,
        ..Settings::default()
    }
}

fn one_run(client: &Runner, peer: Peer, count: usize, per_connection: u64) -> Loaded {
    let settings = server_settings();
    let server = AnyServer::start(peer, settings);
    let via = server.addrs().via(Transport::Tcp);
    let loaded = client.run(move || async move {
        match peer {
            Peer::Ferry => {
                let mut clients = Vec::with_capacity(count);
                for _ in 0..count {
                    clients.push(ferry::connect(&via, settings).await);
                }
                let payload = payload();
                let latencies = RefCell::new(histogram());
                let cost = Cost::of(async {
                    futures::future::join_all(clients.iter().map(|c| async {
                        let done = Cell::new(false);
                        let upload = async {
                            ferry::upload(c, per_connection, CHUNK)
                                .await
                                .expect("upload");
                            done.set(true);
                        };
                        let calls = async {
                            while !done.get() {
                                let latency = ferry::echo(c, &payload).await;
                                latencies
                                    .borrow_mut()
                                    .record(latency.as_nanos() as u64)
                                    .expect("record");
                            }
                        };
                        futures::future::join(upload, calls).await;
                    }))
                    .await;
                })
                .await;
                Loaded {
                    bytes: per_connection * count as u64,
                    calls: Some(Run {
                        elapsed: cost.wall,
                        latencies: latencies.into_inner(),
                    }),
                    cost,
                }
            }
            Peer::Raw => {
                let mut sockets = Vec::with_capacity(count);
                for _ in 0..count {
                    sockets.push(raw::connect(&via).await);
                }
                let cost = Cost::of(async {
                    futures::future::join_all(sockets.into_iter().map(
                        |(mut r, mut w)| async move {
                            raw::upload_on(&mut r, &mut w, per_connection, CHUNK)
                                .await
                                .expect("raw upload")
                        },
                    ))
                    .await;
                })
                .await;
                Loaded {
                    bytes: per_connection * count as u64,
                    cost,
                    calls: None,
                }
            }
            Peer::TonicDefault | Peer::TonicTuned => unreachable!("not a peer of this workload"),
        }
    });
    drop(server);
    loaded
}
