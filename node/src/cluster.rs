//! Node to node: the peers of a node, static (`[[peers]]`) or found by DNS (`[discovery]`,
//! see [`crate::discovery`]), connected lazily as a Ferry client and reconnected after a lost
//! connection, and what the volume program does with them: stream a volume to a peer (MIGRATE,
//! COPY), fan a replicated upload out to peers' UPLOAD streams, and ask every peer for its
//! volumes (LIST_CLUSTER). docs/CLUSTER.md describes the semantics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use ferry_actors::stream::Chunk;
use ferry_actors::{CallError, CallOptions, Client, ClientConfig, ClientStream, ErrorCode};
use futures::future::{join_all, try_join_all};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::proto::volume::{
    DeleteRequest, ListRequest, NodeVolumes, UploadReply, UploadRequest, Volume,
};
use crate::uri::{Access, AccessError, NodeUri, UriError};
use crate::volume::VolumeClient;

/// A peer node, `[[peers]]` in the TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// How clients and this node's logs name the peer (`ferry vol migrate NAME --to node2`).
    pub name: String,
    /// Where it listens: `tcp://host:port`, `tls://host:port` or `unix:///path/to/ferryd.sock`.
    pub address: String,
    /// Authenticate to the peer as this user (SCRAM-SHA-256, a `[[security.users]]` entry of
    /// the peer with role read-write), with the password in `password_file`. Without it the
    /// peer knows this node by its uid on a unix socket, or as anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The file holding `user`'s password (read at start; a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// For a `tls://` address: the CA certificate (PEM) the peer's certificate must come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer may take to answer a unary call of ours (LIST, DELETE).
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest peer name.
pub const MAX_PEER_NAME: usize = 64;

/// The `[[peers]]` of a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PeerConfigError {
    #[error(
        "peer name {name:?} is not valid: use 1 to {MAX_PEER_NAME} of A-Z a-z 0-9 . _ - (and not \"local\")"
    )]
    BadName { name: String },
    #[error("peer {name:?} is configured twice")]
    Duplicate { name: String },
    #[error("peer {name:?}: {source}")]
    Address { name: String, source: UriError },
    #[error("peer {name:?}: {reason}")]
    Access { name: String, reason: String },
    #[error(
        "name {name:?} is not valid: use 1 to {MAX_PEER_NAME} of A-Z a-z 0-9 . _ - (set `name` in the config)"
    )]
    BadOwnName { name: String },
    #[error("peer {name:?} has this node's own name")]
    OwnName { name: String },
}

/// The name a node gives itself when it has no configured name and no host name.
pub const LOCAL_NODE: &str = "local";

pub(crate) fn valid_peer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PEER_NAME
        && name != LOCAL_NODE
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The peers of one node, and the one owner of that set: the static peers of the
/// configuration first, then those discovery found (replaced whole by
/// [`PeerSet::set_discovered`] at each re-resolution). Each peer gets one connection, opened
/// on first use and shared by every call that needs that peer; a connection found lost is
/// forgotten, and the next use opens a new one.
///
/// A peer removed from the set is not cut: whoever holds a [`PeerLink`] to it holds the peer
/// itself, its connection included, until done. Only new operations no longer find it.
#[derive(Default)]
pub struct PeerSet {
    /// Static peers, then discovered ones sorted by name. Readers take a snapshot (an `Arc`
    /// clone) and never hold the lock across an await.
    members: RwLock<Arc<Vec<Arc<Peer>>>>,
    /// How many of `members` are static (they come first and never change).
    statics: usize,
    /// This node's own name, for the cluster view.
    own_name: String,
    client: ClientConfig,
    /// Each peer's volumes when it last answered a listing, and when (Unix ms): an unreachable
    /// peer's volumes are shown as last known rather than vanishing from the view.
    last_listed: Mutex<HashMap<String, (Vec<Volume>, i64)>>,
}

