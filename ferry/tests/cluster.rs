//! Several real `ferryd` processes on loopback, peers of each other, driven by the real
//! `ferry`: migrate and copy, replicated uploads, the cluster view, and what survives a
//! cancelled transfer or a node killed mid-way.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Daemon, EventWatcher, ferry, random_file, run, run_json, write_at};
use ferry_actors::{Client, ClientConfig};
use ferry_node::proto::events::{Direction, Event, event};
use ferry_node::proto::volume::{ListRequest, PeerTransferRequest};
use ferry_node::volume::{PROGRESS, VolumeClient, VolumeProgram};
use serde_json::{Value, json};

const MIB: u64 = 1 << 20;
const EVENTS_WITHIN: Duration = Duration::from_secs(60);

/// The user nodes authenticate to their TCP peers as (every node of these tests has it).
const PEER_USER: &str = "peer";
const PEER_PASSWORD: &str = "ferry-peer-secret";

/// The `[[security.users]]` entry of [`PEER_USER`], made once by `ferry hash-password`.
fn peer_user_entry() -> &'static str {
    static ENTRY: OnceLock<String> = OnceLock::new();
    ENTRY.get_or_init(|| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["hash-password", PEER_USER, "--role", "read-write"])
            .env("FERRY_PASSWORD", PEER_PASSWORD)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    })
}

/// Starts node `name` in `dir/name` with these peers: a TCP peer is authenticated to as
/// [`PEER_USER`]; a unix one knows the node by its uid.
fn node(dir: &Path, name: &str, peers: &[(&str, &str)]) -> Daemon {
    node_with(dir, name, peers, "")
}

/// [`node`], with more TOML at the end of the config file.
fn node_with(dir: &Path, name: &str, peers: &[(&str, &str)], extra: &str) -> Daemon {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let password = home.join("peer-password");
    std::fs::write(&password, format!("{PEER_PASSWORD}\n")).unwrap();
    // Each node calls itself by its directory's name (the cluster view shows it).
    let mut text = format!(
        "name = {name:?}\n[events]\nprogress_every_bytes = 4194304\n\n{}\n",
        peer_user_entry()
    );
    for (peer, address) in peers {
        text += &format!("[[peers]]\nname = {peer:?}\naddress = {address:?}\n");
        if address.starts_with("tcp://") {
            let file = password.display().to_string();
            text += &format!("user = {PEER_USER:?}\npassword_file = {file:?}\n");
        }
        text += "\n";
    }
    text += extra;
    let config = home.join("ferryd.toml");
    std::fs::write(&config, text).unwrap();
    Daemon::start(&home.join("data"), Some(&config))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn file_hash(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap())
        .to_hex()
        .to_string()
}

/// `len` bytes in which one MiB of data starts every 4 MiB; the rest is holes.
fn sparse_file(path: &Path, len: u64, seed: u8) -> u64 {
    let file = std::fs::File::create(path).unwrap();
    let mut data = vec![0u8; MIB as usize];
    let mut output = blake3::Hasher::new().update(&[seed]).finalize_xof();
    let mut written = 0;
    for at in (0..len).step_by(4 * MIB as usize) {
        output.fill(&mut data);
        std::os::unix::fs::FileExt::write_all_at(&file, &data, at).unwrap();
        written += MIB;
    }
    file.set_len(len).unwrap();
    written
}

/// The volume's checksum on a node, or `None` if it has no such volume.
fn checksum_on(daemon: &Daemon, name: &str) -> Option<String> {
    let output = ferry(daemon)
        .args(["--json", "vol", "info", name])
        .output()
        .unwrap();
    match output.status.code() {
        Some(0) => {
            let info: Value = serde_json::from_slice(&output.stdout).unwrap();
            Some(info["checksum"].as_str().unwrap().to_owned())
        }
        Some(4) => None,
        _ => panic!("ferry vol info {name} failed: {}", stderr(&output)),
    }
}

