//! Real `ferryd` processes driven by the real `ferry` binary: big and sparse transfers, aborts,
//! crashes and resumption, bad input, and events seen by another client.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use common::{Daemon, EventWatcher, ferry, frequent_progress_config, random_file, run, run_json};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const EVENTS_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_one_gib_file_goes_up_and_comes_back_with_the_same_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let file = dir.path().join("big.bin");
    random_file(&file, GIB, 1);

    let up = run_json(&daemon, &["vol", "upload", file.to_str().unwrap(), "big"]);
    assert_eq!(up["volume"]["size"], GIB);
    assert_eq!(up["bytes_sent"], GIB);
    let checksum = up["volume"]["checksum"].as_str().unwrap().to_owned();
    assert_eq!(
        checksum,
        blake3::hash(&std::fs::read(&file).unwrap())
            .to_hex()
            .as_str()
    );

    let back = dir.path().join("back.bin");
    let down = run_json(&daemon, &["vol", "download", "big", back.to_str().unwrap()]);
    assert_eq!(down["checksum"], checksum.as_str());
    assert_eq!(down["bytes"], GIB);
    assert!(
        std::fs::read(&file).unwrap() == std::fs::read(&back).unwrap(),
        "the downloaded file differs"
    );
    // Every data byte crossed the wire exactly once each way.
    assert_eq!(
        daemon.metric("ferry_stream_received_bytes_total"),
        GIB as f64
    );
    assert_eq!(daemon.metric("ferry_stream_sent_bytes_total"), GIB as f64);
}

#[test]
fn a_sparse_4_gib_image_with_1_percent_data_moves_about_1_percent_of_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let image = dir.path().join("disk.img");
    {
        // 41 MiB of data, one MiB every 100 MiB, in a 4 GiB file.
        let file = std::fs::File::create(&image).unwrap();
        let mut data = vec![0u8; MIB as usize];
        for i in 0..41u64 {
            data.fill((i % 250 + 1) as u8);
            std::os::unix::fs::FileExt::write_all_at(&file, &data, i * 100 * MIB).unwrap();
        }
        file.set_len(4 * GIB).unwrap();
    }
    let data_bytes = 41 * MIB;

    let up = run_json(&daemon, &["vol", "upload", image.to_str().unwrap(), "disk"]);
    assert_eq!(up["volume"]["size"], 4 * GIB);
    assert_eq!(up["bytes_sent"], data_bytes);
    assert_eq!(up["hole_bytes"], 4 * GIB - data_bytes);
    let on_wire = daemon.metric("ferry_received_bytes_total");
    assert!(
        on_wire < data_bytes as f64 * 1.01,
        "{on_wire} bytes on the wire for {data_bytes} of data"
    );
    let stored = &run_json(&daemon, &["vol", "info", "disk"]);
    assert!(
        stored["allocated"].as_u64().unwrap() < 2 * data_bytes,
        "the node filled the holes: {stored}"
    );

    let back = dir.path().join("back.img");
    let down = run_json(
        &daemon,
        &["vol", "download", "disk", back.to_str().unwrap()],
    );
    assert_eq!(down["checksum"], up["volume"]["checksum"]);
    assert_eq!(down["hole_bytes"], 4 * GIB - data_bytes);
    let metadata = std::fs::metadata(&back).unwrap();
    assert_eq!(metadata.len(), 4 * GIB);
    assert!(
        metadata.blocks() * 512 < 2 * data_bytes,
        "the download filled the holes"
    );
}