/// A peer that discovery found: its name (the first label of its SRV target), where it is, and
/// the shared credentials and CA of `[discovery]`.
#[derive(Debug, Clone)]
pub struct DiscoveredPeer {
    pub name: String,
    pub uri: NodeUri,
    pub access: Access,
}

/// What one call of [`PeerSet::set_discovered`] changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl PeerChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

struct Peer {
    name: String,
    uri: NodeUri,
    /// The CA for `tls://`, the credentials to authenticate with.
    access: Access,
    slot: Mutex<Slot>,
    /// Held while connecting, so concurrent users of a peer wait for one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Peer {
    fn new(name: String, uri: NodeUri, access: Access) -> Self {
        Self {
            name,
            uri,
            access,
            slot: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }
}

#[derive(Default)]
struct Slot {
    client: Option<Client>,
    /// Counts connections, to tell the current one from an older one that was replaced.
    generation: u64,
}

/// One peer's connection, as handed to a user. It holds the peer, so a peer dropped from the
/// set meanwhile (gone from DNS) keeps serving this use.
#[derive(Clone)]
pub struct PeerLink {
    pub name: String,
    pub address: String,
    pub client: Client,
    peer: Arc<Peer>,
    generation: u64,
    /// Opened for this use (not taken from the cache).
    fresh: bool,
}

impl std::fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.snapshot()
                    .iter()
                    .map(|p| (p.name.clone(), p.uri.to_string())),
            )
            .finish()
    }
}

impl PeerSet {
    /// Checks the configured peers (valid unique names, addresses that parse); connects to
    /// none of them yet.
    pub fn new(
        own_name: &str,
        configs: &[PeerConfig],
        client: ClientConfig,
    ) -> Result<Self, PeerConfigError> {
        let own_valid = own_name == LOCAL_NODE || valid_peer_name(own_name);
        if !own_valid {
            return Err(PeerConfigError::BadOwnName {
                name: own_name.to_owned(),
            });
        }
        let mut peers: Vec<Arc<Peer>> = Vec::with_capacity(configs.len());
        for config in configs {
            let name = config.name.clone();
            if !valid_peer_name(&name) {
                return Err(PeerConfigError::BadName { name });
            }
            if name == own_name {
                return Err(PeerConfigError::OwnName { name });
            }
            if peers.iter().any(|p| p.name == name) {
                return Err(PeerConfigError::Duplicate { name });
            }
            let uri =
                NodeUri::parse(&config.address).map_err(|source| PeerConfigError::Address {
                    name: name.clone(),
                    source,
                })?;
            let access = peer_access(config, &uri)?;
            peers.push(Arc::new(Peer::new(name, uri, access)));
        }
        Ok(Self {
            own_name: own_name.to_owned(),
            statics: peers.len(),
            members: RwLock::new(Arc::new(peers)),
            client,
            last_listed: Mutex::default(),
        })
    }

    /// This node's own name.
    pub fn own_name(&self) -> &str {
        &self.own_name
    }

    /// The members now; later changes do not touch this copy.
    fn snapshot(&self) -> Arc<Vec<Arc<Peer>>> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// Peer names: static ones in configuration order, then discovered ones by name.
    pub fn names(&self) -> Vec<String> {
        self.snapshot().iter().map(|p| p.name.clone()).collect()
    }

