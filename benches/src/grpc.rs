//! The gRPC peer: tonic over plaintext HTTP/2, one channel = one connection, with the
//! `ferry.bench.v1.Bench` service (Echo, client-streaming Upload, server-streaming Download of
//! `bytes` messages of the workload's chunk size). The server does the same work as Ferry's
//! test service (BLAKE3 of the data).
//!
//! Two configurations:
//! - **default**: `Server::builder()` and `Endpoint` untouched, i.e. hyper's HTTP/2 defaults
//!   (server: 1 MiB stream and connection windows; client: 2 MiB stream, 5 MiB connection
//!   window; 16 KiB frames; no adaptive window).
//! - **tuned**: see [`TUNED`]; the same on both ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::common::{ABORTED_AT, Addrs, CANCEL_SEEN, DropMark, Via, pattern, pieces, socket_path};
use crate::runner::Runner;

pub mod pb {
    tonic::include_proto!("ferry.bench.v1");
}

use pb::bench_client::BenchClient;
use pb::bench_server::{Bench, BenchServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    Default,
    Tuned,
}

/// The tuned HTTP/2 settings, applied to both the server builder and the client endpoint.
pub struct Tuned {
    pub stream_window: u32,
    pub connection_window: u32,
    pub max_frame_size: u32,
    pub adaptive_window: bool,
}

pub const TUNED: Tuned = Tuned {
    stream_window: 8 * 1024 * 1024,
    connection_window: 32 * 1024 * 1024,
    max_frame_size: 1024 * 1024,
    // hyper's adaptive (BDP) window replaces the static windows above when on; the static
    // windows were faster here (see benches/README.md).
    adaptive_window: false,
};

/// Set by the memory workload's server process: allow 10,000+ concurrent streams on one
/// connection (hyper's default is 200). Nothing else changes.
pub static RAISE_STREAM_LIMIT: AtomicBool = AtomicBool::new(false);

fn server_builder(tuning: Tuning) -> tonic::transport::Server {
    let mut builder = tonic::transport::Server::builder();
    if RAISE_STREAM_LIMIT.load(Ordering::Relaxed) {
        builder = builder.max_concurrent_streams(1_000_000);
    }
    match tuning {
        Tuning::Default => builder,
        Tuning::Tuned => builder
            .initial_stream_window_size(TUNED.stream_window)
            .initial_connection_window_size(TUNED.connection_window)
            .max_frame_size(TUNED.max_frame_size)
            .http2_adaptive_window(Some(TUNED.adaptive_window)),
    }
}

fn endpoint(tuning: Tuning, uri: String) -> Endpoint {
    let endpoint = Endpoint::from_shared(uri).expect("valid uri");
    match tuning {
        Tuning::Default => endpoint,
        Tuning::Tuned => endpoint
            .initial_stream_window_size(TUNED.stream_window)
            .initial_connection_window_size(TUNED.connection_window)
            .max_frame_size(TUNED.max_frame_size)
            .http2_adaptive_window(TUNED.adaptive_window),
    }
}

/// Handlers currently inside Upload (idle streams in the memory workload).
pub static OPEN_UPLOADS: AtomicU64 = AtomicU64::new(0);
/// Connections accepted and not yet closed.
pub static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct Service;

struct OpenUpload;

impl OpenUpload {
    fn new() -> Self {
        OPEN_UPLOADS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        OPEN_UPLOADS.fetch_sub(1, Ordering::Relaxed);
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Bench for Service {
    async fn echo(
        &self,
        request: Request<pb::EchoRequest>,
    ) -> Result<Response<pb::EchoReply>, Status> {
        Ok(Response::new(pb::EchoReply {
            payload: request.into_inner().payload,
        }))
    }

    async fn upload(
        &self,
        request: Request<Streaming<pb::Chunk>>,
    ) -> Result<Response<pb::UploadReply>, Status> {
        let _open = OpenUpload::new();
        let mut watch = DropMark(&CANCEL_SEEN, true);
        let mut stream = request.into_inner();
        let mut hasher = blake3::Hasher::new();
        let mut bytes = 0u64;
        loop {
            match stream.message().await {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk.data);
                    bytes += chunk.data.len() as u64;
                }
                Ok(None) => {
                    // tonic hands a client's RST_STREAM(CANCEL) to the handler as a clean end
                    // of the request stream (tonic 0.14 codec/decode.rs, `poll_frame`): this
                    // is also how the server "observes" a cancel. It cannot tell them apart.
                    CANCEL_SEEN.set();
                    break;
                }
                Err(status) => {
                    CANCEL_SEEN.set();
                    return Err(status);
                }
            }
        }
        watch.1 = false;
        Ok(Response::new(pb::UploadReply {
            bytes,
            checksum: Bytes::copy_from_slice(hasher.finalize().as_bytes()),
        }))
    }

