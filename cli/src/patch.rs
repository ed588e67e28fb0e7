//! A delta download: bringing an existing file up to a volume's version by fetching only the
//! blocks that differ (docs/PROTOCOL.md section 14).
//!
//! The file is read once, block by block, and each block's hash compared with the node's. A
//! new file is assembled beside it: unchanged blocks are copied from the old file, each run of
//! changed blocks is one DOWNLOAD of that range, pinned to the version the hashes describe
//! (`expected_checksum`). The assembled content's BLAKE3, merged from the blocks' hashes, must
//! be the volume's checksum before the new file is synced and renamed over the old one, so a
//! failure at any point leaves the old file as it was.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ferry_actors::stream::Chunk;
use indicatif::{HumanBytes, ProgressBar};

use ferry_node::proto::volume::DownloadRequest;
use ferry_node::volume::VolumeClient;
use ferry_node::volume::delta::{BaseHashes, Block, read_blocks};
use ferry_store::blockhash::{self, BlockHash, Tree, TreeHash};
use ferry_store::sparse::SparseWriter;

use crate::exit::CliError;

/// What a delta download moved.
pub struct Patched {
    /// The volume's checksum, which the assembled file has.
    pub checksum: [u8; 32],
    pub size: u64,
    /// Data bytes received.
    pub data_bytes: u64,
    /// Bytes received as holes.
    pub hole_bytes: u64,
    /// Bytes taken from the old file.
    pub kept_bytes: u64,
    pub hash_bytes: u64,
}

/// Assembles volume `name` into `out` (a new, empty file) from `old` and the blocks of the
/// node's version that `old` does not have. Fails with [`CliError::Mismatch`] if the result
/// is not the version the hashes describe (the caller then downloads in full).
pub async fn patch(
    volumes: &VolumeClient,
    name: &str,
    mut node: BaseHashes,
    old: &Path,
    out: &File,
    bar: &ProgressBar,
) -> Result<Patched, CliError> {
    let context = format!("updating {} from volume {name:?}", old.display());
    let local = |what: &str| CliError::local(format!("{what} {}", old.display()));
    let size = node.volume().size;
    let checksum = node.checksum();
    let block_size = node.block_size();
    let (file, old_size) = crate::source::open_source(old)?;
    let source = file
        .try_clone()
        .map_err(CliError::local(format!("opening {}", old.display())))?;
    let (mut blocks, _) = read_blocks(
        file,
        block_size,
        Some(TreeHash::new(block_size, io::sink()).parallel()),
        0,
        old_size.min(size),
        None,
    );
    let mut tree = Tree::default();
    let mut patched = Patched {
        checksum,
        size,
        data_bytes: 0,
        hole_bytes: 0,
        kept_bytes: 0,
        hash_bytes: 0,
    };
    // The changed blocks not fetched yet: `[run_start, next)`.
    let mut run_start = None;
    let mut next = 0;
    // Blocks are copied and fetched in order, so the new file is written front to back.
    let mut writer = SparseWriter::new(out);
    let mut kept = Kept::default();
    let fetch = async |from: u64,
                       to: u64,
                       writer: &mut SparseWriter<'_>,
                       kept: &mut Kept,
                       tree: &mut Tree,
                       patched: &mut Patched| {
        kept.flush(&source, writer).map_err(local("copying"))?;
        let offset = from * block_size;
        let length = (to * block_size).min(size) - offset;
        fetch_range(
            volumes, name, checksum, offset, length, block_size, writer, tree, patched,
        )
        .await
        .map_err(|error| match error {
            Fetch::Call(error) => CliError::call(context.clone())(error),
            Fetch::Write(error) => CliError::Local {
                context: "writing the updated file".into(),
                source: error,
            },
        })?;
        bar.inc(length);
        Ok::<(), CliError>(())
    };
    while let Some(block) = blocks.recv().await {
        let block = block.map_err(local("reading"))?;
        let theirs = node
            .get(block.index)
            .await
            .map_err(CliError::call(context.clone()))?;
        if theirs == Some(block.hash) {
            if let Some(from) = run_start.take() {
                fetch(
                    from,
                    block.index,
                    &mut writer,
                    &mut kept,
                    &mut tree,
                    &mut patched,
                )
                .await?;
            }
            kept.block(&source, &mut writer, &block)
                .map_err(local("copying"))?;
            tree.push(block.hash);
            patched.kept_bytes += block.len;
            bar.inc(block.len);
            bar.set_message(format!(
                "download ({} unchanged, skipped)",
                HumanBytes(patched.kept_bytes)
            ));
        } else {
            run_start.get_or_insert(block.index);
        }
        next = block.index + 1;
    }
    let total = blockhash::block_count(size, block_size);
    if let Some(from) = run_start.take() {
        fetch(from, next, &mut writer, &mut kept, &mut tree, &mut patched).await?;
    }
    if next < total {
        fetch(next, total, &mut writer, &mut kept, &mut tree, &mut patched).await?;
    }
    kept.flush(&source, &mut writer).map_err(local("copying"))?;
    out.set_len(size).map_err(local("sizing the update of"))?;
    let root = tree.root(|| {
        // One block or none: no parent node, the root is the content's own hash.
        let mut content = vec![0; size as usize];
        match out.read_exact_at(&mut content, 0) {
            Ok(()) => *blake3::hash(&content).as_bytes(),
            Err(_) => [0; 32],
        }
    });
    if root != checksum {
        return Err(CliError::Mismatch(format!(
            "{context}: the assembled file hashes to {} but the volume is {}",
            hex::encode(root),
            hex::encode(checksum)
        )));
    }
    patched.hash_bytes = node.hash_bytes();
    Ok(patched)
}

