//! `meta/<name>.blocks`: a committed volume's block hashes ([`crate::blockhash`]), written by
//! the upload that made the version, so a delta against it starts without reading the volume.
//!
//! Layout, big endian: a 64-byte header (the magic `FERRYBH1`, the block size as `u32`, 4
//! reserved bytes, the volume's size as `u64`, its BLAKE3 in 32 bytes, 8 reserved bytes), then
//! one 32-byte hash per block. A file is used only if its header names the volume's current
//! size and checksum, its length fits, and (checked whenever a delta starts, at page 0) its
//! hashes merge into that checksum: a stale or damaged file is reported as unusable and the
//! volume is then moved in full, never trusted.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::blockhash::{self, BlockHash, Tree};
use crate::download::open_volume;
use crate::error::{IoContext, Result, StoreError};
use crate::info::VolumeInfo;
use crate::inner::Inner;

const MAGIC: [u8; 8] = *b"FERRYBH1";
pub(crate) const HEADER_LEN: u64 = 64;
/// The most hashes one [`page`] returns: 96, 3 KiB (24 MiB of volume at 256 KiB blocks). A
/// reply stays under 4 KiB with its volume record, so replies a peer leaves unread are bounded
/// like every small reply (`max_in_flight_calls` × 4 KiB, docs/SECURITY.md) instead of
/// parking a large allocation per call; a client walking its file fetches the next page
/// every 24 MiB, one round trip.
pub const MAX_PAGE: u64 = 96;

/// Block hashes being written by an upload (`partial/<name>.blocks`), in block order after a
/// placeholder header that [`seal`](Self::seal) fills in at commit.
pub(crate) struct BlocksWriter {
    out: BufWriter<File>,
}

impl BlocksWriter {
    /// Creates (or empties) the file.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(&[0; HEADER_LEN as usize])?;
        Ok(Self { out })
    }

    /// Writes the header for the content the hashes describe and syncs the file.
    pub fn seal(&mut self, block_size: u64, size: u64, checksum: &[u8; 32]) -> io::Result<()> {
        self.out.flush()?;
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&(block_size as u32).to_be_bytes());
        header[16..24].copy_from_slice(&size.to_be_bytes());
        header[24..56].copy_from_slice(checksum);
        let file = self.out.get_ref();
        file.write_all_at(&header, 0)?;
        file.sync_data()
    }
}

impl Write for BlocksWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Some of a volume's block hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPage {
    pub block_size: u64,
    /// Blocks of the volume in all.
    pub total: u64,
    /// The index of the first hash here.
    pub first: u64,
    /// 32 bytes per block, from `first` on.
    pub hashes: Vec<u8>,
}

/// What [`VolumeStore::block_hashes`](crate::VolumeStore::block_hashes) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockHashes {
    Available(BlockPage),
    /// The version has none: made by CREATE, by an older ferryd, or without a checksum.
    Missing,
    /// The file is stale or damaged (the reason says how); a delta must not use it.
    Unusable(String),
}

/// A committed version's block-hash file, found to describe that version: its header names
/// the version's size and checksum, its length fits, and (if asked when opened) its hashes
/// merge into the checksum.
pub(crate) struct StoredHashes {
    file: File,
    pub block_size: u64,
    /// Blocks of the version.
    pub total: u64,
}