    type DownloadStream = ChunkStream;

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        let chunk = u64::from(request.chunk.max(1));
        struct State {
            offset: u64,
            hasher: blake3::Hasher,
        }
        let start = State {
            offset: 0,
            hasher: blake3::Hasher::new(),
        };
        let stream = futures::stream::unfold(Some(start), move |state| async move {
            let mut state = state?;
            if request.fail_after > 0 && state.offset >= request.fail_after {
                ABORTED_AT.set();
                return Some((Err(Status::aborted("download failed on purpose")), None));
            }
            if state.offset >= request.length {
                let checksum = Bytes::copy_from_slice(state.hasher.finalize().as_bytes());
                let last = pb::Chunk {
                    data: Bytes::new(),
                    checksum,
                };
                return Some((Ok(last), None));
            }
            let len = chunk.min(request.length - state.offset) as usize;
            let data = pattern(state.offset, len);
            state.hasher.update(&data);
            state.offset += len as u64;
            let message = pb::Chunk {
                data,
                checksum: Bytes::new(),
            };
            Some((Ok(message), Some(state)))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// A tonic server on its own runner thread, on TCP and a unix socket.
pub struct GrpcServer {
    runner: Runner,
    stop: Option<(oneshot::Sender<()>, oneshot::Sender<()>)>,
    pub addrs: Addrs,
}

impl GrpcServer {
    pub fn start(tuning: Tuning) -> Self {
        let runner = Runner::new("grpc-server");
        let unix = socket_path("grpc");
        let path = unix.clone();
        let (stop_tcp, tcp_stopped) = oneshot::channel::<()>();
        let (stop_unix, unix_stopped) = oneshot::channel::<()>();
        let tcp = runner.run(move || async move {
            let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
            let address = tcp.local_addr().unwrap().to_string();
            let unix = UnixListener::bind(&path).expect("bind unix");
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(tcp).map(|s| {
                s.map(|stream| {
                    // What `Server::serve` does for its own listener (tcp_nodelay defaults on).
                    let _ = stream.set_nodelay(true);
                    Tracked::new(stream)
                })
            });
            let server = server_builder(tuning).add_service(BenchServer::new(Service));
            actix_rt::spawn(async move {
                let _ = server
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = tcp_stopped.await;
                    })
                    .await;
            });
            let incoming =
                tokio_stream::wrappers::UnixListenerStream::new(unix).map(|s| s.map(Tracked::new));
            let server = server_builder(tuning).add_service(BenchServer::new(Service));
            actix_rt::spawn(async move {
                let _ = server
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = unix_stopped.await;
                    })
                    .await;
            });
            address
        });
        Self {
            runner,
            stop: Some((stop_tcp, stop_unix)),
            addrs: Addrs {
                tcp,
                unix,
                tls: None,
            },
        }
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some((tcp, unix)) = self.stop.take() {
            let _ = tcp.send(());
            let _ = unix.send(());
        }
        // Give the server a moment to close its connections before the runtime goes.
        self.runner
            .run(|| tokio::time::sleep(Duration::from_millis(20)));
        let _ = std::fs::remove_file(&self.addrs.unix);
    }
}

/// A server-side socket counted in [`CONNECTIONS`] while open.
struct Tracked<S> {
    inner: S,
}

