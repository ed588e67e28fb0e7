//! Every `ferry --json` command that succeeds prints exactly one JSON document on stdout (one
//! per line for `ferry events`), in the shape docs/CLI.md gives its kind of result, with the
//! units docs/CLI.md promises: byte counts as integers, durations as `_seconds` floats, points
//! in time as RFC 3339 `_at` strings, checksums as 64 hex digits or null. Real nodes (one with
//! a peer, for migrate and copy), the real `ferry`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, EventWatcher, ferry, random_file};
use serde_json::Value;

const EVENTS_WITHIN: Duration = Duration::from_secs(30);

/// `ferry --json ARGS`: it must succeed and print one JSON document and nothing else.
fn json(daemon: &Daemon, args: &[&str]) -> Value {
    let output = ferry(daemon)
        .arg("--json")
        .args(args)
        .env("FERRY_PASSWORD", "a password")
        .output()
        .expect("running ferry");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ferry --json {args:?}: {stderr}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "ferry --json {args:?} prints one line: {stdout}"
    );
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("ferry --json {args:?}: not JSON ({e}): {stdout}"));
    check_units(&value, &format!("{args:?}"));
    value
}

/// docs/CLI.md's units, checked on every key at every depth.
fn check_units(value: &Value, what: &str) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| check_units(item, what)),
        Value::Object(fields) => {
            for (key, field) in fields {
                assert!(
                    !key.ends_with("_millis") && !key.ends_with("_micros") && key != "seconds",
                    "{what}: {key} is not in docs/CLI.md's units"
                );
                if key.ends_with("_at") || key == "at" {
                    if let Some(at) = field.as_str() {
                        assert!(
                            humantime::parse_rfc3339(at).is_ok() && at.ends_with('Z'),
                            "{what}: {key} = {at} is not RFC 3339 UTC"
                        );
                    } else {
                        assert!(field.is_null(), "{what}: {key} = {field}");
                    }
                }
                if key.ends_with("_seconds") {
                    assert!(field.is_f64(), "{what}: {key} = {field} is not seconds");
                }
                if key == "checksum" && !field.is_null() {
                    let hex = field.as_str().unwrap_or_default();
                    assert!(
                        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                        "{what}: checksum {field}"
                    );
                }
                check_units(field, what);
            }
        }
        _ => {}
    }
}

/// The object's keys, which must be exactly `expected` (the shape docs/CLI.md gives).
fn shape(value: &Value, expected: &[&str], what: &str) {
    let keys: BTreeSet<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(keys, expected, "{what}: {value}");
}

const VOLUME: &[&str] = &[
    "name",
    "size",
    "allocated",
    "checksum",
    "created_at",
    "modified_at",
];

fn volume(value: &Value, what: &str) {
    shape(value, VOLUME, what);
    assert!(
        value["size"].is_u64() && value["allocated"].is_u64(),
        "{what}"
    );
}

