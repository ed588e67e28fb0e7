//! [`VolumeStore`]: the handle every operation of the store starts from.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::blocks::{self, BlockHashes};
use crate::config::StoreConfig;
use crate::download::{self, Download};
use crate::error::{IoContext, Result, StoreError};
use crate::info::VolumeInfo;
use crate::inner::Inner;
use crate::layout::Layout;
use crate::meta::{self, VolumeMeta};
use crate::name::{MAX_NAME_LEN_LIMIT, validate_name};
use crate::publish::commit;
use crate::recovery::{self, RecoveryReport};
use crate::sys;
use crate::upload::{self, PartialStatus, Upload, UploadOptions};

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
            inner: Arc::new(Inner::new(layout, config, recovery, lock)),
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.inner.recovery()
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