fn assert_empty(daemon: &Daemon, what: &str) {
    assert_eq!(
        run_json(daemon, &["vol", "list"]),
        json!([]),
        "{what}: a volume is visible"
    );
    assert_eq!(
        daemon.partial_files(),
        Vec::<String>::new(),
        "{what}: partial data was kept"
    );
}

#[test]
fn migrate_moves_a_sparse_volume_holes_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let a = node(dir.path(), "a", &[("node2", &b.tcp_uri())]);
    let image = dir.path().join("disk.img");
    let data = sparse_file(&image, 64 * MIB, 1);
    run_json(&a, &["vol", "upload", image.to_str().unwrap(), "disk"]);
    let watcher = EventWatcher::start(&a);

    let moved = run_json(&a, &["vol", "migrate", "disk", "--to", "node2"]);
    assert_eq!(moved["peer"], "node2");
    assert_eq!(moved["migrated"], true);
    assert_eq!(moved["bytes_sent"], data);
    assert_eq!(moved["hole_bytes"], 64 * MIB - data);
    assert_eq!(moved["volume"]["checksum"], file_hash(&image).as_str());

    let progress = watcher.wait_for("progress", "disk", EVENTS_WITHIN);
    assert_eq!(progress["detail"]["direction"], "migrate");
    assert_eq!(progress["detail"]["peer"], "node2");
    // The source's copy goes once the destination committed; then the transfer is settled.
    watcher.wait_for("deleted", "disk", EVENTS_WITHIN);
    watcher.wait_for("finished", "disk", EVENTS_WITHIN);
    assert_eq!(checksum_on(&a, "disk"), None, "the source kept its copy");

    // The destination serves it, holes and all.
    let stored = run_json(&b, &["vol", "info", "disk"]);
    assert!(
        stored["allocated"].as_u64().unwrap() < 2 * data,
        "the destination filled the holes: {stored}"
    );
    let back = dir.path().join("back.img");
    let down = run_json(&b, &["vol", "download", "disk", back.to_str().unwrap()]);
    assert_eq!(down["checksum"], file_hash(&image).as_str());
    assert_eq!(down["hole_bytes"], 64 * MIB - data);
    assert!(std::fs::metadata(&back).unwrap().blocks() * 512 < 2 * data);
}

