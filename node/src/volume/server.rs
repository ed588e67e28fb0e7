//! The volume program's server: create, list, inspect, delete, upload and download volumes,
//! and move them between nodes (migrate, copy, replicated uploads, the cluster view;
//! docs/CLUSTER.md).
//!
//! Disk work runs on tokio's blocking pool, never on a connection's arbiter, so a slow disk
//! delays only the transfers that use it. Uploads are committed only after the client's finish
//! (synced, checksum checked, renamed into place); the REPLY is that confirmation.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ferry_actors::codec::{decode_message, encode_message};
use ferry_actors::memory::MemoryBudget;
use ferry_actors::program::CallContext;
use ferry_actors::stream::{Chunk, Incoming, Outgoing};
use ferry_actors::{CallError, ClientStream, ErrorCode};
use ferry_store::blockhash::{BLOCK_SIZE, TreeHash};
use ferry_store::{
    BlockHashes, KEEP_BUFFER, MAX_PAGE, StoreError, Upload, UploadOptions, VolumeInfo, VolumeStore,
};
use futures::future::join_all;
use tracing::{info, warn};

use crate::cluster::{PeerLink, PeerSet, ReplicaSet};
use crate::events::{EventHub, now_millis};
use crate::proto::events::{self, event};
use crate::proto::volume::{
    BlockHashesReply, BlockHashesRequest, CreateRequest, DeleteReply, DeleteRequest, DownloadReply,
    DownloadRequest, InfoRequest, ListClusterReply, ListClusterRequest, ListReply, ListRequest,
    NodeVolumes, PeerTransferReply, PeerTransferRequest, Replica, UploadFinish, UploadReply,
    UploadRequest, UploadStatusReply, UploadStatusRequest, Volume,
};
use crate::volume::blocking::{blocking, run, store_error};
use crate::volume::client::checksum_bytes;
use crate::volume::delta::{self, BaseHashes, SendError, read_blocks, send_blocks, send_runs};
use crate::volume::disk::{WriteBehind, read_ahead};
use crate::volume::program::{VolumeClient, VolumeHandler};
use crate::volume::progress::Progress;

/// Serves the volume program from a store, publishing what happens to an event hub.
pub struct VolumeService {
    store: Arc<VolumeStore>,
    events: Arc<EventHub>,
    progress_every: u64,
    peers: Arc<PeerSet>,
}

impl VolumeService {
    pub fn new(store: Arc<VolumeStore>, events: Arc<EventHub>, progress_every: u64) -> Self {
        Self {
            store,
            events,
            progress_every: progress_every.max(1),
            peers: Arc::default(),
        }
    }

    /// The nodes this one migrates and copies to, replicates to, and lists in the cluster
    /// view (none by default).
    pub fn with_peers(mut self, peers: Arc<PeerSet>) -> Self {
        self.peers = peers;
        self
    }
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn volume(info: &VolumeInfo) -> Volume {
    Volume {
        name: info.name.clone(),
        size: info.size,
        allocated: info.allocated,
        checksum: info.checksum.map(|c| c.to_vec().into()).unwrap_or_default(),
        created_millis: millis(info.created),
        modified_millis: millis(info.modified),
    }
}

fn checksum_arg(bytes: &[u8]) -> Result<Option<[u8; 32]>, CallError> {
    match bytes.len() {
        0 => Ok(None),
        32 => Ok(Some(bytes.try_into().expect("length checked"))),
        n => Err(CallError::application(
            ErrorCode::BadRequest,
            format!("a checksum must be 32 bytes of BLAKE3, got {n}"),
        )),
    }
}

/// The checksum an upload's finish vouches for: its trailer, an `UploadFinish`.
fn vouched(trailer: &[u8]) -> Result<Option<[u8; 32]>, CallError> {
    let finish: UploadFinish = decode_message(trailer).map_err(|error| {
        CallError::application(
            ErrorCode::BadRequest,
            format!("the upload's finish is not an UploadFinish: {error}"),
        )
    })?;
    checksum_arg(&finish.checksum)
}

impl VolumeHandler for VolumeService {
    async fn create(&self, request: CreateRequest, _: CallContext) -> Result<Volume, CallError> {
        let store = self.store.clone();
        let info = blocking(move || store.create(&request.name, request.size)).await?;
        self.events
            .publish(event::Kind::Created(events::VolumeCreated {
                name: info.name.clone(),
                size: info.size,
            }));
        Ok(volume(&info))
    }

