//! Delta transfers (docs/PROTOCOL.md section 14). The source walks its content block by block,
//! hashing each block as it reads it ([`read_blocks`]); a block whose hash equals the one the
//! destination reported for the version it holds ([`BaseHashes`]) goes as a KEEP range, the
//! others as their data and holes ([`send_blocks`]). `ferry vol upload` uses it for a file
//! onto a volume, a node for a migration or copy onto a peer. Without a base the same walk
//! is a full transfer, still one pass: the content's BLAKE3 comes out of the walk.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use ferry_actors::memory::{self, MemoryBudget};
use ferry_actors::stream::Chunk;
use ferry_actors::{CallError, ClientStream, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use crate::proto::volume::{BlockHashesRequest, UploadReply, Volume};
use crate::volume::program::VolumeClient;
use ferry_store::blockhash::{self, BlockHash, TreeHash};
use ferry_store::sparse::SparseReader;

/// Blocks read ahead of the network.
const AHEAD: usize = 8;
/// Bytes per data chunk sent: the default `max_chunk`.
const CHUNK: usize = 256 * 1024;

/// The block hashes of the version a destination holds, fetched a page at a time as the
/// source walks its blocks.
pub struct BaseHashes {
    volumes: VolumeClient,
    name: String,
    volume: Volume,
    checksum: [u8; 32],
    block_size: u64,
    total: u64,
    /// The page at hand: hashes of blocks `first..`.
    first: u64,
    hashes: Bytes,
    /// Hash bytes received, all pages.
    fetched: u64,
}

impl BaseHashes {
    /// The first page of the destination's block hashes of `name`. `Ok(Err(why))` when there
    /// is nothing a delta can use: no such volume, no block hashes, or a node that predates
    /// deltas.
    pub async fn fetch(
        volumes: VolumeClient,
        name: &str,
    ) -> Result<Result<Self, String>, CallError> {
        let request = BlockHashesRequest {
            name: name.to_owned(),
            first_block: 0,
            max_blocks: 0,
        };
        let reply = match volumes.block_hashes(&request).await {
            Ok(reply) => reply,
            Err(error) if error.code == ErrorCode::NotFound => {
                return Ok(Err("the destination holds no version of it".into()));
            }
            Err(error) if error.code == ErrorCode::UnknownProcedure => {
                return Ok(Err("the destination predates delta transfers".into()));
            }
            Err(error) => return Err(error),
        };
        if reply.block_size == 0 {
            return Ok(Err(reply.unavailable));
        }
        let volume = reply.volume.unwrap_or_default();
        let (Ok(checksum), true) = (
            <[u8; 32]>::try_from(&volume.checksum[..]),
            blockhash::valid_block_size(reply.block_size)
                && reply.total_blocks == blockhash::block_count(volume.size, reply.block_size)
                && reply.hashes.len() % 32 == 0,
        ) else {
            return Ok(Err("the destination's block hashes do not add up".into()));
        };
        Ok(Ok(Self {
            volumes,
            name: name.to_owned(),
            checksum,
            block_size: reply.block_size,
            total: reply.total_blocks,
            first: reply.first_block,
            fetched: reply.hashes.len() as u64,
            hashes: reply.hashes,
            volume,
        }))
    }

    /// The version the hashes describe.
    pub fn volume(&self) -> &Volume {
        &self.volume
    }

    pub fn checksum(&self) -> [u8; 32] {
        self.checksum
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Bytes of block hashes received so far: the delta's cost beside the data.
    pub fn hash_bytes(&self) -> u64 {
        self.fetched
    }

    /// The hash of block `index`; `None` past the version's end.
    pub async fn get(&mut self, index: u64) -> Result<Option<BlockHash>, CallError> {
        if index >= self.total {
            return Ok(None);
        }
        let held = self.hashes.len() as u64 / 32;
        if !(self.first..self.first + held).contains(&index) {
            let request = BlockHashesRequest {
                name: self.name.clone(),
                first_block: index,
                max_blocks: 0,
            };
            let reply = self.volumes.block_hashes(&request).await?;
            let same = reply
                .volume
                .as_ref()
                .is_some_and(|v| v.checksum[..] == self.checksum);
            if !same || reply.block_size != self.block_size || reply.first_block != index {
                return Err(CallError::application(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "volume {:?} changed on the destination during the delta; send it again",
                        self.name
                    ),
                ));
            }
            self.fetched += reply.hashes.len() as u64;
            self.first = index;
            self.hashes = reply.hashes;
            if self.hashes.is_empty() {
                return Ok(None);
            }
        }
        let at = ((index - self.first) * 32) as usize;
        Ok(Some(self.hashes[at..at + 32].try_into().expect("32 bytes")))
    }
}

/// A piece of the source that ends at a block boundary (or at the content's end).
pub struct Block {
    pub offset: u64,
    pub len: u64,
    /// Its content: data of at most 256 KiB per chunk, and holes.
    pub chunks: Vec<Chunk>,
    /// The hash of the whole block this piece ends: it differs from `offset`'s block only for
    /// the first piece of a resumed transfer.
    pub hash: BlockHash,
    pub index: u64,
}

/// Reads `[start, end)` of `file` on a blocking thread, a few blocks ahead, as pieces ending at
/// block boundaries. With `hash` (which must already hold `[0, start)`: a resumed upload first
/// hashes what the destination has) each piece comes with its block's hash, and the hash
/// state comes back once all was read (its [`root`](TreeHash::root) is the content's BLAKE3);
/// without, the pieces are only read (a sender that decided from stored hashes).
///
/// With `memory` (a node reading its volume for a peer), each block is charged to that
/// budget before it is read, and its data chunks carry the charge until they are written to
/// the socket: a peer that stops granting credit holds at most [`AHEAD`] blocks.
pub fn read_blocks(
    file: File,
    block_size: u64,
    mut hash: Option<TreeHash>,
    start: u64,
    end: u64,
    memory: Option<MemoryBudget>,
) -> (
    mpsc::Receiver<io::Result<Block>>,
    oneshot::Receiver<Option<TreeHash>>,
) {
    debug_assert!(hash.as_ref().is_none_or(|h| h.block_size() == block_size));
    let (tx, rx) = mpsc::channel(AHEAD);
    let (root_tx, root) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut reader = SparseReader::new(file, start, end);
        let mut offset = start;
        while offset < end {
            let index = offset / block_size;
            let stop = ((index + 1) * block_size).min(end);
            let charge = match &memory {
                None => None,
                Some(memory) => {
                    let charge = futures::executor::block_on(async {
                        tokio::select! {
                            charge = memory.charge(block_size as usize) => Some(charge),
                            () = tx.closed() => None,
                        }
                    });
                    let Some(charge) = charge else { return };
                    Some(Arc::new(charge))
                }
            };
            let block = (|| -> io::Result<Block> {
                let mut chunks = Vec::new();
                while let Some(chunk) = reader.next_chunk_before(CHUNK, stop)? {
                    match (chunk, hash.as_mut()) {
                        (Chunk::Data(bytes), hash) => {
                            if let Some(hash) = hash {
                                hash.data(&bytes)?;
                            }
                            chunks.push(Chunk::Data(match &charge {
                                Some(charge) => memory::pin(bytes, Arc::clone(charge)),
                                None => bytes,
                            }));
                        }
                        (hole, Some(hash)) => {
                            if !hash.zeros_while(hole.len(), || !tx.is_closed())? {
                                return Err(io::Error::other("the transfer ended"));
                            }
                            chunks.push(hole);
                        }
                        (hole, None) => chunks.push(hole),
                    }
                }
                if reader.position() != stop {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ended at {} while being read", reader.position()),
                    ));
                }
                Ok(Block {
                    offset,
                    len: stop - offset,
                    chunks,
                    hash: hash.as_ref().map_or([0; 32], TreeHash::current_block),
                    index,
                })
            })();
            let failed = block.is_err();
            if tx.blocking_send(block).is_err() || failed {
                return;
            }
            offset = stop;
        }
        let _ = root_tx.send(hash);
    });
    (rx, root)
}