#[test]
fn copy_keeps_both_and_refuses_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "not it").unwrap();
    let badpw = format!(
        "[[peers]]\nname = \"badpw\"\naddress = {:?}\nuser = {PEER_USER:?}\npassword_file = {:?}\n",
        b.tcp_uri(),
        wrong.display().to_string()
    );
    let a = node_with(dir.path(), "a", &[("node2", &b.uri())], &badpw);
    let file = dir.path().join("img.bin");
    random_file(&file, 64 * MIB, 2);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "img"]);

    let copied = run_json(&a, &["vol", "copy", "img", "--to", "node2"]);
    assert_eq!(copied["migrated"], false);
    assert_eq!(copied["bytes_sent"], 64 * MIB);
    let expected = file_hash(&file);
    assert_eq!(checksum_on(&a, "img"), Some(expected.clone()));
    assert_eq!(checksum_on(&b, "img"), Some(expected.clone()));

    // The peer refuses to replace it unasked; with --overwrite it does.
    let again = run(&a, &["vol", "copy", "img", "--to", "node2"]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
    assert!(stderr(&again).contains("node2"), "{}", stderr(&again));
    let again = run(&a, &["vol", "migrate", "img", "--to", "node2"]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
    assert_eq!(
        checksum_on(&a, "img"),
        Some(expected.clone()),
        "a refused migration deleted the source"
    );
    run_json(&a, &["vol", "copy", "img", "--to", "node2", "--overwrite"]);
    assert_eq!(b.partial_files(), Vec::<String>::new());

    // A volume whose checksum is unknown (made by CREATE) is hashed while it is sent and
    // checked against what the peer committed.
    run_json(&a, &["vol", "create", "zeros", "64MiB"]);
    let zeros = run_json(&a, &["vol", "copy", "zeros", "--to", "node2"]);
    let expected_zeros = blake3::hash(&vec![0u8; 64 * MIB as usize]).to_hex();
    assert_eq!(zeros["volume"]["checksum"], expected_zeros.as_str());
    assert_eq!(zeros["hole_bytes"], 64 * MIB);
    assert_eq!(zeros["bytes_sent"], 0);

    // Unknown peers and volumes.
    let unknown = run(&a, &["vol", "copy", "img", "--to", "nowhere"]);
    assert_eq!(unknown.status.code(), Some(4), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("no peer named \"nowhere\": it has node2, badpw"),
        "{}",
        stderr(&unknown)
    );
    let denied = run(&a, &["vol", "copy", "img", "--to", "badpw"]);
    assert_eq!(denied.status.code(), Some(7), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("cannot authenticate to peer badpw"),
        "{}",
        stderr(&denied)
    );
    let missing = run(&a, &["vol", "migrate", "missing", "--to", "node2"]);
    assert_eq!(missing.status.code(), Some(4), "{}", stderr(&missing));
    // --full: node2 already has this version, so a delta would send nothing.
    let human = run(
        &a,
        &[
            "vol",
            "copy",
            "img",
            "--to",
            "node2",
            "--overwrite",
            "--full",
        ],
    );
    assert!(human.status.success(), "{}", stderr(&human));
    assert!(
        String::from_utf8_lossy(&human.stdout).starts_with("copied img to node2: 64.00 MiB"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
}

/// A CA and a certificate for "localhost" signed by it, as PEM files in `dir`: (ca, cert, key).
fn pki(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cluster CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn a_peer_over_tls_is_authenticated_to_and_gets_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let b = node_with(
        dir.path(),
        "b",
        &[],
        &format!("[security]\ntls = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n"),
    );
    let port = b.ready_field("tls").rsplit_once(':').unwrap().1.to_owned();
    let password = dir.path().join("a/peer-password").display().to_string();
    let a = node_with(
        dir.path(),
        "a",
        &[],
        &format!(
            "[[peers]]\nname = \"node2\"\naddress = \"tls://localhost:{port}\"\nuser = {PEER_USER:?}\npassword_file = {password:?}\nca = {ca:?}\n"
        ),
    );
    let file = dir.path().join("f.bin");
    random_file(&file, 8 * MIB, 8);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "f"]);
    let copied = run_json(&a, &["vol", "copy", "f", "--to", "node2"]);
    assert_eq!(copied["volume"]["checksum"], file_hash(&file).as_str());
    assert_eq!(checksum_on(&b, "f"), Some(file_hash(&file)));
}

#[test]
fn a_replicated_upload_lands_on_three_nodes_and_the_cluster_view_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let c = node(dir.path(), "c", &[]);
    let ghost = format!("unix://{}", dir.path().join("ghost.sock").display());
    let a = node(
        dir.path(),
        "a",
        &[
            ("node2", &b.tcp_uri()),
            ("node3", &c.uri()),
            ("ghost", &ghost),
        ],
    );
    let file = dir.path().join("rep.bin");
    let data = sparse_file(&file, 64 * MIB, 3);
    let expected = file_hash(&file);

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
    assert_eq!(up["volume"]["checksum"], expected.as_str());
    assert_eq!(up["bytes_sent"], data);
    let replicas: Vec<&str> = up["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["volume"]["checksum"], expected.as_str());
            r["peer"].as_str().unwrap()
        })
        .collect();
    assert_eq!(replicas, ["node2", "node3"]);
    for node in [&a, &b, &c] {
        assert_eq!(checksum_on(node, "rep"), Some(expected.clone()));
        assert_eq!(node.partial_files(), Vec::<String>::new());
    }

    // More copies than peers: refused up front, nothing anywhere.
    let too_many = run(
        &a,
        &[
            "vol",
            "upload",
            file.to_str().unwrap(),
            "rep5",
            "--replicas",
            "5",
        ],
    );
    assert_eq!(too_many.status.code(), Some(6), "{}", stderr(&too_many));
    assert!(
        stderr(&too_many).contains("5 replicas need 4 peers"),
        "{}",
        stderr(&too_many)
    );
    // A replica that cannot be reached fails the upload before any peer is asked to store
    // anything.
    let unreachable = run(
        &a,
        &[
            "vol",
            "upload",
            file.to_str().unwrap(),
            "rep4",
            "--replicas",
            "4",
        ],
    );
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stderr(&unreachable)
    );
    assert!(
        stderr(&unreachable).contains("cannot reach peer ghost"),
        "{}",
        stderr(&unreachable)
    );
    for node in [&a, &b, &c] {
        assert_eq!(checksum_on(node, "rep4"), None);
        assert_eq!(node.partial_files(), Vec::<String>::new());
    }

    // Which nodes hold what. ghost never answers: the view is printed, marked incomplete,
    // and ferry exits 10 (partial), with --json too.
    let listed = ferry(&a)
        .args(["--json", "vol", "list", "--cluster"])
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(10), "{}", stderr(&listed));
    let error: Value = serde_json::from_str(stderr(&listed).trim()).expect("a JSON error");
    assert_eq!(error["exit"], 10, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("1 of 4 nodes did not answer (ghost)"),
        "{error}"
    );
    let view: Value = serde_json::from_slice(&listed.stdout).expect("the view is JSON");
    let nodes = view.as_array().unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["a", "node2", "node3", "ghost"],
        "the node says its own name"
    );
    for node in &nodes[..3] {
        assert_eq!(node["reachable"], true, "{node}");
        assert_eq!(node["volumes"][0]["name"], "rep", "{node}");
        assert_eq!(node["volumes"][0]["checksum"], expected.as_str(), "{node}");
        assert!(node["listed_at"].is_string(), "{node}");
    }
    assert_eq!(nodes[0]["local"], true);
    assert_eq!(nodes[3]["reachable"], false);
    assert_eq!(nodes[3]["listed_at"], Value::Null, "ghost never answered");
    assert!(
        nodes[3]["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach peer ghost"),
        "{}",
        nodes[3]
    );
    let human = run(&a, &["vol", "list", "--cluster"]);
    assert_eq!(human.status.code(), Some(10));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("a, node2, node3"), "{text}");
    assert!(text.contains("ghost (unix://"), "{text}");
    assert!(
        text.contains("is unreachable") && text.contains("what it holds is unknown"),
        "{text}"
    );

    // node3 goes down after answering once: its volumes stay in the view, marked as last
    // known (`node3?`), instead of vanishing.
    let only_on_c = dir.path().join("only-c.bin");
    random_file(&only_on_c, 4096, 9);
    run_json(
        &c,
        &["vol", "upload", only_on_c.to_str().unwrap(), "only-c"],
    );
    assert_eq!(
        run(&a, &["vol", "list", "--cluster"]).status.code(),
        Some(10)
    );
    let mut c = c;
    c.kill9();
    let listed = ferry(&a)
        .args(["--json", "vol", "list", "--cluster"])
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(10), "{}", stderr(&listed));
    let view: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let node3 = &view[2];
    assert_eq!(
        (node3["node"].as_str(), &node3["reachable"]),
        (Some("node3"), &json!(false))
    );
    assert!(node3["listed_at"].is_string(), "{node3}");
    let held: Vec<&str> = node3["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(held, ["only-c", "rep"], "{node3}");
    let text = String::from_utf8_lossy(&run(&a, &["vol", "list", "--cluster"]).stdout).into_owned();
    let row = text
        .lines()
        .find(|l| l.starts_with("only-c "))
        .unwrap_or_else(|| panic!("only-c vanished: {text}"));
    assert!(row.ends_with("node3?"), "{row}");
    assert!(text.contains("node3? marks what it held"), "{text}");
}