    async fn list(&self, _: ListRequest, _: CallContext) -> Result<ListReply, CallError> {
        let store = self.store.clone();
        let volumes = blocking(move || store.list()).await?;
        Ok(ListReply {
            volumes: volumes.iter().map(volume).collect(),
        })
    }

    async fn info(&self, request: InfoRequest, _: CallContext) -> Result<Volume, CallError> {
        let store = self.store.clone();
        Ok(volume(&blocking(move || store.info(&request.name)).await?))
    }

    async fn delete(
        &self,
        request: DeleteRequest,
        _: CallContext,
    ) -> Result<DeleteReply, CallError> {
        let store = self.store.clone();
        let name = request.name.clone();
        blocking(move || store.delete(&name)).await?;
        self.events
            .publish(event::Kind::Deleted(events::VolumeDeleted {
                name: request.name,
            }));
        Ok(DeleteReply {})
    }

    async fn upload(
        &self,
        request: UploadRequest,
        context: CallContext,
        mut incoming: Incoming,
    ) -> Result<UploadReply, CallError> {
        // A replicated upload succeeds or fails as a whole on every node, so no part of it
        // (this node's copy, or a peer's copy marked `replica`) can be resumed on its own.
        let replicated = request.replicas > 1 || request.replica;
        if replicated && request.resume {
            return Err(CallError::application(
                ErrorCode::BadRequest,
                "a replicated upload cannot be resumed: upload again without resume",
            ));
        }
        let targets = if request.replicas > 1 {
            self.peers.replicas_for(request.replicas)?
        } else {
            Vec::new()
        };
        let base = checksum_arg(&request.base_checksum)?;
        if base.is_some() && (!request.overwrite || replicated) {
            return Err(CallError::application(
                ErrorCode::BadRequest,
                "a delta upload (base_checksum) replaces its base: it needs overwrite, and cannot be replicated",
            ));
        }
        let options = UploadOptions {
            expected_size: request.expected_size,
            expected_checksum: checksum_arg(&request.expected_checksum)?,
            overwrite: request.overwrite,
            base,
            // Not resumable: the store discards the partial data if this handler ends without
            // a decision (dropped with its lost connection), and recovery removes it if the
            // node dies meanwhile.
            resumable: !replicated,
        };
        let store = self.store.clone();
        let name = request.name.clone();
        let resume = request.resume;
        let mut upload = blocking(move || {
            if resume {
                store.resume_upload(&name)
            } else {
                store.begin_upload(&name, options)
            }
        })
        .await?;
        let resumed_from = upload.offset();
        if let Some(theirs) = checksum_arg(&request.resume_prefix_checksum)?
            && resume
        {
            let ours = upload.content_so_far().map_err(store_error)?;
            if ours != theirs {
                // Dropping the upload keeps it, as it was, for a resume with the right file.
                return Err(CallError::application(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "the partial upload of {:?} does not start as your file does: its {resumed_from} bytes hash to {} but yours to {}; resume with the file it was begun with, or upload again without --resume",
                        request.name,
                        hex::encode(ours),
                        hex::encode(theirs)
                    ),
                ));
            }
        }
        let total = upload.expected_size().unwrap_or(0);
        let mut progress = Progress::new(
            &self.events,
            self.progress_every,
            &request.name,
            events::Direction::Upload,
            context.peer().to_string(),
            resumed_from,
            total,
        );
        let mut replicas = ReplicaSet::none(self.peers.clone());
        if !targets.is_empty() {
            // The peers check the same size and checksum; they never replicate further, and
            // never keep their copy for resuming.
            let forward = UploadRequest {
                replicas: 0,
                replica: true,
                ..request.clone()
            };
            match ReplicaSet::open(self.peers.clone(), &targets, &forward).await {
                Ok(opened) => replicas = opened,
                Err(error) => {
                    info!(name = %request.name, %error, "a replica could not be opened");
                    discard(upload, &request.name).await;
                    progress.failed(&error);
                    return Err(error);
                }
            }
        }
        let (mut holes, mut kept) = (0, 0);
        let mut failure = None;
        // A delta's copy buffer is memory the peer makes this node hold: charged for as long
        // as the upload lives (a connection full of delta uploads waits for room).
        let _keep_buffer = match base {
            Some(_) => Some(context.memory().charge(KEEP_BUFFER).await),
            None => None,
        };
        let disk = WriteBehind::start(upload);
        loop {
            let chunk = match incoming.recv().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let n = chunk.len();
            match chunk {
                Chunk::Hole(length) => holes += length,
                Chunk::Keep(length) => kept += length,
                Chunk::Data(_) => {}
            }
            // The next chunk is taken from the client only once this one is queued for the
            // disk here (at most WRITE_BEHIND chunks ahead of it) and for every replica: the
            // slowest of them paces the client.
            let (queued, forwarded) =
                futures::join!(disk.write(chunk.clone()), replicas.send(&chunk));
            if !queued {
                // The writer stopped on an error, which `finish` gives back.
                break;
            }
            if let Err(error) = forwarded {
                failure = Some(error);
                break;
            }
            progress.advance(n).await;
        }
        if failure.is_some() {
            disk.stop();
        }
        let (mut upload, written) = disk.finish().await?;
        let mut disk_full = false;
        // What the client's finish vouches for, checked at commit (here and on replicas).
        let mut trailer = Bytes::new();
        if failure.is_none() && written.is_ok() {
            let vouch = match incoming.trailer().await {
                Ok(bytes) => {
                    trailer = bytes;
                    vouched(&trailer).and_then(|checksum| match checksum {
                        Some(checksum) => upload.vouch(checksum).map_err(store_error),
                        None => Ok(()),
                    })
                }
                Err(error) => Err(error),
            };
            if let Err(error) = vouch {
                failure = Some(error);
            }
        }
        if let (None, Err(error)) = (&failure, written) {
            disk_full = error.is_disk_full() && upload.resumable();
            let mut error = store_error(error);
            if disk_full {
                error.message += "; the node keeps what it received: make room, then resume";
            }
            failure = Some(error);
        }
        if let Some(error) = failure {
            // A lost connection or a full disk keeps the partial data for resuming; anything
            // else (an abort, a refused chunk, a failed replica) discards it, as does any
            // failure of a replicated upload, here or on a replica (not resumable). Dropping
            // the replicas' streams makes every peer discard too.
            let keep = (error.code == ErrorCode::ConnectionLost || disk_full) && upload.resumable();
            drop(replicas);
            info!(name = %request.name, %error, keep, "upload ended early");
            let cleanup = blocking(move || {
                if keep {
                    upload.suspend()
                } else {
                    upload.abort()
                }
            })
            .await;
            if let Err(cleanup) = cleanup {
                warn!(name = %request.name, error = %cleanup, "cleaning up a partial upload failed");
            }
            progress.failed(&error);
            return Err(error);
        }
        if !replicas.is_empty() {
            // Runs to its end even if this call is dropped meanwhile: the replicas were told
            // to commit, so the outcome must be settled on every node.
            let commit = commit_replicated(
                self.store.clone(),
                self.peers.clone(),
                upload,
                replicas,
                trailer,
                progress,
            );
            let (info, replicas) = actix_rt::spawn(commit).await.map_err(|error| {
                CallError::application(
                    ErrorCode::Internal,
                    format!("the replicated commit failed: {error}"),
                )
            })??;
            return Ok(UploadReply {
                volume: Some(volume(&info)),
                resumed_from,
                hole_bytes: holes,
                replicas,
                kept_bytes: kept,
            });
        }
        let committed = blocking(move || upload.commit()).await;
        match committed {
            Ok(info) => {
                progress.finished();
                self.events
                    .publish(event::Kind::Uploaded(events::VolumeUploaded {
                        name: info.name.clone(),
                        size: info.size,
                        checksum: checksum_bytes(info.checksum),
                    }));
                Ok(UploadReply {
                    volume: Some(volume(&info)),
                    resumed_from,
                    hole_bytes: holes,
                    replicas: Vec::new(),
                    kept_bytes: kept,
                })
            }
            Err(error) => {
                progress.failed(&error);
                Err(error)
            }
        }
    }

