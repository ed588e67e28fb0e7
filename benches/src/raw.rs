//! The raw peer: the same bytes over a plain tokio socket pair (TCP with TCP_NODELAY, a unix
//! socket, or TLS over TCP through tokio-openssl with Ferry's own handshake: the "OpenSSL pipe"), in the same chunk
//! sizes, with the server doing the same application work as the Ferry test service (BLAKE3 of
//! everything it receives or sends). No framing beyond a one-off request header: this is the
//! practical limit a transport over the same socket can reach.
//!
//! Requests start with one operation byte:
//! - `U` length:u64 chunk:u32 — upload; the server answers bytes:u64 + BLAKE3 (32 bytes).
//! - `D` length:u64 chunk:u32 fail_after:u64 — download, then the BLAKE3 (32 bytes); with
//!   `fail_after` the server closes the socket once it sent that many bytes.
//! - `E` — echo frames `len:u32 serial:u32 payload` back until the client closes (unary).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::common::{ABORTED_AT, Addrs, CANCEL_SEEN, Via, pattern, pieces, socket_path};
use crate::runner::Runner;

type Reader = Box<dyn AsyncRead + Unpin>;
type Writer = Box<dyn AsyncWrite + Unpin>;

/// Open connections on the server (for the memory workload).
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

pub struct RawServer {
    _runner: Runner,
    pub addrs: Addrs,
}

impl RawServer {
    pub fn start() -> Self {
        let runner = Runner::new("raw-server");
        let unix = socket_path("raw");
        let path = unix.clone();
        let (tcp, tls) = runner.run(move || async move {
            let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
            let address = tcp.local_addr().unwrap().to_string();
            let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind tls");
            let tls_address = tls.local_addr().unwrap().to_string();
            let unix = UnixListener::bind(&path).expect("bind unix");
            actix_rt::spawn(async move {
                while let Ok((stream, _)) = tcp.accept().await {
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    actix_rt::spawn(serve(Box::new(read), Box::new(write)));
                }
            });
            // TLS like Ferry's (actors' connection/transport.rs): the handshake on the serving
            // thread, then the session split with a lock into its two halves.
            actix_rt::spawn(async move {
                let acceptor = crate::tls::ferry_server();
                while let Ok((stream, _)) = tls.accept().await {
                    let _ = stream.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    actix_rt::spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let (read, write) = tokio::io::split(stream);
                            serve(Box::new(read), Box::new(write)).await;
                        }
                    });
                }
            });
            actix_rt::spawn(async move {
                while let Ok((stream, _)) = unix.accept().await {
                    let (read, write) = stream.into_split();
                    actix_rt::spawn(serve(Box::new(read), Box::new(write)));
                }
            });
            (address, tls_address)
        });
        Self {
            _runner: runner,
            addrs: Addrs {
                tcp,
                unix,
                tls: Some(tls),
            },
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.addrs.unix);
    }
}

struct Counted;