#[test]
fn ctrl_c_on_a_migration_aborts_it_the_destination_keeps_nothing_and_the_source_all() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let a = node(dir.path(), "a", &[("node2", &b.uri())]);
    let file = dir.path().join("big.bin");
    random_file(&file, 256 * MIB, 4);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "big"]);
    let expected = file_hash(&file);
    let (watch_a, watch_b) = (EventWatcher::start(&a), EventWatcher::start(&b));

    let mut migrate = ferry(&a)
        .args(["vol", "migrate", "big", "--to", "node2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = watch_a.wait_for("progress", "big", EVENTS_WITHIN);
    assert_eq!(progress["detail"]["direction"], "migrate");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(migrate.id() as i32, libc::SIGINT) }, 0);
    let status = migrate.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "ferry did not report the interruption"
    );

    // The destination discarded what it had received; the source still has it all.
    let failed = watch_b.wait_for("failed", "big", EVENTS_WITHIN);
    assert!(
        failed["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("cancel"),
        "{failed}"
    );
    let failed = watch_a.wait_for("failed", "big", EVENTS_WITHIN);
    assert_eq!(failed["detail"]["direction"], "migrate");
    assert_empty(&b, "the destination");
    assert_eq!(checksum_on(&a, "big"), Some(expected.clone()));

    // The same peer connection carries the next migration.
    run_json(&a, &["vol", "migrate", "big", "--to", "node2"]);
    assert_eq!(checksum_on(&b, "big"), Some(expected));
    assert_empty(&a, "the source after migrating");
}

