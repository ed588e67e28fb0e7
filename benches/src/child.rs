//! A server in a process of its own, for the workloads that measure one side at a time
//! (`memory`, `copies`): the process's RSS and heap counters are then the server's alone, and
//! each process stays under the open-file limit with 10,000 connections.
//!
//! The child prints `addr HOST:PORT`, then answers lines on stdin: `stats` (RSS, live heap,
//! bytes allocated so far, open streams, open connections), `trim`, `quit`.
//!
//! Also the other processes a workload runs (`volumes`): daemons stopped when dropped, and
//! commands timed from spawn to exit.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::alloc;
use crate::ferry::{FerryServer, Settings};
use crate::grpc::{self, GrpcServer, Tuning};
use crate::raw::{self, RawServer};

/// Runs the server for `peer` until told to quit (the `--serve` mode).
pub fn serve(peer: &str) {
    alloc::raise_nofile();
    enum Any {
        Ferry(FerryServer),
        Grpc(GrpcServer),
        Raw(RawServer),
    }
    let server = match peer {
        "ferry" => Any::Ferry(FerryServer::start(Settings {
            max_in_flight: 1 << 20,
            max_connections: 1 << 20,
            max_streams: 1 << 20,
            max_buffered: u64::MAX,
            ..Settings::default()
        })),
        "tonic-default" | "tonic-tuned" => {
            grpc::RAISE_STREAM_LIMIT.store(true, Ordering::Relaxed);
            let tuning = if peer == "tonic-tuned" {
                Tuning::Tuned
            } else {
                Tuning::Default
            };
            Any::Grpc(GrpcServer::start(tuning))
        }
        "raw" => Any::Raw(RawServer::start()),
        other => panic!("no server for peer {other:?}"),
    };
    let addr = match &server {
        Any::Ferry(s) => s.addrs.tcp.clone(),
        Any::Grpc(s) => s.addrs.tcp.clone(),
        Any::Raw(s) => s.addrs.tcp.clone(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "addr {addr}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "stats" => {
                let (streams, connections) = match &server {
                    Any::Ferry(s) => {
                        let counters = s.handle().counters();
                        (counters.streams_open.get(), counters.connections_open.get())
                    }
                    Any::Grpc(_) => (
                        grpc::OPEN_UPLOADS.load(Ordering::Relaxed),
                        grpc::CONNECTIONS.load(Ordering::Relaxed),
                    ),
                    Any::Raw(_) => (0, raw::CONNECTIONS.load(Ordering::Relaxed)),
                };
                writeln!(
                    out,
                    "{} {} {} {streams} {connections}",
                    alloc::rss(),
                    alloc::live(),
                    alloc::allocated()
                )
                .unwrap();
            }
            "trim" => {
                alloc::trim();
                writeln!(out, "ok").unwrap();
            }
            "quit" => break,
            _ => writeln!(out, "?").unwrap(),
        }
        out.flush().unwrap();
    }
    drop(server);
}

/// What a server process reports.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub rss: u64,
    pub heap: u64,
    pub allocated: u64,
    pub streams: u64,
    pub connections: u64,
}

/// A server process and the pipe to it.
pub struct Child {
    process: std::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub addr: String,
}

impl Child {
    pub fn spawn(peer: &str) -> Self {
        let exe = std::env::current_exe().expect("own executable");
        // FERRY_BENCH_SERVE_PREFIX runs the server process under a tool, e.g.
        // "valgrind --tool=dhat --dhat-out-file=/tmp/server.dhat".
        let prefix = std::env::var("FERRY_BENCH_SERVE_PREFIX").unwrap_or_default();
        let mut words: Vec<String> = prefix.split_whitespace().map(str::to_owned).collect();
        words.push(exe.display().to_string());
        let mut process = Command::new(&words[0])
            .args(&words[1..])
            .arg("--serve")
            .arg(peer)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server process");
        let stdin = process.stdin.take().unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("server address");
        let addr = line
            .trim()
            .strip_prefix("addr ")
            .expect("the server process prints its address")
            .to_owned();
        Self {
            process,
            stdin,
            stdout,
            addr,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("server answer");
        line
    }

    pub fn stats(&mut self) -> Stats {
        let line = self.ask("stats");
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().expect("numeric stats"))
            .collect();
        Stats {
            rss: fields[0],
            heap: fields[1],
            allocated: fields[2],
            streams: fields[3],
            connections: fields[4],
        }
    }

    pub fn trim(&mut self) {
        self.ask("trim");
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.process.wait();
    }
}

/// A daemon the benchmark started (ferryd, libvirtd): asked to stop with SIGTERM when dropped,
/// killed if it has not exited 10 s later.
pub struct Daemon {
    name: String,
    process: std::process::Child,
}

impl Daemon {
    pub fn spawn(name: &str, command: &mut Command) -> Result<Self, String> {
        let process = command
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            process,
        })
    }

    /// Waits for the first line of the daemon's stdout (piped) that starts with `prefix`, then
    /// keeps draining the pipe on a thread so the daemon never blocks on it.
    pub fn line_starting(&mut self, prefix: &str, within: Duration) -> Result<String, String> {
        let stdout = self
            .process
            .stdout
            .take()
            .ok_or_else(|| format!("{}: stdout is not piped", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let wanted = prefix.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(&wanted) {
                    let _ = tx.send(line);
                }
            }
        });
        rx.recv_timeout(within).map_err(|_| {
            format!(
                "{} did not print its {:?} line within {within:?}",
                self.name, prefix
            )
        })
    }

    /// Whether the daemon has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "   {} did not stop on SIGTERM within 10 s: killed",
            self.name
        );
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `command` to its end with stdout discarded; how long it took from spawn to exit, or
/// its exit status and stderr if it failed.
pub fn run_timed(command: &mut Command) -> Result<Duration, String> {
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let elapsed = started.elapsed();
    if output.status.success() {
        Ok(elapsed)
    } else {
        Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
