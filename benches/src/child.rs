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

    pub fn pid(&self) -> u32 {
        self.process.id()
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

/// CPU time (user + system) a running process has used, its reaped children's included (an
/// rsync daemon forks one per connection), from /proc/PID/stat.
pub fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) from its closing parenthesis;
    // utime, stime, cutime and cstime are fields 14 to 17 of the whole line.
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(fields.iter().sum::<u64>() as f64 / ticks)
}

/// Whether a process has live children (an rsync daemon still finishing a connection).
fn has_children(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|children| !children.trim().is_empty())
}

/// CPU time of this process's waited-for children so far.
fn children_cpu() -> Duration {
    crate::common::rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// A command run to its end, with what it cost.
pub struct Measured {
    pub wall: Duration,
    /// User + system CPU of the command (its children included) and of `daemons` meanwhile.
    pub cpu: Duration,
    pub stdout: Vec<u8>,
}

/// Runs `command` to its end like [`run_timed`], also measuring the CPU it and the given
/// daemons used (a daemon's forked helpers are waited for, bounded, so their time counts).
pub fn run_measured(command: &mut Command, daemons: &[u32]) -> Result<Measured, String> {
    let daemons_before: Duration = daemons.iter().map(|&pid| cpu_of(pid)).sum();
    let own_before = children_cpu();
    let started = Instant::now();
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let wall = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemons.iter().any(|&pid| has_children(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let daemons_after: Duration = daemons.iter().map(|&pid| cpu_of(pid)).sum();
    Ok(Measured {
        wall,
        cpu: (children_cpu() - own_before) + (daemons_after.saturating_sub(daemons_before)),
        stdout: output.stdout,
    })
}