    /// Replaces the discovered peers with `found` (the node itself already left out). A peer
    /// found again at the same address keeps its connection; one at a new address is a new
    /// peer. A name that is also a static peer's is ignored: the configuration wins.
    pub fn set_discovered(&self, found: Vec<DiscoveredPeer>) -> PeerChanges {
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        let (statics, old) = members.split_at(self.statics);
        let mut next: Vec<Arc<Peer>> = statics.to_vec();
        let mut discovered: Vec<Arc<Peer>> = Vec::with_capacity(found.len());
        let mut changes = PeerChanges::default();
        for peer in found {
            if peer.name == self.own_name {
                continue;
            }
            if statics.iter().any(|p| p.name == peer.name) {
                debug!(peer = %peer.name, "discovered peer is also configured in [[peers]]: the configuration wins");
                continue;
            }
            if discovered.iter().any(|p| p.name == peer.name) {
                continue;
            }
            let kept = old
                .iter()
                .find(|p| p.name == peer.name && p.uri == peer.uri)
                .cloned();
            discovered.push(kept.unwrap_or_else(|| {
                changes.added.push(peer.name.clone());
                Arc::new(Peer::new(peer.name, peer.uri, peer.access))
            }));
        }
        for peer in old {
            if !discovered.iter().any(|p| Arc::ptr_eq(p, peer)) {
                changes.removed.push(peer.name.clone());
            }
        }
        discovered.sort_by(|a, b| a.name.cmp(&b.name));
        next.extend(discovered);
        *members = Arc::new(next);
        changes
    }

    fn find(&self, name: &str) -> Result<Arc<Peer>, CallError> {
        let members = self.snapshot();
        if let Some(peer) = members.iter().find(|p| p.name == name) {
            return Ok(peer.clone());
        }
        let known = if members.is_empty() {
            "it has none (see [[peers]] and [discovery] in its configuration)".to_owned()
        } else {
            let names: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
            format!("it has {}", names.join(", "))
        };
        Err(CallError::application(
            ErrorCode::NotFound,
            format!("this node has no peer named {name:?}: {known}"),
        ))
    }

    /// Checks that `name` is a peer now.
    pub fn check(&self, name: &str) -> Result<(), CallError> {
        self.find(name).map(drop)
    }

    /// The peers a replicated upload with `copies` copies in all uses: the first
    /// `copies - 1` of the set (static peers in configuration order, then discovered ones by
    /// name).
    pub fn replicas_for(&self, copies: u32) -> Result<Vec<String>, CallError> {
        let wanted = copies.saturating_sub(1) as usize;
        let members = self.snapshot();
        if wanted > members.len() {
            return Err(CallError::application(
                ErrorCode::BadRequest,
                format!(
                    "{copies} replicas need {wanted} peers besides this node, which has {}",
                    members.len()
                ),
            ));
        }
        Ok(members[..wanted].iter().map(|p| p.name.clone()).collect())
    }

