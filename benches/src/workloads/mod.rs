//! The workloads, run by name, and the machine they run on. What they share (peers, servers of
//! any peer, round-robin order) is `peers`; a real ferryd and ferry, `ferryd`.

mod cancel;
mod connections;
mod deltas;
mod ferryd;
mod memory;
mod peers;
mod streams;
pub(crate) mod unary;
mod volumes;

use std::time::Instant;

use crate::Opts;
use crate::common::MIB;
use crate::report::{Machine, Record};

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
