//! Peers found by DNS, beside the static `[[peers]]`: `[discovery]` names an SRV record (a
//! Kubernetes headless Service with a named port publishes one per ready pod), which is
//! resolved at start and again every `interval_secs`. Each SRV target becomes a peer named by
//! the first label of its host name (`ferry-1.ferry-headless.ns.svc.cluster.local` is
//! `ferry-1`), reached at the address its A/AAAA record gives and the SRV port; the node
//! itself (`node_name`) is left out. The result replaces the discovered part of the node's
//! [`PeerSet`], which keeps peers still in use alive (see there). docs/CLUSTER.md describes
//! the behaviour, docs/KUBERNETES.md the deployment.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::cluster::{DiscoveredPeer, PeerSet, valid_peer_name};
use crate::uri::{Access, NodeUri};

/// How discovered peers are reached: the scheme of their addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryScheme {
    /// Plain TCP (`tcp://ip:port`).
    #[default]
    Tcp,
    /// TLS (`tls://ip:port`), the certificate checked against the SRV target's host name:
    /// with a headless Service, `*.<service>.<namespace>.svc.cluster.local` in the
    /// certificate covers every pod.
    Tls,
}

/// `[discovery]` of the config file. Off while `srv` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The SRV name to resolve, e.g. `_ferry._tcp.ferry-headless.ferry.svc.cluster.local`. A
    /// name ending in `.` is absolute; otherwise the system resolver's search domains apply
    /// as for any lookup (in a pod they start with `<namespace>.svc.cluster.local`, so
    /// `_ferry._tcp.ferry-headless` finds the pod's own namespace's Service).
    pub srv: String,
    /// Seconds between two resolutions. Smaller finds new nodes sooner and asks the DNS
    /// server more often; the answers are cached for at most this long.
    pub interval_secs: u64,
    /// How long one resolution (the SRV record and each target's addresses) may take before
    /// it is given up and the peers found last time are kept; at most `interval_secs`.
    pub timeout_secs: u64,
    /// This node's own name, left out of the peers: `""` takes the first label of the node's
    /// `name` (by default the host name; a StatefulSet pod's is its stable name, `ferry-0`).
    pub node_name: String,
    /// The DNS server, `host:port` (`host` an IP address or a name resolved once at start);
    /// `""` uses the system's resolver configuration (`/etc/resolv.conf`).
    pub resolver: String,
    pub scheme: DiscoveryScheme,
    /// Authenticate to every discovered peer as this user (as `[[peers]]`'s `user`), with the
    /// password in `password_file`.
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// For `scheme = "tls"`: the CA certificate (PEM) of the peers' certificates.
    pub ca: Option<PathBuf>,
}

/// Default seconds between resolutions: a new pod is found within this long after it is ready.
pub const DEFAULT_INTERVAL_SECS: u64 = 10;
/// Default bound of one resolution.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            srv: String::new(),
            interval_secs: DEFAULT_INTERVAL_SECS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            node_name: String::new(),
            resolver: String::new(),
            scheme: DiscoveryScheme::Tcp,
            user: None,
            password_file: None,
            ca: None,
        }
    }
}

impl DiscoveryConfig {
    pub fn enabled(&self) -> bool {
        !self.srv.is_empty()
    }
}

/// `[discovery]` cannot be used; ferryd stops at start with this.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("srv {srv:?} is not a DNS name: {reason}")]
    BadSrv { srv: String, reason: String },
    #[error("interval_secs and timeout_secs must be at least 1")]
    ZeroDuration,
    #[error("timeout_secs ({timeout}) must not be longer than interval_secs ({interval})")]
    TimeoutNotShorter { timeout: u64, interval: u64 },
    #[error("resolver {resolver:?}: {reason}")]
    BadResolver { resolver: String, reason: String },
    #[error("reading the system resolver configuration: {0}")]
    SystemResolver(NetError),
    #[error("node_name is empty and the node's name {0:?} gives no valid one")]
    NoNodeName(String),
    #[error("{0}")]
    Access(String),
}

/// `[discovery]` checked as far as it can be without the network: what `ferryd
/// --check-config` refuses and a start would refuse too (see [`crate::plan`]). The password
/// file is read, the CA loaded, a `resolver` name resolved.
#[derive(Debug)]
pub struct DiscoveryPlan {
    srv: String,
    interval: Duration,
    timeout: Duration,
    node_name: String,
    scheme: DiscoveryScheme,
    access: Access,
    /// The DNS server; `None`: the system's.
    resolver: Option<SocketAddr>,
}

