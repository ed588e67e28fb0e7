//! A real `ferryd` and the `ferry` client aimed at it, as the volumes and deltas workloads run
//! them; and the file helpers both use.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child::Daemon;

pub(super) fn hash_file(path: &Path) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    hasher
        .update_reader(file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hasher.finalize()
}

/// Flushes every filesystem, so no transfer pays for the previous one's dirty pages.
pub(super) fn sync() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

/// A real `ferryd` on TCP loopback, and the `ferry` client aimed at it.
pub(super) struct FerryNode {
    pub(super) daemon: Daemon,
    pub(super) ferry: PathBuf,
    pub(super) address: String,
    /// Its unix socket, if it has one (a peer of another node).
    pub(super) unix: Option<PathBuf>,
}

/// The node's one user. A throwaway password: the node listens on loopback only and lives
/// for one workload.
const USER: &str = "bench";
const PASSWORD: &str = "ferry-bench";

impl FerryNode {
    /// Starts a node in `dir` (its config gets `extra` TOML), listening on a unix socket too
    /// with `unix`.
    pub(super) fn start(
        bin_dir: &Path,
        dir: &Path,
        extra: &str,
        unix: bool,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ferry = bin_dir.join("ferry");
        // The user's config entry, made as an operator makes it.
        let entry = Command::new(&ferry)
            .args(["hash-password", USER, "--role", "read-write"])
            .env("FERRY_PASSWORD", PASSWORD)
            .output()
            .map_err(|e| format!("running {}: {e}", ferry.display()))?;
        if !entry.status.success() {
            return Err(format!(
                "ferry hash-password failed: {}",
                String::from_utf8_lossy(&entry.stderr)
            ));
        }
        let config = dir.join("ferryd.toml");
        let mut text = String::from_utf8_lossy(&entry.stdout).into_owned();
        text += extra;
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let socket = unix.then(|| dir.join("ferryd.sock"));
        let mut daemon = Daemon::spawn(
            "ferryd",
            Command::new(bin_dir.join("ferryd"))
                .arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(dir.join("ferryd"))
                .args(["--tcp", "127.0.0.1:0", "--metrics", ""])
                .arg("--unix-socket")
                .arg(socket.as_deref().unwrap_or(Path::new("")))
                .env("FERRYD_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let ready = daemon.line_starting("ferryd ready:", Duration::from_secs(30))?;
        let address = ready
            .split_whitespace()
            .find_map(|field| field.strip_prefix("tcp="))
            .ok_or_else(|| format!("no tcp= in {ready:?}"))?
            .to_owned();
        Ok(Self {
            daemon,
            ferry,
            address,
            unix: socket,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Its unix socket (started with `unix`).
    pub(super) fn unix(&self) -> &Path {
        self.unix.as_deref().expect("started with a unix socket")
    }

    pub(super) fn ferry(&self) -> Command {
        let mut command = Command::new(&self.ferry);
        command
            .args(["-c", &format!("tcp://{}", self.address), "--user", USER])
            .env("FERRY_PASSWORD", PASSWORD);
        command
    }
}
