//! The checksum of a stream's logical content, holes included.

use bytes::Bytes;

use crate::stream::{Chunk, ZEROS};

/// BLAKE3 over a stream's logical content: data as is, holes as zeros.
#[derive(Default)]
pub struct ContentHash {
    hasher: blake3::Hasher,
    bytes: u64,
    hole_bytes: u64,
}

impl ContentHash {
    /// Hashes a chunk: data as is, a hole as zeros.
    ///
    /// # Panics
    ///
    /// On a [`Chunk::Keep`]: its bytes are the receiver's base, which this hash does not
    /// have. A receiver refuses a KEEP where it has no base before it hashes anything.
    pub fn update(&mut self, chunk: &Chunk) {
        match chunk {
            Chunk::Data(bytes) => self.data(bytes),
            Chunk::Hole(length) => self.zeros(*length),
            Chunk::Keep(_) => panic!("a KEEP range has no content without its base"),
        }
    }

    /// [`update`](Self::update) for async code on a shared thread (a connection's arbiter).
    /// A hole costs its sender 40 bytes whatever length it claims, yet hashing it costs CPU in
    /// proportion to that length: BLAKE3 runs at a few GB/s, so a hole of 2^50 bytes would hold
    /// the thread for days. Holes are therefore hashed in slices of [`ZEROS`] with a yield
    /// between them, and every other task on the thread keeps running.
    pub async fn absorb(&mut self, chunk: &Chunk) {
        let Chunk::Hole(length) = chunk else {
            return self.update(chunk);
        };
        let mut left = *length;
        while left > 0 {
            let n = left.min(ZEROS.len() as u64);
            self.zeros(n);
            left -= n;
            tokio::task::yield_now().await;
        }
    }

    /// Hashes data bytes.
    pub fn data(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// Hashes a hole of `length` zeros, from a shared static buffer: a hole costs CPU, no
    /// memory.
    pub fn zeros(&mut self, length: u64) {
        self.zeros_while(length, || true);
    }

    /// [`zeros`](Self::zeros) on a blocking thread for work that may be called off: a hole
    /// costs its sender 40 bytes and its hashing minutes (BLAKE3 of 4 TiB of zeros), so
    /// `go_on` is asked between slices of [`ZEROS`] and hashing stops when it says no (the
    /// transfer was aborted). Returns whether the whole hole was hashed; if not, the hash is
    /// of no use any more.
    pub fn zeros_while(&mut self, length: u64, mut go_on: impl FnMut() -> bool) -> bool {
        let mut left = length;
        while left > 0 {
            if !go_on() {
                return false;
            }
            let n = left.min(ZEROS.len() as u64) as usize;
            self.hasher.update(&ZEROS[..n]);
            left -= n as u64;
        }
        self.bytes += length;
        self.hole_bytes += length;
        true
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn hole_bytes(&self) -> u64 {
        self.hole_bytes
    }

    /// The BLAKE3 digest so far.
    pub fn digest(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// The digest as `Bytes`, for protobuf fields.
    pub fn finish(&self) -> Bytes {
        Bytes::copy_from_slice(&self.digest())
    }
}