impl DiscoveryPlan {
    /// Checks the section. `own_name` is the node's name (`name`, by default the host name),
    /// whose first label is left out of the peers unless `node_name` says otherwise.
    pub fn new(config: &DiscoveryConfig, own_name: &str) -> Result<Self, DiscoveryError> {
        let srv = config.srv.clone();
        hickory_resolver::proto::rr::Name::from_ascii(&srv).map_err(|error| {
            DiscoveryError::BadSrv {
                srv: config.srv.clone(),
                reason: error.to_string(),
            }
        })?;
        if config.interval_secs == 0 || config.timeout_secs == 0 {
            return Err(DiscoveryError::ZeroDuration);
        }
        if config.timeout_secs > config.interval_secs {
            return Err(DiscoveryError::TimeoutNotShorter {
                timeout: config.timeout_secs,
                interval: config.interval_secs,
            });
        }
        let node_name = if config.node_name.is_empty() {
            let first = first_label(own_name).to_owned();
            if !valid_peer_name(&first) {
                return Err(DiscoveryError::NoNodeName(own_name.to_owned()));
            }
            first
        } else {
            config.node_name.clone()
        };
        let access = crate::cluster::shared_access(
            config.user.as_deref(),
            config.password_file.as_deref(),
            config.ca.as_deref(),
            config.scheme == DiscoveryScheme::Tls,
        )
        .map_err(DiscoveryError::Access)?;
        let resolver = match config.resolver.as_str() {
            "" => None,
            address => Some(resolver_address(address)?),
        };
        Ok(Self {
            srv,
            interval: Duration::from_secs(config.interval_secs),
            timeout: Duration::from_secs(config.timeout_secs),
            node_name,
            scheme: config.scheme,
            access,
            resolver,
        })
    }

    /// The SRV name, for `--check-config`'s summary.
    pub fn srv(&self) -> &str {
        &self.srv
    }
}

/// A `[discovery]` ready to run: the plan and its resolver.
pub struct Discovery {
    srv: String,
    interval: Duration,
    timeout: Duration,
    node_name: String,
    scheme: DiscoveryScheme,
    access: Access,
    resolver: TokioResolver,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("srv", &self.srv)
            .field("interval", &self.interval)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Why one resolution failed; the peers found last time are kept.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("resolving {name}: {source}")]
    Dns { name: String, source: NetError },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Discovery {
    /// Sets up the resolver of a checked plan (the system's configuration is read now);
    /// sends nothing. Runs inside the node's runtime.
    pub fn new(plan: DiscoveryPlan) -> Result<Self, DiscoveryError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match plan.resolver {
            None => TokioResolver::builder(provider).map_err(DiscoveryError::SystemResolver)?,
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    provider,
                )
            }
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // Answers are re-asked for at every round, however long their TTL: a pod gone must
        // leave the set within one interval.
        options.positive_max_ttl = Some(plan.interval);
        options.negative_max_ttl = Some(plan.interval);
        let resolver = builder
            .build()
            .map_err(|error| DiscoveryError::BadResolver {
                resolver: plan
                    .resolver
                    .map_or_else(|| "(system)".to_owned(), |a| a.to_string()),
                reason: error.to_string(),
            })?;
        Ok(Self {
            srv: plan.srv,
            interval: plan.interval,
            timeout: plan.timeout,
            node_name: plan.node_name,
            scheme: plan.scheme,
            access: plan.access,
            resolver,
        })
    }

    /// This node's name, which is left out of the peers.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Resolves the SRV record and its targets once: the peers it names, the node itself left
    /// out, sorted by (priority, name). An SRV name without records (NXDOMAIN, or no SRV
    /// records) is an empty set, not an error: the last pod gone leaves no peers.
    pub async fn resolve(&self) -> Result<Vec<DiscoveredPeer>, LookupError> {
        tokio::time::timeout(self.timeout, self.resolve_unbounded())
            .await
            .map_err(|_| LookupError::Timeout(self.timeout))?
    }

    async fn resolve_unbounded(&self) -> Result<Vec<DiscoveredPeer>, LookupError> {
        let lookup = match self.resolver.srv_lookup(self.srv.as_str()).await {
            Ok(lookup) => lookup,
            Err(error) if error.is_no_records_found() || error.is_nx_domain() => {
                return Ok(Vec::new());
            }
            Err(source) => {
                return Err(LookupError::Dns {
                    name: self.srv.clone(),
                    source,
                });
            }
        };
        let mut targets: Vec<(u16, String, u16)> = lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::SRV(srv) => Some((
                    srv.priority,
                    srv.target.to_ascii().trim_end_matches('.').to_owned(),
                    srv.port,
                )),
                _ => None,
            })
            .collect();
        targets.sort();
        let mut peers = Vec::with_capacity(targets.len());
        for (_, host, port) in targets {
            let name = first_label(&host).to_owned();
            if name == self.node_name || peers.iter().any(|p: &DiscoveredPeer| p.name == name) {
                continue;
            }
            if !valid_peer_name(&name) {
                warn!(target = %host, "SRV target gives no valid peer name; skipped");
                continue;
            }
            let ip = match self.resolver.lookup_ip(format!("{host}.")).await {
                Ok(ips) => ips.iter().next(),
                Err(error) if error.is_no_records_found() || error.is_nx_domain() => None,
                Err(source) => return Err(LookupError::Dns { name: host, source }),
            };
            let Some(ip) = ip else {
                // A pod that is listed but not resolvable yet (or any more): not a peer now.
                continue;
            };
            peers.push(DiscoveredPeer {
                uri: self.uri(ip, port, &host),
                name,
                access: self.access.clone(),
            });
        }
        Ok(peers)
    }

    fn uri(&self, ip: IpAddr, port: u16, host: &str) -> NodeUri {
        let address = SocketAddr::new(ip, port).to_string();
        match self.scheme {
            DiscoveryScheme::Tcp => NodeUri::Tcp(address),
            DiscoveryScheme::Tls => NodeUri::Tls {
                address,
                host: host.to_owned(),
            },
        }
    }

    /// Resolves every interval from now on (the node ran the first [`Discovery::round`] at
    /// start), updating `peers`, until dropped. A failed round (DNS server down, timeout)
    /// keeps the peers of the last good one: a DNS outage must not empty the cluster.
    pub async fn run(self, peers: Arc<PeerSet>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // An interval's first tick is immediate: that round already ran.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.round(&peers).await;
        }
    }

    /// One resolution applied to `peers`; returns whether it succeeded.
    pub async fn round(&self, peers: &PeerSet) -> bool {
        match self.resolve().await {
            Ok(found) => {
                let changes = peers.set_discovered(found);
                if !changes.is_empty() {
                    info!(srv = %self.srv, added = ?changes.added, removed = ?changes.removed,
                        peers = ?peers.names(), "discovered peers changed");
                }
                true
            }
            Err(error) => {
                warn!(srv = %self.srv, %error, "peer discovery failed; keeping the peers found last time");
                false
            }
        }
    }
}