/// What a send moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Data bytes that crossed.
    pub data_bytes: u64,
    pub hole_bytes: u64,
    /// Bytes the destination took from its base (KEEP).
    pub kept_bytes: u64,
}

/// Why a send stopped.
#[derive(Debug)]
pub enum SendError {
    /// Reading the source failed.
    Read(io::Error),
    Call(CallError),
}

/// Sends the blocks into `stream`: a block whose hash equals the base's goes as KEEP, the
/// others as they were read; runs of KEEP and runs of holes across blocks go as one range
/// each (a hole of 4 GiB stays one 40-byte frame). `progress` hears of every piece's length, with
/// whether it was kept.
pub async fn send_blocks(
    stream: &mut ClientStream<UploadReply>,
    blocks: &mut mpsc::Receiver<io::Result<Block>>,
    mut base: Option<&mut BaseHashes>,
    mut progress: impl AsyncFnMut(u64, bool),
) -> Result<Sent, SendError> {
    let mut sent = Sent::default();
    // A run of holes or of kept blocks goes as one range, however many blocks it spans.
    let mut pending: Option<Chunk> = None;
    while let Some(block) = blocks.recv().await {
        let block = block.map_err(SendError::Read)?;
        let kept = match base.as_deref_mut() {
            Some(base) => base.get(block.index).await.map_err(SendError::Call)? == Some(block.hash),
            None => false,
        };
        let len = block.len;
        let pieces = if kept {
            sent.kept_bytes += len;
            vec![Chunk::Keep(len)]
        } else {
            block.chunks
        };
        for piece in pieces {
            pending = match (pending.take(), piece) {
                (Some(Chunk::Hole(a)), Chunk::Hole(b)) => Some(Chunk::Hole(a + b)),
                (Some(Chunk::Keep(a)), Chunk::Keep(b)) => Some(Chunk::Keep(a + b)),
                (before, piece) => {
                    if let Some(before) = before {
                        send(stream, before, &mut sent).await?;
                    }
                    match piece {
                        Chunk::Data(_) => {
                            send(stream, piece, &mut sent).await?;
                            None
                        }
                        range => Some(range),
                    }
                }
            };
        }
        progress(len, kept).await;
    }
    if let Some(last) = pending {
        send(stream, last, &mut sent).await?;
    }
    Ok(sent)
}

