//! Uploads: writing a volume as a stream of chunks into `partial/`, resumable until committed.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ferry_codec::Chunk;

use crate::blockhash::{BLOCK_SIZE, TreeHash};
use crate::blocks::{BlocksWriter, StoredHashes};
use crate::download::open_volume;
use crate::error::{IoContext, Result, StoreError};
use crate::hash_behind::HashBehind;
use crate::info::VolumeInfo;
use crate::inner::Inner;
use crate::layout::Layout;
use crate::meta::{self, PartialMeta, VolumeMeta};
use crate::name::{MAX_NAME_LEN_LIMIT, validate_name};
use crate::publish::{commit, unfinished};
use crate::sparse::{self, Extent, ExtentCursor, SparseReader};
use crate::sys;
use crate::writeback::Writeback;

/// How often a busy upload refreshes `updated` in its JSON file. Expiry is measured in hours,
/// so a minute of staleness does not matter, and rewriting the file on every chunk would.
pub(crate) const TOUCH_INTERVAL: Duration = Duration::from_secs(30);

/// What the client announces when it starts an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadOptions {
    /// The final size. Chunks past it are refused at once, and a commit at another size fails.
    pub expected_size: Option<u64>,
    /// The BLAKE3 of the whole content (holes as zeros). A commit whose data hashes otherwise
    /// fails and discards the upload.
    pub expected_checksum: Option<[u8; 32]>,
    /// Whether the commit may replace an existing volume of the same name.
    pub overwrite: bool,
    /// Whether the upload is kept for [`resume_upload`](crate::VolumeStore::resume_upload)
    /// when it ends without a decision (suspended, dropped, or the process crashed). Default
    /// `true`. An upload that is part of something larger that cannot be resumed, such as a
    /// replica of a replicated upload, sets it to `false`: it is then discarded instead, and
    /// if a crash leaves it behind, recovery removes it at the next open rather than keeping
    /// it for `resume_ttl`.
    pub resumable: bool,
    /// A delta upload: [`Chunk::Keep`] ranges are the bytes of the volume of that name as it
    /// is now, which must have this checksum ([`StoreError::BaseChanged`] otherwise). That
    /// version stays untouched and readable until the commit replaces it. A resumed delta
    /// keeps its base if it is still that version; otherwise further KEEP ranges are refused
    /// ([`StoreError::BadKeep`]) and the rest must come as data.
    pub base: Option<[u8; 32]>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            expected_size: None,
            expected_checksum: None,
            overwrite: false,
            resumable: true,
            base: None,
        }
    }
}

/// The state of a partial upload, as [`VolumeStore::upload_status`](crate::VolumeStore::upload_status)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialStatus {
    pub name: String,
    /// Bytes received so far (holes included): where a resumed upload continues.
    pub offset: u64,
    pub expected_size: Option<u64>,
    pub expected_checksum: Option<[u8; 32]>,
    pub overwrite: bool,
    /// Whether it may be resumed (see [`UploadOptions::resumable`]). One that may not is
    /// either open right now or about to be removed; it is not offered to clients.
    pub resumable: bool,
    /// Last activity; the upload expires `resume_ttl` after it. While an upload is open this
    /// may lag up to half a minute behind its last write.
    pub updated: SystemTime,
    /// Whether an [`Upload`] of it is open in this process right now (so resuming would fail
    /// with [`StoreError::UploadInProgress`]).
    pub in_progress: bool,
}