#[test]
fn ctrl_c_mid_upload_aborts_it_and_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &dir.path().join("data"),
        Some(&frequent_progress_config(dir.path())),
    );
    let file = dir.path().join("big.bin");
    random_file(&file, 512 * MIB, 2);
    let watcher = EventWatcher::start(&daemon);

    let mut upload = ferry(&daemon)
        .args([
            "vol",
            "upload",
            file.to_str().unwrap(),
            "doomed",
            "--no-verify",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    watcher.wait_for("progress", "doomed", EVENTS_WITHIN);
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(upload.id() as i32, libc::SIGINT) }, 0);
    let status = upload.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "ferry did not report the interruption"
    );
    let failed = watcher.wait_for("failed", "doomed", EVENTS_WITHIN);
    assert!(
        failed["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("aborted"),
        "{failed}"
    );

    assert_eq!(run_json(&daemon, &["vol", "list"]), serde_json::json!([]));
    let partial = std::fs::read_dir(daemon.data_dir.join("partial"))
        .unwrap()
        .count();
    assert_eq!(partial, 0, "the aborted upload was kept");
}

#[test]
fn a_daemon_killed_mid_upload_resumes_after_restart_to_the_right_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = frequent_progress_config(dir.path());
    let mut daemon = Daemon::start(&data, Some(&config));
    let file = dir.path().join("big.bin");
    random_file(&file, 256 * MIB, 3);
    let watcher = EventWatcher::start(&daemon);

    let upload = ferry(&daemon)
        .args(["vol", "upload", file.to_str().unwrap(), "survivor"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    watcher.wait_for("progress", "survivor", EVENTS_WITHIN);
    daemon.kill9();
    let output = upload.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(watcher);

    let daemon = Daemon::start(&data, Some(&config));
    assert_eq!(
        run_json(&daemon, &["vol", "list"]),
        serde_json::json!([]),
        "a partial upload became visible"
    );
    let resumed = run_json(
        &daemon,
        &[
            "vol",
            "upload",
            file.to_str().unwrap(),
            "survivor",
            "--resume",
        ],
    );
    let from = resumed["resumed_from"].as_u64().unwrap();
    assert!(from > 0 && from < 256 * MIB, "resumed from {from}");
    assert_eq!(resumed["bytes_sent"], 256 * MIB - from);
    let expected = blake3::hash(&std::fs::read(&file).unwrap());
    assert_eq!(resumed["volume"]["checksum"], expected.to_hex().as_str());
}

#[test]
fn bad_names_and_uris_get_clear_errors_and_distinct_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), None);
    let long = "x".repeat(300);
    for name in ["../etc", "a/b", ".hidden", long.as_str()] {
        let output = run(&daemon, &["vol", "create", name, "1MiB"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(6), "{name}: {stderr}");
        assert!(stderr.contains("invalid volume name"), "{name}: {stderr}");
    }
    let output = run(&daemon, &["vol", "info", "missing"]);
    assert_eq!(output.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));

    for (uri, code, says) in [
        ("http://127.0.0.1:1", 2, "bad node URI"),
        ("tcp://127.0.0.1", 2, "needs a port"),
        ("tcp://127.0.0.1:1", 3, "cannot connect"),
        ("unix:///nonexistent/ferryd.sock", 3, "is ferryd running?"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["-c", uri, "ping"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{uri}: {stderr}");
        assert!(stderr.contains(says), "{uri}: {stderr}");
    }
    // The node is still serving.
    assert!(run(&daemon, &["ping"]).status.success());
}

#[test]
fn a_subscriber_sees_the_events_of_another_clients_upload() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        &dir.path().join("data"),
        Some(&frequent_progress_config(dir.path())),
    );
    let watcher = EventWatcher::start(&daemon);
    let file = dir.path().join("f.bin");
    random_file(&file, 10 * MIB, 4);
    run_json(
        &daemon,
        &["vol", "upload", file.to_str().unwrap(), "shared"],
    );
    let progress = watcher.wait_for("progress", "shared", EVENTS_WITHIN);
    assert_eq!(progress["detail"]["direction"], "upload");
    watcher.wait_for("finished", "shared", EVENTS_WITHIN);
    let uploaded = watcher.wait_for("uploaded", "shared", EVENTS_WITHIN);
    assert_eq!(uploaded["detail"]["size"], 10 * MIB);
    run_json(&daemon, &["vol", "delete", "shared"]);
    watcher.wait_for("deleted", "shared", EVENTS_WITHIN);
}