    async fn upload_status(
        &self,
        request: UploadStatusRequest,
        _: CallContext,
    ) -> Result<UploadStatusReply, CallError> {
        let store = self.store.clone();
        let status = blocking(move || store.upload_status(&request.name)).await?;
        // A partial upload that cannot be resumed is not offered: it is a replicated upload's
        // copy, open right now or about to be removed.
        Ok(match status.filter(|status| status.resumable) {
            None => UploadStatusReply::default(),
            Some(status) => UploadStatusReply {
                exists: true,
                offset: status.offset,
                expected_size: status.expected_size,
                expected_checksum: status
                    .expected_checksum
                    .map(|c| c.to_vec().into())
                    .unwrap_or_default(),
                updated_millis: millis(status.updated),
            },
        })
    }

    async fn download(
        &self,
        request: DownloadRequest,
        context: CallContext,
        mut outgoing: Outgoing,
    ) -> Result<DownloadReply, CallError> {
        let store = self.store.clone();
        let name = request.name.clone();
        let length = (request.length > 0).then_some(request.length);
        let pinned = checksum_arg(&request.expected_checksum)?;
        let download = blocking(move || store.open_download(&name, request.offset, length)).await?;
        if let Some(pinned) = pinned
            && download.volume().checksum != Some(pinned)
        {
            return Err(CallError::application(
                ErrorCode::FailedPrecondition,
                format!(
                    "volume {:?} is not the version with blake3 {} any more",
                    request.name,
                    hex::encode(pinned)
                ),
            ));
        }
        let max = context.server().config().limits.max_chunk as usize;
        let mut progress = Progress::new(
            &self.events,
            self.progress_every,
            &request.name,
            events::Direction::Download,
            context.peer().to_string(),
            0,
            download.len(),
        );
        // Read and hashed on one blocking thread a few chunks ahead: a hand-off to the blocking
        // pool per chunk cost more in wake-ups than the read, and hashing (of a large hole,
        // say) never holds the connection's thread.
        let halted = Some(outgoing.halted());
        let (mut chunks, digest) =
            read_ahead(download, max, true, context.memory().clone(), halted);
        let (mut bytes, mut hole_bytes) = (0, 0);
        let outcome: Result<(), CallError> = async {
            while let Some(chunk) = chunks.recv().await {
                let chunk = chunk.map_err(store_error)?;
                bytes += chunk.len();
                if let Chunk::Hole(length) = chunk {
                    hole_bytes += length;
                }
                progress.advance(chunk.len()).await;
                outgoing.send_chunk(chunk).await?;
            }
            outgoing.finish().await
        }
        .await;
        match outcome {
            Ok(()) => {
                progress.finished();
                let checksum = digest.await.map_err(|_| {
                    CallError::application(ErrorCode::Internal, "the download's reader stopped")
                })?;
                Ok(DownloadReply {
                    bytes,
                    hole_bytes,
                    checksum: checksum.to_vec().into(),
                })
            }
            Err(error) => {
                progress.failed(&error);
                Err(error)
            }
        }
    }