#[test]
fn the_caller_gets_progress_on_its_call_and_dropping_the_call_cancels_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let a = node(dir.path(), "a", &[("node2", &b.uri())]);
    let file = dir.path().join("big.bin");
    random_file(&file, 256 * MIB, 7);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "big"]);
    let watch_b = EventWatcher::start(&b);

    actix_rt::System::new().block_on(async {
        let client = Client::connect_unix(&a.unix, ClientConfig::default())
            .await
            .unwrap();
        let mut progress = client
            .subscribe(VolumeProgram::NUMBER, PROGRESS)
            .await
            .unwrap();
        let volumes = VolumeClient::new(client);
        let request = PeerTransferRequest {
            name: "big".into(),
            to_peer: "node2".into(),
            overwrite: false,
            full: false,
        };
        let mut copy = Box::pin(volumes.copy(&request));
        let frame = tokio::select! {
            frame = progress.recv() => frame.expect("the connection closed"),
            reply = copy.as_mut() => panic!("the copy ended before any progress: {reply:?}"),
        };
        let event: Event = ferry_actors::codec::decode_message(&frame.payload).unwrap();
        let Some(event::Kind::Progress(p)) = event.kind else {
            panic!("not a progress event: {event:?}");
        };
        assert_eq!((p.name.as_str(), p.peer.as_str()), ("big", "node2"));
        assert_eq!(p.direction(), Direction::Copy);
        assert!(p.bytes > 0 && p.bytes < p.total, "{p:?}");
        // Dropping the call cancels it; the next reply proves the CANCEL went out.
        drop(copy);
        volumes.list(&ListRequest {}).await.unwrap();
        // The connection stays open until B has discarded (a closed connection would cancel
        // the copy too).
        let failed = watch_b.wait_for("failed", "big", EVENTS_WITHIN);
        assert!(
            failed["detail"]["reason"]
                .as_str()
                .unwrap()
                .contains("cancel"),
            "{failed}"
        );
    });
    assert_empty(&b, "the destination");
    assert_eq!(checksum_on(&a, "big"), Some(file_hash(&file)));
}

