//! State every connection of a server shares ([`ServerShared`]), and a connection's place in
//! the server's connection limits ([`ConnectionSlot`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::access::AuthConfig;
use crate::config::ServerConfig;
use crate::metrics::{Counters, Observer};
use crate::program::Registry;
use crate::server::directory::Directory;
use crate::server::view::ServerView;

/// State every connection of a server shares.
pub(crate) struct ServerShared {
    pub config: Arc<ServerConfig>,
    /// `None`: no authentication, every connection may call everything.
    pub auth: Option<AuthConfig>,
    pub registry: Registry,
    pub counters: Arc<Counters>,
    pub observer: Arc<dyn Observer>,
    pub started: SystemTime,
    /// The open connections.
    pub directory: Arc<Directory>,
    /// Open connections per source address (TCP).
    pub per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Set once shutdown began, to the drain time; connections that start later drain at once.
    pub shutdown: OnceLock<Duration>,
}

impl ServerShared {
    /// What programs may see of this server.
    pub fn view(&self) -> ServerView {
        ServerView::new(
            self.config.clone(),
            self.counters.clone(),
            self.started,
            self.directory.clone(),
        )
    }
}

/// A connection's place in the server's limits; given back when the connection ends, however
/// it ends (including a failed TLS handshake).
pub(crate) struct ConnectionSlot {
    pub shared: Arc<ServerShared>,
    pub address: Option<IpAddr>,
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
