//! Reads frames off a socket so that stream chunks are never copied after the socket read.
//!
//! `FramedRead` grows its buffer by reallocating, which moves the part of a frame already read
//! into the new buffer: a copy of payload bytes. This reader instead keeps an invariant: every
//! frame of up to `contiguous` bytes (a maximum stream chunk plus its header) that starts in
//! the current block has room to end in it. Each read is therefore limited to the block's free
//! space minus `contiguous`; near the end of a block the reader only completes the frame in
//! progress, and a new block is started at a frame boundary, where there is nothing to move.
//! Decoded payloads are slices of the block, exactly the bytes the kernel wrote.
//!
//! Only frames larger than `contiguous` (big CALL payloads, never stream data) may be moved
//! once while they are assembled.
//!
//! Every large block is charged to the connection's [`MemoryBudget`] and every payload cut
//! from it carries that charge (crate::memory): a block counts until its last slice is
//! dropped. When the budget has no room for another block, frames are read into allocations
//! of their own size (after a small head block), so held chunks pin only their own bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use ferry_codec::{DecodeError, Frame, FrameCodec, MIN_FRAME_LEN, MessageType};
use futures::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

use crate::memory::{self, Charge, MemoryBudget};

/// Block size while only small frames have been seen: what an idle connection costs (10,000
/// idle connections hold 40 MiB of them). A larger CALL is moved once while it is assembled.
const SMALL_BLOCK: usize = 4 * 1024;
/// Free space below which a small block is replaced at the next frame boundary.
const MIN_SMALL_READ: usize = 512;
/// A read smaller than this near a block's end is not worth it: start a new block instead.
const MIN_READ: usize = 64 * 1024;

