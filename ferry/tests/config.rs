//! ferryd's configuration: the example file in deploy/ stays valid and complete, and the real
//! binary applies its sources in order (flags > environment > file > defaults).

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_node::config::{LogFormat, NodeConfig};

const EXAMPLE: &str = include_str!("../../deploy/ferryd.example.toml");

/// Parses TOML as a table, for comparing key sets and values.
fn table(text: &str) -> toml::Table {
    toml::from_str(text).unwrap_or_else(|error| panic!("not a TOML table ({error}):\n{text}"))
}

fn as_table(config: &NodeConfig) -> toml::Table {
    table(&toml::to_string(config).expect("a config serializes"))
}

/// Every key of `expected` (recursively) that `actual` lacks, as dotted paths.
fn missing_keys(expected: &toml::Table, actual: &toml::Table, prefix: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (key, value) in expected {
        let path = format!("{prefix}{key}");
        match (value, actual.get(key)) {
            (_, None) => missing.push(path),
            (toml::Value::Table(inner), Some(toml::Value::Table(actual))) => {
                missing.extend(missing_keys(inner, actual, &format!("{path}.")));
            }
            _ => {}
        }
    }
    missing
}

#[test]
fn example_config_parses() {
    let config: NodeConfig = toml::from_str(EXAMPLE)
        .unwrap_or_else(|error| panic!("deploy/ferryd.example.toml does not parse: {error}"));
    assert_eq!(config.data_dir, Path::new("/var/lib/ferry"));
    assert_eq!(config.tcp, "127.0.0.1:7300");
    assert_eq!(config.metrics, "127.0.0.1:7301");
    assert_eq!(config.log_format, LogFormat::Human);
    assert!(config.test_program);
    assert_eq!(config.limits.max_chunk, 256 * 1024);
    assert_eq!(config.limits.keepalive_interval_secs, 5);
    assert_eq!(config.store.resume_ttl_secs, 24 * 3600);
    assert_eq!(config.events.progress_every_bytes, 64 * 1024 * 1024);
    // Commented out: the socket follows the data directory.
    assert_eq!(config.unix_socket, None);
    assert_eq!(
        config.unix_socket_path(),
        Some(PathBuf::from("/var/lib/ferry/ferryd.sock"))
    );
}

/// The example sets every key (so a new key cannot be forgotten) to its default (so its
/// comments, which promise defaults, stay true), except `data_dir`.
#[test]
fn example_config_sets_every_key_to_its_default() {
    let written = table(EXAMPLE);
    let defaults = as_table(&NodeConfig::default());
    let missing = missing_keys(&defaults, &written, "");
    assert!(
        missing.is_empty(),
        "deploy/ferryd.example.toml lacks {missing:?}: add them, with a comment"
    );
    assert!(
        EXAMPLE.contains("\n# unix_socket = "),
        "the example shows unix_socket (commented out: its default depends on data_dir)"
    );

    let mut example = as_table(&toml::from_str(EXAMPLE).expect("the example parses"));
    let mut defaults = defaults;
    example.remove("data_dir");
    defaults.remove("data_dir");
    assert_eq!(
        example, defaults,
        "deploy/ferryd.example.toml should show the built-in defaults (except data_dir)"
    );
}

/// Every setting in the example has a comment right above it.
#[test]
fn example_config_comments_every_key() {
    let mut previous = "";
    for line in EXAMPLE.lines() {
        let line = line.trim();
        let is_setting = !line.is_empty() && !line.starts_with('#') && !line.starts_with('[');
        if is_setting {
            assert!(
                previous.starts_with('#'),
                "`{line}` in deploy/ferryd.example.toml has no comment above it"
            );
        }
        previous = line;
    }
}

/// Runs `ferryd --print-config` with exactly `env` as its environment.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Result<NodeConfig, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(args)
        .arg("--print-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("running ferryd");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "ferryd failed ({}): {stderr}{stdout}",
            output.status
        ));
    }
    toml::from_str(&stdout)
        .map_err(|error| format!("--print-config printed invalid TOML ({error}):\n{stdout}"))
}

