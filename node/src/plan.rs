//! A [`NodeConfig`] checked into what a node needs to start: listener addresses that resolve,
//! the TLS identity loaded, the users decoded, the peers parsed (and their password files and
//! CAs read). [`crate::node::start`] starts from a [`NodePlan`] and `ferryd --check-config`
//! stops after making one, so the check refuses exactly what a start would refuse before it
//! touches the network or the store.
//!
//! Making a plan binds no socket and writes nothing: the data directory is only looked at
//! (it is created at start). What only a start can find out (a port already in use, the store
//! locked by another node) is not part of the plan.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};

use ferry_actors::auth::AuthConfig;
use ferry_actors::tls::{ServerTls, TlsError};
use ferry_actors::{ClientConfig, ServerConfig};

use crate::cluster::{PeerConfigError, PeerSet};
use crate::config::NodeConfig;
use crate::discovery::{DiscoveryError, DiscoveryPlan};
use crate::security::SecurityError;

/// The longest unix socket path the kernel takes: `sun_path` holds 108 bytes with the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Why a configuration cannot start a node.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{key} = {address:?} is not a listen address (host:port, e.g. 127.0.0.1:7300): {source}"
    )]
    Address {
        key: &'static str,
        address: String,
        source: std::io::Error,
    },
    #[error("{first} and {second} both listen on {address}")]
    SameAddress {
        first: &'static str,
        second: &'static str,
        address: String,
    },
    #[error("data_dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("unix_socket {path}: {reason}")]
    UnixSocket { path: PathBuf, reason: String },
    #[error("security settings: {0}")]
    Security(#[from] SecurityError),
    #[error("[security] TLS identity: {0}")]
    Tls(#[from] TlsError),
    #[error("the [[peers]] configuration: {0}")]
    Peers(#[from] PeerConfigError),
    #[error("the [discovery] configuration: {0}")]
    Discovery(#[from] DiscoveryError),
}

/// Everything a node starts from, checked.
pub struct NodePlan {
    pub config: NodeConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub peers: PeerSet,
    /// Peers found by DNS, unless `[discovery]` is off.
    pub discovery: Option<DiscoveryPlan>,
    /// The plain TCP listen address, unless turned off.
    pub tcp: Option<String>,
    /// The TLS listen address and this node's identity, unless turned off.
    pub tls: Option<(String, ServerTls)>,
    pub unix: Option<PathBuf>,
    /// The metrics listen address, unless turned off.
    pub metrics: Option<String>,
    /// What the node accepts but the operator should change (deprecated settings), for the
    /// log at start and for `--check-config`.
    pub warnings: Vec<String>,
}

impl NodePlan {
    /// Checks `config` as a start would, in the order a start needs its parts.
    pub fn new(config: &NodeConfig) -> Result<Self, PlanError> {
        check_data_dir(&config.data_dir)?;
        let security = &config.security;
        let tcp = listen_address("tcp", &config.tcp)?;
        security.check_plain_tcp(&config.tcp)?;
        let tls = match listen_address("[security] tls", &security.tls)? {
            None => None,
            Some(address) => {
                if security.tls_cert.as_os_str().is_empty()
                    || security.tls_key.as_os_str().is_empty()
                {
                    return Err(SecurityError::TlsFilesMissing.into());
                }
                Some((
                    address,
                    ServerTls::from_files(
                        &security.tls_cert,
                        &security.tls_key,
                        security.tls_min_version.into(),
                    )?,
                ))
            }
        };
        let metrics = listen_address("metrics", &config.metrics)?;
        let listeners = [
            ("tcp", tcp.as_deref()),
            ("[security] tls", tls.as_ref().map(|(a, _)| a.as_str())),
            ("metrics", metrics.as_deref()),
        ];
        check_distinct(&listeners)?;
        let unix = config.unix_socket_path();
        if let Some(path) = &unix {
            check_socket_path(path, &config.data_dir)?;
        }
        let server = config.server_config();
        let peers = PeerSet::new(
            &config.node_name(),
            &config.peers,
            peer_client_config(&server),
        )?;
        let discovery = match config.discovery.enabled() {
            true => Some(DiscoveryPlan::new(&config.discovery, peers.own_name())?),
            false => None,
        };
        Ok(Self {
            auth: security.auth_config()?,
            config: config.clone(),
            server,
            peers,
            discovery,
            tcp,
            tls,
            unix,
            metrics,
            warnings: security.warnings(),
        })
    }

    /// One line for `ferryd --check-config`: what the node would listen on and whom it knows.
    pub fn summary(&self) -> String {
        let or_off = |address: Option<&str>| address.unwrap_or("off").to_owned();
        format!(
            "configuration ok: name={} tcp={} tls={} unix={} metrics={} data_dir={} peers={} discovery={} users={}",
            self.peers.own_name(),
            or_off(self.tcp.as_deref()),
            or_off(self.tls.as_ref().map(|(address, _)| address.as_str())),
            self.unix
                .as_ref()
                .map_or_else(|| "off".into(), |p| p.display().to_string()),
            or_off(self.metrics.as_deref()),
            self.config.data_dir.display(),
            self.peers.len(),
            self.discovery.as_ref().map_or("off", DiscoveryPlan::srv),
            self.config.security.users.len(),
        )
    }
}

/// How a node talks to its peers: with its own frame limits, stream window and keepalive.
fn peer_client_config(server: &ServerConfig) -> ClientConfig {
    ClientConfig {
        limits: server.limits,
        keepalive: server.keepalive,
        stream_window: server.stream_window,
        max_memory_per_connection: server.max_memory_per_connection,
        ..ClientConfig::default()
    }
}

/// `""` is off; anything else must resolve to at least one socket address, as binding needs.
/// (A host name is looked up, as the bind would look it up.)
fn listen_address(key: &'static str, address: &str) -> Result<Option<String>, PlanError> {
    if address.is_empty() {
        return Ok(None);
    }
    let error = |source| PlanError::Address {
        key,
        address: address.to_owned(),
        source,
    };
    let mut addrs = address.to_socket_addrs().map_err(error)?;
    if addrs.next().is_none() {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "it resolves to no address",
        )));
    }
    Ok(Some(address.to_owned()))
}