    async fn migrate(
        &self,
        request: PeerTransferRequest,
        context: CallContext,
    ) -> Result<PeerTransferReply, CallError> {
        self.to_peer(request, context, true).await
    }

    async fn copy(
        &self,
        request: PeerTransferRequest,
        context: CallContext,
    ) -> Result<PeerTransferReply, CallError> {
        self.to_peer(request, context, false).await
    }

    async fn list_cluster(
        &self,
        _: ListClusterRequest,
        _: CallContext,
    ) -> Result<ListClusterReply, CallError> {
        let store = self.store.clone();
        let (local, peers) = futures::join!(blocking(move || store.list()), self.peers.list_all());
        let mut nodes = vec![NodeVolumes {
            node: self.peers.own_name().into(),
            address: String::new(),
            local: true,
            reachable: true,
            error: String::new(),
            volumes: local?.iter().map(volume).collect(),
            listed_at_millis: now_millis(),
        }];
        nodes.extend(peers);
        Ok(ListClusterReply { nodes })
    }

    async fn block_hashes(
        &self,
        request: BlockHashesRequest,
        _: CallContext,
    ) -> Result<BlockHashesReply, CallError> {
        let store = self.store.clone();
        let name = request.name.clone();
        let max = match request.max_blocks {
            0 => MAX_PAGE,
            n => u64::from(n),
        };
        let (info, hashes) =
            blocking(move || store.block_hashes(&name, request.first_block, max)).await?;
        let mut reply = BlockHashesReply {
            volume: Some(volume(&info)),
            ..Default::default()
        };
        match hashes {
            BlockHashes::Available(page) => {
                reply.block_size = page.block_size;
                reply.total_blocks = page.total;
                reply.first_block = page.first;
                reply.hashes = page.hashes.into();
            }
            BlockHashes::Missing => {
                reply.unavailable =
                    "this version has no block hashes (made by CREATE or an older node)".into();
            }
            BlockHashes::Unusable(why) => {
                warn!(name = %request.name, %why, "stored block hashes are unusable; deltas against this version send it in full");
                reply.unavailable = format!("its stored block hashes are unusable: {why}");
            }
        }
        Ok(reply)
    }
}

