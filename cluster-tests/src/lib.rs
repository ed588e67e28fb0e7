//! The harness of Ferry's cluster tests: a three-node cluster in Docker, started from
//! `deploy/docker-compose.yml` with the images `deploy/build-images.sh` builds, and driven
//! through processes: `docker`, `docker compose` (or Compose v1's `docker-compose`), the
//! release `ferry` binary on the host (talking to node1's published port) and `ferry` inside
//! the containers (`docker exec`).
//!
//! Every cluster runs under its own Compose project, `ferry-ct-<pid>-<random>`, and is torn
//! down (`down -v --remove-orphans`: containers, network, named volumes) by [`Cluster`]'s
//! `Drop`, which also runs while a failing test unwinds, after printing the end of the
//! containers' logs. SIGINT, SIGTERM and SIGHUP tear down the live clusters before the process
//! exits, and each start first removes clusters left behind by test processes that no longer
//! exist (killed with SIGKILL, say).
//!
//! Every wait is bounded: commands run with a timeout, and states are polled against a
//! deadline ([`poll`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The ferryd services of the compose file.
pub const NODES: [&str; 3] = ["node1", "node2", "node3"];
/// Every service of the compose file.
pub const SERVICES: [&str; 4] = ["node1", "node2", "node3", "prometheus"];
/// Compose project names of this harness start with this.
const PROJECT_PREFIX: &str = "ferry-ct-";

/// How long the images may take to build: a cold release build on a small machine.
const IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// How long a cluster gets to come up healthy.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Ordinary docker and compose commands.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
/// `ferry` commands that move little data.
pub const FERRY_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Paths

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests/ is inside the workspace")
        .to_path_buf()
}

pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `<root>/target` (as build-images.sh).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// The host's `ferry`: the release binary build-images.sh builds (and puts in the image).
pub fn ferry_bin() -> PathBuf {
    target_dir().join("release/ferry")
}

// ---------------------------------------------------------------------------------------------
// Processes

/// What a finished command left.
#[derive(Debug)]
pub struct Ran {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics, showing what the command printed, unless it succeeded.
    pub fn expect_success(self) -> Self {
        assert!(self.success(), "{} failed: {}", self.what, self.describe());
        self
    }

    /// The exit status and output, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.took.as_secs_f64(),
            tail(&self.stdout_text(), 40),
            tail(&self.stderr, 40)
        )
    }

    /// The one JSON document `ferry --json` printed.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not JSON ({e}): {}",
                self.what,
                self.describe()
            )
        })
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads a pipe to its end on a thread.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `command` to its end, with stdin closed and its output captured. If it is still
/// running after `timeout`, it is killed and this panics.
pub fn run(command: &mut Command, timeout: Duration) -> Ran {
    Running::spawn(command).wait(timeout).0
}

