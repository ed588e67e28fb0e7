//! The server: listeners on TCP and unix sockets, connections spread over arbiters, and the
//! handle that shuts it all down gracefully.

mod call;
pub(crate) mod connection;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use actix::Addr;
use actix_rt::{Arbiter, ArbiterHandle};
use ferry_codec::proto::{ErrorCode, Layer, Side};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{AuthConfig, AuthProgram, AuthService};
use crate::config::ServerConfig;
use crate::connection::transport::Transport;
use crate::connection::writer::write_frames;
use crate::control::ControlMessage;
use crate::error::{CallError, ListenError};
use crate::metrics::{ConnectionStats, Counters, NoObserver, Observer, Traffic};
use crate::program::{ProgramService, Registry};
use crate::tls::ServerTls;
use connection::{BeginShutdown, ServerConnection};

/// A connection as the server lists it: its actor and its figures.
pub(crate) type OpenConnection = (Addr<ServerConnection>, Arc<ConnectionStats>);

/// State every connection of a server shares.
pub(crate) struct ServerShared {
    pub config: ServerConfig,
    /// `None`: no authentication, every connection may call everything.
    pub auth: Option<AuthConfig>,
    pub registry: Registry,
    pub counters: Arc<Counters>,
    pub observer: Arc<dyn Observer>,
    pub started: SystemTime,
    pub connections: Mutex<HashMap<u64, OpenConnection>>,
    /// Ids of connections, for admin views and logs.
    pub next_id: AtomicU64,
    /// Open connections per source address (TCP).
    pub per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Set once shutdown began, to the drain time; connections that start later drain at once.
    pub shutdown: OnceLock<Duration>,
}

/// Builds and starts a server. Must be started inside an actix `System`.
pub struct Server {
    config: ServerConfig,
    registry: Registry,
    auth: Option<AuthConfig>,
    observer: Arc<dyn Observer>,
    /// TCP listeners, with TLS or plain.
    tcp: Vec<(String, Option<ServerTls>)>,
    unix: Vec<PathBuf>,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            registry: Registry::default(),
            auth: None,
            observer: Arc::new(NoObserver),
            tcp: Vec::new(),
            unix: Vec::new(),
        }
    }

    pub fn program(mut self, program: ProgramService) -> Self {
        self.registry.add(program);
        self
    }

    /// Requires every connection to have an identity before it calls anything but the auth
    /// program, and checks each call against the role its procedure requires. The auth program
    /// is added when the server starts, which can fail, since it draws a secret then.
    pub fn authentication(mut self, auth: AuthConfig) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Receives labelled call and stream events (for metrics).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Listens on a TCP address such as `127.0.0.1:0` (port 0 picks a free port).
    pub fn listen_tcp(mut self, address: impl Into<String>) -> Self {
        self.tcp.push((address.into(), None));
        self
    }

    /// Listens on a TCP address with TLS: the handshake (bounded by `handshake_timeout`) runs on
    /// the connection's arbiter, so handshakes spread over all cores.
    pub fn listen_tls(mut self, address: impl Into<String>, tls: ServerTls) -> Self {
        self.tcp.push((address.into(), Some(tls)));
        self
    }

    /// Listens on a unix socket; a stale socket file left by a dead server is replaced.
    pub fn listen_unix(mut self, path: impl Into<PathBuf>) -> Self {
        self.unix.push(path.into());
        self
    }

    pub async fn start(mut self) -> Result<ServerHandle, ListenError> {
        if let Some(auth) = &self.auth {
            let service =
                AuthService::new(auth.credentials.clone()).map_err(ListenError::DecoySecret)?;
            self.registry.add(AuthProgram::serve(service));
        }
        let arbiters: Vec<Arbiter> = (0..self.config.arbiters.max(1))
            .map(|_| Arbiter::new())
            .collect();
        let shared = Arc::new(ServerShared {
            config: self.config,
            auth: self.auth,
            registry: self.registry,
            counters: Arc::default(),
            observer: self.observer,
            started: SystemTime::now(),
            connections: Mutex::default(),
            per_address: Mutex::default(),
            next_id: AtomicU64::new(1),
            shutdown: OnceLock::new(),
        });
        let token = CancellationToken::new();
        let acceptor = Acceptor {
            shared: shared.clone(),
            arbiters: arbiters.iter().map(Arbiter::handle).collect(),
            next: Arc::default(),
        };
        let mut tcp_addrs = Vec::new();
        for (address, tls) in self.tcp {
            let listener = TcpListener::bind(&address)
                .await
                .map_err(|source| ListenError::Io {
                    address: address.clone(),
                    source,
                })?;
            let local = listener
                .local_addr()
                .map_err(|source| ListenError::Io { address, source })?;
            info!(%local, tls = tls.is_some(), "listening on tcp");
            tcp_addrs.push(local);
            actix_rt::spawn(acceptor.clone().run_tcp(listener, tls, token.clone()));
        }
        for path in &self.unix {
            let listener = bind_unix(path).await?;
            info!(path = %path.display(), "listening on unix socket");
            actix_rt::spawn(acceptor.clone().run_unix(listener, token.clone()));
        }
        Ok(ServerHandle {
            tcp_addrs,
            unix_paths: self.unix,
            shared,
            token,
            arbiters: Mutex::new(arbiters),
        })
    }
}

async fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let error = |source| ListenError::Io {
        address: path.display().to_string(),
        source,
    };
    if path.exists() && UnixStream::connect(path).await.is_err() {
        debug!(path = %path.display(), "removing stale unix socket");
        std::fs::remove_file(path).map_err(error)?;
    }
    UnixListener::bind(path).map_err(error)
}

/// Accepts sockets and hands each to an arbiter, round robin.
#[derive(Clone)]
struct Acceptor {
    shared: Arc<ServerShared>,
    arbiters: Vec<ArbiterHandle>,
    next: Arc<AtomicUsize>,
}

/// A socket on its way to an arbiter; std sockets can cross threads, tokio ones cannot.
enum Accepted {
    Tcp(std::net::TcpStream, Option<ServerTls>),
    Unix(std::os::unix::net::UnixStream),
}

/// A connection's place in the server's limits; given back when the connection ends, however
/// it ends (including a failed TLS handshake).
pub(crate) struct ConnectionSlot {
    shared: Arc<ServerShared>,
    address: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.shared.counters.connections_open.dec();
        if let Some(address) = self.address {
            let mut per_address = self.shared.per_address.lock().unwrap();
            if let Some(count) = per_address.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    per_address.remove(&address);
                }
            }
        }
    }
}

impl Acceptor {
    async fn run_tcp(
        self,
        listener: TcpListener,
        tls: Option<ServerTls>,
        token: CancellationToken,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => { warn!(%error, "accept failed"); continue; }
                },
            };
            let stream = TcpSocket {
                stream,
                tls: tls.clone(),
            };
            if let Err((mut stream, why)) = self.admit(stream, Some(peer.ip())) {
                self.reject(&mut stream.stream, why).await;
            }
        }
    }

    async fn run_unix(self, listener: UnixListener, token: CancellationToken) {
        loop {
            let stream = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => { warn!(%error, "accept failed"); continue; }
                },
            };
            if let Err((mut stream, why)) = self.admit(stream, None) {
                self.reject(&mut stream, why).await;
            }
        }
    }

    /// Starts a connection on the next arbiter, or gives the socket back with the limit it hit.
    fn admit<S: IntoAccepted>(
        &self,
        stream: S,
        address: Option<IpAddr>,
    ) -> Result<(), (S, String)> {
        let config = &self.shared.config;
        let counters = &self.shared.counters;
        if counters.connections_open.get() >= config.max_connections as u64 {
            counters.limit_rejections.inc();
            return Err((
                stream,
                format!("server is at max_connections ({})", config.max_connections),
            ));
        }
        if let Some(address) = address {
            let mut per_address = self.shared.per_address.lock().unwrap();
            let count = per_address.entry(address).or_default();
            if *count >= config.max_connections_per_address {
                counters.limit_rejections.inc();
                let limit = config.max_connections_per_address;
                return Err((
                    stream,
                    format!("{address} has max_connections_per_address ({limit}) open"),
                ));
            }
            *count += 1;
        }
        counters.connections_open.inc();
        counters.connections_total.inc();
        let slot = ConnectionSlot {
            shared: self.shared.clone(),
            address,
        };
        let accepted = match stream.into_accepted() {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "could not hand the socket over");
                return Ok(());
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let arbiter =
            &self.arbiters[self.next.fetch_add(1, Ordering::Relaxed) % self.arbiters.len()];
        let shared = self.shared.clone();
        arbiter.spawn(async move {
            match transport(accepted, shared.config.handshake_timeout).await {
                Ok(transport) => {
                    ServerConnection::start(id, transport, shared, slot);
                }
                Err(error) => {
                    shared.counters.handshake_failures.inc();
                    debug!(%error, "connection setup failed");
                }
            }
        });
        Ok(())
    }

    /// Tells a connection over the limit why it is refused, then drops it.
    async fn reject<S: tokio::io::AsyncWrite + Unpin>(&self, stream: &mut S, why: String) {
        let error = CallError::new(
            ErrorCode::ResourceExhausted,
            Side::Server,
            Layer::Connection,
            why,
        );
        let goaway = ControlMessage::GoAway(error.to_body()).to_frame();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            write_frames(
                stream,
                &[goaway],
                &Traffic {
                    total: self.shared.counters.clone(),
                    connection: None,
                },
            ),
        )
        .await;
    }
}