impl<S> Tracked<S> {
    fn new(inner: S) -> Self {
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Self { inner }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Tracked<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client socket that counts the bytes it writes (the cancel workload's overshoot).
struct Counting<S> {
    inner: S,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &outcome {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        outcome
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &outcome {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        outcome
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub type Client = BenchClient<Channel>;

/// One channel (one HTTP/2 connection), with tonic's own connectors.
pub async fn connect(via: &Via, tuning: Tuning) -> Client {
    let uri = match via {
        Via::Tcp(address) => format!("http://{address}"),
        Via::Unix(path) => format!("unix://{}", path.display()),
        Via::Tls(_) => unreachable!("the gRPC peer runs without TLS"),
    };
    let channel = endpoint(tuning, uri)
        .connect()
        .await
        .expect("connect to the tonic server");
    BenchClient::new(channel)
}

/// One channel over TCP whose socket counts the bytes written into `written`.
pub async fn connect_counting(address: &str, tuning: Tuning, written: Arc<AtomicU64>) -> Client {
    let address = address.to_owned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let address = address.clone();
        let written = written.clone();
        async move {
            let stream = TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Counting {
                inner: stream,
                written,
            }))
        }
    });
    let channel = endpoint(tuning, "http://counted.invalid".into())
        .connect_with_connector(connector)
        .await
        .expect("connect to the tonic server");
    BenchClient::new(channel)
}

fn chunks(size: u64, chunk: u64) -> impl Stream<Item = pb::Chunk> + Send + 'static {
    futures::stream::iter(pieces(size, chunk)).map(|(offset, len)| pb::Chunk {
        data: pattern(offset, len),
        checksum: Bytes::new(),
    })
}

pub async fn upload(client: &Client, size: u64, chunk: u64) -> Result<(), Status> {
    let reply = client
        .clone()
        .upload(chunks(size, chunk))
        .await?
        .into_inner();
    assert_eq!(reply.bytes, size, "the server saw every byte");
    Ok(())
}

pub async fn download(client: &Client, size: u64, chunk: u64) -> Result<u64, Status> {
    let mut stream = client
        .clone()
        .download(pb::DownloadRequest {
            length: size,
            chunk: chunk as u32,
            fail_after: 0,
        })
        .await?
        .into_inner();
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        received += message.data.len() as u64;
    }
    assert_eq!(received, size, "every byte arrived");
    Ok(received)
}

/// Uploads until `stop` is set, then ends the stream; returns the bytes sent.
pub async fn upload_until(
    client: &Client,
    chunk: u64,
    stop: Arc<AtomicBool>,
) -> Result<u64, Status> {
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let stream = futures::stream::unfold(0u64, move |offset| {
        let stop = stop.clone();
        let counter = counter.clone();
        async move {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            counter.fetch_add(chunk, Ordering::Relaxed);
            let message = pb::Chunk {
                data: pattern(offset, chunk as usize),
                checksum: Bytes::new(),
            };
            Some((message, offset + chunk))
        }
    });
    client.clone().upload(stream).await?;
    Ok(sent.load(Ordering::Relaxed))
}

/// Downloads an endless stream until `stop` is set, then drops it (RST_STREAM); returns the
/// bytes received.
pub async fn download_until(
    client: &Client,
    chunk: u64,
    stop: Arc<AtomicBool>,
) -> Result<u64, Status> {
    let mut stream = client
        .clone()
        .download(pb::DownloadRequest {
            length: u64::MAX,
            chunk: chunk as u32,
            fail_after: 0,
        })
        .await?
        .into_inner();
    let mut received = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match stream.message().await? {
            Some(message) => received += message.data.len() as u64,
            None => break,
        }
    }
    Ok(received)
}

pub async fn echo(client: &Client, payload: &Bytes) -> Duration {
    let started = Instant::now();
    let reply = client
        .clone()
        .echo(pb::EchoRequest {
            payload: payload.clone(),
        })
        .await
        .expect("echo");
    let elapsed = started.elapsed();
    debug_assert_eq!(reply.into_inner().payload.len(), payload.len());
    elapsed
}

/// Starts an upload that never sends data and never ends (an idle stream).
pub fn idle_upload(client: &Client) -> impl Future<Output = ()> + 'static {
    let mut client = client.clone();
    async move {
        let _ = client.upload(futures::stream::pending::<pb::Chunk>()).await;
    }
}

/// An uploading stream of unbounded length that counts what it yields into `sent`.
pub fn endless_chunks(
    chunk: u64,
    sent: Arc<AtomicU64>,
) -> impl Stream<Item = pb::Chunk> + Send + 'static {
    futures::stream::unfold(0u64, move |offset| {
        let sent = sent.clone();
        async move {
            sent.fetch_add(chunk, Ordering::Relaxed);
            let message = pb::Chunk {
                data: pattern(offset, chunk as usize),
                checksum: Bytes::new(),
            };
            Some((message, offset + chunk))
        }
    })
}

/// Starts a download that fails on the server after `fail_after` bytes; returns the client's
/// stream.
pub async fn failing_download(
    client: &Client,
    chunk: u64,
    fail_after: u64,
) -> Result<Streaming<pb::Chunk>, Status> {
    Ok(client
        .clone()
        .download(pb::DownloadRequest {
            length: u64::MAX / 2,
            chunk: chunk as u32,
            fail_after,
        })
        .await?
        .into_inner())
}
