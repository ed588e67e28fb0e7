//! The volume store: named volumes (plain, possibly sparse files) under one directory, with
//! atomic publication, resumable uploads and sparse-aware downloads.
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

mod blocks;
mod download;
mod error;
mod meta;
mod name;
mod recovery;
mod sys;
mod upload;

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

pub use blocks::{BlockHashes, BlockPage, MAX_PAGE};
pub use download::Download;
pub use error::StoreError;
pub use name::{DEFAULT_MAX_NAME_LEN, MAX_NAME_LEN_LIMIT, validate_name};
pub use recovery::RecoveryReport;
pub use upload::{PartialStatus, Upload, UploadOptions};

use error::IoContext;
use meta::VolumeMeta;

/// The result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Tunables of a [`VolumeStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a partial upload may sit idle before it is removed (at open, or by
    /// [`VolumeStore::expire_partials`]). Long enough for a client to reconnect after a
    /// network outage or a daemon restart; short enough that abandoned uploads do not fill the
    /// disk. `Duration::ZERO` removes every partial upload at the next open. Default 24 h.
    pub resume_ttl: Duration,
    /// The longest volume name accepted, in bytes. Default 128, at most
    /// [`MAX_NAME_LEN_LIMIT`].
    pub max_name_len: usize,
    /// The largest volume, in logical bytes (holes included), that may be created or uploaded;
    /// larger ones fail with [`StoreError::TooLarge`]. Besides disk use it bounds CPU: an
    /// upload's holes cost its sender a few bytes on the wire but are hashed as zeros here, at
    /// a few GB/s. Default [`DEFAULT_MAX_VOLUME_SIZE`].
    pub max_volume_size: u64,
}

/// Default largest volume: 4 TiB, the size of a large real disk image; hashing that many
/// zeros costs about half an hour of one core.
pub const DEFAULT_MAX_VOLUME_SIZE: u64 = 4 << 40;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            resume_ttl: Duration::from_secs(24 * 60 * 60),
            max_name_len: DEFAULT_MAX_NAME_LEN,
            max_volume_size: DEFAULT_MAX_VOLUME_SIZE,
        }
    }
}

/// What the store knows about a committed volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    /// The volume's length in bytes, holes included.
    pub size: u64,
    /// Bytes the file system actually allocated (`st_blocks * 512`); far below `size` for a
    /// sparse volume.
    pub allocated: u64,
    /// BLAKE3 of the whole content (holes as zeros), as verified or computed at commit.
    /// `None` for volumes made by [`VolumeStore::create`] (all zeros; hashing terabytes of
    /// zeros at create time would cost minutes of CPU for a checksum anyone can compute) and
    /// for volumes whose sidecar is missing or unreadable.
    pub checksum: Option<[u8; 32]>,
    /// When the volume was first created or committed. An overwriting upload keeps it.
    pub created: SystemTime,
    /// When the volume's content was last created or replaced.
    pub modified: SystemTime,
}

impl VolumeInfo {
    /// The checksum as lowercase hex.
    pub fn checksum_hex(&self) -> Option<String> {
        self.checksum.map(hex::encode)
    }
}

/// A volume store rooted at one directory. Cheap to clone; all clones share one state.
///
/// One process at a time may have a store open: [`open`](Self::open) takes an exclusive lock on
/// `<root>/store.lock` and keeps it as long as any clone, [`Upload`] of the store lives,
/// because recovery removes files that a live process might still be using.
#[derive(Clone)]
pub struct VolumeStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for VolumeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeStore")
            .field("root", &self.inner.layout.root)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Refuses a volume of `size` logical bytes over `max_volume_size`.
    pub(crate) fn check_size(&self, name: &str, size: u64) -> Result<()> {
        let limit = self.config.max_volume_size;
        if size > limit {
            return Err(StoreError::TooLarge {
                name: name.into(),
                size,
                limit,
            });
        }
        Ok(())
    }
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) config: StoreConfig,
    /// Held for writing while names appear or disappear in `volumes/` and `meta/` (create,
    /// delete, the publishing part of a commit), for reading while they are looked at, so a
    /// reader never sees a volume without the sidecar that goes with it.
    namespace: RwLock<()>,
    /// Names with an [`Upload`] open in this process: one writer per partial file.
    pub(crate) active: Mutex<HashSet<String>>,
    recovery: RecoveryReport,
    /// Holds the flock for as long as the store is open.
    _lock: File,
}

