//! The volume program: create, list, inspect, delete, upload and download volumes.
//!
//! Disk work runs on tokio's blocking pool, never on a connection's arbiter, so a slow disk
//! delays only the transfers that use it. Uploads are committed only after the client's finish
//! (synced, checksum checked, renamed into place); the REPLY is that confirmation.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_actors::program::CallContext;
use ferry_actors::stream::ContentHash;
use ferry_actors::stream::{Chunk, Incoming, Outgoing};
use ferry_actors::{CallError, ErrorCode, program};
use tracing::{info, warn};

use crate::events::EventHub;
use crate::proto::events::{self, event};
use crate::proto::volume::{
    CreateRequest, DeleteReply, DeleteRequest, DownloadReply, DownloadRequest, InfoRequest,
    ListReply, ListRequest, UploadReply, UploadRequest, UploadStatusReply, UploadStatusRequest,
    Volume,
};
use crate::store::{StoreError, UploadOptions, VolumeInfo, VolumeStore};

program! {
    /// The volume store.
    pub program VolumeProgram = 0x766f_6c75, version 1;
    handler VolumeHandler; client VolumeClient;
    procedures {
        /// An empty (sparse) volume of the given size.
        1 => create(CreateRequest) -> Volume;
        2 => list(ListRequest) -> ListReply;
        3 => info(InfoRequest) -> Volume;
        4 => delete(DeleteRequest) -> DeleteReply;
        /// Streams data into a volume; visible only once committed.
        5 => upload(UploadRequest) -> UploadReply [upload];
        /// Where a partial upload stands, to resume it.
        6 => upload_status(UploadStatusRequest) -> UploadStatusReply;
        /// Streams a volume out, holes as holes.
        7 => download(DownloadRequest) -> DownloadReply [download];
    }
}

/// Serves the volume program from a store, publishing what happens to an event hub.
pub struct VolumeService {
    store: Arc<VolumeStore>,
    events: Arc<EventHub>,
    progress_every: u64,
}

impl VolumeService {
    pub fn new(store: Arc<VolumeStore>, events: Arc<EventHub>, progress_every: u64) -> Self {
        Self {
            store,
            events,
            progress_every: progress_every.max(1),
        }
    }
}

fn store_error(error: StoreError) -> CallError {
    CallError::application(error.code(), error.to_string())
}

/// Runs disk work on the blocking pool.
async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, CallError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        CallError::application(ErrorCode::Internal, format!("store task failed: {error}"))
    })
}

/// Runs a store operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CallError> {
    run(work).await?.map_err(store_error)
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
            format!("expected_checksum must be 32 bytes of BLAKE3, got {n}"),
        )),
    }
}

/// Publishes transfer progress every `every` bytes.
struct Progress<'a> {
    events: &'a EventHub,
    name: String,
    direction: events::Direction,
    peer: String,
    total: u64,
    bytes: u64,
    every: u64,
    next: u64,
}

impl<'a> Progress<'a> {
    fn new(
        service: &'a VolumeService,
        name: &str,
        direction: events::Direction,
        context: &CallContext,
        start: u64,
        total: u64,
    ) -> Self {
        Self {
            events: &service.events,
            name: name.to_owned(),
            direction,
            peer: context.peer.to_string(),
            total,
            bytes: start,
            every: service.progress_every,
            next: start + service.progress_every,
        }
    }

    fn advance(&mut self, n: u64) {
        self.bytes += n;
        if self.bytes >= self.next {
            self.next = self.bytes + self.every;
            self.events
                .publish(event::Kind::Progress(events::TransferProgress {
                    name: self.name.clone(),
                    direction: self.direction as i32,
                    bytes: self.bytes,
                    total: self.total,
                    peer: self.peer.clone(),
                }));
        }
    }

    fn finished(&self) {
        self.events
            .publish(event::Kind::Finished(events::TransferFinished {
                name: self.name.clone(),
                direction: self.direction as i32,
                bytes: self.bytes,
                peer: self.peer.clone(),
            }));
    }

    fn failed(&self, error: &CallError) {
        self.events
            .publish(event::Kind::Failed(events::TransferFailed {
                name: self.name.clone(),
                direction: self.direction as i32,
                bytes: self.bytes,
                reason: error.to_string(),
                peer: self.peer.clone(),
            }));
    }
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
        let options = UploadOptions {
            expected_size: request.expected_size,
            expected_checksum: checksum_arg(&request.expected_checksum)?,
            overwrite: request.overwrite,
        };
        let store = self.store.clone();
        let name = request.name.clone();
        let mut upload = blocking(move || {
            if request.resume {
                store.resume_upload(&name)
            } else {
                store.begin_upload(&name, options)
            }
        })
        .await?;
        let resumed_from = upload.offset();
        let total = upload.expected_size().unwrap_or(0);
        let mut progress = Progress::new(
            self,
            &request.name,
            events::Direction::Upload,
            &context,
            resumed_from,
            total,
        );
        let mut holes = 0;
        let mut failure = None;
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
            if let Chunk::Hole(length) = chunk {
                holes += length;
            }
            let (back, written) = run(move || {
                let written = upload.write(&chunk);
                (upload, written)
            })
            .await?;
            upload = back;
            if let Err(error) = written {
                failure = Some(store_error(error));
                break;
            }
            progress.advance(n);
        }
        if let Some(error) = failure {
            // A lost connection keeps the partial data for resuming; anything else (an abort,
            // a refused chunk) discards it.
            let keep = error.code == ErrorCode::ConnectionLost;
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
        let committed = blocking(move || upload.commit()).await;
        match committed {
            Ok(info) => {
                progress.finished();
                self.events
                    .publish(event::Kind::Uploaded(events::VolumeUploaded {
                        name: info.name.clone(),
                        size: info.size,
                        checksum: info.checksum.map(|c| c.to_vec().into()).unwrap_or_default(),
                    }));
                Ok(UploadReply {
                    volume: Some(volume(&info)),
                    resumed_from,
                    hole_bytes: holes,
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
        Ok(match status {
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
        let mut download =
            blocking(move || store.open_download(&name, request.offset, length)).await?;
        let max = context.server.config().limits.max_chunk as usize;
        let mut progress = Progress::new(
            self,
            &request.name,
            events::Direction::Download,
            &context,
            0,
            download.len(),
        );
        let mut hash = ContentHash::default();
        let outcome: Result<(), CallError> = async {
            loop {
                let (rest, chunk) =
                    blocking(move || download.next_chunk(max).map(|chunk| (download, chunk)))
                        .await?;
                download = rest;
                let Some(chunk) = chunk else { break };
                hash.update(&chunk);
                progress.advance(chunk.len());
                outgoing.send_chunk(chunk).await?;
            }
            outgoing.finish().await
        }
        .await;
        match outcome {
            Ok(()) => {
                progress.finished();
                Ok(DownloadReply {
                    bytes: hash.bytes(),
                    hole_bytes: hash.hole_bytes(),
                    checksum: hash.finish(),
                })
            }
            Err(error) => {
                progress.failed(&error);
                Err(error)
            }
        }
    }
}
