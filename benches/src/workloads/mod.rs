//! The workloads, and what they share: peers, servers of any peer, round-robin order.

mod cancel;
mod connections;
mod deltas;
mod memory;
mod streams;
pub(crate) mod unary;
mod volumes;

use std::time::Instant;

use crate::Opts;
use crate::common::{Addrs, MIB};
use crate::ferry::{FerryServer, Settings};
use crate::grpc::{GrpcServer, Tuning};
use crate::raw::RawServer;
use crate::report::{Machine, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ferry,
    Raw,
    TonicDefault,
    TonicTuned,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::Raw => "raw",
            Self::TonicDefault => "tonic-default",
            Self::TonicTuned => "tonic-tuned",
        }
    }

    pub fn tuning(self) -> Tuning {
        match self {
            Self::TonicTuned => Tuning::Tuned,
            _ => Tuning::Default,
        }
    }
}

/// The peers of a workload that `--peers` allows, Ferry first.
pub fn peers(opts: &Opts, candidates: &[Peer]) -> Vec<Peer> {
    candidates
        .iter()
        .copied()
        .filter(|p| opts.wants(p.name()))
        .collect()
}

/// The order of peers in round `round`: rotated, so no peer always runs first (on a warm or
/// a cold machine).
pub fn rotated<P: Clone>(peers: &[P], round: usize) -> Vec<P> {
    let mut order = peers.to_vec();
    if !order.is_empty() {
        let n = order.len();
        order.rotate_left(round % n);
    }
    order
}

/// A server of any peer, on its own runner thread, listening on TCP and a unix socket.
pub enum AnyServer {
    Ferry(FerryServer),
    Raw(RawServer),
    Grpc(GrpcServer),
}

impl AnyServer {
    pub fn start(peer: Peer, settings: Settings) -> Self {
        match peer {
            Peer::Ferry => Self::Ferry(FerryServer::start(settings)),
            Peer::Raw => Self::Raw(RawServer::start()),
            Peer::TonicDefault | Peer::TonicTuned => Self::Grpc(GrpcServer::start(peer.tuning())),
        }
    }

    pub fn addrs(&self) -> &Addrs {
        match self {
            Self::Ferry(s) => &s.addrs,
            Self::Raw(s) => &s.addrs,
            Self::Grpc(s) => &s.addrs,
        }
    }
}

pub fn run(workload: &str, opts: &Opts) -> Vec<Record> {
    match workload {
        "stream-upload" => streams::one_stream(opts, streams::Direction::Upload),
        "stream-download" => streams::one_stream(opts, streams::Direction::Download),
        "stream-tls" => streams::tls(opts),
        "streams-8" => streams::eight_streams(opts),
        "unary" => unary::unary(opts),
        "head-of-line" => unary::head_of_line(opts),
        "connections" => connections::connections(opts),
        "cancel" => cancel::cancel(opts),
        "memory" => memory::memory(opts),
        "copies" => memory::copies(opts),
        "volumes" => volumes::volumes(opts),
        other => unreachable!("unknown workload {other}"),
    }
}

pub fn machine() -> Machine {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let data = crate::common::pattern(0, 256 * 1024);
    let total = 64 * MIB;
    let started = Instant::now();
    let mut hasher = blake3::Hasher::new();
    for _ in 0..total / data.len() as u64 {
        hasher.update(&data);
    }
    std::hint::black_box(hasher.finalize());
    let blake3_mb_s = crate::common::mbps(total, started.elapsed());
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Machine {
        loadavg,
        nproc,
        kernel,
        cpu,
        blake3_mb_s,
    }
}
