//! `volumes`: a file uploaded into a volume store and downloaded back, each transfer timed as
//! whole client processes from spawn to exit, against daemons started once per workload:
//!
//! - **ferry**: `ferry vol upload FILE NAME` / `ferry vol download NAME FILE` against a real
//!   `ferryd` on TCP loopback, with its default security: a SCRAM-SHA-256 user, since TCP
//!   connections must authenticate. The upload hashes the file first (the default, so the node
//!   can refuse corrupted data), and both directions end synced (the volume is fsynced before
//!   it is committed, the downloaded file before it appears).
//! - **virsh**: `virsh vol-create-as` + `vol-upload` in one virsh process, and `vol-download`,
//!   against a `libvirtd` listening on TCP loopback without authentication, with a transient
//!   `dir` pool. libvirt does not fsync what it writes, so the benchmark fdatasyncs the file
//!   virsh wrote (the volume, the downloaded file) right after virsh exits, inside the timing;
//!   `throughput, no fsync` is virsh alone. libvirt is optional: without it (or in `--smoke`),
//!   Ferry runs alone and the records and stderr say why.
//!
//! The source file, both stores and the downloaded file are in one temporary directory under
//! `--vol-dir`, so on one filesystem. Before every timed transfer the destination is removed
//! and the machine `sync`ed; every downloaded file is checked against the source's BLAKE3.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::child::{Daemon, Measured, run_measured, run_timed};
use crate::common::{MIB, cpu_per_gb, mbps, pattern, pieces};
use crate::report::{Better, Collector, Record};
use crate::workloads::ferryd::FerryNode;
use crate::workloads::ferryd::{hash_file, sync};
use crate::workloads::peers::rotated;

/// The volume's name in both stores.
const VOLUME: &str = "bench.img";

pub fn volumes(opts: &Opts) -> Vec<Record> {
    let mut results = Collector::new("volumes");
    let work = WorkDir::new(&opts.vol_dir);
    let source = work.0.join("source.img");
    let checksum = write_source(&source, opts.vol_size);
    let downloaded = work.0.join("downloaded.img");
    let ferry = opts.wants("ferry").then(|| {
        FerryNode::start(&opts.bin_dir, &work.0, "", false).unwrap_or_else(|e| panic!("{e}"))
    });
    let libvirt = if !opts.wants("virsh") {
        Err("not in --peers".to_owned())
    } else if opts.smoke {
        Err("--smoke does not run libvirt".to_owned())
    } else {
        Libvirt::start(&work.0, opts.vol_size)
    };
    let copy = opts.wants("cp").then(|| LocalCopy::new(&work.0));
    let mut stores: Vec<&dyn Store> = Vec::new();
    if let Some(ferry) = &ferry {
        stores.push(ferry);
    }
    if let Some(copy) = &copy {
        stores.push(copy);
    }
    match &libvirt {
        Ok(libvirt) => stores.push(libvirt),
        Err(why) if opts.wants("virsh") => skipped(why),
        Err(_) => {}
    }
    for round in 0..opts.rounds {
        for store in rotated(&stores, round) {
            store.delete();
            sync();
            let timing = store.upload(&source).unwrap_or_else(|e| panic!("{e}"));
            timing.add(&mut results, "upload", store.name(), opts.vol_size);
        }
        for store in rotated(&stores, round) {
            let _ = std::fs::remove_file(&downloaded);
            sync();
            let timing = store
                .download(&downloaded)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                hash_file(&downloaded),
                checksum,
                "{}: the downloaded file differs from the source",
                store.name()
            );
            timing.add(&mut results, "download", store.name(), opts.vol_size);
        }
    }
    let filesystem = filesystem(&work.0);
    for case in ["upload", "download"] {
        for store in &stores {
            results.param(case, store.name(), "size", opts.vol_size);
            results.param(case, store.name(), "dir", work.0.display().to_string());
            results.param(case, store.name(), "filesystem", filesystem.as_str());
            results.param(case, store.name(), "transport", "tcp loopback");
            for (key, value) in store.params() {
                results.param(case, store.name(), key, value);
            }
        }
        if let (Some(_), Err(why)) = (&ferry, &libvirt) {
            results.param(case, "ferry", "virsh", format!("skipped: {why}"));
        }
    }
    drop(ferry);
    if opts.wants("ferry") {
        crate::workloads::deltas::deltas(opts, &mut results, &work.0);
    }
    results.finish()
}

/// One timed transfer: the client process(es), then the fsync the benchmark adds for a peer
/// that does not sync itself; and the CPU the client and the daemon used.
struct Timing {
    process: Duration,
    fsync: Option<Duration>,
    cpu: Duration,
}

impl Timing {
    /// A measured client run, synced by the peer itself.
    fn of(measured: Measured) -> Self {
        Self {
            process: measured.wall,
            fsync: None,
            cpu: measured.cpu,
        }
    }

