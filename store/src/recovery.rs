//! Crash recovery at open, and expiry of abandoned partial uploads.
//!
//! Every multi-step operation of the store is ordered so that what a crash can leave behind is
//! recognisable here and has one safe resolution: temporary files are deleted, a commit whose
//! data was published is completed, one whose data was not is rolled back to a resumable
//! partial upload, and half-made partial uploads are removed, as are partial uploads begun as
//! not resumable (nothing will ever continue them).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::config::StoreConfig;
use crate::error::{IoContext, Result, StoreError};
use crate::inner::Inner;
use crate::layout::Layout;
use crate::meta::{self, PartialMeta, VolumeMeta};
use crate::name::{MAX_NAME_LEN_LIMIT, validate_name};
pub use crate::report::RecoveryReport;
use crate::sys;
use crate::upload::remove_partial_files;

/// The files of one name in `partial/`.
#[derive(Debug, Default)]
struct PartialFiles {
    part: bool,
    json: bool,
    commit: bool,
    blocks: bool,
}

pub(crate) fn recover(layout: &Layout, config: &StoreConfig) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    let mut dirty = Dirty::default();

    // 1. Temporary files: whatever wrote them did not finish.
    for (i, dir) in [&layout.volumes, &layout.meta, &layout.partial]
        .into_iter()
        .enumerate()
    {
        for (file_name, file_type) in entries(dir)? {
            if sys::is_temp_name(&file_name) && !file_type.is_dir() {
                remove(&dir.join(&file_name))?;
                report.temp_files_removed += 1;
                dirty.0[i] = true;
            }
        }
    }

    // 2. Partial uploads and interrupted commits.
    let mut partials: BTreeMap<String, PartialFiles> = BTreeMap::new();
    for (file_name, file_type) in entries(&layout.partial)? {
        let parsed = [".part", ".json", ".commit", ".blocks"]
            .into_iter()
            .find_map(|suffix| {
                file_name
                    .strip_suffix(suffix)
                    .filter(|name| validate_name(name, MAX_NAME_LEN_LIMIT).is_ok())
                    .map(|name| (name.to_string(), suffix))
            });
        match parsed {
            Some((name, suffix)) if file_type.is_file() => {
                let files = partials.entry(name).or_default();
                match suffix {
                    ".part" => files.part = true,
                    ".json" => files.json = true,
                    ".blocks" => files.blocks = true,
                    _ => files.commit = true,
                }
            }
            _ => report.ignored_entries += 1,
        }
    }
    let now = sys::now_millis();
    for (name, files) in partials {
        let commit_record = layout.commit_record(&name);
        if files.blocks && !files.part && (files.commit || !files.json) {
            // A commit published the data but did not get to install its block hashes.
            // Installed if the volume exists: they are used only if they match its checksum,
            // so a stale file costs nothing but a full transfer.
            let blocks = layout.partial_blocks(&name);
            if is_file(&layout.volume(&name)) {
                fs::rename(&blocks, layout.blocks(&name))
                    .context(|| format!("installing the block hashes of volume {name:?}"))?;
                dirty.set_meta();
            } else {
                remove(&blocks)?;
            }
            dirty.set_partial();
        }
        if files.commit {
            if !files.part {
                // The data was published; the sidecar was not installed yet.
                if is_file(&layout.volume(&name)) {
                    fs::rename(&commit_record, layout.meta(&name))
                        .context(|| format!("completing the commit of volume {name:?}"))?;
                    report.commits_completed += 1;
                    dirty.set_meta();
                } else {
                    remove(&commit_record)?;
                    report.broken_partials_removed += 1;
                }
                remove(&layout.partial_json(&name))?;
                dirty.set_partial();
                continue;
            }
            // The data was not published: the upload is partial again.
            remove(&commit_record)?;
            report.commits_rolled_back += 1;
            dirty.set_partial();
        }
        if files.part && files.json {
            match meta::read::<PartialMeta>(&layout.partial_json(&name)) {
                Ok(Some(partial)) => match removal(&partial, now, config) {
                    None => report.partials_kept += 1,
                    Some(why) => {
                        remove_partial_files(layout, &name)?;
                        *match why {
                            Removal::Expired => &mut report.expired_partials_removed,
                            Removal::NotResumable => &mut report.unresumable_partials_removed,
                        } += 1;
                        dirty.set_partial();
                    }
                },
                Ok(None) | Err(StoreError::Corrupt { .. }) => {
                    remove_partial_files(layout, &name)?;
                    report.broken_partials_removed += 1;
                    dirty.set_partial();
                }
                Err(err) => return Err(err),
            }
        } else if files.part || files.json {
            remove_partial_files(layout, &name)?;
            report.broken_partials_removed += 1;
            dirty.set_partial();
        }
    }

    // 3. Sidecars and block hashes: each needs its volume.
    for (file_name, file_type) in entries(&layout.meta)? {
        if let Some(name) = file_name
            .strip_suffix(".blocks")
            .filter(|name| validate_name(name, MAX_NAME_LEN_LIMIT).is_ok())
            .filter(|_| file_type.is_file())
        {
            if !is_file(&layout.volume(name)) {
                remove(&layout.blocks(name))?;
                dirty.set_meta();
            }
            continue;
        }
        let Some(name) = file_name
            .strip_suffix(".json")
            .filter(|name| validate_name(name, MAX_NAME_LEN_LIMIT).is_ok())
            .filter(|_| file_type.is_file())
        else {
            report.ignored_entries += 1;
            continue;
        };
        if !is_file(&layout.volume(name)) {
            remove(&layout.meta(name))?;
            report.orphan_meta_removed += 1;
            dirty.set_meta();
        } else if let Err(StoreError::Corrupt { .. }) = meta::read::<VolumeMeta>(&layout.meta(name))
        {
            report.unreadable_meta += 1;
        }
    }

    // 4. Volumes: count them, and what is not one.
    for (file_name, file_type) in entries(&layout.volumes)? {
        if file_type.is_file() && validate_name(&file_name, MAX_NAME_LEN_LIMIT).is_ok() {
            report.volumes += 1;
        } else {
            report.ignored_entries += 1;
        }
    }

    for (dir, changed) in [&layout.volumes, &layout.meta, &layout.partial]
        .into_iter()
        .zip(dirty.0)
    {
        if changed {
            sys::fsync_dir(dir).context(|| format!("syncing {}", dir.display()))?;
        }
    }
    Ok(report)
}