impl VolumeService {
    /// The runs of blocks (indices, in order) whose hashes in this node's stored list for the
    /// version `checksum` differ from the peer's: what a delta must read and send. `None` when
    /// this node has no usable list of that version (every block is then read and hashed), or
    /// when the runs are too many to list ([`delta::MAX_RUNS`]).
    async fn differing_runs(
        &self,
        name: &str,
        checksum: [u8; 32],
        peer: &mut BaseHashes,
    ) -> Result<Option<Vec<std::ops::Range<u64>>>, CallError> {
        let mut runs: Vec<std::ops::Range<u64>> = Vec::new();
        let mut first = 0;
        loop {
            let store = self.store.clone();
            let wanted = name.to_owned();
            let (info, page) =
                blocking(move || store.block_hashes(&wanted, first, MAX_PAGE)).await?;
            let BlockHashes::Available(page) = page else {
                return Ok(None);
            };
            if info.checksum != Some(checksum) || page.block_size != peer.block_size() {
                return Ok(None);
            }
            for (k, own) in page.hashes.chunks_exact(32).enumerate() {
                let index = page.first + k as u64;
                if peer.get(index).await?.as_ref().map(|h| &h[..]) == Some(own) {
                    continue;
                }
                match runs.last_mut() {
                    Some(run) if run.end == index => run.end = index + 1,
                    _ => runs.push(index..index + 1),
                }
                if runs.len() > delta::MAX_RUNS {
                    return Ok(None);
                }
            }
            first = page.first + page.hashes.len() as u64 / 32;
            if first >= page.total {
                return Ok(Some(runs));
            }
        }
    }

    /// MIGRATE and COPY: streams the volume into the UPLOAD of the peer (a delta when the peer
    /// holds a version it may replace), then settles. A delta the peer refuses to commit (its
    /// block hashes did not match its bytes, or its version changed meanwhile) is sent again
    /// in full.
    async fn to_peer(
        &self,
        request: PeerTransferRequest,
        context: CallContext,
        migrate: bool,
    ) -> Result<PeerTransferReply, CallError> {
        let delta = request.overwrite && !request.full;
        match self.to_peer_once(&request, &context, migrate, delta).await {
            Err(error) if delta && error.code == ErrorCode::FailedPrecondition => {
                info!(name = %request.name, peer = %request.to_peer, %error, "the delta failed; sending in full");
                self.to_peer_once(&request, &context, migrate, false).await
            }
            outcome => outcome,
        }
    }