#[test]
fn a_destination_killed_mid_migration_leaves_the_source_intact_and_is_reconnected_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = node(dir.path(), "b", &[]);
    let a = node(dir.path(), "a", &[("node2", &b.uri())]);
    let file = dir.path().join("big.bin");
    random_file(&file, 256 * MIB, 5);
    run_json(&a, &["vol", "upload", file.to_str().unwrap(), "big"]);
    let expected = file_hash(&file);
    let watch_a = EventWatcher::start(&a);

    let migrate = ferry(&a)
        .args(["vol", "migrate", "big", "--to", "node2"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    watch_a.wait_for("progress", "big", EVENTS_WITHIN);
    b.kill9();
    let output = migrate.wait_with_output().unwrap();
    let says = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{says}");
    assert!(
        says.contains("peer node2") && says.contains("connection lost"),
        "{says}"
    );
    watch_a.wait_for("failed", "big", EVENTS_WITHIN);
    assert_eq!(checksum_on(&a, "big"), Some(expected.clone()));

    // The destination comes back on the same socket: the source reconnects on next use.
    let b = Daemon::start(&b.data_dir, Some(&dir.path().join("b/ferryd.toml")));
    assert_eq!(run_json(&b, &["vol", "list"]), json!([]));
    run_json(&a, &["vol", "migrate", "big", "--to", "node2"]);
    assert_eq!(checksum_on(&b, "big"), Some(expected));
    assert_empty(&a, "the source after migrating");
    assert_eq!(
        b.partial_files(),
        Vec::<String>::new(),
        "the new migration did not replace the partial one"
    );
}

#[test]
fn a_replica_killed_mid_upload_fails_it_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), "b", &[]);
    let mut c = node(dir.path(), "c", &[]);
    let a = node(
        dir.path(),
        "a",
        &[("node2", &b.uri()), ("node3", &c.tcp_uri())],
    );
    let file = dir.path().join("big.bin");
    random_file(&file, 256 * MIB, 6);
    let (watch_a, watch_b) = (EventWatcher::start(&a), EventWatcher::start(&b));

    let upload = ferry(&a)
        .args([
            "vol",
            "upload",
            file.to_str().unwrap(),
            "big",
            "--replicas",
            "3",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    watch_a.wait_for("progress", "big", EVENTS_WITHIN);
    c.kill9();
    let output = upload.wait_with_output().unwrap();
    let says = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{says}");
    assert!(says.contains("peer node3"), "{says}");

    watch_a.wait_for("failed", "big", EVENTS_WITHIN);
    watch_b.wait_for("failed", "big", EVENTS_WITHIN);
    assert_empty(&a, "the receiving node");
    assert_empty(&b, "the surviving replica");
    // The killed replica died with its copy on disk, marked as not resumable (a replicated
    // upload cannot be resumed): recovery removes it when the node restarts.
    let left = c.partial_files();
    assert!(
        left.iter().any(|file| file == "big.part"),
        "the killed replica had received part of big: {left:?}"
    );
    let c = Daemon::start(&c.data_dir, Some(&dir.path().join("c/ferryd.toml")));
    assert_empty(&c, "the killed replica after its restart");
}

#[test]
fn bad_peer_configurations_stop_ferryd_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let peer = |name: &str, address: &str, more: &str| {
        format!("[[peers]]\nname = {name:?}\naddress = {address:?}\n{more}\n")
    };
    let missing = dir.path().join("missing-password");
    let missing = format!(
        "user = \"u\"\npassword_file = {:?}",
        missing.display().to_string()
    );
    for (peers, says) in [
        (
            peer("node2", "tcp://127.0.0.1:7310", "") + &peer("node2", "unix:///x.sock", ""),
            "configured twice",
        ),
        (peer("bad name", "tcp://127.0.0.1:7310", ""), "not valid"),
        (peer("local", "tcp://127.0.0.1:7310", ""), "not valid"),
        (
            "name = \"node2\"\n".to_owned() + &peer("node2", "tcp://127.0.0.1:7310", ""),
            "has this node's own name",
        ),
        (peer("node2", "tcp://127.0.0.1", ""), "needs a port"),
        (
            peer("node2", "tcp://127.0.0.1:7310", "user = \"u\""),
            "`user` and `password_file` go together",
        ),
        (
            peer("node2", "tcp://127.0.0.1:7310", &missing),
            "reading password_file",
        ),
        (peer("node2", "tls://localhost:7310", ""), "needs `ca`"),
    ] {
        let config = dir.path().join("ferryd.toml");
        std::fs::write(&config, &peers).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
            .args(["--data-dir".as_ref(), dir.path().join("data").as_os_str()])
            .args(["--tcp", "127.0.0.1:0", "--metrics", ""])
            .args(["--config".as_ref(), config.as_os_str()])
            .output()
            .unwrap();
        let said = stderr(&output);
        assert!(!output.status.success(), "{peers} started");
        assert!(said.contains("[[peers]]"), "{said}");
        assert!(said.contains(says), "{peers}: {said}");
    }
}

