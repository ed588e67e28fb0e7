//! Peers found by DNS: real `ferryd` processes whose `[discovery]` resolves SRV records served
//! by a real dnsmasq on loopback, records added and removed while the nodes run, driven by the
//! real `ferry`.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::dns::{Dnsmasq, Record, SRV, skip_without_dnsmasq};
use common::{Daemon, EventWatcher, ferry, random_file, run, run_json, user_entry};
use ferry_actors::{Client, ClientConfig};
use ferry_node::proto::volume::PeerTransferRequest;
use ferry_node::volume::VolumeClient;

const MIB: u64 = 1 << 20;
const PEER_USER: &str = "peer";
const PEER_PASSWORD: &str = "ferry-peer-secret";
/// How long a change of the records may take to show in a node's peers: the nodes re-resolve
/// every second; this leaves room for a loaded machine.
const CHANGE_WITHIN: Duration = Duration::from_secs(30);
const EVENTS_WITHIN: Duration = Duration::from_secs(60);

/// Starts node `name` (its `name`, which discovery leaves out) resolving `SRV` at `resolver` every
/// second, authenticating to discovered peers as [`PEER_USER`].
fn node(dir: &Path, name: &str, resolver: &str, users: &str) -> Daemon {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let password = home.join("peer-password");
    std::fs::write(&password, format!("{PEER_PASSWORD}\n")).unwrap();
    let text = format!(
        "name = {name:?}\n\n[events]\nprogress_every_bytes = 4194304\n\n\
         [limits]\n# A peer frozen on purpose below must not be declared dead meanwhile.\n\
         keepalive_interval_secs = 30\n\n\
         [discovery]\nsrv = {SRV:?}\nresolver = {resolver:?}\n\
         interval_secs = 1\ntimeout_secs = 1\nuser = {PEER_USER:?}\npassword_file = {:?}\n\n\
         {users}",
        password.display().to_string()
    );
    let config = home.join("ferryd.toml");
    std::fs::write(&config, text).unwrap();
    Daemon::start(&home.join("data"), Some(&config))
}