    async fn to_peer_once(
        &self,
        request: &PeerTransferRequest,
        context: &CallContext,
        migrate: bool,
        delta: bool,
    ) -> Result<PeerTransferReply, CallError> {
        self.peers.check(&request.to_peer)?;
        let store = self.store.clone();
        let name = request.name.clone();
        let (file, source) = blocking(move || store.open_read(&name)).await?;
        let direction = if migrate {
            events::Direction::Migrate
        } else {
            events::Direction::Copy
        };
        let mut progress = Progress::new(
            &self.events,
            self.progress_every,
            &request.name,
            direction,
            request.to_peer.clone(),
            0,
            source.size,
        )
        .tell_caller(context);
        // Until every byte is sent, cancelling the call drops this future, and with it the
        // stream to the peer: the peer discards what it received, this node changed nothing.
        let streamed = self
            .stream_to_peer(
                request,
                file,
                &source,
                delta,
                context.memory().clone(),
                &mut progress,
            )
            .await;
        let (stream, link, sent) = match streamed {
            Ok(streamed) => streamed,
            Err(error) => {
                info!(name = %request.name, peer = %request.to_peer, %error, "streaming to a peer failed");
                progress.failed(&error);
                return Err(error);
            }
        };
        // From the finish on, the peer commits whatever happens to this call, so the rest
        // runs to its end on its own: the outcome is settled on both nodes even if the caller
        // is gone.
        let settle = settle_transfer(
            self.store.clone(),
            self.peers.clone(),
            source,
            stream,
            link,
            sent,
            migrate,
            progress,
        );
        actix_rt::spawn(settle).await.map_err(|error| {
            CallError::application(
                ErrorCode::Internal,
                format!("settling the transfer failed: {error}"),
            )
        })?
    }

    /// Opens the peer's UPLOAD (with the size it must verify; with `delta`, against the
    /// version the peer holds, if it has block hashes) and streams the volume into it, read
    /// and hashed in one pass; returns the stream before its finish.
    async fn stream_to_peer(
        &self,
        request: &PeerTransferRequest,
        file: std::fs::File,
        source: &VolumeInfo,
        delta: bool,
        memory: MemoryBudget,
        progress: &mut Progress,
    ) -> Result<(ClientStream<UploadReply>, PeerLink, Sent), CallError> {
        let mut base = None;
        if delta {
            let link = self.peers.connect(&request.to_peer).await?;
            match BaseHashes::fetch(VolumeClient::new(link.client.clone()), &request.name).await {
                Ok(Ok(hashes)) => base = Some(hashes),
                Ok(Err(why)) => {
                    info!(name = %request.name, peer = %request.to_peer, %why, "sending in full");
                }
                Err(error) => return Err(self.peers.peer_error(&link, error)),
            }
        }
        let upload = UploadRequest {
            name: request.name.clone(),
            expected_size: Some(source.size),
            expected_checksum: checksum_bytes(source.checksum),
            overwrite: request.overwrite,
            resume: false,
            replicas: 0,
            replica: false,
            base_checksum: checksum_bytes(base.as_ref().map(BaseHashes::checksum)),
            resume_prefix_checksum: Default::default(),
        };
        let (mut stream, link) = self.peers.upload(&request.to_peer, &upload).await?;
        let block_size = base.as_ref().map_or(BLOCK_SIZE, BaseHashes::block_size);
        let failed = |error| match error {
            SendError::Read(error) => CallError::application(
                ErrorCode::Internal,
                format!("reading volume {:?}: {error}", request.name),
            ),
            SendError::Call(error) => self.peers.peer_error(&link, error),
        };
        // With this node's own block hashes of the version, the blocks that differ are known
        // before anything is read: only they are read. The peer verifies the whole content.
        let runs = match (base.as_mut(), source.checksum) {
            (Some(base), Some(checksum)) => self
                .differing_runs(&request.name, checksum, base)
                .await
                .map_err(|error| self.peers.peer_error(&link, error))?
                .map(|runs| (runs, checksum)),
            _ => None,
        };
        let (moved, checksum) = match runs {
            Some((runs, checksum)) => {
                let advance = async |n: u64| progress.advance(n).await;
                let moved = send_runs(
                    &mut stream,
                    &file,
                    source.size,
                    block_size,
                    &runs,
                    Some(memory),
                    advance,
                )
                .await
                .map_err(failed)?;
                (moved, checksum)
            }
            None => {
                let hash = TreeHash::new(block_size, std::io::sink());
                // The peer's stream fails the next send when it ends: that drops `blocks`.
                let (mut blocks, digest) =
                    read_blocks(file, block_size, Some(hash), 0, source.size, Some(memory));
                let advance = async |len: u64, _kept: bool| progress.advance(len).await;
                let moved = send_blocks(&mut stream, &mut blocks, base.as_mut(), advance)
                    .await
                    .map_err(failed)?;
                let read = digest.await.ok().flatten().ok_or_else(|| {
                    CallError::application(ErrorCode::Internal, "the volume's reader stopped")
                })?;
                let checksum = read.root();
                if let Some(known) = source.checksum.filter(|known| *known != checksum) {
                    return Err(CallError::application(
                        ErrorCode::Internal,
                        format!(
                            "volume {:?} reads as blake3 {} but was committed as {}: its data is damaged on this node",
                            request.name,
                            hex::encode(checksum),
                            hex::encode(known)
                        ),
                    ));
                }
                (moved, checksum)
            }
        };
        let sent = Sent {
            moved,
            hash_bytes: base.as_ref().map_or(0, BaseHashes::hash_bytes),
            checksum,
        };
        Ok((stream, link, sent))
    }
}