/// See [`VolumeStore::expire_partials`](crate::VolumeStore::expire_partials).
pub(crate) fn expire(inner: &Inner) -> Result<usize> {
    let layout = &inner.layout;
    let now = sys::now_millis();
    let mut removed = 0;
    for (file_name, _) in entries(&layout.partial)? {
        let Some(name) = file_name
            .strip_suffix(".json")
            .filter(|name| validate_name(name, MAX_NAME_LEN_LIMIT).is_ok())
        else {
            continue;
        };
        // Held while deciding and removing, so the upload cannot be resumed in between.
        let active = inner.active();
        if active.contains(name) {
            continue;
        }
        // A JSON that does not parse is left for recovery at the next open to judge.
        if let Ok(Some(partial)) = meta::read::<PartialMeta>(&layout.partial_json(name))
            && removal(&partial, now, &inner.config).is_some()
        {
            remove_partial_files(layout, name)?;
            removed += 1;
        }
        drop(active);
    }
    Ok(removed)
}

/// Why a partial upload that is not open is removed rather than kept for resuming.
enum Removal {
    /// Idle for at least `resume_ttl` (so a TTL of zero expires every partial upload).
    Expired,
    /// Begun as not resumable: nothing will continue it, however recent.
    NotResumable,
}

/// Whether (and why) a partial upload that is not open goes, at open and in expiry sweeps.
fn removal(partial: &PartialMeta, now: u64, config: &StoreConfig) -> Option<Removal> {
    let ttl = u64::try_from(config.resume_ttl.as_millis()).unwrap_or(u64::MAX);
    if !partial.resumable {
        Some(Removal::NotResumable)
    } else if now.saturating_sub(partial.updated) >= ttl {
        Some(Removal::Expired)
    } else {
        None
    }
}

/// Which of volumes/, meta/, partial/ had entries removed or renamed and need a sync.
#[derive(Default)]
struct Dirty([bool; 3]);

impl Dirty {
    fn set_meta(&mut self) {
        self.0[1] = true;
    }

    fn set_partial(&mut self) {
        self.0[2] = true;
    }
}

/// The entries of a directory with their types (not following symlinks). Names that are not
/// UTF-8 are not the store's and are skipped.
fn entries(dir: &Path) -> Result<Vec<(String, fs::FileType)>> {
    let listing = |_: ()| format!("listing {}", dir.display());
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).context(|| listing(()))? {
        let entry = entry.context(|| listing(()))?;
        let file_type = entry.file_type().context(|| listing(()))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, file_type));
        }
    }
    Ok(out)
}

fn is_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

fn remove(path: &Path) -> Result<()> {
    sys::remove_if_exists(path)
        .map(drop)
        .context(|| format!("deleting {}", path.display()))
}
