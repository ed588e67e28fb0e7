//! Downloads: a range of a volume as data chunks and holes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use ferry_codec::Chunk;

use crate::error::{IoContext, Result, StoreError};
use crate::info::VolumeInfo;
use crate::inner::Inner;
use crate::sparse::SparseReader;

/// A range of a volume being read out as [`Chunk`]s.
///
/// Holes of the file (found with `lseek(SEEK_DATA / SEEK_HOLE)`) come out as
/// [`Chunk::Hole`] without being read, so a sparse volume costs only its data in disk reads
/// and on the wire. The download reads the file it opened: if the volume is overwritten or
/// deleted meanwhile, it still delivers the version it started with, and [`volume`](Self::volume)
/// describes that version (its checksum is the one to verify against).
#[derive(Debug)]
pub struct Download {
    reader: SparseReader,
    volume: VolumeInfo,
    start: u64,
    end: u64,
}

pub(crate) fn open(
    inner: &Inner,
    name: &str,
    offset: u64,
    length: Option<u64>,
) -> Result<Download> {
    let (file, volume) = open_volume(inner, name)?;
    let size = volume.size;
    let end = match length {
        None => Some(size),
        Some(length) => offset.checked_add(length),
    };
    let end = match end {
        Some(end) if offset <= size && end <= size => end,
        _ => {
            return Err(StoreError::InvalidRange {
                name: name.into(),
                offset,
                length,
                size,
            });
        }
    };
    Ok(Download {
        reader: SparseReader::new(file, offset, end),
        volume,
        start: offset,
        end,
    })
}

/// Opens volume `name` for reading, with what its sidecar says of that version.
pub(crate) fn open_volume(inner: &Inner, name: &str) -> Result<(File, VolumeInfo)> {
    let path = inner.layout.volume(name);
    // Under the namespace lock, so the file and its sidecar are of the same version.
    let _namespace = inner.read_namespace();
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if matches!(err.kind(), io::ErrorKind::NotFound) => {
            return Err(StoreError::NotFound { name: name.into() });
        }
        Err(err) => return Err(StoreError::io(format!("opening {}", path.display()), err)),
    };
    let metadata = file
        .metadata()
        .context(|| format!("reading {}", path.display()))?;
    if !metadata.is_file() {
        return Err(StoreError::NotFound { name: name.into() });
    }
    let volume = inner.info_from(name, &metadata);
    Ok((file, volume))
}

impl Download {
    /// The volume as it was when the download was opened.
    pub fn volume(&self) -> &VolumeInfo {
        &self.volume
    }

    /// Length of the range in bytes, holes included: what the chunks will add up to.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the range starts in the volume.
    pub fn offset(&self) -> u64 {
        self.start
    }

    /// Where the next chunk starts in the volume.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// Bytes of the range not yet returned.
    pub fn remaining(&self) -> u64 {
        self.reader.remaining()
    }

    /// The next piece of the range: a [`Chunk::Data`] of at most `max` bytes, or a
    /// [`Chunk::Hole`] of any length (a hole costs nothing to send, so it is not split);
    /// `None` at the end.
    ///
    /// Each data chunk is one positional read into a buffer allocated for it, which becomes
    /// the chunk's `Bytes` without another copy. `max` must not be 0.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Chunk>> {
        let pos = self.reader.position();
        self.reader
            .next_chunk(max)
            .context(|| format!("reading at offset {pos} of volume {:?}", self.volume.name))
    }
}