/// An upload in progress: the only writer of `partial/<name>.part`.
///
/// Chunks are written at the current offset; holes extend the file without writing, so it
/// stays sparse, and the file's length is always the upload's offset. Everything is hashed
/// with BLAKE3 as it arrives (holes as zeros).
///
/// Ends in one of three ways: [`commit`](Self::commit) publishes the volume,
/// [`abort`](Self::abort) deletes the partial data, [`suspend`](Self::suspend) keeps it for
/// [`resume_upload`](crate::VolumeStore::resume_upload). **Dropping an `Upload` suspends it**:
/// the usual reason an upload ends without a decision is a lost connection or a crashing
/// handler, and the client should then be able to resume rather than send everything again.
/// Partial uploads nobody resumes expire after `resume_ttl`. An upload begun with
/// [`UploadOptions::resumable`] `false` cannot be kept: suspending or dropping it discards it.
pub struct Upload {
    name: String,
    file: File,
    offset: u64,
    /// Keeps the written part of `file` flowing to disk behind `offset`.
    writeback: Writeback,
    /// The content's BLAKE3 and its block hashes, written to `partial/<name>.blocks`, hashed
    /// on a thread of their own beside the writes.
    hash: HashBehind<BlocksWriter>,
    /// The version a delta's KEEP ranges copy from, open since the upload began.
    base: Option<Base>,
    /// Where KEEP ranges are read to be hashed, or their stored hashes ([`KEEP_BUFFER`] once
    /// used).
    keep_buffer: Vec<u8>,
    partial: PartialMeta,
    last_touch: Instant,
    /// Set from outside (see [`stopper`](Self::stopper)) to call off the hashing of a hole.
    stop: Arc<AtomicBool>,
    /// Set once committed, aborted or suspended: then dropping does nothing more.
    done: bool,
    /// Dropped last (fields drop after `Drop::drop`), so the name stays claimed until the
    /// partial files are in their final state.
    claim: Claim,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("expected_size", &self.partial.expected_size)
            .field("overwrite", &self.partial.overwrite)
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes received so far, holes included; where the next chunk goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.partial.expected_size
    }

    pub fn expected_checksum(&self) -> Option<[u8; 32]> {
        self.partial.expected_checksum
    }

    pub fn overwrite(&self) -> bool {
        self.partial.overwrite
    }

    /// A flag that, once set, makes a hole being written stop hashing and fail with
    /// [`StoreError::Stopped`]: hashing a hole costs CPU in proportion to the length it claims
    /// (minutes for a few TiB) while the hole costs its sender 40 bytes, so that work must
    /// end when the upload's stream does (abort, lost connection). The upload is of no use
    /// after that but to be suspended or aborted.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The checksum the client vouches for at its finish (an `UploadFinish`), checked at
    /// commit like one announced at the start. Announcing two different ones fails here, as
    /// a mismatch, discarding nothing yet (the commit's checks decide).
    pub fn vouch(&mut self, checksum: [u8; 32]) -> Result<()> {
        match self.partial.expected_checksum {
            Some(announced) if announced != checksum => Err(StoreError::ChecksumMismatch {
                name: self.name.clone(),
                expected: hex::encode(announced),
                actual: hex::encode(checksum),
            }),
            _ => {
                self.partial.expected_checksum = Some(checksum);
                Ok(())
            }
        }
    }

    /// The BLAKE3 of the content received so far, as if it ended here: what a resuming
    /// client's file must start with.
    pub fn content_so_far(&mut self) -> Result<[u8; 32]> {
        Ok(self
            .hash
            .tree()
            .context(|| format!("hashing upload {:?}", self.name))?
            .root())
    }

    /// Whether it is kept for resuming when it ends without a commit or an abort.
    pub fn resumable(&self) -> bool {
        self.partial.resumable
    }

    /// Appends a chunk: data is written at the offset, a hole only moves the offset (the file
    /// is extended with `set_len`, so the hole takes no space), a KEEP copies that range of
    /// the base (its holes staying holes) with `copy_file_range`, which shares the blocks on
    /// file systems that can (XFS, Btrfs), hashing the base's bytes as it copies them.
    ///
    /// A chunk that would go past the expected size is refused whole with
    /// [`StoreError::BeyondExpectedSize`] and the upload stays where it was. If writing fails
    /// half way, the file is cut back to the offset, a consistent state to resume from (a
    /// resume hashes again what is on disk; this upload's hash has already taken in the chunk,
    /// so further writes fail).
    pub fn write(&mut self, chunk: &Chunk) -> Result<()> {
        let len = chunk.len();
        if len == 0 {
            return Ok(());
        }
        let end = self.offset.saturating_add(len);
        self.claim.inner.check_size(&self.name, end)?;
        if let Some(expected) = self.partial.expected_size
            && end > expected
        {
            return Err(StoreError::BeyondExpectedSize {
                name: self.name.clone(),
                expected,
                offset: self.offset,
                chunk: len,
            });
        }
        match chunk {
            Chunk::Data(bytes) => {
                // Handed to the hashing thread first, so that it hashes while this one writes.
                self.hash
                    .data(bytes.clone())
                    .context(|| format!("recording the block hashes of upload {:?}", self.name))?;
                if let Err(err) = self.file.write_all_at(bytes, self.offset) {
                    // The hash has taken in what the file has not.
                    self.hash.poison();
                    let _ = self.file.set_len(self.offset);
                    return Err(StoreError::io(
                        format!(
                            "writing {len} bytes at offset {} of upload {:?}",
                            self.offset, self.name
                        ),
                        err,
                    ));
                }
            }
            Chunk::Keep(_) => self.keep(len)?,
            Chunk::Hole(_) => {
                self.file.set_len(end).context(|| {
                    format!(
                        "extending upload {:?} by a hole of {len} bytes at offset {}",
                        self.name, self.offset
                    )
                })?;
                let hashed = self
                    .hash
                    .tree()
                    .and_then(|mut tree| {
                        tree.zeros_while(len, || !self.stop.load(Ordering::Relaxed))
                    })
                    .context(|| format!("recording the block hashes of upload {:?}", self.name))?;
                if !hashed {
                    // The hash is of no use now; the file is left as it was before the hole.
                    let _ = self.file.set_len(self.offset);
                    return Err(StoreError::Stopped {
                        name: self.name.clone(),
                    });
                }
            }
        }
        self.offset = end;
        self.writeback.wrote(&self.file, end);
        if self.last_touch.elapsed() >= TOUCH_INTERVAL {
            // Best effort: the chunk is written, and failing it now over a timestamp would
            // leave the caller unsure whether it was. The next touch, suspend or commit will
            // report a disk that really is failing.
            let _ = self.touch(false);
        }
        Ok(())
    }

    /// Copies `[offset, offset + len)` of the base, data with `copy_file_range` and holes as
    /// holes; on failure the file is cut back to the offset.
    ///
    /// Whole blocks past the first are taken into the hash by their stored block hashes when
    /// the base has a usable list (see [`StoreConfig::verify_kept_data`]): the hashes were made
    /// from those bytes when the base was committed, so they need not be read again, and with
    /// shared extents (XFS, Btrfs) a kept block then costs no I/O at all. The rest (the first
    /// block, a partial block at either end, every block when the list is missing or
    /// verification is asked for) is read from the base and hashed as it is copied.
    fn keep(&mut self, len: u64) -> Result<()> {
        let name = &self.name;
        let offset = self.offset;
        let Some(base) = &self.base else {
            return Err(StoreError::BadKeep {
                name: name.clone(),
                reason: "a KEEP range, but the upload names no base (UploadRequest.base_checksum)"
                    .into(),
            });
        };
        let end = offset + len;
        if end > base.size {
            return Err(StoreError::BadKeep {
                name: name.clone(),
                reason: format!(
                    "a KEEP of {len} bytes at offset {offset} ends past the base's {} bytes",
                    base.size
                ),
            });
        }
        let mut tree = self
            .hash
            .tree()
            .context(|| format!("recording the block hashes of upload {name:?}"))?;
        let mut keeper = Keeper {
            base,
            file: &self.file,
            hash: &mut tree,
            stop: &self.stop,
            buffer: &mut self.keep_buffer,
        };
        match keeper.keep(offset, end) {
            Ok(true) => Ok(()),
            Ok(false) => {
                let _ = self.file.set_len(offset);
                Err(StoreError::Stopped { name: name.clone() })
            }
            Err(err) => {
                let _ = self.file.set_len(offset);
                Err(StoreError::io(
                    format!(
                        "copying {len} bytes of the base at offset {offset} into upload {name:?}"
                    ),
                    err,
                ))
            }
        }
    }

    /// Verifies the upload against what was announced and publishes it as volume `name`.
    ///
    /// In order: the size and checksum are checked (a mismatch deletes the partial upload and
    /// fails with [`StoreError::SizeMismatch`] / [`StoreError::ChecksumMismatch`]); the data is
    /// `fsync`ed; the new sidecar is written as a commit record; the data file is renamed into
    /// `volumes/` (refusing to replace unless the upload overwrites); the record is renamed
    /// into `meta/`; the directories are synced. The volume is visible only once this returns
    /// `Ok`.
    ///
    /// If a volume of the name appeared meanwhile and the upload does not overwrite, this fails
    /// with [`StoreError::AlreadyExists`] and **keeps** the partial upload: delete the volume
    /// and resume, or discard the upload. (A non-resumable upload is discarded, as always
    /// when it is dropped.)
    pub fn commit(mut self) -> Result<VolumeInfo> {
        let inner = Arc::clone(&self.claim.inner);
        let layout = &inner.layout;
        let name = self.name.clone();
        let size = self.offset;
        if let Some(expected) = self.partial.expected_size
            && expected != size
        {
            self.discard_files()?;
            return Err(StoreError::SizeMismatch {
                name,
                expected,
                actual: size,
            });
        }
        let actual = self
            .hash
            .tree()
            .and_then(|mut tree| tree.finish())
            .context(|| format!("recording the block hashes of upload {name:?}"))?;
        if let Some(expected) = self.partial.expected_checksum
            && expected != actual
        {
            self.discard_files()?;
            return Err(StoreError::ChecksumMismatch {
                name,
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
        self.file
            .sync_all()
            .context(|| format!("syncing the data of upload {name:?}"))?;
        self.hash
            .tree()
            .and_then(|mut tree| {
                let block_size = tree.block_size();
                tree.out_mut().seal(block_size, size, &actual)
            })
            .context(|| format!("syncing the block hashes of upload {name:?}"))?;

        let _namespace = inner.write_namespace();
        let volume = layout.volume(&name);
        let exists = match fs::symlink_metadata(&volume) {
            Ok(_) => true,
            Err(err) if err.kind() == io::ErrorKind::NotFound => false,
            Err(err) => return Err(StoreError::io(format!("reading {}", volume.display()), err)),
        };
        if exists && !self.partial.overwrite {
            return Err(StoreError::AlreadyExists { name });
        }
        let previous = if exists {
            meta::read::<VolumeMeta>(&layout.meta(&name)).ok().flatten()
        } else {
            None
        };
        let now = sys::now_millis();
        let sidecar = VolumeMeta {
            format: meta::FORMAT,
            size,
            checksum: Some(actual),
            created: previous.map_or(now, |p| p.created),
            modified: now,
        };
        let published = commit(
            &inner,
            &name,
            &layout.part(&name),
            &sidecar,
            self.partial.overwrite,
        )?;
        // The data is the volume now; from here on nothing is left to suspend, and a failure
        // is finished by recovery at the next open (the commit record says how).
        self.done = true;
        let finishing = |what: &str, err| unfinished(&name, what, err);
        // Before the sidecar, so that while the commit record exists recovery knows the
        // block hashes in partial/ are this version's.
        fs::rename(layout.partial_blocks(&name), layout.blocks(&name))
            .map_err(|e| finishing("installing its block hashes failed", e))?;
        published.finish(&inner, &name)?;
        sys::remove_if_exists(&layout.partial_json(&name))
            .map_err(|e| finishing("removing its partial upload record failed", e))?;
        sys::fsync_dir(&layout.partial).map_err(|e| finishing("syncing partial/ failed", e))?;
        inner.info_locked(&name)
    }

    /// Deletes the partial upload: the client gave up, or its data cannot be trusted.
    pub fn abort(mut self) -> Result<()> {
        self.discard_files()
    }

    /// Keeps the partial upload for [`resume_upload`](crate::VolumeStore::resume_upload): syncs
    /// the data and records the time, so the upload survives a crash and its expiry counts
    /// from now. Dropping an `Upload` does the same, ignoring errors.
    ///
    /// A non-resumable upload is discarded instead: nothing would ever continue it, so keeping
    /// it would only hold its disk space until it expired.
    pub fn suspend(mut self) -> Result<()> {
        self.interrupt()
    }

    /// Ends the upload without a decision: see [`suspend`](Self::suspend).
    fn interrupt(&mut self) -> Result<()> {
        if !self.partial.resumable {
            return self.discard_files();
        }
        self.done = true;
        self.file
            .sync_data()
            .context(|| format!("syncing the data of upload {:?}", self.name))?;
        self.touch(true)
    }

    fn discard_files(&mut self) -> Result<()> {
        self.done = true;
        remove_partial_files(&self.claim.inner.layout, &self.name)
    }

    /// Records activity in the partial upload's JSON file.
    fn touch(&mut self, durable: bool) -> Result<()> {
        self.last_touch = Instant::now();
        self.partial.updated = sys::now_millis();
        meta::write(
            &self.claim.inner.layout.partial_json(&self.name),
            &self.partial,
            durable,
        )
    }
}

impl Drop for Upload {
    /// Suspends (or discards a non-resumable upload): see the type's documentation for why
    /// dropping keeps the upload. Errors are ignored: there is nobody to report them to, and
    /// recovery at the next open judges whatever is left.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.interrupt();
            self.done = true;
        }
    }
}