/// Starts `command` with stdin closed and stdout and stderr piped; panics if it cannot start.
/// Returns the command line, for messages, and the child.
fn spawn_piped(command: &mut Command) -> (String, Child) {
    let what = describe_command(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    (what, child)
}

/// Waits for `child` to exit, at most `timeout`; kills (and reaps) it and returns `None` if it
/// did not.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn describe_command(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// A command running in the background, its output captured. Killed if dropped unfinished.
pub struct Running {
    what: String,
    child: Child,
    started: Instant,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
}

impl Running {
    pub fn spawn(command: &mut Command) -> Self {
        let (what, mut child) = spawn_piped(command);
        let stdout = Some(drain(child.stdout.take().expect("piped")));
        let stderr = Some(drain(child.stderr.take().expect("piped")));
        Self {
            what,
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// Sends SIGINT, as Ctrl-C on a terminal would: `ferry` then aborts its transfer (a
    /// migration's or copy's call is cancelled) and exits 130. Panics if it already exited,
    /// since the signal would then prove nothing.
    pub fn interrupt(&mut self) {
        assert!(
            !self.finished(),
            "{} ended before it could be interrupted",
            self.what
        );
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child, which is not reaped yet (try_wait saw it running),
        // so the pid cannot have been reused.
        let sent = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(
            sent,
            0,
            "SIGINT to {}: {}",
            self.what,
            std::io::Error::last_os_error()
        );
    }

    /// Has it exited?
    pub fn finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the end, at most `timeout` (then kills it and panics). Also returns when it
    /// ended, to within the 20 ms polling step.
    pub fn wait(mut self, timeout: Duration) -> (Ran, Instant) {
        let status = wait_child(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("{} still running after {timeout:?}: killed", self.what));
        let ended = Instant::now();
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default());
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let ran = Ran {
            what: self.what.clone(),
            status,
            stdout: stdout.unwrap_or_default(),
            stderr: String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned(),
            took: ended - self.started,
        };
        (ran, ended)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Ok`, for at most `timeout`; then panics with
/// `what` and the last reason `check` gave for not being there yet.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(reason) if Instant::now() >= deadline => {
                panic!("waited {timeout:?} for {what}; last: {reason}")
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `docker ARGS`, which must succeed.
pub fn docker(args: &[&str]) -> Ran {
    run(Command::new("docker").args(args), DOCKER_TIMEOUT).expect_success()
}

/// Does a Docker engine answer?
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The Compose command: `docker compose` (v2) if it works, else `docker-compose` (v1).
pub fn compose_program() -> &'static [String] {
    static PROGRAM: OnceLock<Vec<String>> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if v2 {
            return vec!["docker".into(), "compose".into()];
        }
        let v1 = Command::new("docker-compose")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            v1,
            "neither `docker compose` (Compose v2) nor `docker-compose` (v1) works: install one"
        );
        vec!["docker-compose".into()]
    })
}

/// Which compose files a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// deploy/docker-compose.yml: three nodes with static [[peers]], and Prometheus.
    Static,
    /// The same with deploy/docker-compose.discovery.yml on top: the nodes find their peers
    /// by the SRV records of a dnsmasq service, and a fourth node (profile `later`) can be
    /// started while they run.
    Discovery,
}

impl Layout {
    fn files(self) -> &'static [&'static str] {
        match self {
            Self::Static => &["docker-compose.yml"],
            Self::Discovery => &["docker-compose.yml", "docker-compose.discovery.yml"],
        }
    }
}

/// A Compose command for `project` on the files of `layout`.
fn compose_command(project: &str, layout: Layout, ports: Option<(u16, u16)>) -> Command {
    let program = compose_program();
    let mut command = Command::new(&program[0]);
    command
        .args(&program[1..])
        .arg("--project-name")
        .arg(project);
    for file in layout.files() {
        command.arg("--file").arg(deploy_dir().join(file));
    }
    command.current_dir(deploy_dir());
    if let Some((node1, prometheus)) = ports {
        command
            .env("FERRY_NODE1_PORT", node1.to_string())
            .env("FERRY_PROMETHEUS_PORT", prometheus.to_string());
    }
    command
}

// ---------------------------------------------------------------------------------------------
// Images, teardown

/// Once per process: builds the images with deploy/build-images.sh (a cargo release build,
/// then a re-import only if something changed), then makes the cluster's credentials and node
/// configs with deploy/make-secrets.sh (existing passwords are kept).
pub fn ensure_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = deploy_dir().join("build-images.sh");
        let ran = run(&mut Command::new(&script), IMAGE_BUILD_TIMEOUT);
        assert!(
            ran.success(),
            "{} failed: {}",
            script.display(),
            ran.describe()
        );
        eprintln!(
            "images ready in {:.1} s:\n{}",
            ran.took.as_secs_f64(),
            tail(&ran.stderr, 3)
        );
        let script = deploy_dir().join("make-secrets.sh");
        let ran = run(&mut Command::new(&script), DOCKER_TIMEOUT);
        assert!(
            ran.success(),
            "{} failed: {}",
            script.display(),
            ran.describe()
        );
    });
}

/// The operator's password (user `admin`) that deploy/make-secrets.sh made.
pub fn admin_password() -> String {
    let path = deploy_dir().join("secrets/admin.password");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "reading {}: {e} (run deploy/make-secrets.sh)",
                path.display()
            )
        })
        .trim_end()
        .to_owned()
}

/// Projects started by this process and not torn down yet.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `down -v --remove-orphans`: containers, the network and the named volumes. Reports
/// failures on stderr (it runs from `Drop`).
fn teardown(project: &str) {
    let started = Instant::now();
    // With every file and profile, whichever layout the project ran: what a layout does not
    // define is simply not there to remove.
    let mut command = compose_command(project, Layout::Discovery, None);
    command.args(["--profile", "later"]);
    command.args(["down", "--volumes", "--remove-orphans", "--timeout", "10"]);
    let ran = run(&mut command, DOCKER_TIMEOUT);
    if ran.success() {
        eprintln!(
            "cluster {project} torn down in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "tearing down cluster {project} FAILED: {}\nremove it with `{} -p {project} -f deploy/docker-compose.yml down -v --remove-orphans`",
            ran.describe(),
            compose_program().join(" ")
        );
    }
}

/// Removes clusters left by earlier test processes that are gone (killed before their
/// teardown could run). Clusters of live processes, running tests concurrently, stay.
fn sweep_stale_projects() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| {
        let mut projects = std::collections::BTreeSet::new();
        for kind in [
            &["ps", "--all"][..],
            &["volume", "ls"][..],
            &["network", "ls"][..],
        ] {
            let mut command = Command::new("docker");
            command.args(kind).args([
                "--filter",
                "label=com.docker.compose.project",
                "--format",
                "{{.Label \"com.docker.compose.project\"}}",
            ]);
            let ran = run(&mut command, DOCKER_TIMEOUT);
            projects.extend(ran.stdout_text().lines().map(str::to_owned));
        }
        for project in projects {
            let Some(rest) = project.strip_prefix(PROJECT_PREFIX) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing cluster {project} left by process {pid}, which is gone");
                teardown(&project);
            }
        }
    });
}

/// Write end of the pipe the signal handler writes to.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let byte = signal as u8;
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
    unsafe {
        libc::write(fd, (&byte as *const u8).cast(), 1);
    }
}

/// On SIGINT, SIGTERM or SIGHUP (Ctrl-C during `cargo test`), tears down the live clusters,
/// then exits. The handler only writes the signal's number to a pipe; a thread does the work.
fn install_signal_teardown() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid array of two ints for pipe(2) to fill.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            eprintln!("cannot create the signal pipe: clusters are not torn down on Ctrl-C");
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let read_fd = fds[0];
        thread::spawn(move || {
            let mut byte = 0u8;
            // SAFETY: reads one byte into a local buffer from the pipe this thread owns.
            let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
            if n != 1 {
                return;
            }
            eprintln!("\nsignal {byte}: tearing down the clusters of this test run");
            let projects: Vec<String> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
            for project in projects {
                teardown(&project);
            }
            // SAFETY: ends the process without running destructors (other threads are
            // mid-test); the clusters are gone.
            unsafe { libc::_exit(128 + i32::from(byte)) };
        });
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installs a handler that only calls write(2).
            unsafe {
                libc::signal(
                    signal,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
    });
}

/// `ferry-ct-<pid>-<8 hex digits>`, different for every call.
fn unique_project() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    let random = &hex::encode(hasher.finalize().as_bytes())[..8];
    format!("{PROJECT_PREFIX}{}-{random}", std::process::id())
}

/// A free TCP port on the loopback interface (free when asked; Docker takes it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free loopback port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// A running compose cluster: node1..node3 and Prometheus (and for [`Layout::Discovery`], the
/// `dns` service). Dropping it tears it down.
pub struct Cluster {
    pub project: String,
    pub layout: Layout,
    /// node1's TCP port, published on 127.0.0.1.
    pub node1_port: u16,
    /// Prometheus's HTTP port, published on 127.0.0.1.
    pub prometheus_port: u16,
    scratch: tempfile::TempDir,
    containers: Mutex<BTreeMap<String, String>>,
}

impl Cluster {
    /// Builds the images if needed, starts a new cluster and waits until every service is
    /// healthy.
    pub fn start() -> Self {
        Self::start_with(Layout::Static)
    }

    /// [`Cluster::start`] with the compose files of `layout`.
    pub fn start_with(layout: Layout) -> Self {
        assert!(
            docker_available(),
            "no Docker engine answers (`docker info` failed): these tests need one"
        );
        compose_program();
        install_signal_teardown();
        sweep_stale_projects();
        ensure_images();
        let started = Instant::now();
        let project = unique_project();
        LIVE.lock().expect("LIVE").push(project.clone());
        // From here on, Drop tears the project down whatever happens.
        let cluster = Self {
            project,
            layout,
            node1_port: free_port(),
            prometheus_port: free_port(),
            scratch: tempfile::Builder::new()
                .prefix("ferry-cluster-test.")
                .tempdir()
                .expect("creating a scratch directory"),
            containers: Mutex::new(BTreeMap::new()),
        };
        cluster.compose(&["up", "--detach", "--no-build"], STARTUP_TIMEOUT);
        cluster.wait_healthy(&SERVICES, STARTUP_TIMEOUT);
        eprintln!(
            "cluster {} up and healthy in {:.1} s (node1 on 127.0.0.1:{}, Prometheus on 127.0.0.1:{})",
            cluster.project,
            started.elapsed().as_secs_f64(),
            cluster.node1_port,
            cluster.prometheus_port
        );
        cluster
    }

    /// A directory for the test's files, removed with the cluster.
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// `compose -p PROJECT -f deploy/docker-compose.yml ARGS`, which must succeed.
    pub fn compose(&self, args: &[&str], timeout: Duration) -> Ran {
        let mut command = compose_command(
            &self.project,
            self.layout,
            Some((self.node1_port, self.prometheus_port)),
        );
        command.args(args);
        run(&mut command, timeout).expect_success()
    }

    /// The container id of a service.
    pub fn container(&self, service: &str) -> String {
        if let Some(id) = self.containers.lock().expect("containers").get(service) {
            return id.clone();
        }
        let id = self
            .compose(&["ps", "--quiet", service], DOCKER_TIMEOUT)
            .stdout_text()
            .trim()
            .to_owned();
        assert!(!id.is_empty(), "service {service} has no container");
        self.containers
            .lock()
            .expect("containers")
            .insert(service.into(), id.clone());
        id
    }

    /// The cluster's private network.
    pub fn network(&self) -> String {
        let ran = docker(&[
            "inspect",
            "--format",
            "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
            &self.container("prometheus"),
        ]);
        let names: Vec<String> = ran
            .stdout_text()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(names.len(), 1, "prometheus is on one network: {names:?}");
        names.into_iter().next().expect("one network")
    }

    /// `docker ACTION CONTAINER-OF-SERVICE` (pause, unpause, kill, start, stop…).
    pub fn docker_on(&self, action: &str, service: &str) -> Ran {
        docker(&[action, &self.container(service)])
    }

    /// Copies a host file into a service's container (`docker cp`).
    pub fn copy_into(&self, service: &str, from: &Path, to: &str) {
        let from = from.to_str().expect("UTF-8 paths");
        docker(&["cp", from, &format!("{}:{to}", self.container(service))]);
    }

    /// Cuts a service off the cluster's network (its peers and Prometheus no longer reach it,
    /// nor does the host's published port).
    pub fn disconnect(&self, service: &str) {
        docker(&[
            "network",
            "disconnect",
            &self.network(),
            &self.container(service),
        ]);
    }

    /// Puts a service back on the network, under its service name.
    pub fn reconnect(&self, service: &str) {
        docker(&[
            "network",
            "connect",
            "--alias",
            service,
            &self.network(),
            &self.container(service),
        ]);
    }

    /// The container's health: "healthy", "starting", "unhealthy", or its state if it is not
    /// running.
    pub fn health(&self, service: &str) -> String {
        let ran = run(
            Command::new("docker").args([
                "inspect",
                "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                &self.container(service),
            ]),
            DOCKER_TIMEOUT,
        );
        let text = ran.stdout_text();
        let mut words = text.split_whitespace();
        let state = words.next().unwrap_or("unknown").to_owned();
        match (state.as_str(), words.next()) {
            ("running", Some(health)) => health.to_owned(),
            _ => state,
        }
    }

    /// Waits until every one of `services` is running and healthy.
    pub fn wait_healthy(&self, services: &[&str], timeout: Duration) {
        poll(&format!("{services:?} to be healthy"), timeout, || {
            let states: Vec<String> = services
                .iter()
                .map(|s| format!("{s}={}", self.health(s)))
                .collect();
            if states.iter().all(|s| s.ends_with("=healthy")) {
                Ok(())
            } else {
                Err(states.join(" "))
            }
        })
    }

    /// The host's `ferry --json -c tcp://127.0.0.1:<node1> ARGS`, to its end.
    pub fn ferry(&self, args: &[&str]) -> Ran {
        self.ferry_for(args, FERRY_TIMEOUT)
    }

    pub fn ferry_for(&self, args: &[&str], timeout: Duration) -> Ran {
        run(&mut self.ferry_command(args), timeout)
    }

    /// The host's `ferry` aimed at node1, authenticated as `admin`, not started.
    pub fn ferry_command(&self, args: &[&str]) -> Command {
        let mut command = self.anonymous_ferry_command(args);
        command
            .env("FERRY_USER", "admin")
            .env("FERRY_PASSWORD", admin_password());
        command
    }

    /// The host's `ferry` aimed at node1, without credentials, not started.
    pub fn anonymous_ferry_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ferry_bin());
        command
            .arg("--json")
            .arg("-c")
            .arg(format!("tcp://127.0.0.1:{}", self.node1_port))
            .args(args)
            .env_remove("FERRY_URI")
            .env_remove("FERRY_USER")
            .env_remove("FERRY_PASSWORD")
            .env_remove("FERRY_CA");
        command
    }

    /// `ferry --json ARGS` inside a service's container (its own node unless ARGS has `-c`).
    pub fn ferry_in(&self, service: &str, args: &[&str]) -> Ran {
        run(&mut self.ferry_in_command(service, args), FERRY_TIMEOUT)
    }

    pub fn ferry_in_command(&self, service: &str, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args([
                "exec",
                &self.container(service),
                "/usr/local/bin/ferry",
                "--json",
            ])
            .args(args);
        command
    }

    /// Downloads a volume from a node (through `docker exec`, to stdout) and hashes it:
    /// returns the BLAKE3 of the volume's bytes and how many arrived.
    ///
    /// `ferry vol download NAME -` writes its summary line ("downloaded -: …") to stdout after
    /// the data, so only the volume's size in bytes is hashed, and what follows must be that
    /// line (or nothing, once ferry stops doing it).
    pub fn download_hash(&self, service: &str, name: &str, timeout: Duration) -> (Hash, u64) {
        let size = self
            .volume_on(service, name)
            .unwrap_or_else(|| panic!("{service} has no volume {name:?} to download"))["size"]
            .as_u64()
            .expect("a volume's size");
        let mut command = Command::new("docker");
        command.args([
            "exec",
            &self.container(service),
            "/usr/local/bin/ferry",
            "vol",
            "download",
            name,
            "-",
        ]);
        let (what, mut child) = spawn_piped(&mut command);
        let stderr = drain(child.stderr.take().expect("piped"));
        let mut stdout = child.stdout.take().expect("piped");
        let hashing = thread::spawn(move || -> std::io::Result<(Hash, u64, Vec<u8>)> {
            let (hash, bytes) = hash_reader((&mut stdout).take(size))?;
            let mut rest = Vec::new();
            stdout.read_to_end(&mut rest)?;
            Ok((hash, bytes, rest))
        });
        let status = wait_child(&mut child, timeout)
            .unwrap_or_else(|| panic!("{what} still running after {timeout:?}: killed"));
        let hashed = hashing.join().expect("hashing thread");
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        assert!(status.success(), "{what} failed: {status}: {stderr}");
        let (hash, bytes, rest) =
            hashed.unwrap_or_else(|e| panic!("{what}: reading its output: {e}"));
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || (rest.starts_with("downloaded -: ") && rest.lines().count() == 1),
            "{what}: after the volume's {size} bytes, stdout has more than ferry's summary line: {rest:?}"
        );
        (hash, bytes)
    }

    /// A volume's JSON on a node (`ferry vol info`), or `None` if the node does not have it.
    pub fn volume_on(&self, service: &str, name: &str) -> Option<Value> {
        let ran = self.ferry_in(service, &["vol", "info", name]);
        match ran.code() {
            Some(0) => Some(ran.json()),
            Some(4) => None,
            _ => panic!("vol info {name} on {service}: {}", ran.describe()),
        }
    }

    /// Subscribes to node1's events (host `ferry events --json`), once the subscription is live.
    pub fn events(&self) -> Events {
        Events::start(self.ferry_command(&["events"]))
    }

    /// Subscribes to a service's events (`ferry events --json` inside its container), once
    /// the subscription is live: the other nodes' ports are not published. Dropping it kills
    /// the `docker exec` client; the `ferry` it started in the container lives on until the
    /// container stops (harmless: the cluster is torn down at the test's end).
    pub fn events_in(&self, service: &str) -> Events {
        Events::start(self.ferry_in_command(service, &["events"]))
    }

    /// The files under `/data/DIR` of a service's container (the node's data directory, see
    /// docs/STORE.md: `partial`, `volumes`, `meta`), as (path relative to DIR, size), sorted;
    /// directories are left out. The images have neither a shell nor `ls`, so the directory
    /// is read as the tar stream `docker cp` makes of it, listed by the host's `tar`. That
    /// also works while the container is stopped, such as a node killed a moment ago.
    pub fn data_files(&self, service: &str, dir: &str) -> Vec<(String, u64)> {
        assert!(
            !dir.is_empty() && !dir.contains('/'),
            "a directory right under /data, not {dir:?}"
        );
        let source = format!("{}:/data/{dir}", self.container(service));
        let mut copy = Command::new("docker");
        copy.args(["cp", &source, "-"]);
        let (what, mut copying) = spawn_piped(&mut copy);
        let copy_errors = drain(copying.stderr.take().expect("piped"));
        // `tar` reads the archive straight from docker's stdout, so file data is never held
        // here (a partial upload can be most of a GiB).
        let mut listing = Command::new("tar")
            .args(["--list", "--verbose", "--numeric-owner", "--file", "-"])
            .stdin(Stdio::from(copying.stdout.take().expect("piped")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting tar to list {what}: {e}"));
        let list = drain(listing.stdout.take().expect("piped"));
        let list_errors = drain(listing.stderr.take().expect("piped"));
        let listed = wait_child(&mut listing, DOCKER_TIMEOUT);
        let copied = wait_child(&mut copying, DOCKER_TIMEOUT);
        let text = |pipe: thread::JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&pipe.join().unwrap_or_default()).into_owned()
        };
        let (list, list_errors, copy_errors) = (text(list), text(list_errors), text(copy_errors));
        assert!(
            copied.is_some_and(|s| s.success()),
            "{what} failed ({copied:?}): {copy_errors}"
        );
        assert!(
            listed.is_some_and(|s| s.success()),
            "tar could not list {what} ({listed:?}): {list_errors}"
        );
        // GNU tar's verbose lines: "-rw------- 10001/10001 16777216 2026-01-01 12:00 partial/x.part".
        // Volume names have no spaces, so the fields split on whitespace.
        let prefix = format!("{dir}/");
        let mut files: Vec<(String, u64)> = list
            .lines()
            .filter(|line| !line.starts_with('d'))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(size), Some(path)) = (fields.get(2), fields.get(5)) else {
                    panic!("{what}: unexpected `tar --list --verbose` line {line:?}")
                };
                let size = size
                    .parse()
                    .unwrap_or_else(|e| panic!("{what}: size in {line:?}: {e}"));
                (path.strip_prefix(&prefix).unwrap_or(path).to_owned(), size)
            })
            .collect();
        files.sort();
        files
    }

    /// Prometheus's HTTP API, as published on the host.
    pub fn prometheus(&self) -> Prometheus {
        Prometheus::new(format!("http://127.0.0.1:{}", self.prometheus_port))
    }

    /// The end of every service's log.
    pub fn logs(&self, lines: usize) -> String {
        let mut command = compose_command(
            &self.project,
            self.layout,
            Some((self.node1_port, self.prometheus_port)),
        );
        command.args(["logs", "--no-color", "--tail", &lines.to_string()]);
        let ran = run(&mut command, DOCKER_TIMEOUT);
        format!("{}{}", ran.stdout_text(), ran.stderr)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- the test failed; last log lines of cluster {} ---\n{}\n---",
                self.project,
                self.logs(40)
            );
        }
        // Frozen containers cannot be stopped: thaw any the test left paused.
        for service in SERVICES {
            if let Some(id) = self
                .containers
                .lock()
                .ok()
                .and_then(|c| c.get(service).cloned())
            {
                let paused = run(
                    Command::new("docker").args(["inspect", "--format", "{{.State.Paused}}", &id]),
                    DOCKER_TIMEOUT,
                );
                if paused.stdout_text().trim() == "true" {
                    let _ = run(
                        Command::new("docker").args(["unpause", &id]),
                        DOCKER_TIMEOUT,
                    );
                }
            }
        }
        teardown(&self.project);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| p != &self.project);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A running `ferry events --json`; its events arrive on a channel. Killed when dropped.
