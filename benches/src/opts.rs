//! What `ferry-bench` is asked to run: the workloads, the command line ([`Cli`]) and what the
//! workloads read of it ([`Opts`]).

use std::path::PathBuf;

use clap::Parser;

use crate::common::{KIB, MIB};

/// The workloads, in the order `all` runs them.
pub const WORKLOADS: [&str; 11] = [
    "stream-upload",
    "stream-download",
    "stream-tls",
    "streams-8",
    "unary",
    "head-of-line",
    "connections",
    "cancel",
    "memory",
    "copies",
    "volumes",
];

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Ferry against raw sockets, tonic gRPC and libvirt, on loopback"
)]
pub struct Cli {
    /// Workload to run, `all`, or a comma-separated list: stream-upload, stream-download,
    /// stream-tls, streams-8, unary, head-of-line, connections, cancel, memory, copies, volumes.
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Rounds per workload; peers alternate round by round.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Bytes per stream for the stream workloads (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub size: u64,
    /// Tiny sizes and one round: checks that every workload still runs, in a few seconds.
    #[arg(long)]
    pub smoke: bool,
    /// Print the human table on stderr even when stderr is not a terminal.
    #[arg(long)]
    pub table: bool,
    /// Echo calls per measurement with 1 in flight (64 in flight make 5× as many).
    #[arg(long, default_value_t = 20_000)]
    pub calls: u64,
    /// Idle streams and idle connections for the memory workload.
    #[arg(long, default_value_t = 10_000)]
    pub idle: usize,
    /// Only these peers (comma-separated: ferry, raw, tonic-default, tonic-tuned, virsh);
    /// ratios need ferry among them.
    #[arg(long)]
    pub peers: Option<String>,
    /// Stream workloads: only this transport (tcp, unix or tls).
    #[arg(long)]
    pub transport: Option<String>,
    /// Stream workloads: only this chunk size (64KiB, 256KiB or 1MiB).
    #[arg(long, value_parser = parse_size)]
    pub chunk: Option<u64>,
    /// volumes: the size of the file moved (suffixes KiB, MiB, GiB).
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub vol_size: u64,
    /// volumes: the size of the image of the delta cases (1% of its blocks changed).
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub delta_size: u64,
    /// volumes: where the file, both stores and the download go (one filesystem) [default:
    /// the temporary directory].
    #[arg(long)]
    pub vol_dir: Option<PathBuf>,
    /// volumes: the directory with the `ferryd` and `ferry` binaries [default: ferry-bench's
    /// own, e.g. target/release after `cargo build --release -p ferry`].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Experiments: Ferry's stream window (both sides) instead of the default 1 MiB.
    #[arg(long, value_parser = parse_size)]
    pub ferry_window: Option<u64>,
    /// Internal: run a server for a measurement in another process.
    #[arg(long, hide = true)]
    pub serve: Option<String>,
}

/// What the workloads read from the command line, with `--smoke` applied.
#[derive(Debug, Clone)]
pub struct Opts {
    pub rounds: usize,
    pub size: u64,
    pub calls: u64,
    pub probes: u64,
    pub idle: usize,
    pub cancel_reps: usize,
    pub copies_size: u64,
    pub smoke: bool,
    pub peers: Option<Vec<String>>,
    pub transport: Option<String>,
    pub chunk: Option<u64>,
    pub vol_size: u64,
    pub delta_size: u64,
    pub vol_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Opts {
    pub fn from(cli: &Cli) -> Self {
        let peers = cli
            .peers
            .as_ref()
            .map(|p| p.split(',').map(|s| s.trim().to_owned()).collect());
        let vol_dir = cli.vol_dir.clone().unwrap_or_else(std::env::temp_dir);
        let bin_dir = cli.bin_dir.clone().unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("own executable");
            exe.parent().expect("a directory").to_owned()
        });
        if cli.smoke {
            return Self {
                rounds: 1,
                size: 4 * MIB,
                calls: 200,
                probes: 50,
                idle: 200,
                cancel_reps: 1,
                copies_size: 8 * MIB,
                smoke: true,
                peers,
                transport: cli.transport.clone(),
                chunk: cli.chunk,
                vol_size: 4 * MIB,
                delta_size: 8 * MIB,
                vol_dir,
                bin_dir,
            };
        }
        Self {
            rounds: cli.rounds.max(1),
            size: cli.size,
            calls: cli.calls,
            probes: 2_000,
            idle: cli.idle,
            cancel_reps: 5,
            copies_size: (cli.size / 4).clamp(8 * MIB, 256 * MIB),
            smoke: false,
            peers,
            transport: cli.transport.clone(),
            chunk: cli.chunk,
            vol_size: cli.vol_size,
            delta_size: cli.delta_size,
            vol_dir,
            bin_dir,
        }
    }

    /// Whether a peer takes part (all do unless `--peers` lists some).
    pub fn wants(&self, peer: &str) -> bool {
        self.peers
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == peer))
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|e| format!("{text}: {e}"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => 1024 * MIB,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    Ok(number * factor)
}
