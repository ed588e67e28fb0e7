//! The Ferry side: the test program served on TCP and a unix socket by a server in its own
//! actix System, and the client operations of every workload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_actors::codec::Limits;
use ferry_actors::program::CallContext;
use ferry_actors::stream::{Incoming, Outgoing};
use ferry_actors::test_program::proto::{
    EchoReply, EchoRequest, EchoStreamReply, EchoStreamRequest, FailReply, FailRequest, SinkReply,
    SinkRequest, SleepReply, SleepRequest, SourceReply, SourceRequest, TicksReply, TicksRequest,
};
use ferry_actors::test_program::{
    TestClient, TestHandler, TestObservations, TestProgram, TestService,
};
use ferry_actors::{CallError, Client, ClientConfig, Server, ServerConfig, ServerHandle};

use crate::common::{ABORTED_AT, Addrs, CANCEL_SEEN, DropMark, Via, pattern, pieces, socket_path};
use crate::runner::Runner;

/// The Ferry settings a workload may change; everything else stays at its default.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_chunk: u32,
    pub window: u32,
    /// Calls in flight per connection, on both sides (idle streams count).
    pub max_in_flight: usize,
    pub max_connections: usize,
    /// Streams open at once on one connection, and the sum of their windows (server side).
    pub max_streams: usize,
    pub max_buffered: u64,
    /// The server's arbiters (threads); one unless a workload spreads connections.
    pub arbiters: usize,
}

/// A stream window set on the command line (`--ferry-window`), for experiments.
static WINDOW: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

pub fn set_window(window: u32) {
    let _ = WINDOW.set(window);
}

impl Default for Settings {
    fn default() -> Self {
        let server = ServerConfig::default();
        Self {
            max_chunk: Limits::default().max_chunk,
            window: WINDOW.get().copied().unwrap_or(server.stream_window),
            max_in_flight: server.max_in_flight_calls,
            max_connections: server.max_connections,
            max_streams: server.max_streams_per_connection,
            max_buffered: server.max_buffered_per_connection,
            arbiters: 1,
        }
    }
}

impl Settings {
    /// Default settings, except that chunks over the default maximum raise it, and the window
    /// with it (to four chunks), as the workloads that use 1 MiB chunks say.
    pub fn for_chunk(chunk: u64) -> Self {
        let mut settings = Self::default();
        if chunk > u64::from(settings.max_chunk) {
            settings.max_chunk = chunk as u32;
            settings.window = settings.window.max(4 * chunk as u32);
        }
        settings
    }

    fn limits(&self) -> Limits {
        Limits {
            max_chunk: self.max_chunk,
            ..Limits::default()
        }
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            limits: self.limits(),
            stream_window: self.window,
            max_in_flight_calls: self.max_in_flight,
            max_connections: self.max_connections,
            // Every benchmark connection comes from 127.0.0.1.
            max_connections_per_address: self.max_connections,
            max_streams_per_connection: self.max_streams,
            max_buffered_per_connection: self.max_buffered,
            // One connection is served by one arbiter; one is all most measurements use, so
            // the server has exactly one busy thread, like the other peers.
            arbiters: self.arbiters,
            // Setting up 10,000 idle connections may take longer than the default.
            handshake_timeout: Duration::from_secs(600),
            ..ServerConfig::default()
        }
    }

    pub fn client(&self) -> ClientConfig {
        ClientConfig {
            limits: self.limits(),
            stream_window: self.window,
            max_in_flight_calls: self.max_in_flight,
            ..ClientConfig::default()
        }
    }
}

/// The test service, with the instants the `cancel` workload needs: when a Sink was dropped
/// before its upload finished (the client's cancel observed) and when a Source failed (the
/// server's abort). Every procedure is the test service's own.
#[derive(Clone, Default)]
pub struct BenchService {
    pub inner: TestService,
}

impl TestHandler for BenchService {
    async fn echo(
        &self,
        request: EchoRequest,
        context: CallContext,
    ) -> Result<EchoReply, CallError> {
        self.inner.echo(request, context).await
    }

    async fn sleep(
        &self,
        request: SleepRequest,
        context: CallContext,
    ) -> Result<SleepReply, CallError> {
        self.inner.sleep(request, context).await
    }

    async fn fail(
        &self,
        request: FailRequest,
        context: CallContext,
    ) -> Result<FailReply, CallError> {
        self.inner.fail(request, context).await
    }

    async fn ticks(
        &self,
        request: TicksRequest,
        context: CallContext,
    ) -> Result<TicksReply, CallError> {
        self.inner.ticks(request, context).await
    }

    async fn sink(
        &self,
        request: SinkRequest,
        context: CallContext,
        incoming: Incoming,
    ) -> Result<SinkReply, CallError> {
        let mut watch = DropMark(&CANCEL_SEEN, true);
        let outcome = self.inner.sink(request, context, incoming).await;
        watch.1 = outcome.is_ok();
        if outcome.is_err() {
            CANCEL_SEEN.set();
        }
        outcome
    }

    async fn source(
        &self,
        request: SourceRequest,
        context: CallContext,
        outgoing: Outgoing,
    ) -> Result<SourceReply, CallError> {
        let outcome = self.inner.source(request, context, outgoing).await;
        if outcome.is_err() {
            ABORTED_AT.set();
        }
        outcome
    }