/// What went to a peer.
struct Sent {
    moved: delta::Sent,
    /// Block hashes fetched from the peer for a delta.
    hash_bytes: u64,
    /// The volume's BLAKE3, computed while sending.
    checksum: [u8; 32],
}

/// Deletes an upload's partial data, logging a failure to.
async fn discard(upload: Upload, name: &str) {
    if let Err(error) = blocking(move || upload.abort()).await {
        warn!(%name, %error, "discarding a partial upload failed");
    }
}

/// The end of a MIGRATE or COPY, once every byte was sent: the peer's commit, then (migrate)
/// the deletion of this node's copy, if it is still the version that was sent.
#[allow(clippy::too_many_arguments)]
async fn settle_transfer(
    store: Arc<VolumeStore>,
    peers: Arc<PeerSet>,
    source: VolumeInfo,
    stream: ClientStream<UploadReply>,
    link: PeerLink,
    sent: Sent,
    migrate: bool,
    mut progress: Progress,
) -> Result<PeerTransferReply, CallError> {
    let name = source.name.clone();
    let outcome = async {
        // The finish vouches for the checksum (known before, or hashed while sending): the
        // peer refuses to commit anything else.
        let trailer = UploadFinish {
            checksum: sent.checksum.to_vec().into(),
        };
        let reply = stream
            .finish_with(encode_message(&trailer))
            .await
            .map_err(|error| peers.peer_error(&link, error))?;
        let committed = reply.volume.unwrap_or_default();
        // A peer that predates UploadFinish committed without checking: compare what it
        // stored with what was sent.
        let expected = sent.checksum;
        if committed.checksum[..] != expected[..] {
            // The peer's copy is not what was sent.
            let undo = match peers.delete(&link.name, &name).await {
                Ok(()) => "its copy was removed".to_owned(),
                Err(error) => format!("removing its copy failed: {}", error.message),
            };
            return Err(CallError::application(
                ErrorCode::FailedPrecondition,
                format!(
                    "peer {} stored blake3 {} but {} was sent; {undo}",
                    link.name,
                    hex::encode(&committed.checksum),
                    hex::encode(expected)
                ),
            ));
        }
        if migrate {
            delete_sent_version(&store, &source, &link.name).await?;
            progress
                .events
                .publish(event::Kind::Deleted(events::VolumeDeleted {
                    name: name.clone(),
                }));
        }
        Ok(PeerTransferReply {
            volume: Some(committed),
            peer: link.name.clone(),
            bytes_sent: sent.moved.data_bytes,
            hole_bytes: sent.moved.hole_bytes,
            kept_bytes: sent.moved.kept_bytes,
            hash_bytes: sent.hash_bytes,
        })
    }
    .await;
    match &outcome {
        Ok(_) => {
            info!(%name, peer = %link.name, migrate, "volume sent to peer");
            progress.finished();
        }
        Err(error) => {
            info!(%name, peer = %link.name, %error, "sending a volume to a peer failed");
            progress.failed(error);
        }
    }
    outcome
}

