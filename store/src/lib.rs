//! The volume store: named volumes (plain, possibly sparse files) under one directory, with
//! atomic publication, resumable uploads and sparse-aware downloads. It does no networking
//! (the node's volume program wires it to streams); its one link to the wire is the
//! vocabulary of `ferry-codec`: stream [`Chunk`](ferry_codec::Chunk)s and the [`ErrorCode`]
//! each [`StoreError`] maps to.
//!
//! Everything here is synchronous `std::fs`; the daemon runs it on blocking threads
//! (`tokio::task::spawn_blocking` or an actix `SyncArbiter`). A [`VolumeStore`] is a cheap
//! handle (`Clone`, `Send`, `Sync`) on the shared state.
//!
//! # Layout on disk
//!
//! ```text
//! <root>/store.lock            held (flock) by the one process that has the store open
//! <root>/volumes/<name>        committed volume data, the only files clients can see
//! <root>/meta/<name>.json      sidecar: size, BLAKE3 checksum, created/modified times
//! <root>/partial/<name>.part   data of an upload in progress; its length is the offset
//! <root>/partial/<name>.json   that upload's expected size/checksum, overwrite and resumable
//!                              flags, activity
//! <root>/partial/<name>.commit a commit in flight: the sidecar to install once the data is
//!                              published (see "crash safety")
//! <root>/*/.<name>.<n>.tmp     temporary files; removed by recovery
//! ```
//!
//! # Crash safety
//!
//! - A volume appears in `volumes/` by a single `rename` of a fully written and `fsync`ed file,
//!   followed by an `fsync` of the directory. A crash at any point leaves either no volume or
//!   the complete one: never a partial one under the volume's name.
//! - Creation and non-overwriting commits publish with a rename that refuses to replace
//!   (`renameat2(RENAME_NOREPLACE)`, or `link` + `unlink`), so two writers cannot both
//!   "create" one name, whatever the timing.
//! - A commit first writes its sidecar as `partial/<name>.commit` (synced), then renames the
//!   data into `volumes/`, then renames the record into `meta/`. Recovery finishes a commit
//!   whose data was published and rolls back one whose data was not (the partial stays
//!   resumable), so a volume and its sidecar always end up agreeing.
//! - [`VolumeStore::open`] runs recovery: temporary files go, sidecars without a volume go,
//!   half-made or unreadable partial uploads go, partial uploads idle for longer than
//!   [`StoreConfig::resume_ttl`] go, and so do partial uploads begun as not resumable
//!   ([`UploadOptions::resumable`]) whatever their age. See [`RecoveryReport`].
//! - A volume file is never modified in place, only replaced by a rename. A [`Download`] keeps
//!   the file it opened, so it reads one consistent version even if the volume is overwritten
//!   or deleted meanwhile.
//!
//! # Resumable uploads
//!
//! An upload writes `partial/<name>.part`. Unless it is committed or explicitly aborted, it is
//! kept: [`Upload::suspend`], dropping the [`Upload`], a lost connection and a crash of the
//! daemon all leave it for [`VolumeStore::resume_upload`], which continues at the length of the
//! data file. The checksum covers the whole content, so a resumed upload is verified end to
//! end at commit whatever happened in between. Partial uploads idle for `resume_ttl` are
//! removed at the next open or [`VolumeStore::expire_partials`].
//!
//! An upload begun with [`UploadOptions::resumable`] `false` (a replica of a replicated
//! upload, which as a whole cannot be resumed) is the exception: suspending or dropping it
//! discards it, resuming it is refused with [`StoreError::NotResumable`], and if a crash
//! leaves it behind, the next open or expiry sweep removes it whatever its age.
//!
//! # Modules, bottom up
//!
//! - leaves: [`blockhash`] (BLAKE3 block hashes), [`sparse`] (reading and writing holes),
//!   [`writeback`] (bounded dirty pages), `sys` (system calls), `error`, `name`, `meta`
//!   (sidecars), `config`, `info`, `layout`, `report`;
//! - `inner`: the state one open store shares;
//! - `publish`: how a volume appears (data by rename, then its sidecar);
//! - `download`, `blocks` (a volume's block hashes), `hash_behind` (a transfer's hashing
//!   thread), `upload`, `recovery`;
//! - `store`: [`VolumeStore`], the handle every operation starts from.
//!
//! [`ErrorCode`]: ferry_codec::proto::ErrorCode

pub mod blockhash;
mod blocks;
mod config;
mod download;
mod error;
pub mod hash_behind;
mod info;
mod inner;
mod layout;
mod meta;
mod name;
mod publish;
mod recovery;
mod report;
pub mod sparse;
mod store;
mod sys;
mod upload;
pub mod writeback;

pub use blocks::{BlockHashes, BlockPage, MAX_PAGE};
pub use config::{DEFAULT_MAX_VOLUME_SIZE, StoreConfig};
pub use download::Download;
pub use error::{Result, StoreError};
pub use info::VolumeInfo;
pub use name::{DEFAULT_MAX_NAME_LEN, MAX_NAME_LEN_LIMIT, validate_name};
pub use report::RecoveryReport;
pub use store::VolumeStore;
pub use upload::{KEEP_BUFFER, PartialStatus, Upload, UploadOptions};
