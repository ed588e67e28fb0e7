//! What programs may see of the server they run in ([`ServerView`]): its limits, counters,
//! uptime and connections. A leaf below the programs: a call's context carries one.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::ServerConfig;
use crate::metrics::{ConnectionStats, Counters};
use crate::server::directory::Directory;

/// What programs may see of the server they run in: its limits, uptime and connections.
#[derive(Clone)]
pub struct ServerView {
    config: Arc<ServerConfig>,
    counters: Arc<Counters>,
    started: SystemTime,
    directory: Arc<Directory>,
}

impl ServerView {
    pub(crate) fn new(
        config: Arc<ServerConfig>,
        counters: Arc<Counters>,
        started: SystemTime,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            config,
            counters,
            started,
            directory,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Figures of every open connection, by id.
    pub fn connections(&self) -> Vec<Arc<ConnectionStats>> {
        self.directory.stats()
    }

    /// Closes one connection (GOAWAY, then close); false if no such connection is open.
    pub fn disconnect(&self, id: u64) -> bool {
        self.directory.disconnect(id)
    }
}