fn record(host: &str, daemon: &Daemon) -> Record {
    Record {
        host: host.into(),
        port: daemon.tcp.rsplit(':').next().unwrap().parse().unwrap(),
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The nodes of `daemon`'s cluster view, in its order (the node itself first).
fn cluster_view(daemon: &Daemon) -> Vec<String> {
    run_json(daemon, &["vol", "list", "--cluster"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `daemon`'s cluster view is `expected`; polls, bounded by [`CHANGE_WITHIN`].
fn wait_for_view(daemon: &Daemon, expected: &[&str]) {
    let deadline = Instant::now() + CHANGE_WITHIN;
    loop {
        let view = cluster_view(daemon);
        if view == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster view stayed {view:?}, not {expected:?}, for {CHANGE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `daemon` has a peer `peer` now, without contacting it: COPY checks the peer's name
/// before it opens the volume, so a COPY of a volume that does not exist says which is missing.
/// (Called directly: `ferry vol copy` asks for the volume's INFO first.)
fn knows_peer(daemon: &Daemon, peer: &str) -> bool {
    let message = actix_rt::System::new().block_on(async {
        let client = Client::connect_unix(&daemon.unix, ClientConfig::default())
            .await
            .unwrap();
        let request = PeerTransferRequest {
            name: "no-such-volume".into(),
            to_peer: peer.into(),
            overwrite: false,
            full: false,
        };
        VolumeClient::new(client)
            .copy(&request)
            .await
            .expect_err("copied a volume that does not exist")
            .message
    });
    if message.contains(&format!("no peer named {peer:?}")) {
        return false;
    }
    assert!(message.contains("no-such-volume"), "{message}");
    true
}

fn checksum_on(daemon: &Daemon, name: &str) -> Option<String> {
    let listed = run_json(daemon, &["vol", "list"]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| (v["name"] == name).then(|| v["checksum"].as_str().unwrap().to_owned()))
}

fn file_hash(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

#[test]
fn peers_come_and_go_with_their_srv_records_and_one_in_use_is_not_cut() {
    if skip_without_dnsmasq("peers_come_and_go_with_their_srv_records") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut dns = Dnsmasq::start(dir.path(), &[]);
    let users = user_entry(PEER_USER, PEER_PASSWORD, "read-write");
    let a = node(dir.path(), "node-a", &dns.address(), &users);
    let b = node(dir.path(), "node-b", &dns.address(), &users);
    let c = node(dir.path(), "node-c", &dns.address(), &users);
    // No records yet: no peers (an SRV name without records is an empty set, not an error).
    assert_eq!(cluster_view(&a), ["node-a"]);

    // a and b published: each finds the other, never itself, by the SRV target's first label.
    dns.set_records(&[record("node-a", &a), record("node-b", &b)]);
    wait_for_view(&a, &["node-a", "node-b"]);
    wait_for_view(&b, &["node-b", "node-a"]);
    let file = dir.path().join("small.bin");
    random_file(&file, MIB, 1);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "small"]);
    let copied = run_json(&a, &["vol", "copy", "small", "--to", "node-b"]);
    assert_eq!(copied["volume"]["checksum"], file_hash(&file).as_str());
    assert_eq!(checksum_on(&b, "small"), Some(file_hash(&file)));

    // c added while the nodes run: found by both, and takes a replicated upload.
    dns.set_records(&[
        record("node-a", &a),
        record("node-b", &b),
        record("node-c", &c),
    ]);
    wait_for_view(&a, &["node-a", "node-b", "node-c"]);
    wait_for_view(&b, &["node-b", "node-a", "node-c"]);
    let up = run_json(
        &a,
        &[
            "vol",
            "upload",
            file.to_str().unwrap(),
            "rep",
            "--replicas",
            "3",
        ],
    );
    let replicas: Vec<&str> = up["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["peer"].as_str().unwrap())
        .collect();
    assert_eq!(replicas, ["node-b", "node-c"]);
    assert_eq!(checksum_on(&c, "rep"), Some(file_hash(&file)));

    // A copy to c under way when c leaves DNS: c is dropped for new operations, the copy that
    // holds it goes on. c is frozen (SIGSTOP) once the copy moves, so the copy cannot finish
    // before the removal is seen; it is let go afterwards.
    let big = dir.path().join("big.bin");
    random_file(&big, 256 * MIB, 2);
    run_json(&a, &["vol", "upload", big.to_str().unwrap(), "big"]);
    let watch = EventWatcher::start(&a);
    let mut copy = ferry(&a)
        .args(["--json", "vol", "copy", "big", "--to", "node-c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = watch.wait_for("progress", "big", EVENTS_WITHIN);
    assert_eq!(progress["detail"]["direction"], "copy");
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGSTOP) }, 0);
    dns.set_records(&[record("node-a", &a), record("node-b", &b)]);
    let deadline = Instant::now() + CHANGE_WITHIN;
    while knows_peer(&a, "node-c") {
        assert!(
            Instant::now() < deadline,
            "node-c still a peer {CHANGE_WITHIN:?} after it left DNS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        copy.try_wait().unwrap().is_none(),
        "the copy ended while its destination was frozen"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(c.pid() as i32, libc::SIGCONT) }, 0);
    let output = copy.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the copy failed: {}",
        stderr(&output)
    );
    assert_eq!(checksum_on(&c, "big"), Some(file_hash(&big)));
    wait_for_view(&a, &["node-a", "node-b"]);
    let refused = run(&a, &["vol", "copy", "small", "--to", "node-c"]);
    assert!(
        stderr(&refused).contains("no peer named \"node-c\": it has node-b"),
        "{}",
        stderr(&refused)
    );

    // The DNS server down: rounds fail (the port refuses), and the nodes keep the peers they
    // found last. Watched over three rounds.
    drop(dns);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(cluster_view(&a), ["node-a", "node-b"]);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_discovery_section_stops_ferryd_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (section, reason) in [
        (
            "srv = \"_ferry._tcp.x.test\"\ninterval_secs = 0",
            "interval_secs and timeout_secs must be at least 1",
        ),
        (
            "srv = \"_ferry._tcp.x.test\"\nresolver = \"127.0.0.1\"",
            "resolver \"127.0.0.1\"",
        ),
        (
            "srv = \"_ferry._tcp.x.test\"\nscheme = \"tls\"\nresolver = \"127.0.0.1:53\"",
            "needs `ca`",
        ),
        (
            "srv = \"_ferry._tcp.x.test\"\nsrv_name = 1",
            "unknown field",
        ),
    ] {
        let config = dir.path().join("ferryd.toml");
        std::fs::write(&config, format!("[discovery]\n{section}\n")).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
            .args(["--data-dir".as_ref(), dir.path().join("data").as_os_str()])
            .args(["--tcp", "127.0.0.1:0", "--metrics", ""])
            .args(["--config".as_ref(), config.as_os_str()])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{section}");
        assert!(
            stderr(&output).contains(reason),
            "{section}: {}",
            stderr(&output)
        );
        // `--check-config` refuses the same, as a configuration error (exit 78).
        let checked = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
            .args(["--data-dir".as_ref(), dir.path().join("data").as_os_str()])
            .args(["--tcp", "127.0.0.1:0", "--metrics", ""])
            .args(["--config".as_ref(), config.as_os_str()])
            .arg("--check-config")
            .output()
            .unwrap();
        assert_eq!(
            checked.status.code(),
            Some(78),
            "{section}: {}",
            stderr(&checked)
        );
        assert!(stderr(&checked).contains(reason), "{}", stderr(&checked));
    }
}