    /// The peer's connection: the open one, or a new one.
    pub async fn connect(&self, name: &str) -> Result<PeerLink, CallError> {
        let peer = self.find(name)?;
        if let Some(link) = cached(&peer) {
            return Ok(link);
        }
        let _connecting = peer.connecting.lock().await;
        if let Some(link) = cached(&peer) {
            return Ok(link);
        }
        let unreachable = |why: String| {
            CallError::application(
                ErrorCode::ConnectionLost,
                format!("cannot reach peer {} at {}: {why}", peer.name, peer.uri),
            )
        };
        let connecting = peer.uri.connect_with(self.client.clone(), &peer.access);
        let client = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {CONNECT_TIMEOUT:?}"
                )));
            }
            Ok(Err(AccessError::Auth { user, error })) => {
                // Refused credentials are UNAUTHENTICATED; a link that died meanwhile is not.
                let code = match error.code {
                    ErrorCode::ConnectionLost | ErrorCode::DeadlineExceeded => error.code,
                    _ => ErrorCode::Unauthenticated,
                };
                return Err(CallError::application(
                    code,
                    format!(
                        "cannot authenticate to peer {} at {} as {user:?}: {}",
                        peer.name, peer.uri, error.message
                    ),
                ));
            }
            Ok(Err(error)) => return Err(unreachable(error.to_string())),
            Ok(Ok(client)) => client,
        };
        let mut slot = peer.slot.lock().unwrap_or_else(PoisonError::into_inner);
        slot.generation += 1;
        slot.client = Some(client.clone());
        debug!(peer = %peer.name, address = %peer.uri, "connected to peer");
        let generation = slot.generation;
        drop(slot);
        Ok(PeerLink {
            name: peer.name.clone(),
            address: peer.uri.to_string(),
            client,
            peer: peer.clone(),
            generation,
            fresh: true,
        })
    }

    /// Forgets a connection found lost, unless it was replaced already: the next use of the
    /// peer connects again.
    pub fn forget(&self, link: &PeerLink) {
        let mut slot = link
            .peer
            .slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.generation == link.generation && slot.client.take().is_some() {
            info!(peer = %link.name, "lost the connection to peer; will reconnect on next use");
        }
    }

    /// A peer's error as this node reports it: same code, the peer named in the message. A
    /// lost (or closing) connection is forgotten on the way.
    pub fn peer_error(&self, link: &PeerLink, error: CallError) -> CallError {
        if matches!(
            error.code,
            ErrorCode::ConnectionLost | ErrorCode::ShuttingDown
        ) {
            self.forget(link);
        }
        CallError::application(
            error.code,
            format!("peer {} ({}): {}", link.name, link.address, error.message),
        )
    }

    /// Runs `call` on the peer's connection. If a connection taken from the cache turns out
    /// to be lost, `call` runs once more on a new one; a new connection is not retried.
    pub async fn call<T, F, Fut>(&self, name: &str, call: F) -> Result<(T, PeerLink), CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let link = self.connect(name).await?;
        let error = match call(link.client.clone()).await {
            Ok(value) => return Ok((value, link)),
            Err(error) if error.code == ErrorCode::ConnectionLost && !link.fresh => {
                self.forget(&link);
                error
            }
            Err(error) => return Err(self.peer_error(&link, error)),
        };
        debug!(peer = %link.name, %error, "the peer's connection was lost; reconnecting");
        let link = self.connect(name).await?;
        match call(link.client.clone()).await {
            Ok(value) => Ok((value, link)),
            Err(error) => Err(self.peer_error(&link, error)),
        }
    }

    /// Opens an UPLOAD stream on a peer.
    pub async fn upload(
        &self,
        name: &str,
        request: &UploadRequest,
    ) -> Result<(ClientStream<UploadReply>, PeerLink), CallError> {
        self.call(name, |client| async move {
            VolumeClient::new(client).upload(request).await
        })
        .await
    }

    /// Deletes a volume on a peer.
    pub async fn delete(&self, peer: &str, volume: &str) -> Result<(), CallError> {
        let request = DeleteRequest {
            name: volume.to_owned(),
        };
        let request = &request;
        self.call(peer, |client| async move {
            volumes(client).delete(request).await
        })
        .await
        .map(drop)
    }

    /// Every peer's volumes, peers asked concurrently, in the set's order. A peer that does
    /// not answer within [`PEER_CALL_TIMEOUT`] is marked unreachable, with the volumes it had
    /// when it last answered and when that was (`listed_at_millis`; 0 and no volumes if it
    /// never did, since this node started).
    pub async fn list_all(&self) -> Vec<NodeVolumes> {
        let members = self.snapshot();
        join_all(members.iter().map(|peer| async move {
            let listed = tokio::time::timeout(
                PEER_CALL_TIMEOUT + CONNECT_TIMEOUT,
                self.call(&peer.name, |client| async move {
                    volumes(client).list(&ListRequest {}).await
                }),
            )
            .await;
            let error = match listed {
                Ok(Ok((reply, _))) => {
                    let now = crate::events::now_millis();
                    self.last_listed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(peer.name.clone(), (reply.volumes.clone(), now));
                    return NodeVolumes {
                        node: peer.name.clone(),
                        address: peer.uri.to_string(),
                        local: false,
                        reachable: true,
                        error: String::new(),
                        volumes: reply.volumes,
                        listed_at_millis: now,
                    };
                }
                Ok(Err(error)) => error.message,
                Err(_) => format!("no answer within {PEER_CALL_TIMEOUT:?}"),
            };
            let (volumes, listed_at_millis) = self
                .last_listed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&peer.name)
                .cloned()
                .unwrap_or_default();
            NodeVolumes {
                node: peer.name.clone(),
                address: peer.uri.to_string(),
                local: false,
                reachable: false,
                error,
                volumes,
                listed_at_millis,
            }
        }))
        .await
    }
}