impl StoredHashes {
    /// `meta/<name>.blocks` for `volume` (open as `volume_file`), or why there is none to use
    /// ([`BlockHashes::Missing`] or [`BlockHashes::Unusable`]). `merge` also checks that the
    /// hashes merge into the checksum (reading all of them, 1/8192 of the volume).
    pub fn open(
        inner: &Inner,
        name: &str,
        volume_file: &File,
        volume: &VolumeInfo,
        merge: bool,
    ) -> Result<std::result::Result<Self, BlockHashes>> {
        let path = inner.layout.blocks(name);
        let Some(checksum) = volume.checksum else {
            return Ok(Err(BlockHashes::Missing));
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(BlockHashes::Missing));
            }
            Err(err) => {
                return Err(StoreError::io(format!("opening {}", path.display()), err));
            }
        };
        let read = |what: &str| format!("reading {} ({what})", path.display());
        let unusable =
            |why: String| Err(BlockHashes::Unusable(format!("{}: {why}", path.display())));
        let mut header = [0u8; HEADER_LEN as usize];
        if let Err(err) = file.read_exact_at(&mut header, 0) {
            if err.kind() == io::ErrorKind::UnexpectedEof {
                return Ok(unusable("shorter than its header".into()));
            }
            return Err(StoreError::io(read("header"), err));
        }
        let block_size = u64::from(u32::from_be_bytes(
            header[8..12].try_into().expect("4 bytes"),
        ));
        let size = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        if header[..8] != MAGIC || !blockhash::valid_block_size(block_size) {
            return Ok(unusable("not a block-hash file".into()));
        }
        if size != volume.size || header[24..56] != checksum {
            return Ok(unusable("it describes another version".into()));
        }
        let total = blockhash::block_count(size, block_size);
        let len = file.metadata().context(|| read("length"))?.len();
        if len != HEADER_LEN + 32 * total {
            return Ok(unusable(format!("{len} bytes for {total} blocks")));
        }
        if merge
            && merge_all(&file, total, block_size, volume_file, volume.size)
                .context(|| read("checking its hashes"))?
                != checksum
        {
            return Ok(unusable(
                "its hashes do not merge into the volume's checksum".into(),
            ));
        }
        Ok(Ok(Self {
            file,
            block_size,
            total,
        }))
    }

    /// The hashes of blocks `first..`, as many as fit `out` (32 bytes each).
    pub fn read(&self, first: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, HEADER_LEN + 32 * first)
    }
}

pub(crate) fn page(
    inner: &Inner,
    name: &str,
    first: u64,
    max: u64,
) -> Result<(VolumeInfo, BlockHashes)> {
    let (volume_file, volume) = open_volume(inner, name)?;
    let stored = match StoredHashes::open(inner, name, &volume_file, &volume, first == 0)? {
        Ok(stored) => stored,
        Err(none) => return Ok((volume, none)),
    };
    let first = first.min(stored.total);
    let count = (stored.total - first).min(max.clamp(1, MAX_PAGE));
    let mut hashes = vec![0; 32 * count as usize];
    stored.read(first, &mut hashes).context(|| {
        format!(
            "reading the hashes of {}",
            inner.layout.blocks(name).display()
        )
    })?;
    Ok((
        volume,
        BlockHashes::Available(BlockPage {
            block_size: stored.block_size,
            total: stored.total,
            first,
            hashes,
        }),
    ))
}

/// The BLAKE3 the `total` stored hashes stand for. A volume of one block has no parent node
/// to merge into, so its one hash is checked against the volume's bytes instead (at most one
/// block of them).
fn merge_all(
    file: &File,
    total: u64,
    block_size: u64,
    volume: &File,
    size: u64,
) -> io::Result<[u8; 32]> {
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    io::Seek::seek(&mut reader, io::SeekFrom::Start(HEADER_LEN))?;
    let mut tree = Tree::default();
    let mut hash: BlockHash = [0; 32];
    for _ in 0..total {
        reader.read_exact(&mut hash)?;
        tree.push(hash);
    }
    if total > 1 {
        return Ok(tree.root(|| unreachable!("two blocks or more")));
    }
    let mut content = vec![0; size as usize];
    volume.read_exact_at(&mut content, 0)?;
    let whole = *blake3::hash(&content).as_bytes();
    // The stored hash must be this content's; if so, the checksum is that of the content.
    let stored_ok = total == 0 || blockhash::block_hash(0, block_size, &content) == hash;
    Ok(if stored_ok { whole } else { [0; 32] })
}
