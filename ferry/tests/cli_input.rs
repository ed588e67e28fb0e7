//! The `ferry` CLI against bad input: every subcommand with bad sizes, names, paths, URIs,
//! missing files, directories, devices, empty and huge values. None may panic or print a
//! backtrace (RUST_BACKTRACE=1 would show one); each gets a message and README's exit code;
//! with `--json` every failure is one JSON document `{"error": ..., "exit": N}` on stderr and
//! stdout stays empty.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Daemon, user_entry};

/// README's exit codes.
const USAGE: i32 = 2;
const CONNECTION: i32 = 3;
const NOT_FOUND: i32 = 4;
const EXISTS: i32 = 5;
const INVALID: i32 = 6;
const MISMATCH: i32 = 8;
const BUSY: i32 = 9;

fn ferry_at(uri: &str, args: &[&str], json: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["-c", uri])
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRY_USER")
        .env_remove("FERRY_CA")
        .env("FERRY_PASSWORD", "not-used");
    if json {
        command.arg("--json");
    }
    command.args(args).output().expect("running ferry")
}

/// Runs `args` plainly and with `--json`; both must fail with `exit`, tidily.
fn fails_with(uri: &str, args: &[&str], exit: i32) {
    let plain = ferry_at(uri, args, false);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(plain.status.code(), Some(exit), "ferry {args:?}: {stderr}");
    assert_tidy(args, &stderr);
    // A message: ferry's own, clap's error, or (a subcommand missing) clap's help.
    assert!(
        ["ferry: ", "error: ", "Usage: "]
            .iter()
            .any(|start| stderr.starts_with(start) || stderr.contains(&format!("\n\n{start}"))),
        "ferry {args:?} printed no message: {stderr:?}"
    );

    let json = ferry_at(uri, args, true);
    let stderr = String::from_utf8_lossy(&json.stderr);
    assert_eq!(
        json.status.code(),
        Some(exit),
        "ferry --json {args:?}: {stderr}"
    );
    assert_tidy(args, &stderr);
    assert!(
        json.stdout.is_empty(),
        "ferry --json {args:?} printed a result on failure"
    );
    let document: serde_json::Value = serde_json::from_str(stderr.trim())
        .unwrap_or_else(|e| panic!("ferry --json {args:?}: stderr is not JSON ({e}): {stderr}"));
    assert_eq!(document["exit"], exit, "ferry --json {args:?}: {document}");
    assert!(
        document["error"].as_str().is_some_and(|m| !m.is_empty()),
        "ferry --json {args:?}: no message in {document}"
    );
}

fn assert_tidy(args: &[&str], stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("stack backtrace"),
        "ferry {args:?} panicked: {stderr}"
    );
}

/// A node with a volume `disk`, and local files of every awkward kind.
struct Setup {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&dir.path().join("data"), None);
        let files = dir.path().join("files");
        std::fs::create_dir(&files).unwrap();
        std::fs::write(files.join("small"), vec![3u8; 100_000]).unwrap();
        std::fs::write(files.join("existing"), b"keep me").unwrap();
        let fifo = std::ffi::CString::new(files.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(files.join("into")).unwrap();
        let setup = Self { daemon, dir };
        let created = ferry_at(&setup.uri(), &["vol", "create", "disk", "1MiB"], false);
        assert!(created.status.success());
        setup
    }

    fn uri(&self) -> String {
        self.daemon.uri()
    }

    fn file(&self, name: &str) -> String {
        self.dir
            .path()
            .join("files")
            .join(name)
            .display()
            .to_string()
    }
}

#[test]
fn bad_sizes_names_and_values_get_usage_or_invalid() {
    let node = Setup::new();
    let uri = &node.uri();
    for size in [
        "10XB",
        "",
        "-5",
        "99999999999999999999999",
        "16EiB",
        "1.5.5MiB",
        "GiB",
    ] {
        fails_with(uri, &["vol", "create", "x", size], USAGE);
    }
    let long = "n".repeat(300);
    for name in ["", "../etc", "a/b", "with space", ".", "..", &long] {
        fails_with(uri, &["vol", "create", name, "1MiB"], INVALID);
        fails_with(uri, &["vol", "info", name], INVALID);
        fails_with(uri, &["vol", "delete", name], INVALID);
    }
    fails_with(uri, &["vol", "create", "disk", "1MiB"], EXISTS);
    fails_with(uri, &["vol", "info", "missing"], NOT_FOUND);
    fails_with(uri, &["vol", "delete", "missing"], NOT_FOUND);
    fails_with(uri, &["--timeout", "abc", "ping"], USAGE);
    fails_with(uri, &["--timeout", "-1", "ping"], USAGE);
    fails_with(uri, &["frobnicate"], USAGE);
    fails_with(uri, &[], USAGE);
    fails_with(uri, &["vol"], USAGE);
    fails_with(uri, &["admin", "disconnect", "abc"], USAGE);
    fails_with(
        uri,
        &["admin", "disconnect", "99999999999999999999999"],
        USAGE,
    );
    fails_with(uri, &["admin", "disconnect", "999999"], NOT_FOUND);
    fails_with(
        uri,
        &["vol", "migrate", "disk", "--to", "nopeer"],
        NOT_FOUND,
    );
    fails_with(uri, &["vol", "copy", "missing", "--to", "x"], NOT_FOUND);
    fails_with(uri, &["vol", "migrate", "disk"], USAGE);
    // Huge but well-formed values are the node's to refuse, and it says why.
    fails_with(
        uri,
        &[
            "vol",
            "download",
            "disk",
            "--offset",
            "18446744073709551615",
        ],
        INVALID,
    );
    fails_with(
        uri,
        &["vol", "download", "disk", "--length", "99999999999"],
        INVALID,
    );
}