/// The peer's open connection, if it has one.
fn cached(peer: &Arc<Peer>) -> Option<PeerLink> {
    let slot = peer.slot.lock().unwrap_or_else(PoisonError::into_inner);
    Some(PeerLink {
        name: peer.name.clone(),
        address: peer.uri.to_string(),
        client: slot.client.clone()?,
        peer: peer.clone(),
        generation: slot.generation,
        fresh: false,
    })
}

/// How to reach a peer besides its address: the CA for `tls://`, and credentials read from the
/// password file now, so a missing file stops the node at start rather than at first use.
fn peer_access(config: &PeerConfig, uri: &NodeUri) -> Result<Access, PeerConfigError> {
    shared_access(
        config.user.as_deref(),
        config.password_file.as_deref(),
        config.ca.as_deref(),
        matches!(uri, NodeUri::Tls { .. }),
    )
    .map_err(|reason| PeerConfigError::Access {
        name: config.name.clone(),
        reason,
    })
}

/// The access of a `[[peers]]` entry or of `[discovery]`'s peers: `user` and `password_file`
/// go together (the file read now), TLS needs `ca`. The error says which rule was broken.
pub(crate) fn shared_access(
    user: Option<&str>,
    password_file: Option<&Path>,
    ca: Option<&Path>,
    tls: bool,
) -> Result<Access, String> {
    if tls && ca.is_none() {
        return Err(
            "a tls:// address needs `ca`, the CA certificate (PEM) of the peer's certificate"
                .into(),
        );
    }
    // Read now, like the password file: a CA that cannot be used stops the node at start.
    if let Some(ca) = ca {
        ferry_actors::tls::ClientTls::from_ca_file(ca).map_err(|error| format!("ca: {error}"))?;
    }
    let credentials = match (user, password_file) {
        (None, None) => None,
        (Some(user), Some(file)) => {
            let password = std::fs::read_to_string(file)
                .map_err(|error| format!("reading password_file {}: {error}", file.display()))?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err(format!("password_file {} is empty", file.display()));
            }
            Some((user.to_owned(), password.to_owned()))
        }
        _ => return Err("`user` and `password_file` go together".into()),
    };
    Ok(Access {
        ca: ca.map(Path::to_path_buf),
        credentials,
    })
}

/// A volume client for unary calls to a peer, with a deadline.
fn volumes(client: Client) -> VolumeClient {
    VolumeClient::new(client).with_options(CallOptions {
        deadline: Some(PEER_CALL_TIMEOUT),
    })
}

/// The peers' UPLOAD streams of a replicated upload: every chunk goes to all of them, and
/// the set moves only as fast as its slowest member. Dropping the set aborts every stream
/// still open, so each peer discards what it received.
pub struct ReplicaSet {
    peers: Arc<PeerSet>,
    streams: Vec<(ClientStream<UploadReply>, PeerLink)>,
}

/// How one replica's commit went.
pub struct ReplicaOutcome {
    pub peer: String,
    pub result: Result<UploadReply, CallError>,
}

impl ReplicaSet {
    /// No replicas: a plain upload.
    pub fn none(peers: Arc<PeerSet>) -> Self {
        Self {
            peers,
            streams: Vec::new(),
        }
    }

