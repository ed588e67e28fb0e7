//! A real DNS server for the discovery tests: Debian's dnsmasq on a loopback port, serving SRV
//! and A records under `ferry.test`.
//!
//! dnsmasq re-reads hosts files on SIGHUP (and `--hostsdir` on change), but SRV records
//! (`srv-host`) come only from its configuration, which it reads once at start. So changing
//! the records means writing a new configuration and restarting dnsmasq on the same port, as
//! an operator changing a zone would: a client between the two sees timeouts, then the new
//! records.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The domain the records live in.
pub const DOMAIN: &str = "ferry.test";
/// The SRV name the records answer.
pub const SRV: &str = "_ferry._tcp.ferry.test";

const STARTED_WITHIN: Duration = Duration::from_secs(10);

/// Where dnsmasq is, or `None` (the caller skips, loudly, outside CI).
pub fn dnsmasq_binary() -> Option<PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Says why a test does not run; under CI (which installs dnsmasq: .ci/run) a missing dnsmasq
/// fails the test instead.
pub fn skip_without_dnsmasq(test: &str) -> bool {
    if dnsmasq_binary().is_some() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "dnsmasq is missing under CI: .ci/run installs it (apt-get install dnsmasq-base)"
    );
    eprintln!(
        "\n########################################################################\n\
         ##  SKIPPING {test}: dnsmasq is not installed.\n\
         ##  apt-get install dnsmasq-base (the binary alone), then run this test again.\n\
         ########################################################################\n"
    );
    true
}

/// One peer's records: `_ferry._tcp.ferry.test SRV 0 0 <port> <host>.ferry.test` and
/// `<host>.ferry.test A 127.0.0.1`.
#[derive(Debug, Clone)]
pub struct Record {
    pub host: String,
    pub port: u16,
}

/// A running dnsmasq, stopped when dropped.
pub struct Dnsmasq {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on a free loopback port with `records`.
    pub fn start(dir: &Path, records: &[Record]) -> Self {
        // A port free for both UDP and TCP now; if something takes it before dnsmasq binds,
        // dnsmasq exits and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                config: dir.join("dnsmasq.conf"),
            };
            if server.launch(records) {
                return server;
            }
        }
        panic!("dnsmasq did not start on any of 5 free ports");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, for `[discovery] resolver`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Serves `records` from now on (a restart on the same port).
    pub fn set_records(&mut self, records: &[Record]) {
        self.stop();
        assert!(
            self.launch(records),
            "dnsmasq did not start again on port {}",
            self.port
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    /// Writes the configuration and starts dnsmasq; false if it exited (port taken).
    fn launch(&mut self, records: &[Record]) -> bool {
        let mut text = format!(
            "port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\n\
             no-poll\nno-negcache\nlocal=/{DOMAIN}/\nlocal-ttl=0\nlog-facility=-\n",
            port = self.port
        );
        for record in records {
            let host = format!("{}.{DOMAIN}", record.host);
            text += &format!(
                "srv-host={SRV},{host},{port},0,0\nhost-record={host},127.0.0.1\n",
                port = record.port
            );
        }
        std::fs::write(&self.config, text).unwrap();
        let mut child = Command::new(dnsmasq_binary().expect("dnsmasq is installed"))
            .arg("--keep-in-foreground")
            .arg(format!("--conf-file={}", self.config.display()))
            // No pid file (dnsmasq would write /run/dnsmasq/dnsmasq.pid).
            .arg("--pid-file")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dnsmasq");
        // "started, version …" is logged once the sockets are bound; a bind failure exits.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut seen = Vec::new();
        let started = loop {
            match rx.recv_timeout(STARTED_WITHIN) {
                Ok(line) if line.contains("started, version") => break true,
                Ok(line) => seen.push(line),
                Err(_) => break false,
            }
        };
        if !started {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("dnsmasq did not start on port {}: {seen:?}", self.port);
            return false;
        }
        self.child = Some(child);
        true
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that is free for both UDP and TCP at this moment.
fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP in 100 tries");
}
