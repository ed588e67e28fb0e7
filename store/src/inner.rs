//! The state every handle on one open store shares: its layout and tunables, the namespace
//! lock, the names with an upload open in this process, what recovery did at open, and the
//! store's lock file.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::info::VolumeInfo;
use crate::layout::Layout;
use crate::meta::{self, VolumeMeta};
use crate::report::RecoveryReport;
use crate::sys;

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
    /// The state of a store just opened: `lock` holds its flock, `recovery` is what recovery
    /// did.
    pub(crate) fn new(
        layout: Layout,
        config: StoreConfig,
        recovery: RecoveryReport,
        lock: File,
    ) -> Self {
        Self {
            layout,
            config,
            namespace: RwLock::new(()),
            active: Mutex::new(HashSet::new()),
            recovery,
            _lock: lock,
        }
    }

    /// What recovery did when the store was opened.
    pub(crate) fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

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
