//! ferryd's configuration: built-in defaults, overridden by a TOML file, then by environment
//! variables, then by command-line flags (each later source wins).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ferry_actors::codec::Limits;
use ferry_actors::{KeepaliveConfig, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::LOCAL_NODE;
pub use crate::cluster::PeerConfig;
use crate::discovery::DiscoveryConfig;
use crate::security::SecurityConfig;

pub use crate::paths::{default_data_dir, socket_in};

pub const DEFAULT_TCP: &str = "127.0.0.1:7300";
pub const DEFAULT_METRICS: &str = "127.0.0.1:7301";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// The whole configuration of a node, as the TOML file spells it (every field optional).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// How this node names itself: in the cluster view (`ferry vol list --cluster`) and to
    /// operators. Its peers know it by the name in their own `[[peers]]`, which should be the
    /// same. Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where volumes, partial uploads and metadata live.
    pub data_dir: PathBuf,
    /// The unix socket; default `<data_dir>/ferryd.sock`; `""` turns it off.
    pub unix_socket: Option<PathBuf>,
    /// TCP listen address; `""` turns it off.
    pub tcp: String,
    /// Metrics HTTP listen address (`/metrics`); `""` turns it off.
    pub metrics: String,
    pub log_format: LogFormat,
    /// Serve the test program (echo, sink, source) for diagnostics and benchmarks.
    pub test_program: bool,
    pub limits: LimitsConfig,
    pub store: StoreConfigFile,
    pub events: EventsConfig,
    /// Other nodes this node talks to: destinations of MIGRATE and COPY, replicas of
    /// replicated uploads, members of the cluster view (docs/CLUSTER.md).
    pub peers: Vec<PeerConfig>,
    /// More peers, found by DNS SRV records (docs/CLUSTER.md, "Peers found by DNS").
    pub discovery: DiscoveryConfig,
    /// TLS, users and roles (docs/SECURITY.md).
    pub security: SecurityConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_frame: u32,
    pub max_chunk: u32,
    pub stream_window: u32,
    pub connection_window: u64,
    pub max_in_flight_calls: usize,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub max_streams_per_connection: usize,
    pub max_buffered_per_connection: u64,
    /// Read blocks and download read-ahead one connection may hold (SECURITY.md).
    pub max_memory_per_connection: usize,
    pub max_send_queue: u32,
    pub handshake_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub keepalive_interval_secs: u64,
    pub keepalive_count: u32,
    /// How long in-flight calls get to finish on SIGTERM/SIGINT.
    pub shutdown_drain_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfigFile {
    /// How long a partial upload is kept for resuming after its connection was lost.
    pub resume_ttl_secs: u64,
    pub max_name_len: usize,
    pub max_volume_size: u64,
    /// A delta upload reads and hashes the blocks it keeps from the base instead of trusting
    /// the base's stored block hashes (ferry_store::StoreConfig::verify_kept_data).
    pub verify_kept_data: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events queued per subscriber before further ones are dropped for it.
    pub subscriber_queue: usize,
    /// Progress events are sent every this many bytes of a transfer.
    pub progress_every_bytes: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: None,
            data_dir: default_data_dir(),
            unix_socket: None,
            tcp: DEFAULT_TCP.into(),
            metrics: DEFAULT_METRICS.into(),
            log_format: LogFormat::Human,
            test_program: true,
            limits: LimitsConfig::default(),
            store: StoreConfigFile::default(),
            events: EventsConfig::default(),
            peers: Vec::new(),
            discovery: DiscoveryConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let server = ServerConfig::default();
        let keepalive = KeepaliveConfig::default();
        Self {
            max_frame: server.limits.max_frame,
            max_chunk: server.limits.max_chunk,
            stream_window: server.stream_window,
            connection_window: server.connection_window,
            max_in_flight_calls: server.max_in_flight_calls,
            max_connections: server.max_connections,
            max_connections_per_address: server.max_connections_per_address,
            max_streams_per_connection: server.max_streams_per_connection,
            max_buffered_per_connection: server.max_buffered_per_connection,
            max_memory_per_connection: server.max_memory_per_connection,
            max_send_queue: server.max_send_queue,
            handshake_timeout_secs: server.handshake_timeout.as_secs(),
            idle_timeout_secs: server.idle_timeout.as_secs(),
            keepalive_interval_secs: keepalive.interval.as_secs(),
            keepalive_count: keepalive.count,
            shutdown_drain_secs: 10,
        }
    }
}

impl Default for StoreConfigFile {
    fn default() -> Self {
        Self {
            resume_ttl_secs: 24 * 3600,
            max_name_len: 128,
            max_volume_size: ferry_store::DEFAULT_MAX_VOLUME_SIZE,
            verify_kept_data: false,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            subscriber_queue: 256,
            progress_every_bytes: 64 * 1024 * 1024,
        }
    }
}