    async fn echo_stream(
        &self,
        request: EchoStreamRequest,
        context: CallContext,
        incoming: Incoming,
        outgoing: Outgoing,
    ) -> Result<EchoStreamReply, CallError> {
        self.inner
            .echo_stream(request, context, incoming, outgoing)
            .await
    }
}

/// A Ferry server on its own runner thread (an actix System whose server uses one arbiter).
pub struct FerryServer {
    runner: Runner,
    handle: Option<Arc<ServerHandle>>,
    pub addrs: Addrs,
    pub observations: Arc<TestObservations>,
}

impl FerryServer {
    pub fn start(settings: Settings) -> Self {
        let runner = Runner::new("ferry-server");
        let unix = socket_path("ferry");
        let service = BenchService::default();
        let observations = service.inner.observations.clone();
        let config = settings.server();
        let path = unix.clone();
        let handle = runner.run(move || async move {
            let handle = Server::new(config)
                .program(TestProgram::serve(service))
                .listen_tcp("127.0.0.1:0")
                .listen_tls("127.0.0.1:0", crate::tls::ferry_server())
                .listen_unix(&path)
                .start()
                .await
                .expect("start the Ferry server");
            Arc::new(handle)
        });
        // In the order asked for: plain TCP, then TLS.
        let tcp = handle.tcp_addrs()[0].to_string();
        let tls = Some(handle.tcp_addrs()[1].to_string());
        Self {
            runner,
            handle: Some(handle),
            addrs: Addrs { tcp, unix, tls },
            observations,
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("running")
    }

    fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.runner
                .run(move || async move { handle.shutdown(Duration::from_millis(200)).await });
        }
        let _ = std::fs::remove_file(&self.addrs.unix);
    }
}

impl Drop for FerryServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connects a client (inside the calling runner's System).
pub async fn connect(via: &Via, settings: Settings) -> TestClient {
    TestClient::new(connect_client(via, settings).await)
}

/// Connects and returns the untyped client (for its counters).
pub async fn connect_client(via: &Via, settings: Settings) -> Client {
    let config = settings.client();
    match via {
        Via::Tcp(address) => Client::connect_tcp(address, config).await,
        Via::Unix(path) => Client::connect_unix(path, config).await,
        Via::Tls(address) => {
            let tls = crate::tls::ferry_client();
            Client::connect_tls(address, crate::tls::SERVER_NAME, &tls, config).await
        }
    }
    .expect("connect to the Ferry server")
}

/// Uploads `size` bytes of the pattern in `chunk`-sized sends (static buffers: no allocation
/// per chunk) and waits for the server's REPLY.
pub async fn upload(client: &TestClient, size: u64, chunk: u64) -> Result<(), CallError> {
    let mut stream = client.sink(&SinkRequest::default()).await?;
    for (offset, len) in pieces(size, chunk) {
        stream.send(pattern(offset, len)).await?;
    }
    let reply = stream.finish().await?;
    assert_eq!(reply.bytes, size, "the sink saw every byte");
    Ok(())
}

/// Downloads `size` bytes sent in `chunk`-sized pieces; returns the bytes received.
pub async fn download(client: &TestClient, size: u64, chunk: u64) -> Result<u64, CallError> {
    let mut stream = client
        .source(&SourceRequest {
            length: size,
            chunk: chunk as u32,
            ..SourceRequest::default()
        })
        .await?;
    let mut received = 0;
    while let Some(piece) = stream.recv().await? {
        received += piece.len();
    }
    stream.finish().await?;
    assert_eq!(received, size, "every byte arrived");
    Ok(received)
}

/// Uploads until `stop` says so, then finishes; returns the bytes sent.
pub async fn upload_until(
    client: &TestClient,
    chunk: u64,
    stop: &std::cell::Cell<bool>,
) -> Result<u64, CallError> {
    let mut stream = client.sink(&SinkRequest::default()).await?;
    let mut offset = 0;
    while !stop.get() {
        stream.send(pattern(offset, chunk as usize)).await?;
        offset += chunk;
    }
    stream.finish().await?;
    Ok(offset)
}

/// Downloads an endless source until `stop` says so, then cancels it; returns the bytes
/// received.
pub async fn download_until(
    client: &TestClient,
    chunk: u64,
    stop: &std::cell::Cell<bool>,
) -> Result<u64, CallError> {
    let mut stream = client
        .source(&SourceRequest {
            length: u64::MAX,
            chunk: chunk as u32,
            ..SourceRequest::default()
        })
        .await?;
    let mut received = 0;
    while !stop.get() {
        match stream.recv().await? {
            Some(piece) => received += piece.len(),
            None => break,
        }
    }
    drop(stream);
    Ok(received)
}

/// One Echo call with `payload`; returns its latency.
pub async fn echo(client: &TestClient, payload: &bytes::Bytes) -> Duration {
    let started = Instant::now();
    let reply = client
        .echo(&EchoRequest {
            payload: payload.clone(),
        })
        .await
        .expect("echo");
    let elapsed = started.elapsed();
    debug_assert_eq!(reply.payload.len(), payload.len());
    elapsed
}
