//! The delta cases of `volumes`: an image (`--delta-size`, 4 GiB) in which 1% of the 256 KiB
//! blocks changed, a 4 KiB write each at scattered offsets (pseudo-random data, as a
//! compressed or encrypted guest disk is), moved again where the old version is:
//!
//! - **delta upload**: `ferry vol upload NEW bench.img --overwrite` onto a node holding the old
//!   version; `ferry --full` the same with `--full`; **rsync** `rsync --no-whole-file --fsync
//!   --ignore-times NEW rsync://127.0.0.1:PORT/bench/bench.img` onto an rsync daemon holding the
//!   old version.
//! - **delta download**: `ferry vol download bench.img FILE --force` onto a FILE holding the old
//!   version (and `--full`); rsync pulling from the daemon onto the old FILE.
//! - **delta copy**: `ferry vol copy bench.img --to node2 --overwrite` from a node holding the new
//!   version onto a second node holding the old one (and `--full`); rsync: the same host-to-
//!   daemon transfer as the upload, the way one would copy between two hosts with it.
//!
//! Every run ends synced (ferry always; rsync with `--fsync`) and is checked by BLAKE3. Metrics:
//! throughput (image bytes / wall time), CPU seconds per GB of image (user + system of the
//! client and every daemon involved: ferryd, or rsync's daemon and its forked helper),
//! bytes on the wire (Ferry: data sent; rsync: its `Total bytes sent` + `received`) as a
//! percentage of the image, and Ferry's block-hash bytes apart.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::Opts;
use crate::child::{Daemon, Measured, run_measured};
use crate::common::{cpu_per_gb, mbps};
use crate::report::{Better, Collector};
use crate::workloads::peers::rotated;

use crate::workloads::ferryd::{FerryNode, hash_file, sync};

const BLOCK: u64 = 256 * 1024;
const VOLUME: &str = "bench.img";

