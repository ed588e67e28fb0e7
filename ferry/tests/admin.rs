//! The admin program through the real `ferry` binary, and ferryd's graceful shutdown.

mod common;

use std::time::Duration;

use common::{Daemon, EventWatcher, run, run_json};

#[test]
fn admin_lists_clients_and_disconnects_one() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let info = run_json(&daemon, &["admin", "info"]);
    assert_eq!(info["data_dir"], daemon.data_dir.display().to_string());
    assert_eq!(info["max_chunk"], 256 * 1024);

    let mut watcher = EventWatcher::start(&daemon);
    let clients = run_json(&daemon, &["admin", "clients"]);
    let clients = clients.as_array().unwrap();
    // The watcher (its subscription call is open) and this very `ferry admin clients`.
    let watching = clients
        .iter()
        .find(|c| c["calls_in_flight"] == 1 && c["id"].as_u64().is_some())
        .unwrap_or_else(|| panic!("the watcher is not listed: {clients:?}"));
    let id = watching["id"].as_u64().unwrap().to_string();
    assert!(
        watching["peer"].as_str().unwrap().starts_with("unix:uid="),
        "{watching}"
    );

    assert_eq!(
        run_json(&daemon, &["admin", "disconnect", &id])["disconnected"],
        id.parse::<u64>().unwrap()
    );
    let status = watcher.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status,
        Some(3),
        "the disconnected client did not report a lost connection"
    );

    let output = run(&daemon, &["admin", "disconnect", "999999"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no client with id 999999"));
}

#[test]
fn sigterm_shuts_the_node_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(&dir.path().join("data"), None);
    let socket = daemon.unix.clone();
    assert!(run(&daemon, &["ping"]).status.success());
    let status = daemon.terminate(Duration::from_secs(30));
    assert_eq!(status, Some(0), "ferryd did not exit cleanly on SIGTERM");
    assert!(!socket.exists(), "the unix socket was left behind");
}