/// `host:port` of the DNS server, a name resolved (once) by the system.
fn resolver_address(resolver: &str) -> Result<SocketAddr, DiscoveryError> {
    let bad = |reason: String| DiscoveryError::BadResolver {
        resolver: resolver.to_owned(),
        reason,
    };
    resolver
        .to_socket_addrs()
        .map_err(|error| bad(format!("{error} (give host:port)")))?
        .next()
        .ok_or_else(|| bad("the name has no address".into()))
}

fn first_label(host: &str) -> &str {
    host.split('.').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_peers_by_the_first_label() {
        assert_eq!(
            first_label("ferry-1.ferry-headless.ns.svc.cluster.local"),
            "ferry-1"
        );
        assert_eq!(first_label("node4"), "node4");
    }

    #[test]
    fn refuses_bad_sections() {
        let config = |f: fn(&mut DiscoveryConfig)| {
            let mut c = DiscoveryConfig {
                srv: "_ferry._tcp.example.test".into(),
                node_name: "a".into(),
                resolver: "127.0.0.1:53".into(),
                ..DiscoveryConfig::default()
            };
            f(&mut c);
            c
        };
        let error = |c: DiscoveryConfig| DiscoveryPlan::new(&c, "a").unwrap_err();
        assert!(matches!(
            error(config(|c| c.interval_secs = 0)),
            DiscoveryError::ZeroDuration
        ));
        assert!(matches!(
            error(config(|c| c.timeout_secs = 20)),
            DiscoveryError::TimeoutNotShorter { .. }
        ));
        assert!(matches!(
            error(config(|c| c.resolver = "no port".into())),
            DiscoveryError::BadResolver { .. }
        ));
        assert!(matches!(
            error(config(|c| c.scheme = DiscoveryScheme::Tls)),
            DiscoveryError::Access(_)
        ));
        assert!(matches!(
            error(config(|c| c.user = Some("peer".into()))),
            DiscoveryError::Access(_)
        ));
        assert!(DiscoveryPlan::new(&config(|_| {}), "a").is_ok());
    }
}
