//! A transfer's disk work on tokio's blocking pool, never on a connection's arbiter: an
//! upload written a few chunks behind the stream ([`WriteBehind`]), a download read (and
//! hashed) a few chunks ahead of it ([`read_ahead`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_actors::CallError;
use ferry_actors::memory::{self, MemoryBudget};
use ferry_actors::stream::{Chunk, Halted};
use ferry_store::blockhash::TreeHash;
use ferry_store::hash_behind::HashBehind;
use ferry_store::{Download, StoreError, Upload};
use tokio::sync::{mpsc, oneshot};

use crate::volume::blocking::task_failed;

/// Chunks read ahead of the network when streaming a volume to a peer.
const READ_AHEAD: usize = 8;

/// Chunks an upload may be ahead of its disk writes.
const WRITE_BEHIND: usize = 4;

/// Writes an upload on one blocking thread, a few chunks behind the connection: a hand-off to
/// the blocking pool per chunk cost more in wake-ups than the write itself, and while chunks
/// keep coming the writer never sleeps.
///
/// The writer stops when the stream ends early ([`stop`](Self::stop)) or the handler is
/// dropped, even inside a hole: hashing a claimed hole is the one piece of its work whose
/// cost the client does not pay for in bytes.
pub(super) struct WriteBehind {
    chunks: mpsc::Sender<Chunk>,
    writer: tokio::task::JoinHandle<(Upload, Result<(), StoreError>)>,
    stop: StopOnDrop,
}

/// Sets an upload's stop flag when dropped: the handler that owns the writer is gone.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl WriteBehind {
    pub fn start(mut upload: Upload) -> Self {
        let (chunks, mut rx) = mpsc::channel::<Chunk>(WRITE_BEHIND);
        let stop = upload.stopper();
        let stopped = Arc::clone(&stop);
        let writer = tokio::task::spawn_blocking(move || {
            while let Some(chunk) = rx.blocking_recv() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(error) = upload.write(&chunk) {
                    return (upload, Err(error));
                }
            }
            (upload, Ok(()))
        });
        Self {
            chunks,
            writer,
            stop: StopOnDrop(stop),
        }
    }

    /// Queues a chunk, waiting while `WRITE_BEHIND` are queued; `false` if the writer stopped
    /// on an error.
    pub async fn write(&self, chunk: Chunk) -> bool {
        self.chunks.send(chunk).await.is_ok()
    }

    /// The stream ended early: what is queued is not written, a hole being hashed is left.
    pub fn stop(&self) {
        self.stop.0.store(true, Ordering::Relaxed);
    }

    /// Waits until every queued chunk is written (or, after [`stop`](Self::stop), until the
    /// writer has stopped); gives the upload back, with the error that stopped the writer if
    /// one did.
    pub async fn finish(self) -> Result<(Upload, Result<(), StoreError>), CallError> {
        // `stop` goes only with `self`, after the writer is done (nothing writes the upload
        // after that), or when this future is dropped while it waits, which stops the writer.
        drop(self.chunks);
        self.writer.await.map_err(task_failed)
    }
}

/// Reads a download on the blocking pool, a few chunks ahead of the consumer, and (with
/// `hash`) hashes it on a thread beside, handing out the digest once all was read and hashed.
/// Dropping the receiver stops the reading, and so does the end of the call (`halted`) the
/// hashing of a hole in the middle.
///
/// Each data chunk is charged to `memory` (the connection's budget) before it is read, and
/// carries that charge until its last byte is written to the socket: credit does not bound
/// read-ahead (a peer may grant 2^32-1 bytes and stop reading), so without the charge every
/// stalled download would hold `READ_AHEAD` chunks outside any budget.
pub(super) fn read_ahead(
    mut download: Download,
    max: usize,
    hash: bool,
    memory: MemoryBudget,
    halted: Option<Halted>,
) -> (
    mpsc::Receiver<Result<Chunk, StoreError>>,
    oneshot::Receiver<[u8; 32]>,
) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let (digest_tx, digest) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut hasher = hash.then(|| HashBehind::start(TreeHash::default()));
        loop {
            // Waits for room in the budget, or for the consumer to go away.
            let charge = futures::executor::block_on(async {
                tokio::select! {
                    charge = memory.charge(max) => Some(charge),
                    () = tx.closed() => None,
                }
            });
            let Some(charge) = charge else { break };
            let next = match download.next_chunk(max).transpose() {
                Some(next) => next,
                None => {
                    // A hashing error leaves the digest unsent: the call then fails.
                    if let Some(Ok(tree)) = hasher.map(HashBehind::into_tree) {
                        let _ = digest_tx.send(tree.root());
                    }
                    break;
                }
            };
            let next = next.map(|chunk| match chunk {
                Chunk::Data(bytes) => Chunk::Data(memory::pin(bytes, Arc::new(charge))),
                hole => hole,
            });
            let failed = next.is_err();
            // Hashed after it is handed on, so the peer's work on a chunk (hashing a large
            // hole, say) overlaps with this node's.
            let copy = next.as_ref().ok().filter(|_| hasher.is_some()).cloned();
            if tx.blocking_send(next).is_err() || failed {
                break;
            }
            if let (Some(chunk), Some(hasher)) = (copy, &mut hasher) {
                let whole = match chunk {
                    Chunk::Data(bytes) => hasher.data(bytes).map(|()| true),
                    Chunk::Hole(length) => hasher.tree().and_then(|mut tree| {
                        tree.zeros_while(length, || {
                            !tx.is_closed() && !halted.as_ref().is_some_and(Halted::is_set)
                        })
                    }),
                    Chunk::Keep(_) => unreachable!("a volume reads as data and holes"),
                };
                if !matches!(whole, Ok(true)) {
                    break;
                }
            }
        }
    });
    (rx, digest)
}