pub fn deltas(opts: &Opts, results: &mut Collector, dir: &Path) {
    let dir = dir.join("deltas");
    std::fs::create_dir_all(&dir).expect("a work directory");
    let size = opts.delta_size;
    let old = dir.join("old.img");
    let new = dir.join("new.img");
    let changed = write_images(&old, &new, size);
    let new_sum = hash_file(&new);
    let node2 = FerryNode::start(&opts.bin_dir, &dir.join("node2"), "", true)
        .unwrap_or_else(|e| panic!("{e}"));
    let peer = format!(
        "[[peers]]\nname = \"node2\"\naddress = \"unix://{}\"\n",
        node2.unix().display()
    );
    let node1 = FerryNode::start(&opts.bin_dir, &dir.join("node1"), &peer, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let rsync = if !opts.wants("rsync") {
        Err("not in --peers".to_owned())
    } else {
        Rsync::start(&dir)
    };
    if let Err(why) = &rsync {
        eprintln!("   volumes: the rsync peer is SKIPPED: {why}");
    }
    let local = dir.join("local.img");
    let mut add = |case: &str, peer: &str, m: &Measured, wire: Option<u64>, hashes: Option<u64>| {
        results.add(
            case,
            peer,
            "throughput",
            "MB/s",
            Better::Higher,
            mbps(size, m.wall),
        );
        results.add(
            case,
            peer,
            "CPU per GB",
            "s/GB",
            Better::Lower,
            cpu_per_gb(m.cpu, size),
        );
        if let Some(wire) = wire {
            results.add(
                case,
                peer,
                "bytes on the wire",
                "% of image",
                Better::Lower,
                100.0 * wire as f64 / size as f64,
            );
        }
        if let Some(hashes) = hashes {
            results.add(
                case,
                peer,
                "block-hash bytes",
                "KiB",
                Better::Lower,
                hashes as f64 / 1024.0,
            );
        }
    };
    let ferry_peers = ["ferry", "ferry --full"];
    for round in 0..opts.rounds {
        // Upload onto the old version.
        for peer in rotated(&["ferry", "ferry --full", "rsync"], round) {
            let measured = match peer {
                "rsync" => {
                    let Ok(rsync) = &rsync else { continue };
                    rsync.push_onto(&old, &new)
                }
                _ => {
                    node1.put(&old);
                    sync();
                    node1.measure(
                        &["vol", "upload", path(&new), VOLUME, "--overwrite"],
                        peer != "ferry",
                        &[],
                    )
                }
            };
            let (m, wire, hashes) = measured.unwrap_or_else(|e| panic!("{e}"));
            add("delta upload", peer, &m, Some(wire), hashes);
        }
        node1.check(&new_sum);
        // Download onto the old version.
        node1.put(&new);
        for peer in rotated(&["ferry", "ferry --full", "rsync"], round) {
            std::fs::copy(&old, &local).expect("a local copy");
            sync();
            let measured = match peer {
                "rsync" => {
                    let Ok(rsync) = &rsync else { continue };
                    rsync.reset(&new);
                    sync();
                    rsync.pull(&local)
                }
                _ => node1.measure(
                    &["vol", "download", VOLUME, path(&local), "--force"],
                    peer != "ferry",
                    &[],
                ),
            };
            let (m, wire, hashes) = measured.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                hash_file(&local),
                new_sum,
                "{peer}: the downloaded file differs"
            );
            add("delta download", peer, &m, Some(wire), hashes);
        }
        // Node to node onto the old version.
        for peer in rotated(&["ferry", "ferry --full", "rsync"], round) {
            let measured = match peer {
                "rsync" => {
                    let Ok(rsync) = &rsync else { continue };
                    rsync.push_onto(&old, &new)
                }
                _ => {
                    node2.put(&old);
                    sync();
                    node1.measure(
                        &["vol", "copy", VOLUME, "--to", "node2", "--overwrite"],
                        peer != "ferry",
                        &[node2.pid()],
                    )
                }
            };
            let (m, wire, hashes) = measured.unwrap_or_else(|e| panic!("{e}"));
            add("delta copy", peer, &m, Some(wire), hashes);
        }
        node2.check(&new_sum);
    }
    for case in ["delta upload", "delta download", "delta copy"] {
        for peer in ferry_peers
            .iter()
            .copied()
            .chain(rsync.as_ref().ok().map(|_| "rsync"))
        {
            results.param(case, peer, "size", size);
            results.param(case, peer, "changed blocks", changed);
            results.param(case, peer, "block", BLOCK);
            results.param(case, peer, "dir", dir.display().to_string());
        }
        if let Ok(rsync) = &rsync {
            results.param(case, "rsync", "version", rsync.version.as_str());
            results.param(
                case,
                "rsync",
                "command",
                "rsync --no-whole-file --ignore-times --fsync --stats, daemon on 127.0.0.1",
            );
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Writes the old image (pseudo-random) and the new one: a copy with a 4 KiB write at a
/// scattered offset in 1% of its blocks (block i when a hash of i says so). Returns how many
/// blocks changed.
fn write_images(old: &Path, new: &Path, size: u64) -> u64 {
    let mut xof = blake3::Hasher::new()
        .update(b"ferry-bench deltas")
        .finalize_xof();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(old).expect("old.img"));
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        xof.fill(&mut buffer[..n]);
        out.write_all(&buffer[..n]).expect("writing old.img");
        left -= n as u64;
    }
    out.flush().expect("writing old.img");
    drop(out);
    std::fs::copy(old, new).expect("new.img");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(new)
        .expect("new.img");
    let blocks = size.div_ceil(BLOCK);
    let mut changed = 0;
    for block in 0..blocks {
        let pick = blake3::hash(&block.to_le_bytes());
        let bytes = pick.as_bytes();
        if !u16::from_le_bytes([bytes[0], bytes[1]]).is_multiple_of(100) {
            continue;
        }
        let len = (size - block * BLOCK).min(BLOCK);
        let within = u64::from(u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]))
            % len.saturating_sub(4096).max(1);
        let write = (len - within).min(4096) as usize;
        file.write_all_at(
            &bytes.repeat(write / 32 + 1)[..write],
            block * BLOCK + within,
        )
        .expect("changing new.img");
        changed += 1;
    }
    file.sync_all().expect("syncing new.img");
    changed
}

/// An rsync daemon on loopback with one writable module, `bench`.
struct Rsync {
    daemon: Daemon,
    port: u16,
    module: PathBuf,
    version: String,
}