fn printed(args: &[&str], env: &[(&str, &str)]) -> NodeConfig {
    print_config(args, env).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn print_config_without_sources_shows_the_defaults() {
    let config = printed(&[], &[("XDG_DATA_HOME", "/xdg")]);
    assert_eq!(config.data_dir, Path::new("/xdg/ferry"));
    let mut expected = as_table(&NodeConfig::default());
    expected.insert("data_dir".into(), "/xdg/ferry".into());
    assert_eq!(as_table(&config), expected);

    // Without XDG_DATA_HOME the data lives under HOME.
    let config = printed(&[], &[("HOME", "/home/someone")]);
    assert_eq!(
        config.data_dir,
        Path::new("/home/someone/.local/share/ferry")
    );
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("ferryd.toml");
    std::fs::write(
        &file,
        r#"
data_dir = "/file/data"
unix_socket = "/file/ferryd.sock"
tcp = "127.0.0.1:1001"
metrics = "127.0.0.1:1002"
log_format = "json"

[limits]
max_chunk = 65536
shutdown_drain_secs = 3

[store]
resume_ttl_secs = 60
"#,
    )
    .expect("writing a config file");
    let file = file.to_str().expect("a UTF-8 temporary path");

    // The file alone: its keys win over the defaults, the rest stays default.
    let config = printed(&["--config", file], &[]);
    assert_eq!(config.data_dir, Path::new("/file/data"));
    assert_eq!(config.unix_socket, Some(PathBuf::from("/file/ferryd.sock")));
    assert_eq!(config.tcp, "127.0.0.1:1001");
    assert_eq!(config.metrics, "127.0.0.1:1002");
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.test_program);
    assert_eq!(config.limits.max_chunk, 65536);
    assert_eq!(config.limits.shutdown_drain_secs, 3);
    assert_eq!(
        config.limits.max_frame,
        NodeConfig::default().limits.max_frame
    );
    assert_eq!(config.store.resume_ttl_secs, 60);
    assert_eq!(config.store.max_name_len, 128);

    // The environment wins over the file (the file named by FERRYD_CONFIG this time).
    let env = [
        ("FERRYD_CONFIG", file),
        ("FERRYD_DATA_DIR", "/env/data"),
        ("FERRYD_TCP", "127.0.0.1:2001"),
        ("FERRYD_METRICS", "127.0.0.1:2002"),
        ("FERRYD_LOG_FORMAT", "human"),
        ("FERRYD_NO_TEST_PROGRAM", "true"),
    ];
    let config = printed(&[], &env);
    assert_eq!(config.data_dir, Path::new("/env/data"));
    assert_eq!(config.unix_socket, Some(PathBuf::from("/file/ferryd.sock")));
    assert_eq!(config.tcp, "127.0.0.1:2001");
    assert_eq!(config.metrics, "127.0.0.1:2002");
    assert_eq!(config.log_format, LogFormat::Human);
    assert!(!config.test_program);
    assert_eq!(config.limits.max_chunk, 65536);

    // Flags win over the environment; keys neither sets keep the file's or default values.
    let config = printed(
        &[
            "--tcp",
            "127.0.0.1:3001",
            "--log-format",
            "json",
            "--unix-socket",
            "/flag/ferryd.sock",
        ],
        &env,
    );
    assert_eq!(config.tcp, "127.0.0.1:3001");
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.unix_socket, Some(PathBuf::from("/flag/ferryd.sock")));
    assert_eq!(config.metrics, "127.0.0.1:2002", "from the environment");
    assert_eq!(
        config.data_dir,
        Path::new("/env/data"),
        "from the environment"
    );
    assert_eq!(config.store.resume_ttl_secs, 60, "from the file");
    assert_eq!(config.events.subscriber_queue, 256, "the default");

    // --config wins over FERRYD_CONFIG.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "tcp = \"127.0.0.1:4001\"\n").expect("writing a config file");
    let config = printed(
        &["--config", other.to_str().expect("a UTF-8 temporary path")],
        &[("FERRYD_CONFIG", file)],
    );
    assert_eq!(config.tcp, "127.0.0.1:4001");
    assert_eq!(config.metrics, "127.0.0.1:7301");
}

#[test]
fn empty_values_turn_listeners_off_from_flags_and_environment() {
    let config = printed(
        &["--tcp", "", "--metrics", "", "--unix-socket", ""],
        &[("XDG_DATA_HOME", "/xdg")],
    );
    assert_eq!((config.tcp.as_str(), config.metrics.as_str()), ("", ""));
    assert_eq!(config.unix_socket_path(), None);

    let config = printed(
        &[],
        &[
            ("XDG_DATA_HOME", "/xdg"),
            ("FERRYD_TCP", ""),
            ("FERRYD_METRICS", ""),
            ("FERRYD_UNIX_SOCKET", ""),
        ],
    );
    assert_eq!((config.tcp.as_str(), config.metrics.as_str()), ("", ""));
    assert_eq!(config.unix_socket_path(), None);
}