impl Inner {
    pub(crate) fn read_namespace(&self) -> RwLockReadGuard<'_, ()> {
        // The lock guards no data, so a panic while it was held left nothing inconsistent.
        self.namespace
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_namespace(&self) -> RwLockWriteGuard<'_, ()> {
        self.namespace
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The information of a committed volume; the caller holds the namespace lock.
    pub(crate) fn info_locked(&self, name: &str) -> Result<VolumeInfo> {
        let path = self.layout.volume(name);
        let metadata = match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() => metadata,
            Ok(_) => return Err(StoreError::NotFound { name: name.into() }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { name: name.into() });
            }
            Err(err) => return Err(StoreError::io(format!("reading {}", path.display()), err)),
        };
        Ok(self.info_from(name, &metadata))
    }

    /// Combines the data file's metadata with the sidecar. A missing, unreadable or stale
    /// sidecar (one whose size differs from the file's) is not an error: the volume is still
    /// usable, it just has no known checksum, and its times come from the file.
    pub(crate) fn info_from(&self, name: &str, metadata: &fs::Metadata) -> VolumeInfo {
        let meta = meta::read::<VolumeMeta>(&self.layout.meta(name))
            .ok()
            .flatten()
            .filter(|meta| meta.size == metadata.len());
        let file_modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        VolumeInfo {
            name: name.to_string(),
            size: metadata.len(),
            allocated: metadata.blocks() * 512,
            checksum: meta.as_ref().and_then(|m| m.checksum),
            created: meta.as_ref().map_or_else(
                || metadata.created().unwrap_or(file_modified),
                |m| sys::from_unix_millis(m.created),
            ),
            modified: meta
                .as_ref()
                .map_or(file_modified, |m| sys::from_unix_millis(m.modified)),
        }
    }
}

/// Where each file of the store lives.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub volumes: PathBuf,
    pub meta: PathBuf,
    pub partial: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            volumes: root.join("volumes"),
            meta: root.join("meta"),
            partial: root.join("partial"),
        }
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }

    pub fn meta(&self, name: &str) -> PathBuf {
        self.meta.join(format!("{name}.json"))
    }

    pub fn part(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.part"))
    }

    pub fn partial_json(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.json"))
    }

    pub fn commit_record(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.commit"))
    }

    /// A committed volume's block hashes.
    pub fn blocks(&self, name: &str) -> PathBuf {
        self.meta.join(format!("{name}.blocks"))
    }

    /// The block hashes an upload in progress writes.
    pub fn partial_blocks(&self, name: &str) -> PathBuf {
        self.partial.join(format!("{name}.blocks"))
    }
}