impl NodeConfig {
    /// The name this node calls itself by: `name`, else the host name, else `local`.
    pub fn node_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let mut buffer = [0u8; 256];
            // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
            let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
            let end = buffer.iter().position(|&b| b == 0).unwrap_or(0);
            match std::str::from_utf8(&buffer[..end]) {
                Ok(host) if ok && !host.is_empty() => host.to_owned(),
                _ => LOCAL_NODE.to_owned(),
            }
        })
    }

    /// The unix socket path, unless turned off.
    pub fn unix_socket_path(&self) -> Option<PathBuf> {
        match &self.unix_socket {
            None => Some(socket_in(&self.data_dir)),
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
        }
    }

    /// Makes the file's relative paths relative to `dir`, the file's own directory: a config
    /// file names the files next to it (`tls_cert = "node.pem"`) wherever ferryd is started
    /// from. Paths from flags and the environment stay relative to the working directory, as
    /// on any command line.
    fn resolve_paths(&mut self, dir: &Path) {
        let resolve = |path: &mut PathBuf| {
            if !path.as_os_str().is_empty() && path.is_relative() {
                *path = dir.join(&*path);
            }
        };
        resolve(&mut self.data_dir);
        if let Some(socket) = &mut self.unix_socket {
            resolve(socket);
        }
        resolve(&mut self.security.tls_cert);
        resolve(&mut self.security.tls_key);
        for peer in &mut self.peers {
            peer.password_file.iter_mut().for_each(resolve);
            peer.ca.iter_mut().for_each(resolve);
        }
        self.security.users_file.iter_mut().for_each(resolve);
        self.discovery.password_file.iter_mut().for_each(resolve);
        self.discovery.ca.iter_mut().for_each(resolve);
    }

    pub fn server_config(&self) -> ServerConfig {
        let l = &self.limits;
        ServerConfig {
            limits: Limits {
                max_frame: l.max_frame,
                max_chunk: l.max_chunk,
            },
            max_in_flight_calls: l.max_in_flight_calls,
            max_connections: l.max_connections,
            max_connections_per_address: l.max_connections_per_address,
            max_streams_per_connection: l.max_streams_per_connection,
            max_buffered_per_connection: l.max_buffered_per_connection,
            max_memory_per_connection: l.max_memory_per_connection,
            max_send_queue: l.max_send_queue,
            handshake_timeout: Duration::from_secs(l.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(l.idle_timeout_secs),
            keepalive: (l.keepalive_interval_secs > 0).then(|| KeepaliveConfig {
                interval: Duration::from_secs(l.keepalive_interval_secs),
                count: l.keepalive_count,
            }),
            stream_window: l.stream_window,
            connection_window: l.connection_window,
            ..ServerConfig::default()
        }
    }
}

/// ferryd's command line. Every flag also reads an environment variable; flags win over the
/// environment, which wins over the config file, which wins over the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "ferryd",
    version,
    about = "The Ferry node: a volume store served over the Ferry protocol",
    after_help = "Exit codes: 0 clean shutdown (or a good --check-config), 2 bad command line, \
                  78 a configuration ferryd refuses (EX_CONFIG; at start or with --check-config), \
                  1 anything else (a port in use, the data directory locked by another node)."
)]
pub struct Args {
    /// TOML config file (see deploy/ferryd.example.toml).
    #[arg(short, long, env = "FERRYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/ferry or ~/.local/share/ferry].
    #[arg(long, env = "FERRYD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Unix socket path ("" turns it off) [default: <data-dir>/ferryd.sock].
    #[arg(long, env = "FERRYD_UNIX_SOCKET", value_parser = path_or_empty())]
    pub unix_socket: Option<PathBuf>,
    /// TCP listen address ("" turns it off) [default: 127.0.0.1:7300].
    #[arg(long, env = "FERRYD_TCP")]
    pub tcp: Option<String>,
    /// Metrics listen address ("" turns it off) [default: 127.0.0.1:7301].
    #[arg(long, env = "FERRYD_METRICS")]
    pub metrics: Option<String>,
    /// Log format; the filter comes from FERRYD_LOG (e.g. "info", "ferry_actors=debug").
    #[arg(long, env = "FERRYD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Do not serve the test program (env: 1/0, true/false, yes/no, on/off).
    #[arg(long, env = "FERRYD_NO_TEST_PROGRAM", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_test_program: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the effective configuration as a start would (addresses, TLS files, users,
    /// peers, directories) without listening or opening the store, then exit: 0 if ferryd
    /// would start with it, 78 (EX_CONFIG) if it would refuse it.
    #[arg(long, conflicts_with = "print_config")]
    pub check_config: bool,
}

/// Parses a path, accepting "" (which turns the unix socket off): clap's own path parser
/// refuses empty values.
fn path_or_empty() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Args {
    /// Defaults, then the file, then environment and flags.
    pub fn load(&self) -> Result<NodeConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut config: NodeConfig =
                    toml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: path.clone(),
                        source,
                    })?;
                config.resolve_paths(path.parent().unwrap_or(Path::new("")));
                config
            }
            None => NodeConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(socket) = &self.unix_socket {
            config.unix_socket = Some(socket.clone());
        }
        if let Some(tcp) = &self.tcp {
            config.tcp = tcp.clone();
        }
        if let Some(metrics) = &self.metrics {
            config.metrics = metrics.clone();
        }
        if let Some(format) = self.log_format {
            config.log_format = format;
        }
        if self.no_test_program {
            config.test_program = false;
        }
        Ok(config)
    }
}