enum Fetch {
    Call(ferry_actors::CallError),
    Write(io::Error),
}

/// Downloads `[offset, offset + length)` (whole blocks, the last one maybe the volume's short
/// end) into `out`, pushing each block's hash.
#[allow(clippy::too_many_arguments)]
async fn fetch_range(
    volumes: &VolumeClient,
    name: &str,
    checksum: [u8; 32],
    offset: u64,
    length: u64,
    block_size: u64,
    out: &mut SparseWriter<'_>,
    tree: &mut Tree,
    patched: &mut Patched,
) -> Result<(), Fetch> {
    debug_assert_eq!(out.offset(), offset, "the new file is written in order");
    let mut stream = volumes
        .download(&DownloadRequest {
            name: name.to_owned(),
            offset,
            length,
            expected_checksum: checksum.to_vec().into(),
        })
        .await
        .map_err(Fetch::Call)?;
    // One block at a time, holes as zeros, to hash it whole.
    let mut block = Vec::with_capacity(block_size as usize);
    let mut at = offset;
    let flush = |block: &mut Vec<u8>, start: u64, tree: &mut Tree| {
        let hash: BlockHash = blockhash::block_hash(start / block_size, block_size, block);
        tree.push(hash);
        block.clear();
    };
    while let Some(chunk) = stream.recv().await.map_err(Fetch::Call)? {
        if let Chunk::Keep(_) = chunk {
            return Err(Fetch::Write(io::Error::new(
                io::ErrorKind::InvalidData,
                "the node sent a KEEP range in a download",
            )));
        }
        out.write(&chunk).map_err(Fetch::Write)?;
        let mut left = chunk.len();
        let mut data = match &chunk {
            Chunk::Data(bytes) => {
                patched.data_bytes += bytes.len() as u64;
                Some(&bytes[..])
            }
            _ => {
                patched.hole_bytes += left;
                None
            }
        };
        while left > 0 {
            let room = (block_size - block.len() as u64).min(left);
            match &mut data {
                Some(bytes) => {
                    block.extend_from_slice(&bytes[..room as usize]);
                    *bytes = &bytes[room as usize..];
                }
                None => block.resize(block.len() + room as usize, 0),
            }
            left -= room;
            at += room;
            if block.len() as u64 == block_size {
                flush(&mut block, at - block_size, tree);
            }
        }
    }
    if !block.is_empty() {
        let start = at - block.len() as u64;
        flush(&mut block, start, tree);
    }
    stream.finish().await.map_err(Fetch::Call)?;
    Ok(())
}

/// Unchanged data of the old file waiting to be copied into the new one at the same offsets:
/// consecutive kept blocks go as one `copy_file_range` (on file systems with shared extents,
/// XFS and Btrfs, the blocks are shared, not written again), one per run instead of one per
/// block. Holes stay unwritten.
#[derive(Default)]
struct Kept {
    pending: u64,
}

impl Kept {
    fn block(&mut self, old: &File, out: &mut SparseWriter<'_>, block: &Block) -> io::Result<()> {
        for chunk in &block.chunks {
            match chunk {
                Chunk::Data(bytes) => self.pending += bytes.len() as u64,
                hole => {
                    self.flush(old, out)?;
                    out.write(hole)?;
                }
            }
        }
        Ok(())
    }

    /// Copies what is pending; before anything else is written.
    fn flush(&mut self, old: &File, out: &mut SparseWriter<'_>) -> io::Result<()> {
        if self.pending > 0 {
            out.keep(old, std::mem::take(&mut self.pending))?;
        }
        Ok(())
    }
}