    fn add(&self, results: &mut Collector, case: &str, peer: &str, size: u64) {
        let total = self.process + self.fsync.unwrap_or_default();
        let metric = "throughput";
        results.add(
            case,
            peer,
            metric,
            "MB/s",
            Better::Higher,
            mbps(size, total),
        );
        let cpu = cpu_per_gb(self.cpu, size);
        results.add(case, peer, "CPU per GB", "s/GB", Better::Lower, cpu);
        if self.fsync.is_some() {
            let metric = "throughput, no fsync";
            let value = mbps(size, self.process);
            results.add(case, peer, metric, "MB/s", Better::Higher, value);
        }
    }
}

/// A volume store and its client.
trait Store {
    fn name(&self) -> &'static str;
    /// Removes the volume, if there is one (not timed).
    fn delete(&self);
    fn upload(&self, source: &Path) -> Result<Timing, String>;
    fn download(&self, destination: &Path) -> Result<Timing, String>;
    fn params(&self) -> Vec<(&'static str, String)>;
}

/// A temporary directory, removed with everything in it when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(parent: &Path) -> Self {
        let path = parent.join(format!("ferry-bench-volumes-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `size` bytes of the test pattern; returns their BLAKE3.
fn write_source(path: &Path, size: u64) -> blake3::Hash {
    let mut file = std::io::BufWriter::with_capacity(
        MIB as usize,
        File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display())),
    );
    let mut hasher = blake3::Hasher::new();
    for (offset, len) in pieces(size, MIB) {
        let data = pattern(offset, len);
        hasher.update(&data);
        file.write_all(&data).expect("writing the source file");
    }
    file.flush().expect("writing the source file");
    hasher.finalize()
}

/// fdatasync of a file another process wrote; how long it took.
fn fdatasync(path: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    File::open(path)
        .and_then(|f| f.sync_data())
        .map_err(|e| format!("syncing {}: {e}", path.display()))?;
    Ok(started.elapsed())
}

/// The type of the filesystem holding `path` (from statfs), for the records.
fn filesystem(path: &Path) -> String {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "?".into();
    };
    // SAFETY: statfs writes into the zeroed struct we own; c_path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return "?".into();
    }
    match stat.f_type as u64 {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("0x{other:x}"),
    }
}

fn skipped(why: &str) {
    let line = "#".repeat(78);
    eprintln!(
        "{line}\n##  volumes: the libvirt peer (virsh) is SKIPPED: {why}\n##  Ferry ran alone: no ratio against virsh in this run. benches/README.md says\n##  how to install libvirt (Debian: libvirt-daemon libvirt-clients).\n{line}"
    );
}

impl Store for FerryNode {
    fn name(&self) -> &'static str {
        "ferry"
    }

    fn delete(&self) {
        let _ = run_timed(self.ferry().args(["vol", "delete", VOLUME]));
    }

    fn upload(&self, source: &Path) -> Result<Timing, String> {
        let mut command = self.ferry();
        command.args(["vol", "upload"]).arg(source).arg(VOLUME);
        run_measured(&mut command, &[self.pid()]).map(Timing::of)
    }

    fn download(&self, destination: &Path) -> Result<Timing, String> {
        let mut command = self.ferry();
        command.args(["vol", "download", VOLUME]).arg(destination);
        run_measured(&mut command, &[self.pid()]).map(Timing::of)
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("auth", "SCRAM-SHA-256 (ferryd's default on TCP)".into()),
            (
                "synced",
                "by ferry: the volume before its commit, the download before it appears".into(),
            ),
            (
                "binaries",
                self.ferry.parent().unwrap().display().to_string(),
            ),
        ]
    }
}

/// A `libvirtd` listening on TCP loopback without authentication, with only its storage
/// driver loaded and one transient `dir` pool; stopped (pool destroyed first) when dropped.
struct Libvirt {
    daemon: Daemon,
    virsh: PathBuf,
    uri: String,
    pool: String,
    pool_dir: PathBuf,
    size: u64,
    version: String,
}