#[test]
fn bad_paths_and_files_are_refused_before_anything_is_sent() {
    let node = Setup::new();
    let uri = &node.uri();
    let (small, existing, fifo, into) = (
        node.file("small"),
        node.file("existing"),
        node.file("fifo"),
        node.file("into"),
    );
    fails_with(uri, &["vol", "upload", "/nonexistent/file"], NOT_FOUND);
    fails_with(uri, &["vol", "upload", &into], USAGE);
    fails_with(uri, &["vol", "upload", "/"], USAGE);
    fails_with(uri, &["vol", "upload", "/dev/zero", "zero"], USAGE);
    fails_with(uri, &["vol", "upload", "/dev/null", "null"], USAGE);
    fails_with(uri, &["vol", "upload", &fifo, "fifo"], USAGE);
    fails_with(
        uri,
        &["vol", "upload", &small, "--replicas", "2", "--resume"],
        USAGE,
    );
    fails_with(uri, &["vol", "upload", &small, "--replicas", "0"], USAGE);
    fails_with(uri, &["vol", "upload", &small, "disk"], EXISTS);
    fails_with(uri, &["vol", "upload", &small, "bad/name"], INVALID);
    fails_with(uri, &["vol", "upload", &small, "--resume"], MISMATCH);
    fails_with(
        uri,
        &["vol", "download", "missing", &node.file("m")],
        NOT_FOUND,
    );
    fails_with(
        uri,
        &["vol", "download", "disk", "/nonexistent/dir/file"],
        NOT_FOUND,
    );
    fails_with(uri, &["vol", "download", "disk", &existing], EXISTS);
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    // Nothing above made a volume: not /dev/zero's empty one, not a FIFO's.
    let list = ferry_at(uri, &["vol", "list"], true);
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(&list.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["disk"]);
    // Into a directory, like cp: the file takes the volume's name.
    let into_dir = ferry_at(uri, &["vol", "download", "disk", &into], false);
    assert!(into_dir.status.success(), "{into_dir:?}");
    assert_eq!(
        std::fs::metadata(Path::new(&into).join("disk"))
            .unwrap()
            .len(),
        1 << 20
    );
}

#[test]
fn bad_uris_and_credentials_get_usage_or_connection() {
    let node = Setup::new();
    for uri in ["foo://x", "tcp://nohost", "", "tcp://:", "unix://"] {
        fails_with(uri, &["ping"], USAGE);
    }
    fails_with("unix:///nonexistent/ferryd.sock", &["ping"], CONNECTION);
    // A port that refuses: a listener's own port, closed again.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    fails_with(&format!("tcp://127.0.0.1:{port}"), &["ping"], CONNECTION);
    fails_with(&format!("tls://127.0.0.1:{port}"), &["ping"], USAGE);
    fails_with(
        &format!("tls://127.0.0.1:{port}"),
        &["--ca", "/nonexistent/ca.pem", "ping"],
        USAGE,
    );
    let uri = &node.uri();
    fails_with(uri, &["hash-password", ""], USAGE);
    fails_with(uri, &["hash-password", "bob", "--role", "king"], USAGE);
    let empty = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--json", "hash-password", "bob"])
        .env("FERRY_PASSWORD", "")
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(USAGE));
    assert!(empty.stdout.is_empty(), "an entry for an empty password");
    serde_json::from_slice::<serde_json::Value>(&empty.stderr).unwrap();
}

