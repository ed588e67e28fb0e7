//! `ferry`'s command line: its global options and commands, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Where the global options are listed in `--help`: apart from each command's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Talk to a Ferry node: move volumes in and out, watch events, administer",
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 connection, 4 not found, 5 already \
                  exists, 6 invalid, 7 denied, 8 mismatch, 9 busy, 10 partial (some nodes did not \
                  answer), 130 interrupted, 141 stdout closed. docs/CLI.md has the --json shapes."
)]
pub struct Args {
    /// The node: unix:///path/to/ferryd.sock, tcp://host:port or tls://host:port [default: the
    /// local node's socket in ferryd's default data directory].
    #[arg(short = 'c', long = "connect", value_name = "URI", env = "FERRY_URI", global = true, help_heading = GLOBAL)]
    pub connect: Option<String>,
    /// The cluster CA certificate (PEM) that tls:// nodes must present a certificate from.
    #[arg(long, value_name = "FILE", env = "FERRY_CA", global = true, help_heading = GLOBAL)]
    pub ca: Option<PathBuf>,
    /// Authenticate as this user (SCRAM-SHA-256). Without it, a unix-socket connection is
    /// known by your uid.
    #[arg(long, value_name = "NAME", env = "FERRY_USER", global = true, help_heading = GLOBAL)]
    pub user: Option<String>,
    /// Read the password from this file (its first line). Wins over FERRY_PASSWORD; without
    /// either, ferry prompts on the terminal.
    #[arg(long, value_name = "FILE", env = "FERRY_PASSWORD_FILE", global = true, help_heading = GLOBAL)]
    pub password_file: Option<PathBuf>,
    /// Machine-readable output: one JSON document per result on stdout (docs/CLI.md), errors
    /// as JSON on stderr, no progress bars.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Print only results and errors: no progress bars, no notes.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
    /// Log on stderr what ferry does (-v: connecting, authenticating; -vv: also the runtime's
    /// debug messages); FERRY_LOG (e.g. "ferry_actors=trace") overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Seconds to wait for a unary call's reply.
    #[arg(long, value_name = "SECONDS", global = true, default_value_t = 30, help_heading = GLOBAL)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the node answers, and how fast.
    Ping,
    /// Volumes: list, info, create, delete, upload, download.
    #[command(subcommand, alias = "volume")]
    Vol(Vol),
    /// Print node events as they happen (volumes created, uploaded, transfers…) until Ctrl-C.
    Events,
    /// Node administration.
    #[command(subcommand)]
    Admin(Admin),
    /// Print a `[[security.users]]` entry for ferryd's config.
    ///
    /// The entry holds SCRAM's StoredKey and ServerKey for the password (from
    /// --password-file, FERRY_PASSWORD or a prompt): neither the password nor anything that
    /// logs in with it is stored.
    HashPassword {
        /// The user's name, as clients give it with --user.
        name: String,
        /// What the user may do.
        #[arg(long, value_enum, default_value_t = ferry_node::security::RoleName::ReadOnly)]
        role: ferry_node::security::RoleName,
    },
    /// Print a shell completion script.
    ///
    /// E.g. `ferry completions bash > /usr/share/bash-completion/completions/ferry`
    /// (docs/CLI.md says where each shell looks).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the ferry(1) man page, or write all man pages into a directory.
    ///
    /// With --out-dir: ferry.1, one page per command (ferry-vol-upload.1, …) and ferryd.1,
    /// e.g. into /usr/local/share/man/man1.
    Man {
        /// The directory to write ferry.1, ferry-vol.1, …, ferryd.1 into.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Vol {
    /// List volumes.
    #[command(alias = "ls")]
    List {
        /// Also ask every peer of the node: which nodes hold what (unreachable peers are
        /// marked as such).
        #[arg(long)]
        cluster: bool,
    },
    /// Show one volume.
    Info {
        /// The volume's name.
        name: String,
    },
    /// Create an empty (sparse) volume, e.g. `ferry vol create disk1 10GiB`.
    Create {
        /// The new volume's name.
        name: String,
        /// Size: bytes, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB…).
        #[arg(value_parser = parse_size_arg)]
        size: u64,
    },
    /// Delete a volume.
    #[command(alias = "rm")]
    Delete {
        /// The volume's name.
        name: String,
    },
    /// Upload a file into a volume (holes stay holes). The volume appears only once all of it
    /// arrived, was synced and its checksum verified.
    Upload {
        /// The file or block device to upload.
        file: PathBuf,
        /// Volume name [default: the file's name].
        name: Option<String>,
        /// Replace an existing volume of that name.
        #[arg(long)]
        overwrite: bool,
        /// Continue an upload that was interrupted by a lost connection, from where the node has
        /// it.
        #[arg(long)]
        resume: bool,
        /// Do not hash the file first (the node then cannot refuse corrupted data, only report
        /// the checksum of what it got).
        #[arg(long)]
        no_verify: bool,
        /// Keep this many copies in all: the node forwards the data to the first N-1 peers of
        /// its configuration and confirms only once every copy is committed; if one fails,
        /// none is kept.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: u32,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the node holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Move a volume to a peer of the node: the peer verifies and commits it, then the node
    /// deletes its copy. Ctrl-C aborts it (the peer discards what it got, nothing changes
    /// here).
    Migrate {
        /// The volume to move.
        name: String,
        /// The peer's name in the node's configuration.
        #[arg(long)]
        to: String,
        /// Replace a volume of that name on the peer.
        #[arg(long)]
        overwrite: bool,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the peer holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Copy a volume to a peer of the node, keeping it here.
    Copy {
        /// The volume to copy.
        name: String,
        /// The peer's name in the node's configuration.
        #[arg(long)]
        to: String,
        /// Replace a volume of that name on the peer.
        #[arg(long)]
        overwrite: bool,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the peer holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Download a volume into a file (holes stay holes), or to stdout with `-`. The file
    /// appears only once complete and synced.
    Download {
        /// The volume to download.
        name: String,
        /// Destination file [default: the volume's name in the current directory].
        file: Option<PathBuf>,
        /// Replace the destination file if it exists (by default fetching only the blocks
        /// that differ from it, assembled beside it and renamed over it once verified).
        #[arg(long)]
        force: bool,
        /// With --force, download every block instead of only those that differ.
        #[arg(long)]
        full: bool,
        /// First byte to download.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Bytes to download [default: to the end].
        #[arg(long)]
        length: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Version, uptime, limits.
    Info,
    /// Connected clients and their figures.
    Clients,
    /// Close one client's connection (ids from `ferry admin clients`).
    Disconnect {
        /// The client's id, as `ferry admin clients` lists it.
        id: u64,
    },
}

/// A size on the command line: bytes, or with a unit.
pub(crate) fn parse_size_arg(size: &str) -> Result<u64, String> {
    // As numfmt reads them: KB, MB, GB are powers of 1000, KiB, MiB, GiB powers of 1024.
    parse_size::Config::new()
        .parse_size(size)
        .map_err(|e| format!("{e} (try 10GiB or 4096)"))
}
