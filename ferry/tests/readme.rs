//! README.md's shell blocks run as written, in order, in one working directory, against nodes
//! this test starts: the local node (found by `ferry` in its default place, as a user's would
//! be: XDG_DATA_HOME points at it), named `node1`, with peers `node2` and `node3`.
//!
//! The info string of a block says how: ```` ```sh ```` runs with `bash -euo pipefail` and
//! must succeed; ```` ```sh background ```` is one command that keeps running (a node): it is
//! started, its `ferryd ready` line awaited, and it is stopped at the end; and
//! ```` ```sh skip: REASON ```` is not run here (Docker, root, Ctrl-C), and must say why.
//! Other blocks (```` ```rust ````) are not shell.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, first_line_with};

const README: &str = include_str!("../../README.md");
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How a block is run, from its info string.
#[derive(Debug, PartialEq)]
enum Run {
    Foreground,
    Background,
    Skip(String),
}

/// README's `sh` blocks: how to run each, its first line number and its text.
fn shell_blocks(text: &str) -> Vec<(Run, usize, String)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, l)| l)
            .take_while(|l| !l.starts_with("```"))
            .collect();
        let info = info.trim();
        let Some(rest) = info.strip_prefix("sh") else {
            continue;
        };
        let rest = rest.trim();
        let run = if rest.is_empty() {
            Run::Foreground
        } else if rest == "background" {
            Run::Background
        } else if let Some(reason) = rest.strip_prefix("skip:") {
            assert!(
                !reason.trim().is_empty(),
                "README.md:{}: a skipped block says why",
                number + 1
            );
            Run::Skip(reason.trim().to_owned())
        } else {
            panic!("README.md:{}: unknown info string {info:?}", number + 1);
        };
        blocks.push((run, number + 1, body.join("\n")));
    }
    blocks
}

/// Commands a block runs, with the environment a user of this checkout has: `ferry` and
/// `ferryd` on PATH, a home and data directory of their own, nothing of the test's FERRY_*.
fn shell(dir: &Path, script: &str) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_ferry")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.join("work"))
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.join("home"))
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .env("FERRYD_LOG", "warn")
        .env("RUST_BACKTRACE", "1");
    command
}

/// Background blocks' processes, stopped when the test ends (passing or not).
struct Background(Vec<Child>);

impl Drop for Background {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn every_readme_shell_block_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["work", "home", "xdg"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let node2 = Daemon::start(&d.join("node2"), None);
    let node3 = Daemon::start(&d.join("node3"), None);
    let config = d.join("node1.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"node1\"\n[[peers]]\nname = \"node2\"\naddress = \"{}\"\n\
             [[peers]]\nname = \"node3\"\naddress = \"{}\"\n",
            node2.uri(),
            node3.uri()
        ),
    )
    .unwrap();
    // ferryd's default data directory under XDG_DATA_HOME: where `ferry` looks by default.
    let _node1 = Daemon::start(&d.join("xdg/ferry"), Some(&config));

    let blocks = shell_blocks(README);
    let mut background = Background(Vec::new());
    let mut ran = 0;
    for (run, line, script) in &blocks {
        match run {
            Run::Skip(_) => continue,
            Run::Foreground => {
                let output = shell(d, script).output().expect("running bash");
                assert!(
                    output.status.success(),
                    "README.md:{line}: the block failed ({}):\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Run::Background => {
                let commands: Vec<&str> = script
                    .lines()
                    .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                    .collect();
                assert_eq!(
                    commands.len(),
                    1,
                    "README.md:{line}: a background block is one command"
                );
                let mut child = shell(d, &format!("exec {}", commands[0]))
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("starting a background block");
                let ready =
                    first_line_with(child.stdout.take().unwrap(), "ferryd ready:", READY_WITHIN);
                let exited = child.try_wait().unwrap();
                background.0.push(child);
                assert!(
                    ready.is_some(),
                    "README.md:{line}: {script} did not say `ferryd ready` (exited: {exited:?})"
                );
            }
        }
        ran += 1;
    }
    // Guards against a parser that finds nothing: README has these runnable blocks.
    assert!(ran >= 5, "only {ran} blocks ran: {blocks:#?}");
}

#[test]
fn info_strings_are_parsed() {
    let text =
        "```sh\na\n```\n```rust\nb\n```\n```sh skip: no docker\nc\n```\n```sh background\nd\n```\n";
    let blocks = shell_blocks(text);
    assert_eq!(
        blocks,
        [
            (Run::Foreground, 1, "a".to_owned()),
            (Run::Skip("no docker".into()), 7, "c".to_owned()),
            (Run::Background, 10, "d".to_owned()),
        ]
    );
}
