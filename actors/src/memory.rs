//! What one connection's data holds in memory, counted by what is actually held.
//!
//! Credit counts payload bytes, but memory is blocks: a chunk cut from the reader's block is a
//! slice that keeps the whole block alive, so a peer that makes the node hold many small
//! chunks of many blocks (one stream consuming, another holding what it gets) would pin a
//! block per byte of credit. Likewise a download reads ahead of its consumer, and credit does
//! not bound that either (a peer may grant 2^32-1 bytes and stop reading).
//!
//! So each connection has one [`MemoryBudget`], and everything that holds a large piece of
//! memory for a while takes a [`Charge`] on it for as long as that memory lives:
//!
//! - the reader charges each large block it starts, and the charge rides along with every
//!   payload cut from that block ([`pin`]): it is given back when the last slice is dropped,
//!   wherever the slices went (a stream's queue, a handler, a write-behind queue);
//! - a download's read-ahead charges each chunk before it reads it, and waits for room.
//!
//! When the budget has no room for another block, the reader does not wait (that would stall
//! every stream of the connection behind one that holds its chunks); it reads each frame into
//! an allocation of the frame's own size instead, which pins only what credit already bounds.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Counters;

/// One connection's memory budget: a count of bytes that charges take and give back.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    room: Arc<Semaphore>,
    limit: usize,
    /// Where the bytes held are reported (`held_bytes`).
    counters: Arc<Counters>,
}

/// Bytes taken from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    permit: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Charge {
    /// The bytes this charge holds.
    pub fn bytes(&self) -> usize {
        self.permit.num_permits()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.counters
            .held_bytes
            .sub(self.permit.num_permits() as u64);
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes, reported in `counters.held_bytes`.
    pub fn new(limit: usize, counters: Arc<Counters>) -> Self {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`; no real budget comes near it.
        let limit = limit.min(Semaphore::MAX_PERMITS);
        Self {
            room: Arc::new(Semaphore::new(limit)),
            limit,
            counters,
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn charged(&self, permit: OwnedSemaphorePermit) -> Charge {
        self.counters.held_bytes.add(permit.num_permits() as u64);
        Charge {
            permit,
            counters: Arc::clone(&self.counters),
        }
    }

    /// Takes `bytes` if they are free now.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let permits = u32::try_from(bytes).ok()?;
        let permit = Arc::clone(&self.room)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some(self.charged(permit))
    }

    /// Takes `bytes` (at most the whole budget) once they are free.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let permits = bytes.min(self.limit).min(u32::MAX as usize) as u32;
        let permit = Arc::clone(&self.room)
            .acquire_many_owned(permits)
            .await
            .expect("a budget's semaphore is never closed");
        self.charged(permit)
    }
}

/// Ties `charge` to `bytes`: the returned `Bytes` (and every slice of it) holds the charge
/// until the last of them is dropped. Costs one small allocation.
pub fn pin(bytes: Bytes, charge: Arc<Charge>) -> Bytes {
    Bytes::from_owner(Pinned {
        bytes,
        _charge: charge,
    })
}

/// A payload and the charge of the block it was cut from.
struct Pinned {
    bytes: Bytes,
    _charge: Arc<Charge>,
}

impl AsRef<[u8]> for Pinned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
