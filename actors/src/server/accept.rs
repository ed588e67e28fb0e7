//! Accepting connections: listeners on TCP (plain or TLS) and unix sockets, the server's
//! connection limits, and the hand-over of each socket to an arbiter, round robin.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_rt::ArbiterHandle;
use ferry_codec::proto::{ErrorCode, Layer, Side};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::connection::transport::Transport;
use crate::connection::writer::write_frames;
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::metrics::Traffic;
use crate::server::connection::ServerConnection;
use crate::server::shared::{ConnectionSlot, ServerShared};
use crate::tls::ServerTls;

/// Accepts sockets and hands each to an arbiter, round robin.
#[derive(Clone)]
pub(crate) struct Acceptor {
    shared: Arc<ServerShared>,
    arbiters: Vec<ArbiterHandle>,
    next: Arc<AtomicUsize>,
}

/// A socket on its way to an arbiter; std sockets can cross threads, tokio ones cannot.
enum Accepted {
    Tcp(std::net::TcpStream, Option<ServerTls>),
    Unix(std::os::unix::net::UnixStream),
}

impl Acceptor {
    pub fn new(shared: Arc<ServerShared>, arbiters: Vec<ArbiterHandle>) -> Self {
        Self {
            shared,
            arbiters,
            next: Arc::default(),
        }
    }

    pub async fn run_tcp(
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

    pub async fn run_unix(self, listener: UnixListener, token: CancellationToken) {
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
        let id = self.shared.directory.next_id();
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