#[test]
fn a_copy_onto_a_peer_that_holds_an_older_version_sends_only_the_changed_blocks() {
    const BLOCK: u64 = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut b = node(dir.path(), "b", &[]);
    // On its unix socket, which stays the same when the node restarts.
    let a = node(dir.path(), "a", &[("node2", &b.uri())]);
    let image = dir.path().join("disk.img");
    random_file(&image, 64 * MIB, 9);
    run_json(&a, &["vol", "upload", image.to_str().unwrap(), "disk"]);
    let first = run_json(&a, &["vol", "copy", "disk", "--to", "node2"]);
    assert_eq!(first["kept_bytes"], 0, "{first}");

    // A new version here: 5 scattered blocks changed (also by a delta).
    for block in [0, 17, 100, 201, 255] {
        write_at(&image, block * BLOCK + 7, b"new version");
    }
    let up = run_json(
        &a,
        &[
            "vol",
            "upload",
            image.to_str().unwrap(),
            "disk",
            "--overwrite",
        ],
    );
    assert_eq!(up["bytes_sent"], 5 * BLOCK, "{up}");
    let copied = run_json(&a, &["vol", "copy", "disk", "--to", "node2", "--overwrite"]);
    assert_eq!(copied["bytes_sent"], 5 * BLOCK, "{copied}");
    assert_eq!(copied["kept_bytes"], 64 * MIB - 5 * BLOCK, "{copied}");
    assert_eq!(copied["hash_bytes"], 256 * 32, "{copied}");
    assert_eq!(checksum_on(&b, "disk"), Some(file_hash(&image)));
    let back = dir.path().join("back.img");
    run_json(&b, &["vol", "download", "disk", back.to_str().unwrap()]);
    assert_eq!(file_hash(&back), file_hash(&image));

    // --full moves it all.
    let full = run_json(
        &a,
        &[
            "vol",
            "copy",
            "disk",
            "--to",
            "node2",
            "--overwrite",
            "--full",
        ],
    );
    assert_eq!(full["bytes_sent"], 64 * MIB, "{full}");

    // A delta migration killed on the destination leaves it the old version or the new,
    // and the source keeps its copy; done again, it completes.
    let old = file_hash(&image);
    write_at(&image, 3 * BLOCK, b"third version");
    run_json(
        &a,
        &[
            "vol",
            "upload",
            image.to_str().unwrap(),
            "disk",
            "--overwrite",
        ],
    );
    let watch = EventWatcher::start(&a);
    let migrate = ferry(&a)
        .args(["vol", "migrate", "disk", "--to", "node2", "--overwrite"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    watch.wait_for("progress", "disk", EVENTS_WITHIN);
    b.kill9();
    let _ = migrate.wait_with_output().unwrap();
    let b = Daemon::start(&b.data_dir, Some(&dir.path().join("b/ferryd.toml")));
    let on_b = checksum_on(&b, "disk");
    assert!(
        on_b == Some(old.clone()) || on_b == Some(file_hash(&image)),
        "the destination holds a mixed version: {on_b:?}"
    );
    let moved = run_json(
        &a,
        &["vol", "migrate", "disk", "--to", "node2", "--overwrite"],
    );
    assert_eq!(checksum_on(&b, "disk"), Some(file_hash(&image)));
    assert_eq!(checksum_on(&a, "disk"), None);
    assert!(moved["bytes_sent"].as_u64().unwrap() <= BLOCK, "{moved}");
}