/// Deletes a migrated volume here, unless it was replaced (or deleted) since it was sent.
async fn delete_sent_version(
    store: &Arc<VolumeStore>,
    sent: &VolumeInfo,
    peer: &str,
) -> Result<(), CallError> {
    let name = sent.name.clone();
    let kept = |why: String| {
        CallError::application(
            ErrorCode::FailedPrecondition,
            format!("volume {name:?} was copied to {peer}, but {why}; this node keeps its volume"),
        )
    };
    let lookup = store.clone();
    let wanted = name.clone();
    let now = match run(move || lookup.info(&wanted)).await? {
        Ok(now) => now,
        Err(StoreError::NotFound { .. }) => return Ok(()),
        Err(error) => return Err(kept(format!("checking it here failed: {error}"))),
    };
    if (now.size, now.checksum, now.modified) != (sent.size, sent.checksum, sent.modified) {
        return Err(kept(
            "it was replaced here while it was being migrated".to_owned(),
        ));
    }
    let store = store.clone();
    let wanted = name.clone();
    match run(move || store.delete(&wanted)).await? {
        Ok(()) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(error) => Err(CallError::application(
            error.code(),
            format!("volume {name:?} was copied to {peer}, but deleting it here failed: {error}"),
        )),
    }
}

/// The end of a replicated upload, once the client finished: every replica commits (their
/// REPLYs awaited concurrently), then this node does. If any of them fails, this node's
/// upload is discarded (or its commit deleted) and the replicas that committed are deleted,
/// so no node keeps the volume.
async fn commit_replicated(
    store: Arc<VolumeStore>,
    peers: Arc<PeerSet>,
    upload: Upload,
    replicas: ReplicaSet,
    trailer: Bytes,
    mut progress: Progress,
) -> Result<(VolumeInfo, Vec<Replica>), CallError> {
    let name = upload.name().to_owned();
    let mut committed = Vec::new();
    let mut failure = None;
    // Each replica checks what the client vouched for, as this node does.
    for outcome in replicas.finish(trailer).await {
        match outcome.result {
            Ok(reply) => committed.push(Replica {
                peer: outcome.peer,
                volume: reply.volume,
            }),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    let outcome = match failure {
        Some(error) => {
            discard(upload, &name).await;
            Err(error)
        }
        None => match blocking(move || upload.commit()).await {
            Err(error) => Err(error),
            Ok(info) => {
                let local = checksum_bytes(info.checksum);
                let differs = committed
                    .iter()
                    .find(|r| r.volume.as_ref().map(|v| &v.checksum) != Some(&local));
                match differs {
                    None => Ok(info),
                    Some(replica) => {
                        let error = CallError::application(
                            ErrorCode::FailedPrecondition,
                            format!(
                                "replica {} stored blake3 {} but this node stored {}",
                                replica.peer,
                                hex::encode(
                                    replica.volume.as_ref().map_or(&[][..], |v| &v.checksum[..])
                                ),
                                hex::encode(&local)
                            ),
                        );
                        let (store, wanted) = (store.clone(), name.clone());
                        if let Err(error) = blocking(move || store.delete(&wanted)).await {
                            warn!(%name, %error, "removing a replicated upload's commit failed");
                        }
                        Err(error)
                    }
                }
            }
        },
    };
    match outcome {
        Ok(info) => {
            progress.finished();
            progress
                .events
                .publish(event::Kind::Uploaded(events::VolumeUploaded {
                    name: info.name.clone(),
                    size: info.size,
                    checksum: checksum_bytes(info.checksum),
                }));
            Ok((info, committed))
        }
        Err(mut error) => {
            if !committed.is_empty() {
                let undone = join_all(committed.iter().map(|r| peers.delete(&r.peer, &name))).await;
                let mut removed = Vec::new();
                for (replica, undone) in committed.iter().zip(undone) {
                    match undone {
                        Ok(()) => removed.push(replica.peer.as_str()),
                        Err(undo) => {
                            warn!(%name, peer = %replica.peer, error = %undo, "removing a replica's commit failed");
                            error.message += &format!(
                                "; removing the copy committed on {} failed: {}",
                                replica.peer, undo.message
                            );
                        }
                    }
                }
                if !removed.is_empty() {
                    error.message +=
                        &format!("; removed the copies committed on {}", removed.join(", "));
                }
            }
            info!(%name, %error, "replicated upload failed");
            progress.failed(&error);
            Err(error)
        }
    }
}
