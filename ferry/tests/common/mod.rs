//! Real `ferryd` processes and the real `ferry` binary, for the daemon's integration tests.
#![allow(dead_code)]

pub mod dns;
pub mod raw;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a daemon may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A `ferryd` child process, killed when dropped.
pub struct Daemon {
    child: Child,
    /// The whole ready line, for fields tests look up themselves.
    ready: String,
    pub data_dir: PathBuf,
    pub tcp: String,
    pub unix: PathBuf,
    pub metrics: String,
}

impl Daemon {
    /// Starts ferryd on `data_dir` with free loopback ports and waits for its ready line.
    pub fn start(data_dir: &Path, config: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferryd"));
        command
            .args(["--data-dir".as_ref(), data_dir.as_os_str()])
            .args(["--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            // FERRYD_TEST_LOG=info (or a filter) shows more of the daemons' logs.
            .env(
                "FERRYD_LOG",
                std::env::var("FERRYD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped());
        if let Some(config) = config {
            command.args(["--config".as_ref(), config.as_os_str()]);
        }
        let mut child = command.spawn().expect("starting ferryd");
        let line = first_line_with(child.stdout.take().unwrap(), "ferryd ready:", READY_WITHIN)
            .expect("ferryd did not say it was ready");
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
                .to_owned()
        };
        Self {
            tcp: field("tcp"),
            unix: PathBuf::from(field("unix")),
            metrics: field("metrics"),
            data_dir: data_dir.to_owned(),
            ready: line.clone(),
            child,
        }
    }

    /// A `key=value` field of the ready line.
    pub fn ready_field(&self, key: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.ready))
            .to_owned()
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.unix.display())
    }

    /// The process id, to read what the node holds from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up, like a crash.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for the exit code.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_bounded(&mut self.child, within)
    }

    /// Sends `signal` and returns at once (see [`Daemon::wait_exit`]).
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        wait_bounded(&mut self.child, within)
    }

    /// A plain HTTP/1.1 GET of `path` on the metrics listener: status code and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(&self.metrics, path)
    }

    /// One Prometheus text-format value from `/metrics`, by full sample name.
    pub fn metric(&self, sample: &str) -> f64 {
        let mut stream = std::net::TcpStream::connect(&self.metrics).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut stream, &mut body).unwrap();
        body.lines()
            .find_map(|line| {
                line.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET of `path` at `address` (`Connection: close`): status and body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(READY_WITHIN)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// Reads `stdout` on a thread until a line containing `needle`; returns it, or `None` on EOF
/// or timeout. The thread keeps draining the pipe afterwards so the child never blocks.
pub fn first_line_with(stdout: ChildStdout, needle: &str, within: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_owned();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&needle) {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// A `[[security.users]]` entry for ferryd's config, made by `ferry hash-password`.
pub fn user_entry(name: &str, password: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["hash-password", name, "--role", role])
        .env("FERRY_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let entry = String::from_utf8(output.stdout).unwrap();
    assert!(!entry.contains(password), "the password itself was printed");
    entry
}

/// The `ferry` binary aimed at a daemon.
pub fn ferry(daemon: &Daemon) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command.args(["-c", &daemon.uri()]);
    command
}

/// Runs `ferry` with `args` and returns its output.
pub fn run(daemon: &Daemon, args: &[&str]) -> Output {
    ferry(daemon).args(args).output().expect("running ferry")
}

/// Runs `ferry --json` and parses its stdout.
pub fn run_json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let output = ferry(daemon)
        .arg("--json")
        .args(args)
        .output()
        .expect("running ferry");
    assert!(
        output.status.success(),
        "ferry {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("ferry --json printed JSON")
}

/// A config file that makes progress events frequent, so tests can wait for a transfer to be
/// under way.
pub fn frequent_progress_config(dir: &Path) -> PathBuf {
    let path = dir.join("ferryd.toml");
    std::fs::write(&path, "[events]\nprogress_every_bytes = 4194304\n").unwrap();
    path
}

/// Writes `len` bytes of reproducible pseudo-random data.
pub fn random_file(path: &Path, len: u64, seed: u8) {
    let mut output = blake3::Hasher::new().update(&[seed]).finalize_xof();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buffer = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        output.fill(&mut buffer[..n]);
        file.write_all(&buffer[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

/// Writes `bytes` at `offset` of an existing file.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, bytes, offset).unwrap();
}

/// `ferry --json events`, as a child whose lines can be awaited.
pub struct EventWatcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl EventWatcher {
    pub fn start(daemon: &Daemon) -> Self {
        let mut child = ferry(daemon)
            .args(["--json", "events"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The subscription is live from its first event on.
        let first = lines
            .recv_timeout(READY_WITHIN)
            .expect("ferry events did not start watching");
        assert!(first.contains("\"subscribed\""), "first event: {first}");
        Self { child, lines }
    }

    /// Waits for an event of `kind` about volume `name`.
    pub fn wait_for(&self, kind: &str, name: &str, within: Duration) -> serde_json::Value {
        self.wait_for_one_of(&[kind], name, within)
    }

    /// Waits for an event of any of `kinds` about volume `name` (how a transfer ended, say).
    pub fn wait_for_one_of(
        &self,
        kinds: &[&str],
        name: &str,
        within: Duration,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kinds:?} event for {name} within {within:?}"));
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if kinds.iter().any(|kind| event["event"] == *kind) && event["detail"]["name"] == name {
                return event;
            }
        }
    }
}

impl EventWatcher {
    /// Ctrl-C, as a terminal sends it.
    pub fn interrupt(&self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
    }

    /// Waits (bounded) for `ferry events` to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        wait_bounded(&mut self.child, within)
    }
}

/// Waits for a child to exit, polling its status until `within` has passed.
fn wait_bounded(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

impl Drop for EventWatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Files in the store's `partial/` directory (partial uploads and their records).
    pub fn partial_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.data_dir.join("partial")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("reading partial/: {error}"),
        }
    }

    /// The node's TCP address as a URI.
    pub fn tcp_uri(&self) -> String {
        format!("tcp://{}", self.tcp)
    }
}