pub struct FrameReader<R> {
    io: R,
    codec: FrameCodec,
    buf: BytesMut,
    /// Largest frame that must arrive in one piece: max stream chunk plus its header.
    contiguous: usize,
    /// Size of blocks once bulk data flows.
    big_block: usize,
    /// Whether the last frame was big enough to call for big blocks.
    bulk: bool,
    /// The connection's budget, which every big block is charged to.
    memory: MemoryBudget,
    /// The charge of the current block, if it is a big one; shared with every payload cut
    /// from it.
    block: Option<Arc<Charge>>,
    /// The big block before the current one, with its charge: taken back once every frame cut
    /// from it is gone. When a block fills up, its last frames are usually still on their way
    /// to their consumers, so the block itself can rarely be taken back at once; the one
    /// before it usually can. Reusing it keeps the kernel writing into memory that is mapped
    /// and in cache: fresh blocks cost a page fault and a page clear per 4 KiB, which with
    /// hundreds of connections took more CPU than the data (ferry-bench `connections`).
    spare: Option<(BytesMut, Arc<Charge>)>,
    /// Bytes at the start of the block's spare capacity that an earlier read initialised. A
    /// reader such as TLS's zero-fills all of a `ReadBuf` it is handed before reading into it;
    /// telling it what is already initialised makes that once per block, not once per read
    /// (it was a quarter of the CPU of a TLS stream with 1 MiB chunks).
    init_spare: usize,
    /// Where the spare capacity started when `init_spare` was measured: if it starts elsewhere
    /// now (the decoder reserved room, say), `init_spare` no longer applies.
    init_at: usize,
    eof: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, codec: FrameCodec, memory: MemoryBudget) -> Self {
        let contiguous = codec.limits().max_chunk as usize + MIN_FRAME_LEN;
        Self {
            io,
            codec,
            buf: BytesMut::new(),
            contiguous,
            big_block: 8 * contiguous,
            bulk: false,
            memory,
            block: None,
            spare: None,
            init_spare: 0,
            init_at: 0,
            eof: false,
        }
    }

    /// How many bytes the next read may take, starting a new block when that is free.
    fn read_limit(&mut self) -> usize {
        let free = self.buf.capacity() - self.buf.len();
        if self.buf.is_empty() {
            // At a frame boundary: a fresh block costs no copy.
            let (block, enough) = if self.bulk {
                (self.big_block, self.contiguous + MIN_READ)
            } else {
                (SMALL_BLOCK, MIN_SMALL_READ)
            };
            if free < enough {
                self.start_block(block);
            }
            let free = self.buf.capacity();
            return if free > self.contiguous + MIN_READ {
                free - self.contiguous
            } else {
                free
            };
        }
        if free > self.contiguous + MIN_READ {
            return free - self.contiguous;
        }
        // Near the block's end with a frame in progress: read only up to its end (or up to
        // its length word).
        let want = match self.buf.get(..4) {
            Some(word) => u32::from_be_bytes(word.try_into().unwrap()) as usize - self.buf.len(),
            None => 4 - self.buf.len(),
        };
        if want > free {
            // A frame larger than `contiguous`, or one assembled while the budget is full,
            // gets here; what of it was read is moved once (at most a block's worth) into an
            // allocation of the frame's own size. No charge covers that allocation: it holds
            // one frame (at most `max_frame`), and credit bounds what streams keep of such
            // frames. Always a fresh allocation, never the block taken back, so the block
            // cannot live on uncharged.
            let mut frame = BytesMut::with_capacity(self.buf.len() + want);
            frame.extend_from_slice(&self.buf);
            self.buf = frame;
            self.block = None;
            self.init_spare = 0;
        }
        want
    }

    /// Starts a block at a frame boundary: a big one charged to the budget when there is room
    /// for it, otherwise a small one (frames are then assembled at their own size).
    fn start_block(&mut self, size: usize) {
        let current = self.block.take();
        let was_big = current.is_some();
        if size > SMALL_BLOCK {
            if let Some(charge) = current {
                // Every frame cut from the current block is gone (the consumer keeps up): it
                // starts again from its beginning, under the same charge.
                if self.buf.try_reclaim(size) {
                    self.block = Some(charge);
                    return;
                }
                let full = std::mem::take(&mut self.buf);
                // Otherwise frames of the older block are still held: they keep its charge,
                // and the reader lets go of it.
                if let Some((mut spare, charge)) = self.spare.replace((full, charge))
                    && spare.try_reclaim(size)
                {
                    self.buf = spare;
                    self.block = Some(charge);
                    return;
                }
            }
            if let Some(charge) = self.memory.try_charge(size) {
                self.buf = BytesMut::with_capacity(size);
                self.block = Some(Arc::new(charge));
                return;
            }
            // No room: the spare goes too, so that its room frees as soon as its frames do.
            self.spare = None;
            self.memory.counters().memory_full.inc();
        }
        self.spare = None;
        if was_big || size > SMALL_BLOCK {
            // A fresh small block, never a big one taken back uncharged.
            self.buf = BytesMut::with_capacity(SMALL_BLOCK);
            self.init_spare = 0;
        } else {
            // The small block is taken back if nothing cut from it is left.
            self.buf.reserve(size);
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Frame, DecodeError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(mut frame)) => {
                    this.bulk = frame.wire_len() > SMALL_BLOCK / 2;
                    if let Some(block) = &this.block {
                        let bulk = frame.header.kind == MessageType::Stream
                            && frame.payload.len() >= SMALL_BLOCK;
                        frame.payload = if bulk {
                            memory::pin(frame.payload, Arc::clone(block))
                        } else {
                            // A short chunk is copied out rather than pinning its block: a
                            // stream that holds such chunks would otherwise keep a whole
                            // block alive per few bytes of credit. Other frames (calls,
                            // replies, events) are copied too: the connection charges what
                            // they hold on their own, and none is bulk data.
                            Bytes::copy_from_slice(&frame.payload)
                        };
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) => {}
                Err(error) => {
                    this.eof = true;
                    return Poll::Ready(Some(Err(error)));
                }
            }
            if this.eof {
                if this.buf.is_empty() {
                    return Poll::Ready(None);
                }
                this.buf.clear();
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                );
                return Poll::Ready(Some(Err(error.into())));
            }
            let limit = this.read_limit();
            let spare = &mut this.buf.spare_capacity_mut()[..limit];
            let start = spare.as_ptr() as usize;
            let known = if start == this.init_at {
                this.init_spare.min(limit)
            } else {
                0
            };
            let mut read = ReadBuf::uninit(spare);
            // SAFETY: an earlier read into this block, at this same place, initialised these
            // bytes, and nothing has been written to the spare capacity since.
            unsafe { read.assume_init(known) };
            let outcome = Pin::new(&mut this.io).poll_read(cx, &mut read);
            let n = read.filled().len();
            this.init_spare = known.max(read.initialized().len()) - n;
            this.init_at = start + n;
            match outcome {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    this.eof = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Ok(())) => {
                    if n == 0 {
                        this.eof = true;
                    }
                    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
                    unsafe { this.buf.set_len(this.buf.len() + n) };
                }
            }
        }
    }
}