impl VolumeStore {
    /// Opens (creating if needed) the store at `root`, takes its lock and runs crash recovery
    /// (see the [module documentation](self) and [`RecoveryReport`], available afterwards from
    /// [`recovery_report`](Self::recovery_report) for the daemon's log).
    ///
    /// Fails with [`StoreError::Locked`] if another process, or another `VolumeStore` in this
    /// one, has the store open.
    pub fn open(root: &Path, config: StoreConfig) -> Result<VolumeStore> {
        if config.max_name_len == 0 || config.max_name_len > MAX_NAME_LEN_LIMIT {
            return Err(StoreError::InvalidConfig {
                reason: format!(
                    "max_name_len is {}; it must be between 1 and {MAX_NAME_LEN_LIMIT}",
                    config.max_name_len
                ),
            });
        }
        let layout = Layout::new(root);
        fs::create_dir_all(root)
            .context(|| format!("creating store directory {}", root.display()))?;
        let lock_path = root.join("store.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .context(|| format!("opening lock file {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    root: root.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(err)) => {
                return Err(StoreError::io(
                    format!("locking {}", lock_path.display()),
                    err,
                ));
            }
        }
        let mut created_dirs = false;
        for dir in [&layout.volumes, &layout.meta, &layout.partial] {
            match fs::create_dir(dir) {
                Ok(()) => created_dirs = true,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(StoreError::io(format!("creating {}", dir.display()), err)),
            }
        }
        if created_dirs {
            sys::fsync_dir(root).context(|| format!("syncing {}", root.display()))?;
        }
        let recovery = recovery::recover(&layout, &config)?;
        Ok(VolumeStore {
            inner: Arc::new(Inner {
                layout,
                config,
                namespace: RwLock::new(()),
                active: Mutex::new(HashSet::new()),
                recovery,
                _lock: lock,
            }),
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn root(&self) -> &Path {
        &self.inner.layout.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// [`validate_name`] with this store's `max_name_len`. Every operation checks its name
    /// this way before touching the file system.
    pub fn validate_name(&self, name: &str) -> Result<()> {
        validate_name(name, self.inner.config.max_name_len)
    }

    /// Creates an empty volume of `size` bytes: a sparse file that takes no space until
    /// written. [`StoreError::AlreadyExists`] if the name is taken. Its checksum is `None`
    /// (see [`VolumeInfo::checksum`]).
    ///
    /// Atomic: the file is made under a temporary name, synced, and published with a rename
    /// that refuses to replace, so a crash leaves no volume or the whole one.
    pub fn create(&self, name: &str, size: u64) -> Result<VolumeInfo> {
        self.validate_name(name)?;
        let layout = &self.inner.layout;
        if fs::symlink_metadata(layout.volume(name)).is_ok() {
            return Err(StoreError::AlreadyExists { name: name.into() });
        }
        self.inner.check_size(name, size)?;
        let (temp, file) = sys::create_temp(&layout.volumes, name)
            .context(|| format!("creating a temporary file in {}", layout.volumes.display()))?;
        let result = (|| {
            file.set_len(size)
                .context(|| format!("sizing new volume {name:?} to {size} bytes"))?;
            file.sync_all()
                .context(|| format!("syncing new volume {name:?}"))?;
            drop(file);
            let now = sys::now_millis();
            let sidecar = VolumeMeta {
                format: meta::FORMAT,
                size,
                checksum: None,
                created: now,
                modified: now,
            };
            let _namespace = self.inner.write_namespace();
            commit(&self.inner, name, &temp, &sidecar, false)?.finish(&self.inner, name)?;
            self.inner.info_locked(name)
        })();
        if result.is_err() {
            let _ = sys::remove_if_exists(&temp);
        }
        result
    }

    /// Every committed volume, sorted by name. Files in `volumes/` that the store did not make
    /// (invalid names, directories, symlinks) are not listed.
    pub fn list(&self) -> Result<Vec<VolumeInfo>> {
        let layout = &self.inner.layout;
        let _namespace = self.inner.read_namespace();
        let entries = fs::read_dir(&layout.volumes)
            .context(|| format!("listing {}", layout.volumes.display()))?;
        let mut volumes = Vec::new();
        for entry in entries {
            let entry = entry.context(|| format!("listing {}", layout.volumes.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_name(&name, MAX_NAME_LEN_LIMIT).is_err() {
                continue;
            }
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(StoreError::io(
                        format!("reading {}", entry.path().display()),
                        err,
                    ));
                }
            };
            if metadata.is_file() {
                volumes.push(self.inner.info_from(&name, &metadata));
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// The information of one committed volume; [`StoreError::NotFound`] if there is none.
    pub fn info(&self, name: &str) -> Result<VolumeInfo> {
        self.validate_name(name)?;
        let _namespace = self.inner.read_namespace();
        self.inner.info_locked(name)
    }

    /// Deletes a committed volume and its sidecar. A partial upload of the same name is not
    /// touched (see [`discard_upload`](Self::discard_upload)); downloads already open keep
    /// reading the deleted content until they are dropped.
    pub fn delete(&self, name: &str) -> Result<()> {
        self.validate_name(name)?;
        let layout = &self.inner.layout;
        let _namespace = self.inner.write_namespace();
        let path = layout.volume(name);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.is_file() => {}
            Ok(_) => return Err(StoreError::NotFound { name: name.into() }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { name: name.into() });
            }
            Err(err) => return Err(StoreError::io(format!("reading {}", path.display()), err)),
        }
        // Data first: a crash in between leaves a sidecar without a volume, which recovery
        // removes, rather than a volume that lost its checksum.
        fs::remove_file(&path).context(|| format!("deleting {}", path.display()))?;
        sys::fsync_dir(&layout.volumes)
            .context(|| format!("syncing {}", layout.volumes.display()))?;
        let meta_path = layout.meta(name);
        let blocks = layout.blocks(name);
        let removed_blocks =
            sys::remove_if_exists(&blocks).context(|| format!("deleting {}", blocks.display()))?;
        if sys::remove_if_exists(&meta_path)
            .context(|| format!("deleting {}", meta_path.display()))?
            || removed_blocks
        {
            sys::fsync_dir(&layout.meta)
                .context(|| format!("syncing {}", layout.meta.display()))?;
        }
        Ok(())
    }

    /// Starts a fresh upload of `name`, replacing any partial upload of that name that is not
    /// open right now ([`StoreError::UploadInProgress`] if it is).
    ///
    /// Without `overwrite`, an existing volume of that name fails the call at once with
    /// [`StoreError::AlreadyExists`] rather than after the whole upload (the commit checks
    /// again).
    pub fn begin_upload(&self, name: &str, options: UploadOptions) -> Result<Upload> {
        self.validate_name(name)?;
        upload::begin(&self.inner, name, options)
    }

    /// Reopens the partial upload of `name` where it stopped: at the length of its data file.
    /// The BLAKE3 state is rebuilt by reading back what was written (holes are skipped with
    /// `SEEK_HOLE` and hashed as zeros, and stay holes), which costs one read of the partial
    /// data. [`StoreError::NoPartialUpload`] if there is none; [`StoreError::NotResumable`] if
    /// it was begun as not resumable; [`StoreError::AlreadyExists`] if it does not overwrite
    /// and a volume of that name has been committed since.
    pub fn resume_upload(&self, name: &str) -> Result<Upload> {
        self.validate_name(name)?;
        upload::resume(&self.inner, name)
    }

    /// The state of the partial upload of `name`, if there is one: what a client asks before
    /// resuming, to know where to continue.
    pub fn upload_status(&self, name: &str) -> Result<Option<PartialStatus>> {
        self.validate_name(name)?;
        upload::status(&self.inner, name)
    }

    /// Every partial upload, sorted by name.
    pub fn partial_uploads(&self) -> Result<Vec<PartialStatus>> {
        upload::list(&self.inner)
    }

    /// Deletes the partial upload of `name` without reading it back (as
    /// `resume_upload(name)?.abort()` would). [`StoreError::NoPartialUpload`] if there is
    /// none, [`StoreError::UploadInProgress`] if it is open.
    pub fn discard_upload(&self, name: &str) -> Result<()> {
        self.validate_name(name)?;
        upload::discard(&self.inner, name)
    }

    /// Removes partial uploads idle for at least `resume_ttl`, and those that are not
    /// resumable whatever their age, except those open right now, and returns how many went. Open does this once; a long-running daemon should call it
    /// now and then (hourly, say) so abandoned uploads do not wait for the next restart.
    pub fn expire_partials(&self) -> Result<usize> {
        recovery::expire(&self.inner)
    }

    /// Opens volume `name` for reading as a whole, with what is known of the version opened:
    /// a volume is never modified in place, so the file stays that version.
    pub fn open_read(&self, name: &str) -> Result<(File, VolumeInfo)> {
        self.validate_name(name)?;
        download::open_volume(&self.inner, name)
    }

    /// Up to `max` (at most [`MAX_PAGE`]) of volume `name`'s block hashes from block `first`
    /// on, with the version they describe: what a delta against it compares. Asking for page
    /// 0 checks the whole list first (its hashes must merge into the volume's checksum), so
    /// a stale or damaged file comes back [`BlockHashes::Unusable`] rather than trusted.
    pub fn block_hashes(
        &self,
        name: &str,
        first: u64,
        max: u64,
    ) -> Result<(VolumeInfo, BlockHashes)> {
        self.validate_name(name)?;
        blocks::page(&self.inner, name, first, max)
    }

    /// Opens `length` bytes (to the end if `None`) of volume `name` from `offset` for reading.
    /// A range that does not lie within the volume is refused with
    /// [`StoreError::InvalidRange`], never clamped: a client asking for bytes that do not
    /// exist has a wrong idea of the volume, and a silently shorter download would look like
    /// a truncated one. An empty range at the end is fine.
    pub fn open_download(&self, name: &str, offset: u64, length: Option<u64>) -> Result<Download> {
        self.validate_name(name)?;
        download::open(&self.inner, name, offset, length)
    }
}

/// Makes the file `from` the volume `name` with its sidecar, so that nothing incomplete is
/// ever visible: the sidecar is written first, as a commit record in `partial/`; then the data
/// is published; then the record becomes the sidecar. A failure (a full disk) before the
/// publish leaves no volume and no record; after it, the volume is whole and
/// [`Published::finish`] installs the sidecar, or recovery does at the next open. The caller
/// holds the namespace lock for writing.
pub(crate) fn commit(
    inner: &Inner,
    name: &str,
    from: &Path,
    sidecar: &VolumeMeta,
    overwrite: bool,
) -> Result<Published> {
    let record = inner.layout.commit_record(name);
    meta::write(&record, sidecar, true).inspect_err(|_| {
        let _ = sys::remove_if_exists(&record);
    })?;
    if let Err(err) = publish(inner, name, from, overwrite) {
        let _ = sys::remove_if_exists(&record);
        return Err(err);
    }
    Ok(Published { record })
}

/// A volume whose data is published and whose sidecar is still its commit record.
#[must_use = "the sidecar is installed by finish(), or by recovery at the next open"]
pub(crate) struct Published {
    record: PathBuf,
}

impl Published {
    /// Installs the sidecar. An error here leaves a whole volume whose sidecar recovery
    /// installs at the next open; the message says so.
    pub fn finish(self, inner: &Inner, name: &str) -> Result<()> {
        let layout = &inner.layout;
        let finishing = |what: &str, err| unfinished(name, what, err);
        sys::fsync_dir(&layout.partial).map_err(|e| finishing("syncing partial/ failed", e))?;
        fs::rename(&self.record, layout.meta(name))
            .map_err(|e| finishing("installing its sidecar failed", e))?;
        sys::fsync_dir(&layout.meta).map_err(|e| finishing("syncing meta/ failed", e))
    }
}

/// A step after a volume's publish failed: the volume is whole, the next open finishes it.
pub(crate) fn unfinished(name: &str, what: &str, err: io::Error) -> StoreError {
    StoreError::io(
        format!(
            "volume {name:?} was published but {what}; the next open of the store completes it"
        ),
        err,
    )
}

/// Renames `from` to `volumes/<name>` (replacing only with `overwrite`) and syncs
/// `volumes/`. The caller holds the namespace lock for writing.
pub(crate) fn publish(inner: &Inner, name: &str, from: &Path, overwrite: bool) -> Result<()> {
    let layout = &inner.layout;
    let to = layout.volume(name);
    let renamed = if overwrite {
        fs::rename(from, &to)
    } else {
        sys::rename_noreplace(from, &to)
    };
    match renamed {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::AlreadyExists { name: name.into() });
        }
        Err(err) => {
            return Err(StoreError::io(
                format!("publishing volume {name:?} as {}", to.display()),
                err,
            ));
        }
    }
    sys::fsync_dir(&layout.volumes).context(|| format!("syncing {}", layout.volumes.display()))
}
