//! The one write path of a connection.
//!
//! Every actor of a connection sends its frames through an [`Outbox`]; a single writer future
//! owns the socket's write half and turns queued frames into vectored writes: each frame is a
//! 28-byte head and its payload `Bytes`, handed to the kernel as they are, never copied into an
//! intermediate buffer.

use std::io::{self, IoSlice};
use std::sync::Arc;

use ferry_codec::{Frame, WireHead};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::metrics::Counters;

/// What the writer is asked to do, in order.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Frame),
    /// Flush everything queued before this, shut the socket's write side down and stop.
    Close,
}

/// Frames written in one vectored write at most; bounds the iovec array.
const BATCH: usize = 64;

/// A handle for queueing frames on a connection. The queue is bounded: senders wait when the
/// peer does not read, which is the backpressure a non-reading peer deserves.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
}

/// The connection's writer has stopped (socket closed or failed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the connection's writer has stopped")]
pub struct WriterGone;

impl Outbox {
    /// Creates an outbox and the writer future that drains it into `io`.
    pub fn new(
        io: Box<dyn AsyncWrite + Unpin>,
        capacity: usize,
        counters: Arc<Counters>,
    ) -> (Self, impl Future<Output = io::Result<()>>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx }, run(io, rx, counters))
    }

    pub async fn send(&self, frame: Frame) -> Result<(), WriterGone> {
        self.tx
            .send(Outgoing::Frame(frame))
            .await
            .map_err(|_| WriterGone)
    }

    /// Queues without waiting; gives the frame back if the queue is full or the writer gone.
    pub fn try_send(&self, frame: Frame) -> Result<(), Frame> {
        self.tx.try_send(Outgoing::Frame(frame)).map_err(|e| match e.into_inner() {
            Outgoing::Frame(frame) => frame,
            Outgoing::Close => unreachable!("only frames are sent here"),
        })
    }

    pub async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close).await;
    }
}

async fn run(
    mut io: Box<dyn AsyncWrite + Unpin>,
    mut rx: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut frames = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        let mut closing = false;
        for item in batch.drain(..) {
            match item {
                Outgoing::Frame(frame) => frames.push(frame),
                Outgoing::Close => closing = true,
            }
        }
        write_frames(&mut io, &frames, &counters).await?;
        frames.clear();
        if closing {
            break;
        }
    }
    io.shutdown().await
}

/// Writes whole frames with vectored writes, heads and payloads side by side.
pub async fn write_frames(
    io: &mut (dyn AsyncWrite + Unpin),
    frames: &[Frame],
    counters: &Counters,
) -> io::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let heads: Vec<WireHead> = frames
        .iter()
        .map(|f| f.header.encode(f.payload.len()))
        .collect();
    let mut slices = Vec::with_capacity(frames.len() * 2);
    let mut total = 0;
    for (head, frame) in heads.iter().zip(frames) {
        slices.push(IoSlice::new(head));
        total += head.len() + frame.payload.len();
        if !frame.payload.is_empty() {
            slices.push(IoSlice::new(&frame.payload));
        }
    }
    let mut remaining: &mut [IoSlice<'_>] = &mut slices;
    while !remaining.is_empty() {
        let written = io.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    io.flush().await?;
    counters.frames_out.add(frames.len() as u64);
    counters.bytes_out.add(total as u64);
    Ok(())
}
