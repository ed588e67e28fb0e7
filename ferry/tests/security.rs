//! ferryd with TLS and users, driven by the real `ferry`: the right CA and password get in,
//! roles are enforced, and everything else is refused with a clear error and exit code.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Daemon, user_entry as user};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and a node certificate for "localhost", written as PEM files into `dir`.
fn pki(dir: &Path, name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let write = |file: &str, text: String| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

struct Secured {
    daemon: Daemon,
    tls: String,
    ca: String,
    _dir: tempfile::TempDir,
}

fn secured() -> Secured {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path(), "node");
    let config = dir.path().join("ferryd.toml");
    let text = format!(
        "[security]\ntls = \"127.0.0.1:0\"\ntls_cert = {cert:?}\ntls_key = {key:?}\n\n{}\n{}",
        user("alice", "wonderland", "read-write"),
        user("bob", "builder", "read-only")
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let tls = daemon.ready_field("tls");
    Secured {
        daemon,
        tls,
        ca,
        _dir: dir,
    }
}

/// Runs `ferry` against `uri` as `user` (or nobody) with `password`.
fn ferry(uri: &str, ca: &str, user: Option<(&str, &str)>, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(["-c", uri, "--ca", ca])
        .args(args)
        .env_remove("FERRY_USER")
        .env_remove("FERRY_PASSWORD");
    if let Some((name, password)) = user {
        command
            .args(["--user", name])
            .env("FERRY_PASSWORD", password);
    }
    let output = command.output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn tls_with_the_right_ca_and_password_gets_in_and_roles_are_enforced() {
    let node = secured();
    let uri = format!("tls://localhost:{}", node.tls.rsplit_once(':').unwrap().1);
    let file = node._dir.path().join("small.bin");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let file = file.to_str().unwrap();

    let (code, stderr) = ferry(
        &uri,
        &node.ca,
        Some(("alice", "wonderland")),
        &["vol", "upload", file, "small"],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = ferry(&uri, &node.ca, Some(("bob", "builder")), &["vol", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = ferry(
        &uri,
        &node.ca,
        Some(("bob", "builder")),
        &["vol", "delete", "small"],
    );
    assert_eq!(code, Some(7), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    let (code, stderr) = ferry(
        &uri,
        &node.ca,
        Some(("bob", "builder")),
        &["admin", "clients"],
    );
    assert_eq!(code, Some(7), "{stderr}");
}

#[test]
fn missing_or_wrong_credentials_and_a_wrong_ca_are_refused() {
    let node = secured();
    let port = node.tls.rsplit_once(':').unwrap().1;
    let uri = format!("tls://localhost:{port}");

    let (code, stderr) = ferry(&uri, &node.ca, None, &["vol", "list"]);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(stderr.contains("unauthenticated"), "{stderr}");

    let (code, stderr) = ferry(&uri, &node.ca, Some(("alice", "nope")), &["vol", "list"]);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(
        stderr.contains("wrong user name or password") && !stderr.contains("nope"),
        "{stderr}"
    );

    let (other_ca, _, _) = pki(node._dir.path(), "stranger");
    let (code, stderr) = ferry(
        &uri,
        &other_ca,
        Some(("alice", "wonderland")),
        &["vol", "list"],
    );
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("TLS handshake"), "{stderr}");

    let (code, stderr) = ferry(
        &format!("tls://127.0.0.1:{port}"),
        &node.ca,
        Some(("alice", "wonderland")),
        &["vol", "list"],
    );
    assert_eq!(
        code,
        Some(3),
        "a certificate for localhost was accepted for 127.0.0.1: {stderr}"
    );

    // The local admin on the unix socket needs no password, and the node still serves.
    let output = common::run(&node.daemon, &["vol", "list"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn plain_tcp_is_refused_on_a_network_address_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["--data-dir".as_ref(), dir.path().join("data").as_os_str()])
        .args(["--tcp", "0.0.0.0:0", "--metrics", ""])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("allow_plain_tcp"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// RFC 7677's example password "pencil", salt and iterations, as an entry of the old format:
/// the salted password itself (Hi("pencil", salt, 4096)), which logs in if the config leaks.
const OLD_ENTRY: &str = "[[security.users]]\nname = \"old\"\nrole = \"read-only\"\n\
    salt = \"5b6d99689d12358eeca04b141236fa81\"\niterations = 4096\n\
    salted_password = \"c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d\"\n";

/// `ferry hash-password` stores RFC 5802's StoredKey and ServerKey, never the salted password
/// (TOML and `--json` alike); an entry of the old format still logs in, and the node warns about
/// it (`--check-config` says so too). `--password-file` wins over FERRY_PASSWORD.
#[test]
fn users_are_stored_as_scram_keys_and_old_entries_log_in_with_a_warning() {
    let entry = user("alice", "wonderland", "read-write");
    assert!(
        entry.contains("stored_key = ") && entry.contains("server_key = "),
        "{entry}"
    );
    assert!(!entry.contains("salted_password"), "{entry}");
    let output = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--json", "hash-password", "carol", "--role", "admin"])
        .env("FERRY_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        (json["name"].as_str(), json["role"].as_str()),
        (Some("carol"), Some("admin"))
    );
    for key in ["stored_key", "server_key"] {
        let hex = json[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {json}"));
        assert_eq!(hex.len(), 64, "{json}");
    }
    assert!(json.get("salted_password").is_none(), "{json}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferryd.toml");
    std::fs::write(&config, format!("{entry}\n{OLD_ENTRY}")).unwrap();
    let checked = Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--data-dir".as_ref(), dir.path().join("data").as_os_str()])
        .arg("--check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: user \"old\" is stored as salted_password")
            && stderr.contains("ferry hash-password old --role read-only"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("alice"),
        "alice's entry is current: {stderr}"
    );

    let daemon = Daemon::start(&dir.path().join("data"), Some(&config));
    let uri = daemon.tcp_uri();
    let password_file = dir.path().join("alice.password");
    std::fs::write(&password_file, "wonderland\n").unwrap();
    let login = |user: &str, password: &str, file: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
        command
            .args(["-c", &uri, "--user", user, "vol", "list"])
            .env("FERRY_PASSWORD", password);
        if let Some(file) = file {
            command.arg("--password-file").arg(file);
        }
        let output = command.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert_eq!(
        login("old", "pencil", None).0,
        Some(0),
        "the old entry logs in"
    );
    assert_eq!(login("old", "pencils", None).0, Some(7));
    assert_eq!(login("alice", "wonderland", None).0, Some(0));
    // The file's password is used, not the (wrong) one in the environment.
    let (code, stderr) = login("alice", "not-this", Some(&password_file));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = login("alice", "wonderland", Some(&dir.path().join("missing")));
    assert_eq!(code, Some(4), "a missing password file: {stderr}");
}