#[test]
fn bad_config_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_chunks = 1\n").expect("writing a config file");
    let error = print_config(&["--config", file.to_str().unwrap()], &[])
        .expect_err("an unknown key is refused");
    assert!(
        error.contains("max_chunks") && error.contains("bad.toml"),
        "{error}"
    );

    let missing = dir.path().join("missing.toml");
    let error = print_config(&["--config", missing.to_str().unwrap()], &[])
        .expect_err("a missing file is refused");
    assert!(error.contains("missing.toml"), "{error}");
}

/// A node that refuses to start says why on one line, each cause once, without a backtrace
/// (RUST_BACKTRACE is for bugs) and without colour codes when stderr is not a terminal.
#[test]
fn a_refused_start_is_one_plain_line_per_cause() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["--data-dir".as_ref(), dir.path().as_os_str()])
        .args(["--tcp", "192.0.2.1:7300", "--metrics", ""])
        .env("RUST_BACKTRACE", "1")
        .env("FERRYD_LOG", "info")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with("ferryd: "))
        .unwrap_or_else(|| panic!("no ferryd: line in {stderr}"));
    assert_eq!(line.matches("allow_plain_tcp").count(), 1, "{line}");
}

/// ferryd with exactly `args` and a clean environment (data under `dir`), run to its end.
fn ferryd_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(args)
        .env_clear()
        .env("XDG_DATA_HOME", dir)
        .current_dir("/")
        .output()
        .expect("running ferryd")
}

/// Writes `text` as `name` in `dir` and returns its path as a string.
fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

/// A self-signed certificate for localhost and its key, as PEM.
fn identity() -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("certificate parameters")
        .self_signed(&key)
        .expect("a self-signed certificate");
    (cert.pem(), key.serialize_pem())
}

/// `--check-config` accepts a config ferryd starts with and says what it would listen on.
#[test]
fn check_config_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "ok.toml",
        "tcp = \"127.0.0.1:0\"\nmetrics = \"localhost:0\"\n[[peers]]\nname = \"node2\"\naddress = \"tcp://node2.invalid:7300\"\n",
    );
    let output = ferryd_in(dir.path(), &["--config", &file, "--check-config"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("configuration ok: name=")
            && stdout.contains(" tcp=127.0.0.1:0 tls=off"),
        "{stdout}"
    );
    assert!(stdout.contains("peers=1"), "{stdout}");
    // Nothing was created: the check does not prepare the data directory.
    assert!(!dir.path().join("ferry").exists());
}

