//! A whole node: the volume store, the programs, the listeners and the metrics endpoint,
//! started from a checked [`NodePlan`] and shut down gracefully.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_actors::test_program::{TestProgram, TestService};
use ferry_actors::{ListenError, Server, ServerHandle};
use tracing::info;

use crate::admin::{AdminProgram, AdminService};
use crate::discovery::{Discovery, DiscoveryError};
use crate::events::{EventHub, EventsProgram, EventsService};
use crate::health::Health;
use crate::metrics::{CallMetrics, Metrics};
use crate::plan::NodePlan;
use crate::volume::{VolumeProgram, VolumeService};
use ferry_store::{StoreConfig, StoreError, VolumeStore};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("preparing data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the volume store: {0}")]
    Store(#[from] StoreError),
    #[error("the [discovery] configuration: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("binding the metrics endpoint {address}: {source}")]
    Metrics {
        address: String,
        source: std::io::Error,
    },
}

/// Where a started node can be reached.
#[derive(Debug, Clone)]
pub struct Ready {
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tcp = self.tcp.map_or_else(|| "off".into(), |a| a.to_string());
        let unix = self
            .unix
            .as_ref()
            .map_or_else(|| "off".into(), |p| p.display().to_string());
        let metrics = self.metrics.map_or_else(|| "off".into(), |a| a.to_string());
        let tls = self.tls.map_or_else(|| "off".into(), |a| a.to_string());
        write!(f, "tcp={tcp} unix={unix} metrics={metrics} tls={tls}")
    }
}

/// A running node.
pub struct Node {
    server: ServerHandle,
    ready: Ready,
    metrics_task: Option<tokio::task::JoinHandle<()>>,
    sweep_task: tokio::task::JoinHandle<()>,
    discovery_task: Option<tokio::task::JoinHandle<()>>,
    health: Arc<Health>,
    drain: Duration,
}

/// Starts a node from its checked plan; must run inside an actix `System`.
pub async fn start(plan: NodePlan) -> Result<Node, NodeError> {
    let NodePlan {
        config,
        server: server_config,
        auth,
        peers,
        discovery,
        tcp,
        tls,
        unix,
        metrics: metrics_address,
        warnings,
    } = plan;
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let data_dir = &config.data_dir;
    let peers = Arc::new(peers);
    let discovery = discovery.map(Discovery::new).transpose()?;
    let dir_error = |source| NodeError::DataDir {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(dir_error)?;
    // The unix socket lives here by default: only the node's user may reach it.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_error)?;

    let store = Arc::new(VolumeStore::open(
        data_dir,
        StoreConfig {
            resume_ttl: Duration::from_secs(config.store.resume_ttl_secs),
            max_name_len: config.store.max_name_len,
            max_volume_size: config.store.max_volume_size,
            verify_kept_data: config.store.verify_kept_data,
        },
    )?);
    info!(recovery = ?store.recovery_report(), dir = %data_dir.display(), "volume store open");
    let hub = Arc::new(EventHub::new(config.events.subscriber_queue));
    let calls = Arc::new(CallMetrics::default());

    let mut server = Server::new(server_config)
        .authentication(auth)
        .observer(calls.clone())
        .program(VolumeProgram::serve(
            VolumeService::new(
                store.clone(),
                hub.clone(),
                config.events.progress_every_bytes,
            )
            .with_peers(peers.clone()),
        ))
        .program(EventsProgram::serve(EventsService { hub: hub.clone() }))
        .program(AdminProgram::serve(AdminService {
            data_dir: data_dir.clone(),
        }));
    if config.test_program {
        server = server.program(TestProgram::serve(TestService::default()));
    }
    let tcp_on = tcp.is_some();
    let tls_on = tls.is_some();
    if let Some(address) = tcp {
        server = server.listen_tcp(address);
    }
    if let Some((address, identity)) = tls {
        server = server.listen_tls(address, identity);
    }
    if let Some(path) = &unix {
        server = server.listen_unix(path);
    }
    let server = server.start().await?;
    if let Some(path) = &unix {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(dir_error)?;
    }

    let health = Arc::new(Health::new(data_dir.clone()));
    let (metrics_task, metrics) = if let Some(address) = metrics_address {
        let (listener, local) =
            crate::metrics::bind(&address)
                .await
                .map_err(|source| NodeError::Metrics {
                    address: address.clone(),
                    source,
                })?;
        let registry = Arc::new(Metrics::new(
            calls,
            server.counters(),
            store.clone(),
            hub.clone(),
        ));
        (
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                registry,
                health.clone(),
            ))),
            Some(local),
        )
    } else {
        (None, None)
    };
    let sweep_task = tokio::spawn(sweep_partials(
        store.clone(),
        Duration::from_secs(config.store.resume_ttl_secs),
    ));
    // Plain TCP is bound first, then TLS.
    let mut bound = server.tcp_addrs().iter().copied();
    let ready = Ready {
        tcp: tcp_on.then(|| bound.next()).flatten(),
        tls: tls_on.then(|| bound.next()).flatten(),
        unix,
        metrics,
    };
    // The first resolution before the node says it is ready (bounded by the discovery
    // timeout), so its first operations already know the peers DNS has now.
    let discovery_task = match discovery {
        Some(discovery) => {
            discovery.round(&peers).await;
            info!(node = discovery.node_name(), peers = ?peers.names(), "peer discovery on");
            Some(tokio::spawn(discovery.run(peers)))
        }
        None => None,
    };
    health.serving();
    info!(%ready, "ferryd ready");
    Ok(Node {
        server,
        ready,
        metrics_task,
        sweep_task,
        discovery_task,
        health,
        drain: Duration::from_secs(config.limits.shutdown_drain_secs),
    })
}

impl Node {
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// Stops accepting, lets open calls finish (up to the configured drain time), then stops.
    /// `/readyz` answers 503 from the start of the drain, `/livez` 200 until the end.
    pub async fn shutdown(self) {
        self.health.draining();
        info!(drain = ?self.drain, "shutting down");
        self.server.shutdown(self.drain).await;
        if let Some(task) = self.metrics_task {
            task.abort();
        }
        if let Some(task) = self.discovery_task {
            task.abort();
        }
        self.sweep_task.abort();
    }
}

/// Removes partial uploads idle for longer than `ttl` while the node runs (the store also does
/// at open), checking a few times per `ttl` and at least every ten minutes.
async fn sweep_partials(store: Arc<VolumeStore>, ttl: Duration) {
    let period = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.expire_partials()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => info!(removed, "expired partial uploads removed"),
            Ok(Err(error)) => tracing::warn!(%error, "sweeping expired partial uploads failed"),
            Err(error) => tracing::warn!(%error, "the sweep task failed"),
        }
    }
}