/// Sends one chunk, counting its data and holes (KEEP ranges are counted as they are decided).
async fn send(
    stream: &mut ClientStream<UploadReply>,
    chunk: Chunk,
    sent: &mut Sent,
) -> Result<(), SendError> {
    match &chunk {
        Chunk::Data(bytes) => sent.data_bytes += bytes.len() as u64,
        Chunk::Hole(length) => sent.hole_bytes += length,
        Chunk::Keep(_) => {}
    }
    stream.send_chunk(chunk).await.map_err(SendError::Call)
}

/// Runs of differing blocks beyond which a sender reads everything rather than list them:
/// the list then costs 16 bytes per run, 1 MiB at most.
pub const MAX_RUNS: usize = 65_536;

/// Sends a volume of `size` bytes whose differing blocks are known beforehand (`runs`, block
/// indices, in order): KEEP ranges between them, each run read (only it) and sent as its data
/// and holes. What a node does when both its own stored block hashes and the peer's say which
/// blocks differ: the unchanged ones are never read.
pub async fn send_runs(
    stream: &mut ClientStream<UploadReply>,
    file: &File,
    size: u64,
    block_size: u64,
    runs: &[std::ops::Range<u64>],
    memory: Option<MemoryBudget>,
    mut progress: impl AsyncFnMut(u64),
) -> Result<Sent, SendError> {
    let mut sent = Sent::default();
    let mut at = 0;
    let ends = runs
        .iter()
        .map(|run| {
            (
                (run.start * block_size).min(size),
                (run.end * block_size).min(size),
            )
        })
        .chain([(size, size)]);
    for (start, end) in ends {
        if start > at {
            stream
                .send_chunk(Chunk::Keep(start - at))
                .await
                .map_err(SendError::Call)?;
            sent.kept_bytes += start - at;
            progress(start - at).await;
        }
        if end > start {
            let file = file.try_clone().map_err(SendError::Read)?;
            let (mut blocks, _) = read_blocks(file, block_size, None, start, end, memory.clone());
            let moved = send_blocks(stream, &mut blocks, None, async |_, _| {}).await?;
            sent.data_bytes += moved.data_bytes;
            sent.hole_bytes += moved.hole_bytes;
            progress(end - start).await;
        }
        at = end;
    }
    Ok(sent)
}