/// This process's claim on a name for uploading, released on drop.
struct Claim {
    inner: Arc<Inner>,
    name: String,
}

impl Claim {
    fn take(inner: &Arc<Inner>, name: &str) -> Result<Self> {
        if !inner.active().insert(name.to_string()) {
            return Err(StoreError::UploadInProgress { name: name.into() });
        }
        Ok(Self {
            inner: Arc::clone(inner),
            name: name.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.inner.active().remove(&self.name);
    }
}

pub(crate) fn begin(inner: &Arc<Inner>, name: &str, options: UploadOptions) -> Result<Upload> {
    let layout = &inner.layout;
    if !options.overwrite && fs::symlink_metadata(layout.volume(name)).is_ok() {
        return Err(StoreError::AlreadyExists { name: name.into() });
    }
    if let Some(size) = options.expected_size {
        inner.check_size(name, size)?;
    }
    let claim = Claim::take(inner, name)?;
    remove_partial_files(layout, name)?;
    let base = options
        .base
        .map(|checksum| Base::open(inner, name, checksum))
        .transpose()?;
    let now = sys::now_millis();
    let partial = PartialMeta {
        format: meta::FORMAT,
        expected_size: options.expected_size,
        expected_checksum: options.expected_checksum,
        overwrite: options.overwrite,
        resumable: options.resumable,
        base: options.base,
        created: now,
        updated: now,
    };
    // The JSON first: data without it is an orphan that recovery removes, so a crash here
    // never leaves an upload that cannot say what it expects.
    meta::write(&layout.partial_json(name), &partial, true)?;
    let part = layout.part(name);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
    {
        Ok(file) => file,
        Err(err) => {
            let _ = sys::remove_if_exists(&layout.partial_json(name));
            return Err(StoreError::io(format!("creating {}", part.display()), err));
        }
    };
    let blocks_path = layout.partial_blocks(name);
    let blocks = match BlocksWriter::create(&blocks_path) {
        Ok(blocks) => blocks,
        Err(err) => {
            let _ = remove_partial_files(layout, name);
            return Err(StoreError::io(
                format!("creating {}", blocks_path.display()),
                err,
            ));
        }
    };
    Ok(Upload {
        name: name.to_string(),
        file,
        offset: 0,
        writeback: Writeback::new(0),
        hash: HashBehind::start(TreeHash::new(BLOCK_SIZE, blocks)),
        base,
        keep_buffer: Vec::new(),
        partial,
        last_touch: Instant::now(),
        stop: Arc::default(),
        done: false,
        claim,
    })
}

pub(crate) fn resume(inner: &Arc<Inner>, name: &str) -> Result<Upload> {
    let layout = &inner.layout;
    let claim = Claim::take(inner, name)?;
    let no_partial = || StoreError::NoPartialUpload { name: name.into() };
    let partial = meta::read::<PartialMeta>(&layout.partial_json(name))?.ok_or_else(no_partial)?;
    if !partial.resumable {
        return Err(StoreError::NotResumable { name: name.into() });
    }
    let part = layout.part(name);
    let file = match OpenOptions::new().read(true).write(true).open(&part) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(no_partial()),
        Err(err) => return Err(StoreError::io(format!("opening {}", part.display()), err)),
    };
    if !partial.overwrite && fs::symlink_metadata(layout.volume(name)).is_ok() {
        return Err(StoreError::AlreadyExists { name: name.into() });
    }
    // What was copied from the base is in the partial data already; the base is only needed
    // for KEEP ranges still to come, which are refused if it changed meanwhile.
    let base = match partial
        .base
        .map(|checksum| Base::open(inner, name, checksum))
    {
        Some(Ok(base)) => Some(base),
        None | Some(Err(StoreError::BaseChanged { .. })) => None,
        Some(Err(err)) => return Err(err),
    };
    let offset = file
        .metadata()
        .context(|| format!("reading {}", part.display()))?
        .len();
    let blocks_path = layout.partial_blocks(name);
    let blocks = BlocksWriter::create(&blocks_path)
        .context(|| format!("creating {}", blocks_path.display()))?;
    let hash = rehash(&file, offset, TreeHash::new(BLOCK_SIZE, blocks))
        .context(|| format!("reading back {}", part.display()))?;
    let hash = HashBehind::start(hash);
    let mut upload = Upload {
        name: name.to_string(),
        file,
        offset,
        writeback: Writeback::new(offset),
        hash,
        base,
        keep_buffer: Vec::new(),
        partial,
        last_touch: Instant::now(),
        stop: Arc::default(),
        done: false,
        claim,
    };
    upload.touch(false)?;
    Ok(upload)
}

/// `hash` continued over the first `len` bytes of `file`, reading only its data: holes are
/// found with `SEEK_HOLE` and hashed as zeros without being read.
fn rehash(
    file: &File,
    len: u64,
    mut hash: TreeHash<BlocksWriter>,
) -> io::Result<TreeHash<BlocksWriter>> {
    let mut reader = SparseReader::new(file.try_clone()?, 0, len);
    while let Some(chunk) = reader.next_chunk(1 << 20)? {
        match chunk {
            Chunk::Data(bytes) => hash.data(&bytes)?,
            other => {
                hash.zeros_while(other.len(), || true)?;
            }
        }
    }
    Ok(hash)
}

/// Bytes of a KEEP hashed and copied at a time: the one buffer a delta upload
/// holds (allocated at its first KEEP), which the node charges to the connection's memory
/// budget for the upload's life.
pub const KEEP_BUFFER: usize = 64 * 1024;

/// The version of a volume that a delta upload builds on.
struct Base {
    file: File,
    size: u64,
    /// Its block hashes, when they can stand for kept blocks (checked to merge into its
    /// checksum when the upload began).
    hashes: Option<StoredHashes>,
}

impl Base {
    /// Opens volume `name` if it is the version with `checksum`.
    fn open(inner: &Inner, name: &str, checksum: [u8; 32]) -> Result<Self> {
        let changed = |now: String| StoreError::BaseChanged {
            name: name.into(),
            expected: hex::encode(checksum),
            now,
        };
        let (file, volume) = match open_volume(inner, name) {
            Ok(opened) => opened,
            Err(StoreError::NotFound { .. }) => return Err(changed("no such volume".into())),
            Err(err) => return Err(err),
        };
        match volume.checksum {
            Some(now) if now == checksum => {}
            Some(now) => return Err(changed(format!("its checksum is {}", hex::encode(now)))),
            None => return Err(changed("it has no checksum".into())),
        }
        let hashes = if inner.config.verify_kept_data {
            None
        } else {
            StoredHashes::open(inner, name, &file, &volume, true)?
                .ok()
                .filter(|hashes| hashes.block_size == BLOCK_SIZE)
        };
        Ok(Self {
            file,
            size: volume.size,
            hashes,
        })
    }
}

/// One KEEP range being copied from the base into the upload.
struct Keeper<'a> {
    base: &'a Base,
    file: &'a File,
    hash: &'a mut TreeHash<BlocksWriter>,
    stop: &'a AtomicBool,
    /// [`KEEP_BUFFER`] bytes, for the base's bytes or its stored hashes.
    buffer: &'a mut Vec<u8>,
}