impl Libvirt {
    fn start(dir: &Path, size: u64) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: libvirtd runs as root here (its storage driver keeps state in /run/libvirt)".into());
        }
        let virsh = find_program("virsh")?;
        let libvirtd = find_program("libvirtd")?;
        let driver = storage_driver()?;
        let base = dir.join("libvirt");
        let drivers = base.join("drivers");
        let sockets = base.join("sockets");
        let pool_dir = dir.join("pool");
        for d in [&drivers, &sockets, &pool_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        // Only the storage driver: the QEMU driver would need its system user and binaries.
        std::os::unix::fs::symlink(&driver, drivers.join(driver.file_name().unwrap()))
            .map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = base.join("libvirtd.conf");
        let settings = format!(
            "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"127.0.0.1\"\ntcp_port = \"{port}\"\n\
             auth_tcp = \"none\"\nunix_sock_dir = \"{}\"\nlog_outputs = \"3:stderr\"\n",
            sockets.display()
        );
        std::fs::write(&config, settings).map_err(|e| e.to_string())?;
        let log = base.join("libvirtd.log");
        let daemon = Daemon::spawn(
            "libvirtd",
            Command::new(&libvirtd)
                .arg("--listen")
                .arg("--config")
                .arg(&config)
                .arg("--pid-file")
                .arg(base.join("libvirtd.pid"))
                .env("LIBVIRT_DRIVER_DIR", &drivers)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).map_err(|e| e.to_string())?),
        )?;
        let version = Command::new(&virsh)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let mut libvirt = Self {
            daemon,
            virsh,
            uri: format!("storage+tcp://127.0.0.1:{port}/system"),
            pool: format!("ferry-bench-{}", std::process::id()),
            pool_dir,
            size,
            version,
        };
        // Transient: nothing is written under /etc/libvirt; destroying it forgets it.
        let xml = base.join("pool.xml");
        let pool = format!(
            "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
            libvirt.pool,
            libvirt.pool_dir.display()
        );
        std::fs::write(&xml, pool).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match run_timed(libvirt.virsh().arg("pool-create").arg(&xml)) {
                Ok(_) => return Ok(libvirt),
                Err(error) if libvirt.daemon.exited().is_some() || Instant::now() > deadline => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(format!(
                        "libvirtd did not come up: {error}; its log ends: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn virsh(&self) -> Command {
        let mut command = Command::new(&self.virsh);
        command.args(["-q", "-c", &self.uri]);
        command
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let _ = run_timed(self.virsh().args(["pool-destroy", &self.pool]));
    }
}

impl Store for Libvirt {
    fn name(&self) -> &'static str {
        "virsh"
    }

    fn delete(&self) {
        let _ = run_timed(
            self.virsh()
                .args(["vol-delete", "--pool", &self.pool, VOLUME]),
        );
    }

    fn upload(&self, source: &Path) -> Result<Timing, String> {
        // A volume must exist before vol-upload: both commands in one virsh process.
        let commands = format!(
            "vol-create-as {pool} {VOLUME} {size} --format raw --allocation 0; \
             vol-upload --pool {pool} {VOLUME} {file}",
            pool = self.pool,
            size = self.size,
            file = source.display()
        );
        let measured = run_measured(self.virsh().arg(commands), &[self.daemon.pid()])?;
        let fsync = fdatasync(&self.pool_dir.join(VOLUME))?;
        Ok(Timing {
            fsync: Some(fsync),
            ..Timing::of(measured)
        })
    }

    fn download(&self, destination: &Path) -> Result<Timing, String> {
        let measured = run_measured(
            self.virsh()
                .args(["vol-download", "--pool", &self.pool, VOLUME])
                .arg(destination),
            &[self.daemon.pid()],
        )?;
        let fsync = fdatasync(destination)?;
        Ok(Timing {
            fsync: Some(fsync),
            ..Timing::of(measured)
        })
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("libvirt", self.version.clone()),
            ("uri", self.uri.clone()),
            ("auth", "none (auth_tcp = \"none\")".into()),
            (
                "synced",
                "libvirt does not fsync: the benchmark fdatasyncs the file virsh wrote, timed"
                    .into(),
            ),
        ]
    }
}

/// `name` on PATH or in the sbin directories (libvirtd is in /usr/sbin).
fn find_program(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{name} is not installed"))
}

/// libvirt's storage driver module (`libvirt_driver_storage.so`).
fn storage_driver() -> Result<PathBuf, String> {
    let lib = Path::new("/usr/lib");
    let mut dirs = vec![lib.join("libvirt"), PathBuf::from("/usr/lib64/libvirt")];
    if let Ok(entries) = std::fs::read_dir(lib) {
        dirs.extend(entries.flatten().map(|e| e.path().join("libvirt")));
    }
    dirs.into_iter()
        .map(|d| d.join("connection-driver/libvirt_driver_storage.so"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "libvirt's storage driver (libvirt_driver_storage.so) is not installed".into()
        })
}

/// `cp --sparse=always --reflink=never` of the file to another file on the same disk, then
/// fdatasync: the practical limit of a file-to-file move on one machine.
struct LocalCopy {
    store: PathBuf,
}

impl LocalCopy {
    fn new(dir: &Path) -> Self {
        Self {
            store: dir.join("cp-copy.img"),
        }
    }

    fn copy(from: &Path, to: &Path) -> Result<Timing, String> {
        let mut command = Command::new("cp");
        // Never a clone (cp clones by default where the file system can): a move of the bytes.
        command
            .args(["--sparse=always", "--reflink=never"])
            .arg(from)
            .arg(to);
        let measured = run_measured(&mut command, &[])?;
        let fsync = fdatasync(to)?;
        Ok(Timing {
            fsync: Some(fsync),
            ..Timing::of(measured)
        })
    }
}

impl Store for LocalCopy {
    fn name(&self) -> &'static str {
        "cp"
    }

    fn delete(&self) {
        let _ = std::fs::remove_file(&self.store);
    }

    fn upload(&self, source: &Path) -> Result<Timing, String> {
        Self::copy(source, &self.store)
    }

    fn download(&self, destination: &Path) -> Result<Timing, String> {
        Self::copy(&self.store, destination)
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![(
            "command",
            "cp --sparse=always --reflink=never, then fdatasync (inside the timing)".into(),
        )]
    }
}