/// Every config a start refuses, `--check-config` refuses with the same message, both with
/// exit 78 (EX_CONFIG): they share one code path. The start is a real `ferryd` that gets
/// that far; each case must fail before it listens.
#[test]
fn check_config_refuses_what_a_start_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = identity();
    let cert = write_file(d, "cert.pem", &cert);
    let key = write_file(d, "key.pem", &key);
    let not_pem = write_file(d, "not.pem", "not a certificate\n");
    let a_file = write_file(d, "a-file", "");
    let long_socket = format!("/tmp/{}/ferryd.sock", "s".repeat(120));
    let cases: Vec<(&str, String, &str)> = vec![
        ("a TCP address without a port", "tcp = \"127.0.0.1\"\n".into(), "tcp = \"127.0.0.1\""),
        ("a TCP address that is no address", "tcp = \"no such host:x\"\n".into(), "tcp = "),
        ("a metrics address without a port", "metrics = \"localhost\"\n".into(), "metrics = "),
        (
            "plain TCP on the network",
            "tcp = \"0.0.0.0:7300\"\n".into(),
            "allow_plain_tcp",
        ),
        (
            "TLS without a certificate",
            "[security]\ntls = \"127.0.0.1:0\"\n".into(),
            "tls_cert or tls_key is missing",
        ),
        (
            "TLS with a certificate that cannot be read",
            format!("[security]\ntls = \"127.0.0.1:0\"\ntls_cert = \"{d}/missing.pem\"\ntls_key = \"{key}\"\n", d = d.display()),
            "missing.pem",
        ),
        (
            "TLS with a file that is no certificate",
            format!("[security]\ntls = \"127.0.0.1:0\"\ntls_cert = \"{not_pem}\"\ntls_key = \"{key}\"\n"),
            "TLS identity",
        ),
        (
            "TLS on a bad address",
            format!("[security]\ntls = \"localhost\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
            "[security] tls = ",
        ),
        (
            "two listeners on one address",
            "tcp = \"127.0.0.1:7399\"\nmetrics = \"127.0.0.1:7399\"\n".into(),
            "both listen on 127.0.0.1:7399",
        ),
        (
            "a peer address that does not parse",
            "[[peers]]\nname = \"node2\"\naddress = \"ftp://node2:7300\"\n".into(),
            "peer \"node2\"",
        ),
        (
            "a peer with a bad name",
            "[[peers]]\nname = \"no spaces\"\naddress = \"tcp://node2:7300\"\n".into(),
            "is not valid",
        ),
        (
            "a peer's missing password file",
            format!("[[peers]]\nname = \"node2\"\naddress = \"tcp://node2:7300\"\nuser = \"peer\"\npassword_file = \"{d}/nope\"\n", d = d.display()),
            "password_file",
        ),
        (
            "a peer's CA that is not a certificate",
            format!("[[peers]]\nname = \"node2\"\naddress = \"tls://node2:7443\"\nca = \"{not_pem}\"\n"),
            "ca: ",
        ),
        (
            "a user whose salt is not hex",
            "[[security.users]]\nname = \"alice\"\nrole = \"admin\"\nsalt = \"zz\"\niterations = 4096\nstored_key = \"00\"\nserver_key = \"00\"\n".into(),
            "not valid hex",
        ),
        (
            "a data directory that is a file",
            format!("data_dir = \"{a_file}\"\n"),
            "is not a directory",
        ),
        (
            "a unix socket path too long for the kernel",
            format!("unix_socket = \"{long_socket}\"\n"),
            "at most 107",
        ),
        (
            "a unix socket in a directory that does not exist",
            format!("unix_socket = \"{d}/no/such/dir/ferryd.sock\"\n", d = d.display()),
            "does not exist",
        ),
    ];
    for (what, text, expected) in cases {
        // The listeners a case does not set are off: only its own mistake can fail it.
        let off: String = ["tcp", "metrics", "unix_socket"]
            .iter()
            .filter(|key| !text.lines().any(|l| l.starts_with(&format!("{key} ="))))
            .map(|key| format!("{key} = \"\"\n"))
            .collect();
        let text = format!("{off}{text}");
        let file = write_file(d, "case.toml", &text);
        let mut messages = Vec::new();
        for args in [
            vec!["--config", &file, "--check-config"],
            vec!["--config", &file],
        ] {
            let output = ferryd_in(d, &args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert_eq!(
                output.status.code(),
                Some(78),
                "{what}: ferryd {args:?} should refuse with 78:\n{text}\n{stderr}"
            );
            assert!(stderr.contains(expected), "{what}: {args:?}: {stderr}");
            assert!(
                output.stdout.is_empty(),
                "{what}: {args:?} printed to stdout"
            );
            messages.push(stderr);
        }
        assert_eq!(
            messages[0], messages[1],
            "{what}: the check and the start differ"
        );
    }
}

/// A config file's relative paths (TLS files, data directory, socket, a peer's CA and password
/// file) are relative to the file, wherever ferryd starts; flags stay relative to the working
/// directory.
#[test]
fn relative_paths_in_a_config_file_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = identity();
    write_file(d, "node.pem", &cert);
    write_file(d, "node.key", &key);
    write_file(d, "ca.pem", &cert);
    write_file(d, "peer.password", "secret\n");
    let file = write_file(
        d,
        "ferryd.toml",
        "data_dir = \"data\"\ntcp = \"\"\nmetrics = \"\"\n\
         [security]\ntls = \"127.0.0.1:0\"\ntls_cert = \"node.pem\"\ntls_key = \"node.key\"\n\
         [[peers]]\nname = \"node2\"\naddress = \"tls://localhost:7443\"\nca = \"ca.pem\"\n\
         user = \"peer\"\npassword_file = \"peer.password\"\n",
    );
    // Started from / (ferryd_in's working directory): the files are found next to the config.
    let output = ferryd_in(d, &["--config", &file, "--check-config"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = printed(&["--config", &file], &[]);
    assert_eq!(config.data_dir, d.join("data"));
    assert_eq!(config.security.tls_cert, d.join("node.pem"));
    assert_eq!(config.security.tls_key, d.join("node.key"));
    assert_eq!(config.peers[0].ca, Some(d.join("ca.pem")));
    assert_eq!(config.peers[0].password_file, Some(d.join("peer.password")));
    assert_eq!(config.unix_socket_path(), Some(d.join("data/ferryd.sock")));
    // A flag's relative path is the command line's: relative to the working directory.
    let config = printed(&["--config", &file, "--data-dir", "here"], &[]);
    assert_eq!(config.data_dir, Path::new("here"));
}
