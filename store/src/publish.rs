//! How a volume appears: its data published by one rename (replacing only when asked) and its
//! sidecar installed after it through a commit record, so that nothing incomplete is ever
//! visible (the crash safety rules are in the crate's documentation).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};
use crate::inner::Inner;
use crate::meta::{self, VolumeMeta};
use crate::sys;

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
