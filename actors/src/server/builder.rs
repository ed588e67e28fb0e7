//! Building a server: its programs, authentication, observer and listeners; starting it
//! binds the listeners and hands back a [`ServerHandle`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use actix_rt::Arbiter;
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::access::AuthConfig;
use crate::auth::{AuthProgram, AuthService};
use crate::config::ServerConfig;
use crate::error::ListenError;
use crate::metrics::{NoObserver, Observer};
use crate::program::{ProgramService, Registry};
use crate::server::accept::Acceptor;
use crate::server::directory::Directory;
use crate::server::handle::ServerHandle;
use crate::server::shared::ServerShared;
use crate::tls::ServerTls;

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
            config: Arc::new(self.config),
            auth: self.auth,
            registry: self.registry,
            counters: Arc::default(),
            observer: self.observer,
            started: SystemTime::now(),
            directory: Arc::new(Directory::new()),
            per_address: Mutex::default(),
            shutdown: OnceLock::new(),
        });
        let token = CancellationToken::new();
        let acceptor = Acceptor::new(
            shared.clone(),
            arbiters.iter().map(Arbiter::handle).collect(),
        );
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
        Ok(ServerHandle::new(
            tcp_addrs, self.unix, shared, token, arbiters,
        ))
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