/// A node at `max_connections = 1` with a read-only user; the one connection is held by a
/// `ferry events` watcher.
#[test]
fn connection_limit_refusals_exit_busy_and_any_role_can_ping() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferryd.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections = 1\n\n{}",
            user_entry("reader", "pages", "read-only")
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let tcp = daemon.tcp_uri();
    let as_reader = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(["-c", &tcp, "--user", "reader"])
            .env("FERRY_PASSWORD", "pages")
            .env("RUST_BACKTRACE", "1");
        if json {
            command.arg("--json");
        }
        command.arg("ping").output().unwrap()
    };
    // Admin INFO is not for a read-only user; a ping is.
    let ping = as_reader(false);
    assert!(ping.status.success(), "{ping:?}");
    assert!(String::from_utf8_lossy(&ping.stdout).contains("answered in"));

    // Live once it has printed its first event, so the one connection is taken.
    let watcher = common::EventWatcher::start(&daemon);
    fails_with(&daemon.uri(), &["ping"], BUSY);
    fails_with(&daemon.uri(), &["vol", "list"], BUSY);
    for json in [false, true] {
        let refused = as_reader(json);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(BUSY), "{stderr}");
        assert!(stderr.contains("max_connections"), "{stderr}");
    }
    drop(watcher);
}

/// Conventions users know: SI and IEC units differ as numfmt reads them; a downloaded file gets
/// the mode the umask gives a new file (not the temporary file's 0600); Ctrl-C on `ferry
/// events` exits 130 like any interrupted command.
#[test]
fn units_file_modes_and_interrupts_follow_unix_conventions() {
    let node = Setup::new();
    let uri = &node.uri();
    for (name, size, bytes) in [
        ("si", "10GB", 10_000_000_000u64),
        ("iec", "10GiB", 10 << 30),
    ] {
        let created = ferry_at(uri, &["vol", "create", name, size], true);
        assert!(created.status.success(), "{created:?}");
        let volume: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
        assert_eq!(volume["size"], bytes, "{size}");
    }
    for (umask, mode) in [("022", 0o644), ("027", 0o640)] {
        let file = node.file(&format!("mode-{umask}"));
        let script = format!("umask {umask} && exec \"$0\" -c \"$1\" vol download disk \"$2\"",);
        let downloaded = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_ferry"), uri, &file])
            .output()
            .unwrap();
        assert!(downloaded.status.success(), "{downloaded:?}");
        use std::os::unix::fs::PermissionsExt;
        let got = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "umask {umask}: mode {got:o}");
    }
    let mut watcher = common::EventWatcher::start(&node.daemon);
    watcher.interrupt();
    assert_eq!(
        watcher.wait_exit(std::time::Duration::from_secs(30)),
        Some(130)
    );
}

/// A pipe whose read end is already closed, as stdout: every write to it fails with EPIPE.
fn closed_pipe() -> std::process::Stdio {
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe; its read end is closed at once, so every write fails EPIPE.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is ours, handed over to Stdio exactly once.
    let stdout = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    std::process::Stdio::from(stdout)
}

/// A reader that went away (`ferry vol list | head -c0`, `ferry events | head -1`,
/// `ferry vol download disk - | head -c1`): ferry stops quietly with 141, as a tool ended by
/// SIGPIPE would, instead of panicking on EPIPE. Every command that writes to stdout, plain
/// and with `--json`.
#[test]
fn a_closed_stdout_ends_ferry_quietly() {
    let node = Setup::new();
    let commands: [&[&str]; 12] = [
        &["vol", "list"],
        &["vol", "list", "--cluster"],
        &["vol", "info", "disk"],
        &["vol", "download", "disk", "-"],
        &["vol", "create", "another", "1KiB"],
        &["ping"],
        &["admin", "info"],
        &["admin", "clients"],
        &["events"],
        &["hash-password", "someone"],
        &["completions", "bash"],
        &["man"],
    ];
    for args in commands {
        // Plain `events` writes to stdout only when an event comes: below.
        let variants: &[bool] = if args == ["events"] {
            &[true]
        } else {
            &[false, true]
        };
        for &json in variants {
            let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
                .args(["-c", &node.uri()])
                .args(json.then_some("--json"))
                .args(args)
                .env("RUST_BACKTRACE", "1")
                .env("FERRY_PASSWORD", "secret")
                .stdout(closed_pipe())
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(141), "{json} {args:?}: {stderr}");
            assert!(stderr.is_empty(), "{json} {args:?}: {stderr}");
            // Created: the next run would fail with "exists" before writing.
            if args.starts_with(&["vol", "create"]) {
                let deleted = ferry_at(&node.uri(), &["vol", "delete", "another"], false);
                assert!(deleted.status.success(), "{deleted:?}");
            }
        }
    }

    // `ferry events` without --json writes its first line to stdout when an event comes.
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["-c", &node.uri(), "events"])
        .env("RUST_BACKTRACE", "1")
        .stdout(closed_pipe())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(watcher.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.starts_with("watching events"), "{line}");
    let created = ferry_at(&node.uri(), &["vol", "create", "evented", "1KiB"], false);
    assert!(created.status.success(), "{created:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert_eq!(watcher.wait().unwrap().code(), Some(141), "{rest}");
    assert!(rest.is_empty(), "{rest}");
}