    /// Opens an UPLOAD on each of `names`, concurrently, once every one of them is connected:
    /// a peer that cannot be reached fails the set before any peer is asked anything. On
    /// failure, the streams already open are aborted.
    pub async fn open(
        peers: Arc<PeerSet>,
        names: &[String],
        request: &UploadRequest,
    ) -> Result<Self, CallError> {
        try_join_all(names.iter().map(|name| peers.connect(name))).await?;
        let streams = try_join_all(names.iter().map(|name| peers.upload(name, request))).await?;
        Ok(Self { peers, streams })
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Sends a chunk to every replica; returns once each has queued it (each waited for its
    /// credit), or at the first replica that failed.
    pub async fn send(&mut self, chunk: &Chunk) -> Result<(), CallError> {
        if self.streams.is_empty() {
            return Ok(());
        }
        let peers = &self.peers;
        try_join_all(self.streams.iter_mut().map(|(stream, link)| async move {
            stream
                .send_chunk(chunk.clone())
                .await
                .map_err(|error| peers.peer_error(link, error))
        }))
        .await
        .map(drop)
    }

    /// Finishes every stream with the client's trailer (each peer checks what the client
    /// vouched for) and waits, concurrently, for each peer's REPLY: its commit.
    pub async fn finish(self, trailer: Bytes) -> Vec<ReplicaOutcome> {
        let peers = &self.peers;
        let trailer = &trailer;
        join_all(self.streams.into_iter().map(|(stream, link)| async move {
            let result = stream
                .finish_with(trailer.clone())
                .await
                .map_err(|error| peers.peer_error(&link, error));
            ReplicaOutcome {
                peer: link.name,
                result,
            }
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(name: &str, address: &str) -> DiscoveredPeer {
        DiscoveredPeer {
            name: name.into(),
            uri: NodeUri::Tcp(address.into()),
            access: Access::default(),
        }
    }

    #[test]
    fn discovered_peers_follow_the_static_ones_and_keep_what_did_not_change() {
        let statics = [PeerConfig {
            name: "static".into(),
            address: "unix:///run/static.sock".into(),
            user: None,
            password_file: None,
            ca: None,
        }];
        let peers = PeerSet::new("ferry-0", &statics, ClientConfig::default()).unwrap();
        let changes = peers.set_discovered(vec![
            found("ferry-2", "10.0.0.2:7443"),
            found("ferry-1", "10.0.0.1:7443"),
            // A static name wins; a repeated name counts once; the node's own name is left out.
            found("static", "10.0.0.9:7443"),
            found("ferry-0", "10.0.0.10:7443"),
            found("ferry-1", "10.0.0.8:7443"),
        ]);
        assert_eq!(changes.added, ["ferry-2", "ferry-1"]);
        assert!(changes.removed.is_empty());
        assert_eq!(peers.names(), ["static", "ferry-1", "ferry-2"]);
        let before = peers.find("ferry-1").unwrap();

        // Same address: the same peer (its connection kept); new address: a new peer; gone:
        // removed, yet still alive for whoever holds it.
        let gone = peers.find("ferry-2").unwrap();
        let changes = peers.set_discovered(vec![
            found("ferry-1", "10.0.0.1:7443"),
            found("ferry-3", "10.0.0.3:7443"),
        ]);
        assert_eq!(changes.added, ["ferry-3"]);
        assert_eq!(changes.removed, ["ferry-2"]);
        assert!(Arc::ptr_eq(&before, &peers.find("ferry-1").unwrap()));
        assert_eq!(gone.name, "ferry-2");
        assert_eq!(
            peers.check("ferry-2").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(peers.replicas_for(3).unwrap(), ["static", "ferry-1"]);

        let changes = peers.set_discovered(vec![found("ferry-1", "10.0.0.7:7443")]);
        assert_eq!(changes.added, ["ferry-1"]);
        assert_eq!(changes.removed, ["ferry-1", "ferry-3"]);
        assert!(!Arc::ptr_eq(&before, &peers.find("ferry-1").unwrap()));
        assert!(peers.set_discovered(Vec::new()).removed == ["ferry-1"]);
        assert_eq!(peers.names(), ["static"]);
    }
}