/// Two listeners on one fixed address: the second bind would fail. (Port 0 picks a free port
/// for each, so it may repeat.)
fn check_distinct(listeners: &[(&'static str, Option<&str>)]) -> Result<(), PlanError> {
    let on: Vec<_> = listeners
        .iter()
        .filter_map(|(key, address)| address.map(|a| (*key, a)))
        .filter(|(_, address)| !address.ends_with(":0"))
        .collect();
    for (i, (first, address)) in on.iter().enumerate() {
        if let Some((second, _)) = on[i + 1..].iter().find(|(_, other)| other == address) {
            return Err(PlanError::SameAddress {
                first,
                second,
                address: (*address).to_owned(),
            });
        }
    }
    Ok(())
}

/// The data directory is created at start if missing: it must be a directory, or be creatable
/// in the nearest directory above it that exists.
fn check_data_dir(path: &Path) -> Result<(), PlanError> {
    let refuse = |reason: String| PlanError::DataDir {
        path: path.to_owned(),
        reason,
    };
    if path.as_os_str().is_empty() {
        return Err(refuse("is empty".into()));
    }
    let existing = path
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.symlink_metadata().is_ok())
        .unwrap_or(Path::new("."));
    let meta =
        std::fs::metadata(existing).map_err(|e| refuse(format!("{}: {e}", existing.display())))?;
    if !meta.is_dir() {
        return Err(refuse(format!("{} is not a directory", existing.display())));
    }
    if !writable(existing) {
        return Err(refuse(if existing == path {
            "is not writable by this user".into()
        } else {
            format!(
                "does not exist and {} is not writable by this user",
                existing.display()
            )
        }));
    }
    Ok(())
}

/// The unix socket's path must fit `sun_path`, and its directory must exist or be the data
/// directory (which the start creates).
fn check_socket_path(path: &Path, data_dir: &Path) -> Result<(), PlanError> {
    let refuse = |reason: String| PlanError::UnixSocket {
        path: path.to_owned(),
        reason,
    };
    let length = path.as_os_str().len();
    if length > MAX_SOCKET_PATH {
        return Err(refuse(format!(
            "is {length} bytes long; a unix socket path has at most {MAX_SOCKET_PATH}"
        )));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if dir != data_dir && !dir.is_dir() => Err(refuse(format!(
            "its directory {} does not exist",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Whether this process may create files in `dir` (write and search permission, as the
/// kernel decides them for this user, root included).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}