impl Keeper<'_> {
    /// Copies `[offset, end)`; `Ok(false)` if stopped.
    fn keep(&mut self, mut at: u64, end: u64) -> io::Result<bool> {
        let base = self.base;
        self.buffer.resize(KEEP_BUFFER, 0);
        while at < end {
            let block = at / BLOCK_SIZE;
            let whole = (end - at) / BLOCK_SIZE;
            let known = base
                .hashes
                .as_ref()
                .filter(|_| at.is_multiple_of(BLOCK_SIZE) && block >= 1 && whole >= 1);
            let to = match (known, &base.hashes) {
                // Whole blocks by their hashes, at most a buffer of hashes at a time.
                (Some(_), _) => at + whole.min(KEEP_BUFFER as u64 / 32) * BLOCK_SIZE,
                // Bytes to the next block boundary, where stored hashes take over.
                (None, Some(_)) => ((block + 1) * BLOCK_SIZE).min(end),
                (None, None) => end,
            };
            if !self.copy(at, to, known.is_none())? {
                return Ok(false);
            }
            if let Some(hashes) = known {
                let list = &mut self.buffer[..(32 * (to - at) / BLOCK_SIZE) as usize];
                hashes.read(block, list)?;
                for hash in list.chunks_exact(32) {
                    self.hash.known_block(hash.try_into().expect("32 bytes"))?;
                }
            }
            at = to;
        }
        Ok(true)
    }

    /// Copies `[from, to)` of the base, data with `copy_file_range` and holes as holes, hashing
    /// the bytes (read from the base, whose pages are the ones in cache: a shared extent's
    /// copy is a new file's, never read yet) if `hashing`. `Ok(false)` if stopped.
    fn copy(&mut self, from: u64, to: u64, hashing: bool) -> io::Result<bool> {
        /// What one `copy_file_range` is asked for when nothing is hashed: a stop is heard
        /// within one such piece.
        const UNHASHED_PIECE: u64 = 64 << 20;
        let mut cursor = ExtentCursor::new(from, to);
        while let Some(extent) = cursor.peek(&self.base.file)? {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let at = cursor.pos();
            match extent {
                Extent::Hole(n) => {
                    self.file.set_len(at + n)?;
                    if hashing
                        && !self
                            .hash
                            .zeros_while(n, || !self.stop.load(Ordering::Relaxed))?
                    {
                        return Ok(false);
                    }
                    cursor.advance(n);
                }
                Extent::Data(n) if hashing => {
                    let n = n.min(KEEP_BUFFER as u64);
                    let piece = &mut self.buffer[..n as usize];
                    self.base.file.read_exact_at(piece, at)?;
                    self.hash.data(piece)?;
                    sparse::copy_range(&self.base.file, self.file, at, n)?;
                    cursor.advance(n);
                }
                Extent::Data(n) => {
                    let n = n.min(UNHASHED_PIECE);
                    sparse::copy_range(&self.base.file, self.file, at, n)?;
                    cursor.advance(n);
                }
            }
        }
        Ok(true)
    }
}