pub struct Events {
    child: Child,
    events: mpsc::Receiver<Value>,
}

impl Events {
    /// Starts the subscription and waits for its `subscribed` event: later events are seen.
    pub fn start(mut command: Command) -> Self {
        let what = describe_command(&command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && tx.send(event).is_err()
                {
                    break;
                }
            }
        });
        let events = Self { child, events };
        events.wait_for(
            "the subscription to be live",
            Duration::from_secs(20),
            |e| e["event"] == "subscribed",
        );
        events
    }

    /// Waits for the first event `matches` accepts (earlier ones are consumed).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if matches(&event) => return event,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no event for {what} in {timeout:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the events subscription ended while waiting for {what}")
                }
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus

/// Prometheus's HTTP API.
pub struct Prometheus {
    base: String,
    agent: ureq::Agent,
}

/// One sample of an instant vector: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

impl Prometheus {
    pub fn new(base: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        Self { base, agent }
    }

    /// GET `/api/v1/PATH`: the `data` of a successful answer.
    pub fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let mut request = self.agent.get(format!("{}/api/v1/{path}", self.base));
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        let mut response = request.call().map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(json["data"].clone())
    }

    /// An instant query's samples.
    pub fn query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api("query", &[("query", promql)])?;
        let result = data["result"].as_array().ok_or("no result array")?;
        result
            .iter()
            .map(|sample| {
                let labels = sample["metric"]
                    .as_object()
                    .ok_or("no metric")?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = sample["value"][1]
                    .as_str()
                    .ok_or("no value")?
                    .parse::<f64>()
                    .map_err(|e| e.to_string())?;
                Ok((labels, value))
            })
            .collect()
    }

    /// `{node → value}` of a query whose samples carry the `node` label.
    pub fn by_node(&self, promql: &str) -> Result<BTreeMap<String, f64>, String> {
        Ok(self
            .query(promql)?
            .into_iter()
            .map(|(labels, value)| (labels.get("node").cloned().unwrap_or_default(), value))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Data

pub type Hash = [u8; 32];

/// BLAKE3 of everything `reader` yields, and how many bytes that was.
pub fn hash_reader(mut reader: impl Read) -> std::io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((*hasher.finalize().as_bytes(), total))
}

/// Writes `size` bytes of pseudo-random data (BLAKE3's output stream keyed by `seed`) to
/// `path`, leaving `holes` (byte ranges) unwritten, so sparse; returns the BLAKE3 of the
/// content (holes read as zeros), as ferry and ferryd compute it.
pub fn write_test_file(path: &Path, size: u64, seed: &str, holes: &[(u64, u64)]) -> Hash {
    let mut file = File::create(path).unwrap_or_else(|e| panic!("creating {path:?}: {e}"));
    let mut stream = blake3::Hasher::new_derive_key("ferry cluster tests 2026")
        .update(seed.as_bytes())
        .finalize_xof();
    let mut content = blake3::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let in_hole = holes
            .iter()
            .find(|(start, len)| at >= *start && at < start + len);
        let next_edge = holes
            .iter()
            .flat_map(|(start, len)| [*start, start + len])
            .filter(|edge| *edge > at)
            .min()
            .unwrap_or(size);
        let n = (buffer.len() as u64).min(size - at).min(next_edge - at) as usize;
        if in_hole.is_some() {
            content.update(&zeros[..n]);
            file.seek(SeekFrom::Current(n as i64)).expect("seeking");
        } else {
            stream.fill(&mut buffer[..n]);
            content.update(&buffer[..n]);
            file.write_all(&buffer[..n]).expect("writing test data");
        }
        at += n as u64;
    }
    file.set_len(size).expect("setting the file's length");
    file.sync_all().expect("syncing test data");
    *content.finalize().as_bytes()
}

/// The hex spelling `ferry --json` uses for checksums.
pub fn hex_hash(hash: &Hash) -> String {
    hex::encode(hash)
}

/// The keepalive of the deploy/ node configs: (interval, count). A silent peer is declared
/// dead after interval x (count + 1) to interval x (count + 2) of silence (keepalive ticks
/// once per interval and counts whole intervals).
pub fn node_keepalive(node: &str) -> (Duration, u32) {
    let path = deploy_dir().join(format!("{node}.toml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    let config: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let limits = &config["limits"];
    let interval = limits["keepalive_interval_secs"]
        .as_integer()
        .expect("deploy node configs set limits.keepalive_interval_secs");
    let count = limits["keepalive_count"]
        .as_integer()
        .expect("deploy node configs set limits.keepalive_count");
    (
        Duration::from_secs(interval as u64),
        u32::try_from(count).expect("a small keepalive_count"),
    )
}

/// Reads one child's stdout to its end on a thread, returning the bytes.
pub fn drain_stdout(stdout: ChildStdout) -> thread::JoinHandle<Vec<u8>> {
    drain(stdout)
}