#[test]
fn every_json_result_parses_and_has_its_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let b = Daemon::start(&dir.path().join("b"), None);
    let config = dir.path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"a\"\n[events]\nprogress_every_bytes = 1048576\n\
             [[peers]]\nname = \"node2\"\naddress = \"{}\"\n",
            b.uri()
        ),
    )
    .unwrap();
    let a = Daemon::start(&dir.path().join("a"), Some(&config));
    let events = EventWatcher::start(&a);
    let file = dir.path().join("disk.img");
    random_file(&file, 3 * 1024 * 1024 + 5, 1);
    let file = file.to_str().unwrap();

    let ping = json(&a, &["ping"]);
    shape(&ping, &["node", "round_trip_seconds"], "ping");

    volume(&json(&a, &["vol", "create", "empty", "1MiB"]), "vol create");
    let up = json(&a, &["vol", "upload", file, "disk"]);
    shape(
        &up,
        &[
            "volume",
            "replicas",
            "bytes_sent",
            "hole_bytes",
            "kept_bytes",
            "hash_bytes",
            "resumed_from",
            "elapsed_seconds",
        ],
        "vol upload",
    );
    volume(&up["volume"], "vol upload's volume");
    assert_eq!(up["bytes_sent"], 3 * 1024 * 1024 + 5);

    let list = json(&a, &["vol", "list"]);
    let list = list.as_array().expect("vol list is an array");
    assert_eq!(list.len(), 2);
    list.iter().for_each(|v| volume(v, "vol list"));
    volume(&json(&a, &["vol", "info", "disk"]), "vol info");

    let copy = dir.path().join("copy.img");
    let down = json(&a, &["vol", "download", "disk", copy.to_str().unwrap()]);
    shape(
        &down,
        &[
            "file",
            "bytes",
            "hole_bytes",
            "kept_bytes",
            "hash_bytes",
            "checksum",
            "elapsed_seconds",
        ],
        "vol download",
    );
    assert_eq!(down["checksum"], up["volume"]["checksum"]);

    let peer_transfer = [
        "volume",
        "peer",
        "migrated",
        "bytes_sent",
        "hole_bytes",
        "kept_bytes",
        "hash_bytes",
        "elapsed_seconds",
    ];
    let copied = json(&a, &["vol", "copy", "disk", "--to", "node2"]);
    shape(&copied, &peer_transfer, "vol copy");
    volume(&copied["volume"], "vol copy's volume");
    let migrated = json(&a, &["vol", "migrate", "empty", "--to", "node2"]);
    shape(&migrated, &peer_transfer, "vol migrate");
    assert_eq!(migrated["migrated"], true);

    let cluster = json(&a, &["vol", "list", "--cluster"]);
    let nodes = cluster.as_array().expect("the cluster view is an array");
    assert_eq!(nodes.len(), 2);
    for node in nodes {
        shape(
            node,
            &[
                "node",
                "address",
                "local",
                "reachable",
                "error",
                "listed_at",
                "volumes",
            ],
            "vol list --cluster",
        );
        for v in node["volumes"].as_array().unwrap() {
            volume(v, "vol list --cluster");
        }
    }
    assert_eq!(
        (nodes[0]["node"].as_str(), nodes[1]["node"].as_str()),
        (Some("a"), Some("node2"))
    );

    shape(
        &json(&a, &["vol", "delete", "disk"]),
        &["deleted"],
        "vol delete",
    );

    shape(
        &json(&a, &["admin", "info"]),
        &[
            "version",
            "uptime_seconds",
            "data_dir",
            "connections_open",
            "max_connections",
            "max_in_flight_calls",
            "max_frame",
            "max_chunk",
            "stream_window",
        ],
        "admin info",
    );
    let clients = json(&a, &["admin", "clients"]);
    let clients = clients.as_array().expect("admin clients is an array");
    for client in clients {
        shape(
            client,
            &[
                "id",
                "peer",
                "connected_at",
                "calls_in_flight",
                "streams_open",
                "bytes_in",
                "bytes_out",
            ],
            "admin clients",
        );
    }

    let entry = json(&a, &["hash-password", "someone", "--role", "admin"]);
    shape(
        &entry,
        &[
            "name",
            "role",
            "salt",
            "iterations",
            "stored_key",
            "server_key",
        ],
        "hash-password",
    );

    // The events of all that, in order, one JSON document per line, with the same units.
    for (kind, name) in [
        ("created", "empty"),
        ("progress", "disk"),
        ("uploaded", "disk"),
        ("finished", "disk"),
        ("deleted", "disk"),
    ] {
        let event = events.wait_for(kind, name, EVENTS_WITHIN);
        shape(&event, &["at", "event", "dropped_before", "detail"], kind);
        check_units(&event, kind);
    }

    // Last, as it ends the watcher's connection. When `admin clients` ran, the connections
    // open were the watcher's, that command's own (a higher id), and maybe one of the earlier
    // commands whose close the node had not read yet (under load): the watcher opened first,
    // so it has the lowest id, and its SUBSCRIBE is in flight.
    assert!(clients.len() >= 2, "{clients:?}");
    let watcher = clients
        .iter()
        .min_by_key(|c| c["id"].as_u64())
        .expect("the events watcher is a client");
    assert_eq!(watcher["calls_in_flight"], 1, "{clients:?}");
    let id = watcher["id"].to_string();
    shape(
        &json(&a, &["admin", "disconnect", &id]),
        &["disconnected"],
        "admin disconnect",
    );
}

/// `ferry completions SHELL` and `ferry man` come from the clap definitions: every command is
/// in the bash script and has a page, ferryd's too; `-q` drops the notes, `-v` shows the
/// runtime's logs.
#[test]
fn completions_man_pages_and_verbosity() {
    let ferry_plain = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .output()
            .expect("running ferry")
    };
    let bash = ferry_plain(&["completions", "bash"]);
    assert!(bash.status.success());
    let script = String::from_utf8(bash.stdout).unwrap();
    for word in [
        "_ferry()",
        "hash-password",
        "--password-file",
        "--replicas",
        "completions",
    ] {
        assert!(script.contains(word), "no {word} in the bash completions");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = ferry_plain(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    assert_eq!(ferry_plain(&["completions", "tcsh"]).status.code(), Some(2));

    let page = ferry_plain(&["man"]);
    assert!(page.status.success());
    assert!(
        String::from_utf8_lossy(&page.stdout).starts_with(".ie"),
        "roff"
    );
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let written = ferry_plain(&["man", "--out-dir", pages.to_str().unwrap()]);
    assert!(written.status.success(), "{written:?}");
    for page in [
        "ferry.1",
        "ferry-vol-upload.1",
        "ferry-admin-disconnect.1",
        "ferryd.1",
    ] {
        let text =
            std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }

    let node = Daemon::start(&dir.path().join("data"), None);
    let quiet = ferry(&node).args(["-q", "vol", "list"]).output().unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty() && quiet.stdout.is_empty(),
        "{quiet:?}"
    );
    let noted = ferry(&node).args(["vol", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&noted.stderr).trim(), "no volumes");
    let verbose = ferry(&node)
        .args(["-v", "vol", "list"])
        .env_remove("FERRY_LOG")
        .output()
        .unwrap();
    assert!(verbose.status.success());
    let logs = String::from_utf8_lossy(&verbose.stderr);
    assert!(
        logs.contains("INFO") && logs.contains("connecting") && logs.contains("connected"),
        "{logs}"
    );
    assert!(!logs.contains('\u{1b}'), "no colours in a pipe: {logs}");
    assert_eq!(
        ferry(&node)
            .args(["-q", "-v", "ping"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2),
        "-q and -v conflict"
    );
}
