//! A running server: its addresses, counters and view, connections served over any byte
//! stream, and the graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_rt::Arbiter;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::connection::transport::Transport;
use crate::metrics::Counters;
use crate::server::connection::ServerConnection;
use crate::server::shared::{ConnectionSlot, ServerShared};
use crate::server::view::ServerView;

/// A running server.
pub struct ServerHandle {
    tcp_addrs: Vec<SocketAddr>,
    unix_paths: Vec<PathBuf>,
    shared: Arc<ServerShared>,
    token: CancellationToken,
    arbiters: Mutex<Vec<Arbiter>>,
}

impl ServerHandle {
    pub(crate) fn new(
        tcp_addrs: Vec<SocketAddr>,
        unix_paths: Vec<PathBuf>,
        shared: Arc<ServerShared>,
        token: CancellationToken,
        arbiters: Vec<Arbiter>,
    ) -> Self {
        Self {
            tcp_addrs,
            unix_paths,
            shared,
            token,
            arbiters: Mutex::new(arbiters),
        }
    }

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
        let id = self.shared.directory.next_id();
        ServerConnection::start(id, transport, self.shared.clone(), slot);
    }

    /// A view for programs that report on the server (admin).
    pub fn view(&self) -> ServerView {
        self.shared.view()
    }

    /// Stops accepting, sends every client the shutdown notice, lets open calls finish for up
    /// to `drain`, then closes every connection and stops the arbiters.
    pub async fn shutdown(&self, drain: Duration) {
        self.token.cancel();
        for path in &self.unix_paths {
            let _ = std::fs::remove_file(path);
        }
        let _ = self.shared.shutdown.set(drain);
        self.shared.directory.begin_shutdown(drain);
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