trait IntoAccepted {
    fn into_accepted(self) -> std::io::Result<Accepted>;
}

/// An accepted TCP socket and the TLS it must speak, if any.
struct TcpSocket {
    stream: TcpStream,
    tls: Option<ServerTls>,
}

impl IntoAccepted for TcpSocket {
    fn into_accepted(self) -> std::io::Result<Accepted> {
        let tls = self.tls;
        self.stream.into_std().map(|s| Accepted::Tcp(s, tls))
    }
}

/// Turns an accepted socket into a transport on the arbiter it will live on; a TLS handshake
/// must finish within `handshake_timeout` (slow or silent peers are dropped).
async fn transport(accepted: Accepted, handshake_timeout: Duration) -> std::io::Result<Transport> {
    match accepted {
        Accepted::Unix(s) => UnixStream::from_std(s).map(Transport::unix),
        Accepted::Tcp(s, None) => TcpStream::from_std(s).map(Transport::tcp),
        Accepted::Tcp(s, Some(tls)) => {
            let stream = TcpStream::from_std(s)?;
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => Ok(Transport::tls(stream)),
                Ok(Err(error)) => Err(std::io::Error::other(format!(
                    "TLS handshake failed: {error}"
                ))),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    }
}

impl IntoAccepted for UnixStream {
    fn into_accepted(self) -> std::io::Result<Accepted> {
        self.into_std().map(Accepted::Unix)
    }
}

/// A running server.
pub struct ServerHandle {
    tcp_addrs: Vec<SocketAddr>,
    unix_paths: Vec<PathBuf>,
    shared: Arc<ServerShared>,
    token: CancellationToken,
    arbiters: Mutex<Vec<Arbiter>>,
}

impl ServerHandle {
    /// The bound TCP addresses, in the order they were asked for.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    pub fn unix_paths(&self) -> &[PathBuf] {
        &self.unix_paths
    }

    /// The server's counters; shared, so exporters can read them at any time.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Serves one connection over any byte stream (an in-memory pipe in tests and fuzzing, a
    /// socket accepted elsewhere), on the current arbiter, under the server's limits.
    pub fn serve_io<S>(&self, io: S, peer: &str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + 'static,
    {
        let counters = &self.shared.counters;
        counters.connections_open.inc();
        counters.connections_total.inc();
        let slot = ConnectionSlot {
            shared: self.shared.clone(),
            address: None,
        };
        let (read, write) = tokio::io::split(io);
        let transport = Transport {
            read: Box::new(read),
            write: Box::new(write),
            peer: peer.to_owned(),
            peer_uid: None,
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        ServerConnection::start(id, transport, self.shared.clone(), slot);
    }

    /// A view for programs that report on the server (admin).
    pub fn view(&self) -> ServerView {
        ServerView::new(self.shared.clone())
    }

    /// Stops accepting, sends every client the shutdown notice, lets open calls finish for up
    /// to `drain`, then closes every connection and stops the arbiters.
    pub async fn shutdown(&self, drain: Duration) {
        self.token.cancel();
        for path in &self.unix_paths {
            let _ = std::fs::remove_file(path);
        }
        let _ = self.shared.shutdown.set(drain);
        for (connection, _) in self.shared.connections.lock().unwrap().values() {
            connection.do_send(BeginShutdown { drain });
        }
        let closed = self.shared.counters.connections_open.wait_for(|n| *n == 0);
        if tokio::time::timeout(drain + Duration::from_secs(2), closed)
            .await
            .is_err()
        {
            warn!("connections still open after the drain time");
        }
        for arbiter in self.arbiters.lock().unwrap().drain(..) {
            arbiter.stop();
        }
    }
}

/// What programs may see of the server they run in: its limits, uptime and connections.
#[derive(Clone)]
pub struct ServerView {
    shared: Arc<ServerShared>,
}

impl ServerView {
    pub(crate) fn new(shared: Arc<ServerShared>) -> Self {
        Self { shared }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn started(&self) -> SystemTime {
        self.shared.started
    }

    /// Figures of every open connection, by id.
    pub fn connections(&self) -> Vec<Arc<ConnectionStats>> {
        let mut all: Vec<_> = self
            .shared
            .connections
            .lock()
            .unwrap()
            .values()
            .map(|(_, stats)| stats.clone())
            .collect();
        all.sort_by_key(|stats| stats.id);
        all
    }

    /// Closes one connection (GOAWAY, then close); false if no such connection is open.
    pub fn disconnect(&self, id: u64) -> bool {
        match self.shared.connections.lock().unwrap().get(&id) {
            Some((connection, _)) => {
                connection.do_send(connection::Disconnect);
                true
            }
            None => false,
        }
    }
}
