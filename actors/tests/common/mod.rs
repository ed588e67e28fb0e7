//! A real server on real sockets (TCP on loopback and a unix socket in a temporary
//! directory), and clients of it, for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use ferry_actors::test_program::{TestClient, TestProgram, TestService};
use ferry_actors::{Client, ClientConfig, Server, ServerConfig, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestServer {
    pub handle: ServerHandle,
    pub service: TestService,
    pub tcp: String,
    pub unix: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy)]
pub enum Via {
    Tcp,
    Unix,
}

pub const BOTH: [Via; 2] = [Via::Tcp, Via::Unix];

pub async fn start(config: ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("ferry.sock");
    let service = TestService::default();
    let handle = Server::new(config)
        .program(TestProgram::serve(service.clone()))
        .listen_tcp("127.0.0.1:0")
        .listen_unix(&unix)
        .start()
        .await
        .unwrap();
    TestServer {
        tcp: handle.tcp_addrs()[0].to_string(),
        handle,
        service,
        unix,
        _dir: dir,
    }
}

pub fn quick_server_config() -> ServerConfig {
    ServerConfig {
        arbiters: 2,
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub async fn client(&self, via: Via, config: ClientConfig) -> Client {
        match via {
            Via::Tcp => Client::connect_tcp(&self.tcp, config).await.unwrap(),
            Via::Unix => Client::connect_unix(&self.unix, config).await.unwrap(),
        }
    }

    pub async fn test_client(&self, via: Via) -> TestClient {
        TestClient::new(self.client(via, ClientConfig::default()).await)
    }
}

/// Builds a frame by hand from docs/PROTOCOL.md section 2, without the library's encoder.
pub fn raw_frame(
    program: u32,
    version: u32,
    procedure: u32,
    kind: u32,
    serial: u32,
    status: u32,
    payload: &[u8],
) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u32(28 + payload.len() as u32);
    for word in [program, version, procedure, kind, serial, status] {
        out.put_u32(word);
    }
    out.put_slice(payload);
    out.freeze()
}

/// A frame as read by hand: header words and payload.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub program: u32,
    pub version: u32,
    pub procedure: u32,
    pub kind: u32,
    pub serial: u32,
    pub status: u32,
    pub payload: Vec<u8>,
}

/// Reads one frame by hand; `None` at a clean end of stream.
pub async fn read_raw_frame(stream: &mut TcpStream) -> Option<RawFrame> {
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).await.is_err() {
        return None;
    }
    let len = u32::from_be_bytes(len) as usize;
    let mut rest = vec![0u8; len - 4];
    stream.read_exact(&mut rest).await.unwrap();
    let word = |i: usize| u32::from_be_bytes(rest[i * 4..i * 4 + 4].try_into().unwrap());
    Some(RawFrame {
        program: word(0),
        version: word(1),
        procedure: word(2),
        kind: word(3),
        serial: word(4),
        status: word(5),
        payload: rest[24..].to_vec(),
    })
}

/// Reads frames until one that is not a keepalive PING arrives.
pub async fn read_non_ping(stream: &mut TcpStream) -> Option<RawFrame> {
    loop {
        let frame = read_raw_frame(stream).await?;
        if frame.program != 0x6b65_6570 {
            return Some(frame);
        }
    }
}

pub async fn raw_connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(&server.tcp).await.unwrap()
}

pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
}

/// Upper bound for waiting on something that should happen promptly; a hang fails the test
/// instead of stalling the suite.
pub const PROMPTLY: Duration = Duration::from_secs(10);

/// Waits (boundedly) until a gauge reads `value`: the event a test is waiting for, not a sleep.
/// Waits (bounded by [`PROMPTLY`]) until a plain counter, which cannot be watched like a gauge,
/// reaches `value`: it is read every millisecond.
pub async fn count_reaches(counter: &ferry_actors::metrics::Counter, value: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while counter.get() < value {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the counter stayed at {} instead of reaching {value}",
            counter.get()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub async fn reach(gauge: &ferry_actors::metrics::Gauge, value: u64) {
    tokio::time::timeout(PROMPTLY, gauge.wait_for(|n| *n == value))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the gauge stayed at {} instead of reaching {value}",
                gauge.get()
            )
        });
}
