//! The handles user code holds: [`Incoming`] to read a stream, [`Outgoing`] to write one.
//! Dropping either before its direction is done aborts the stream (on the client; on the
//! server the handler's outcome settles the call).

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use ferry_codec::proto::ErrorCode;

use crate::error::CallError;
use crate::stream::state::{Abandon, Reservation, Shared};
use crate::stream::{Chunk, ZEROS};

/// The receiving end of a stream.
pub struct Incoming {
    stream: Arc<Shared>,
    /// The peer finished and everything was read.
    done: bool,
    /// Zeros of a hole still to hand out, when reading plain bytes.
    zeros_left: u64,
}

impl Incoming {
    pub(crate) fn new(stream: Arc<Shared>) -> Self {
        Self {
            stream,
            done: false,
            zeros_left: 0,
        }
    }

    /// The next chunk (data or hole), or `None` once the sender finished. Data chunks are the
    /// very buffers the decoder split off the socket.
    pub async fn recv(&mut self) -> Result<Option<Chunk>, CallError> {
        if self.done {
            return Ok(None);
        }
        let outcome = poll_fn(|cx| self.stream.poll_recv(cx)).await?;
        if outcome.is_none() {
            self.done = true;
        }
        Ok(outcome)
    }

    /// The trailer the sender's finish carried (empty if none): valid once [`recv`](Self::recv)
    /// returned `None`.
    pub async fn trailer(&self) -> Result<Bytes, CallError> {
        Ok(self.stream.trailer())
    }

    /// The next piece of plain bytes: holes come out as zeros (in pieces of at most 256 KiB,
    /// from one shared static buffer), for consumers that do not care about sparseness.
    pub async fn recv_bytes(&mut self) -> Result<Option<Bytes>, CallError> {
        loop {
            if self.zeros_left > 0 {
                let n = self.zeros_left.min(ZEROS.len() as u64) as usize;
                self.zeros_left -= n as u64;
                return Ok(Some(Bytes::from_static(&ZEROS[..n])));
            }
            match self.recv().await? {
                Some(Chunk::Data(bytes)) => return Ok(Some(bytes)),
                Some(Chunk::Hole(length)) => self.zeros_left = length,
                Some(Chunk::Keep(_)) => {
                    return Err(CallError::application(
                        ErrorCode::BadRequest,
                        "the peer sent a KEEP range on a stream that has no base",
                    ));
                }
                None => return Ok(None),
            }
        }
    }

    /// Whether the sender's finish was received and every chunk read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// (Client) tells the server that the stream was received and committed.
    pub(crate) async fn confirm(&mut self) -> Result<(), CallError> {
        self.stream.confirm()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.done {
            self.stream.abandon(Abandon::Receiving);
        }
    }
}

/// The sending end of a stream.
pub struct Outgoing {
    stream: Arc<Shared>,
    finished: bool,
}

/// Whether a stream's call has ended (its REPLY is queued: done, cancelled, aborted or its
/// connection lost), readable from any thread. Work that feeds a stream from elsewhere (a
/// blocking thread reading and hashing ahead) polls it to stop at once rather than when its
/// handler is dropped, a grace period later.
#[derive(Debug, Clone)]
pub struct Halted(Arc<AtomicBool>);

impl Halted {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Outgoing {
    pub(crate) fn new(stream: Arc<Shared>) -> Self {
        Self {
            stream,
            finished: false,
        }
    }

    /// Tells when this stream's call has ended.
    pub fn halted(&self) -> Halted {
        Halted(Arc::clone(self.stream.halted()))
    }

    /// Sends data; returns once all of it is queued for the socket, which waits for credit
    /// from the receiver. The buffer is split into chunks and written as is: no copy.
    pub async fn send(&mut self, data: Bytes) -> Result<(), CallError> {
        if data.is_empty() {
            return Ok(());
        }
        self.transmit(Chunk::Data(data)).await
    }

    /// Sends a hole: `length` zero bytes that do not cross the wire.
    pub async fn send_hole(&mut self, length: u64) -> Result<(), CallError> {
        if length == 0 {
            return Ok(());
        }
        self.transmit(Chunk::Hole(length)).await
    }

    /// Sends a chunk as it came (data or hole): relays keep sparseness this way.
    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), CallError> {
        match chunk {
            Chunk::Data(bytes) => self.send(bytes).await,
            Chunk::Hole(length) => self.send_hole(length).await,
            Chunk::Keep(0) => Ok(()),
            keep @ Chunk::Keep(_) => self.transmit(keep).await,
        }
    }

    /// Queues the chunk once credit allows: this future waits for the credit, and for room in
    /// the connection's send queue, itself.
    async fn transmit(&mut self, chunk: Chunk) -> Result<(), CallError> {
        if let Some(error) = self.stream.refuse_send() {
            return Err(error);
        }
        let (mut rest, mut reservation) = (chunk, Reservation::default());
        poll_fn(|cx| self.stream.poll_send(cx, &mut rest, &mut reservation)).await
    }

    /// Ends this direction (STREAM/OK). On the server this waits for the client's
    /// confirmation that its sink committed, so the handler learns the real outcome.
    pub async fn finish(&mut self) -> Result<(), CallError> {
        self.finish_with(Bytes::new()).await
    }

    /// [`finish`](Self::finish) with a trailer in the STREAM/OK: what the procedure has its
    /// sender vouch for once all the data is out (docs/PROTOCOL.md section 7.6).
    pub async fn finish_with(&mut self, trailer: Bytes) -> Result<(), CallError> {
        self.finished = true;
        self.stream.finish(trailer)?;
        poll_fn(|cx| self.stream.poll_confirmed(cx)).await
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if !self.finished {
            self.stream.abandon(Abandon::Sending);
        }
    }
}