pub(crate) fn status(inner: &Inner, name: &str) -> Result<Option<PartialStatus>> {
    let layout = &inner.layout;
    let Some(partial) = meta::read::<PartialMeta>(&layout.partial_json(name))? else {
        return Ok(None);
    };
    let part = layout.part(name);
    let offset = match fs::metadata(&part) {
        Ok(metadata) => metadata.len(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::io(format!("reading {}", part.display()), err)),
    };
    let in_progress = inner.active().contains(name);
    Ok(Some(PartialStatus {
        name: name.to_string(),
        offset,
        expected_size: partial.expected_size,
        expected_checksum: partial.expected_checksum,
        overwrite: partial.overwrite,
        resumable: partial.resumable,
        updated: sys::from_unix_millis(partial.updated),
        in_progress,
    }))
}

pub(crate) fn list(inner: &Inner) -> Result<Vec<PartialStatus>> {
    let dir = &inner.layout.partial;
    let mut names = HashSet::new();
    for entry in fs::read_dir(dir).context(|| format!("listing {}", dir.display()))? {
        let entry = entry.context(|| format!("listing {}", dir.display()))?;
        if let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|file| file.strip_suffix(".json"))
            .filter(|name| validate_name(name, MAX_NAME_LEN_LIMIT).is_ok())
        {
            names.insert(name.to_string());
        }
    }
    let mut statuses = Vec::new();
    for name in names {
        // A partial whose files vanish between the listing and now was just committed or
        // aborted, and one whose JSON does not parse cannot be resumed (the next open removes
        // it): leave both out rather than fail the whole listing.
        match status(inner, &name) {
            Ok(Some(status)) => statuses.push(status),
            Ok(None) | Err(StoreError::Corrupt { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(statuses)
}

pub(crate) fn discard(inner: &Arc<Inner>, name: &str) -> Result<()> {
    let layout = &inner.layout;
    let _claim = Claim::take(inner, name)?;
    let exists = [layout.part(name), layout.partial_json(name)]
        .iter()
        .any(|path| fs::symlink_metadata(path).is_ok());
    if !exists {
        return Err(StoreError::NoPartialUpload { name: name.into() });
    }
    remove_partial_files(layout, name)
}

/// Removes every file of the partial upload `name`: data first, so a crash half way leaves a
/// JSON without data, which recovery recognises as debris.
pub(crate) fn remove_partial_files(layout: &Layout, name: &str) -> Result<()> {
    // The block hashes first: alone they would look like a commit's to recovery.
    for path in [
        layout.partial_blocks(name),
        layout.part(name),
        layout.partial_json(name),
        layout.commit_record(name),
    ] {
        sys::remove_if_exists(&path).context(|| format!("deleting {}", path.display()))?;
    }
    Ok(())
}