impl Rsync {
    fn start(dir: &Path) -> Result<Self, String> {
        let version = Command::new("rsync")
            .arg("--version")
            .output()
            .map_err(|e| format!("rsync is not installed ({e}); Debian: apt-get install rsync"))?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("rsync")
            .to_owned();
        let module = dir.join("rsync-module");
        std::fs::create_dir_all(&module).map_err(|e| e.to_string())?;
        // A free port: bound, read, released (the daemon binds it right after).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let config = dir.join("rsyncd.conf");
        std::fs::write(
            &config,
            format!(
                "use chroot = false\nuid = {uid}\ngid = {gid}\n[bench]\npath = {}\nread only = false\n",
                module.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let daemon = Daemon::spawn(
            "rsync --daemon",
            Command::new("rsync")
                .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
                .arg(format!("--port={port}"))
                .arg(format!("--config={}", config.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )?;
        let rsync = Self {
            daemon,
            port,
            module,
            version,
        };
        // Ready once it lists its module.
        for _ in 0..200 {
            if Command::new("rsync")
                .arg(rsync.url(""))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Ok(rsync);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("the rsync daemon did not answer".into())
    }

    fn url(&self, file: &str) -> String {
        format!("rsync://127.0.0.1:{}/bench/{file}", self.port)
    }

    /// The module's copy becomes `version` (not timed).
    fn reset(&self, version: &Path) {
        std::fs::copy(version, self.module.join(VOLUME)).expect("resetting the rsync copy");
    }

    fn rsync(&self) -> Command {
        let mut command = Command::new("rsync");
        // --ignore-times: always compare contents. Without it rsync skips a file whose size
        // and modification time match, which two copies made within a second can.
        command.args(["--no-whole-file", "--ignore-times", "--fsync", "--stats"]);
        command
    }

    /// Times pushing `new` onto a module copy that is `old` (made first, not timed).
    fn push_onto(&self, old: &Path, new: &Path) -> Result<(Measured, u64, Option<u64>), String> {
        self.reset(old);
        sync();
        self.push(new)
    }

    fn push(&self, from: &Path) -> Result<(Measured, u64, Option<u64>), String> {
        let m = run_measured(
            self.rsync().arg(from).arg(self.url(VOLUME)),
            &[self.daemon.pid()],
        )?;
        let wire = wire_bytes(&m.stdout)?;
        if hash_file(&self.module.join(VOLUME)) != hash_file(from) {
            return Err("rsync: the daemon's copy differs from the source".into());
        }
        Ok((m, wire, None))
    }

    fn pull(&self, to: &Path) -> Result<(Measured, u64, Option<u64>), String> {
        let m = run_measured(
            self.rsync().arg(self.url(VOLUME)).arg(to),
            &[self.daemon.pid()],
        )?;
        let wire = wire_bytes(&m.stdout)?;
        Ok((m, wire, None))
    }
}

/// `Total bytes sent` + `Total bytes received` from rsync's `--stats`.
fn wire_bytes(stdout: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(stdout);
    let number = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|rest| rest.trim().replace(',', "").parse::<u64>().unwrap_or(0))
            .ok_or_else(|| format!("no {key:?} in rsync's output: {text}"))
    };
    Ok(number("Total bytes sent:")? + number("Total bytes received:")?)
}

impl FerryNode {
    /// Makes the node's volume `version` (a full upload, not timed).
    fn put(&self, version: &Path) {
        crate::child::run_timed(self.ferry().args([
            "vol",
            "upload",
            path(version),
            VOLUME,
            "--overwrite",
            "--full",
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `ferry --json ARGS` (with `--full` if asked), measured with this node and
    /// `others`; the data bytes it sent and the block-hash bytes, from its JSON.
    fn measure(
        &self,
        args: &[&str],
        full: bool,
        others: &[u32],
    ) -> Result<(Measured, u64, Option<u64>), String> {
        let mut command = self.ferry();
        command.arg("--json").args(args);
        if full {
            command.arg("--full");
        }
        let mut daemons = vec![self.pid()];
        daemons.extend_from_slice(others);
        let m = run_measured(&mut command, &daemons)?;
        let reply: serde_json::Value =
            serde_json::from_slice(&m.stdout).map_err(|e| format!("ferry's JSON: {e}"))?;
        let field = |key: &str| reply[key].as_u64().unwrap_or(0);
        // A download reports its logical bytes: what crossed is those less the kept ones.
        let wire = match reply.get("bytes_sent") {
            Some(_) => field("bytes_sent"),
            None => field("bytes") - field("kept_bytes") - field("hole_bytes"),
        };
        Ok((m, wire, Some(field("hash_bytes"))))
    }

    /// Checks the node's volume is the expected version.
    fn check(&self, checksum: &blake3::Hash) {
        let output = self
            .ferry()
            .args(["--json", "vol", "info", VOLUME])
            .output()
            .expect("running ferry");
        let info: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(
            info["checksum"],
            checksum.to_hex().as_str(),
            "the node's volume differs"
        );
    }
}
