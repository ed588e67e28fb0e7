//! What every peer shares: addresses, transports, the data pattern, and the instants a server
//! records when it observes a cancel or decides to abort (server and client run in the same
//! process for those workloads, so one monotonic clock serves both).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use ferry_actors::test_program::pattern;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
    /// TLS over TCP (OpenSSL); Ferry and raw only.
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Unix => "unix",
            Self::Tls => "tls",
        }
    }
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub tcp: String,
    pub unix: PathBuf,
    /// The TLS listener (`crate::tls`'s certificate for `localhost`), where the peer has one.
    pub tls: Option<String>,
}

/// Which of a server's listeners a client uses.
#[derive(Debug, Clone)]
pub enum Via {
    Tcp(String),
    Unix(PathBuf),
    Tls(String),
}

impl Addrs {
    pub fn via(&self, transport: Transport) -> Via {
        match transport {
            Transport::Tcp => Via::Tcp(self.tcp.clone()),
            Transport::Unix => Via::Unix(self.unix.clone()),
            Transport::Tls => Via::Tls(self.tls.clone().expect("this peer has no TLS listener")),
        }
    }
}

/// A fresh unix socket path in the temporary directory.
pub fn socket_path(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ferry-bench-{}-{tag}-{n}.sock", std::process::id()))
}

/// An instant set by one thread and read by another.
pub struct Mark(Mutex<Option<Instant>>);

impl Mark {
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    pub fn clear(&self) {
        *self.0.lock().unwrap() = None;
    }

    /// Records now, unless already recorded.
    pub fn set(&self) {
        self.0.lock().unwrap().get_or_insert_with(Instant::now);
    }

    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap()
    }

    /// Waits (polling every 50 µs) until the mark is set, for at most `limit`.
    pub async fn wait(&self, limit: Duration) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.get() {
                return Some(at);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(50)).await;
        }
    }
}

/// When a server saw the client's cancel of an upload.
pub static CANCEL_SEEN: Mark = Mark::new();
/// When a server decided to abort a download.
pub static ABORTED_AT: Mark = Mark::new();

/// Drops-before-done detector: sets a mark if dropped while armed.
pub struct DropMark(pub &'static Mark, pub bool);

impl Drop for DropMark {
    fn drop(&mut self) {
        if self.1 {
            self.0.set();
        }
    }
}

/// Megabytes (10^6 bytes) per second.
pub fn mbps(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// Pieces of `size` bytes in `chunk`-sized sends: (offset, length).
pub fn pieces(size: u64, chunk: u64) -> impl Iterator<Item = (u64, usize)> {
    (0..size.div_ceil(chunk)).map(move |i| {
        let offset = i * chunk;
        (offset, chunk.min(size - offset) as usize)
    })
}

/// CPU time (user + system) of this whole process so far: the server's and the client's runner
/// threads both, since every peer's server runs in this process.
pub fn process_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// User + system CPU time that `getrusage(who)` reports.
pub fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What one measured transfer took: wall time and the process's CPU time meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
}

impl Cost {
    /// Runs `f` and measures it.
    pub async fn of(f: impl Future<Output = ()>) -> Self {
        let cpu = process_cpu();
        let started = Instant::now();
        f.await;
        Self {
            wall: started.elapsed(),
            cpu: process_cpu().saturating_sub(cpu),
        }
    }

    /// CPU seconds per 10^9 bytes of `bytes` moved.
    pub fn cpu_per_gb(&self, bytes: u64) -> f64 {
        cpu_per_gb(self.cpu, bytes)
    }
}

/// CPU seconds of `cpu` per 10^9 bytes of `bytes` moved.
pub fn cpu_per_gb(cpu: Duration, bytes: u64) -> f64 {
    cpu.as_secs_f64() / (bytes as f64 / 1e9)
}