impl Counted {
    fn new() -> Self {
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(mut read: Reader, mut write: Writer) {
    let _counted = Counted::new();
    let mut op = [0u8; 1];
    if read.read_exact(&mut op).await.is_err() {
        return;
    }
    let _ = match op[0] {
        b'U' => serve_upload(&mut read, &mut write).await,
        b'D' => serve_download(&mut read, &mut write).await,
        b'E' => serve_echo(read, write).await,
        _ => Ok(()),
    };
}

async fn serve_upload(read: &mut Reader, write: &mut Writer) -> std::io::Result<()> {
    let length = read.read_u64().await?;
    let chunk = read.read_u32().await? as usize;
    let mut buffer = vec![0u8; chunk];
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    while received < length {
        let want = chunk.min((length - received) as usize);
        let n = read.read(&mut buffer[..want]).await.inspect_err(|_| {
            CANCEL_SEEN.set();
        })?;
        if n == 0 {
            // The client went away before the end: its cancel.
            CANCEL_SEEN.set();
            return Ok(());
        }
        hasher.update(&buffer[..n]);
        received += n as u64;
    }
    write.write_u64(received).await?;
    write.write_all(hasher.finalize().as_bytes()).await?;
    write.flush().await
}

async fn serve_download(read: &mut Reader, write: &mut Writer) -> std::io::Result<()> {
    let length = read.read_u64().await?;
    let chunk = u64::from(read.read_u32().await?);
    let fail_after = read.read_u64().await?;
    let mut hasher = blake3::Hasher::new();
    for (offset, len) in pieces(length, chunk) {
        if fail_after > 0 && offset >= fail_after {
            ABORTED_AT.set();
            return Ok(()); // dropping the socket is the raw abort
        }
        let data = pattern(offset, len);
        hasher.update(&data);
        write.write_all(&data).await?;
    }
    write.write_all(hasher.finalize().as_bytes()).await?;
    write.flush().await
}

async fn serve_echo(read: Reader, write: Writer) -> std::io::Result<()> {
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let mut payload = Vec::new();
    loop {
        let len = match read.read_u32().await {
            Ok(len) => len as usize,
            Err(_) => return Ok(()),
        };
        let serial = read.read_u32().await?;
        payload.resize(len, 0);
        read.read_exact(&mut payload).await?;
        write.write_u32(len as u32).await?;
        write.write_u32(serial).await?;
        write.write_all(&payload).await?;
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
}

/// A client connection's two halves.
pub async fn connect(via: &Via) -> (Reader, Writer) {
    match via {
        Via::Tcp(address) => {
            let stream = TcpStream::connect(address).await.expect("connect tcp");
            stream.set_nodelay(true).unwrap();
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
        Via::Unix(path) => {
            let stream = UnixStream::connect(path).await.expect("connect unix");
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
        Via::Tls(address) => {
            let stream = TcpStream::connect(address).await.expect("connect tls");
            stream.set_nodelay(true).unwrap();
            let stream = crate::tls::ferry_client()
                .connect(crate::tls::SERVER_NAME, stream)
                .await
                .expect("TLS handshake");
            let (read, write) = tokio::io::split(stream);
            (Box::new(read), Box::new(write))
        }
    }
}

pub async fn upload(via: &Via, size: u64, chunk: u64) -> std::io::Result<()> {
    let (mut read, mut write) = connect(via).await;
    upload_on(&mut read, &mut write, size, chunk).await
}

pub async fn upload_on(
    read: &mut Reader,
    write: &mut Writer,
    size: u64,
    chunk: u64,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(13);
    head.push(b'U');
    head.extend_from_slice(&size.to_be_bytes());
    head.extend_from_slice(&(chunk as u32).to_be_bytes());
    write.write_all(&head).await?;
    for (offset, len) in pieces(size, chunk) {
        write.write_all(&pattern(offset, len)).await?;
    }
    write.flush().await?;
    let received = read.read_u64().await?;
    let mut checksum = [0u8; 32];
    read.read_exact(&mut checksum).await?;
    assert_eq!(received, size);
    Ok(())
}

/// Downloads; returns the bytes received (less than `size` if the server aborted).
pub async fn download(via: &Via, size: u64, chunk: u64, fail_after: u64) -> std::io::Result<u64> {
    let (mut read, mut write) = connect(via).await;
    let mut head = Vec::with_capacity(21);
    head.push(b'D');
    head.extend_from_slice(&size.to_be_bytes());
    head.extend_from_slice(&(chunk as u32).to_be_bytes());
    head.extend_from_slice(&fail_after.to_be_bytes());
    write.write_all(&head).await?;
    write.flush().await?;
    let mut buffer = vec![0u8; chunk as usize];
    let mut received = 0u64;
    while received < size {
        let want = (chunk).min(size - received) as usize;
        let n = read.read(&mut buffer[..want]).await?;
        if n == 0 {
            return Ok(received);
        }
        received += n as u64;
    }
    let mut checksum = [0u8; 32];
    read.read_exact(&mut checksum).await?;
    Ok(received)
}

/// Uploads until `stop`, then closes the socket without finishing (for the cancel workload the
/// close *is* the cancel). Returns the bytes written and the instant of the close.
pub async fn upload_then_drop(via: &Via, chunk: u64, cancel_after: u64) -> Instant {
    let (read, mut write) = connect(via).await;
    let mut head = Vec::with_capacity(13);
    head.push(b'U');
    head.extend_from_slice(&u64::MAX.to_be_bytes());
    head.extend_from_slice(&(chunk as u32).to_be_bytes());
    write.write_all(&head).await.unwrap();
    let mut offset = 0;
    while offset < cancel_after {
        write
            .write_all(&pattern(offset, chunk as usize))
            .await
            .unwrap();
        offset += chunk;
    }
    let at = Instant::now();
    drop(write);
    drop(read);
    at
}

/// A pipelining echo client: many calls in flight on one socket, replies matched by serial.
pub struct EchoClient {
    requests: mpsc::UnboundedSender<(u32, Bytes)>,
    pending: Rc<RefCell<HashMap<u32, oneshot::Sender<()>>>>,
    next: std::cell::Cell<u32>,
}

impl EchoClient {
    pub async fn connect(via: &Via) -> Self {
        let (read, mut write) = connect(via).await;
        write.write_all(b"E").await.unwrap();
        let (requests, mut rx) = mpsc::unbounded_channel::<(u32, Bytes)>();
        let pending: Rc<RefCell<HashMap<u32, oneshot::Sender<()>>>> = Rc::default();
        actix_rt::spawn(async move {
            let mut write = BufWriter::with_capacity(64 * 1024, write);
            while let Some((serial, payload)) = rx.recv().await {
                let mut next = Some((serial, payload));
                while let Some((serial, payload)) = next {
                    if write.write_u32(payload.len() as u32).await.is_err()
                        || write.write_u32(serial).await.is_err()
                        || write.write_all(&payload).await.is_err()
                    {
                        return;
                    }
                    next = rx.try_recv().ok();
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        });
        let waiting = pending.clone();
        actix_rt::spawn(async move {
            let mut read = BufReader::with_capacity(64 * 1024, read);
            let mut payload = Vec::new();
            loop {
                let Ok(len) = read.read_u32().await else {
                    return;
                };
                let Ok(serial) = read.read_u32().await else {
                    return;
                };
                payload.resize(len as usize, 0);
                if read.read_exact(&mut payload).await.is_err() {
                    return;
                }
                if let Some(tx) = waiting.borrow_mut().remove(&serial) {
                    let _ = tx.send(());
                }
            }
        });
        Self {
            requests,
            pending,
            next: std::cell::Cell::new(0),
        }
    }

    pub async fn echo(&self, payload: &Bytes) -> Duration {
        let started = Instant::now();
        let serial = self.next.get();
        self.next.set(serial.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(serial, tx);
        self.requests
            .send((serial, payload.clone()))
            .expect("echo writer alive");
        rx.await.expect("echo reply");
        started.elapsed()
    }
}

/// Keeps `n` idle connections, each after one echo (memory workload).
pub async fn idle_connections(via: &Via, n: usize, payload: &Bytes) -> Vec<EchoClient> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let client = EchoClient::connect(via).await;
        client.echo(payload).await;
        clients.push(client);
    }
    clients
}
