//! A transfer's hashing on a thread of its own, beside its writes.
//!
//! Copying a chunk into the page cache (`pwrite`) and hashing it cost about the same, and one
//! after the other on the writer's thread they made that thread the slowest stage of a full
//! upload: a profile of a 2 GiB upload on XFS had the writer busy for ~1.2 s of 2.1 s while the
//! other core idled a fifth of the time (docs/BENCHMARKS.md). Here the writer hands each data
//! chunk to a hashing thread *before* writing it, so the two run at once, and goes on; it
//! waits only when [`DEPTH`] chunks are still unhashed. `ferry vol download` writes and
//! hashes its file the same way.
//!
//! A chunk is a reference-counted `Bytes`, so nothing is copied, and whatever memory charge
//! it carries (the connection's budget pins every received payload) stays held until it is
//! hashed: the chunks waiting here are counted like any other. Small chunks are hashed in
//! place: below [`MIN_BEHIND`] bytes a wake-up of the other thread costs about what the
//! hashing does.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::blockhash::TreeHash;

/// Data chunks that may wait to be hashed while the writer goes on.
const DEPTH: usize = 2;

/// The smallest chunk handed to the hashing thread; smaller ones are hashed by the caller.
const MIN_BEHIND: usize = 64 * 1024;

/// The content hash of a transfer (with its block hashes going to `W`), fed from the writer's
/// thread and computed on another.
///
/// Whoever needs the tree itself (a hole, a KEEP, the root, the commit) takes it with
/// [`tree`](Self::tree), which first waits until every chunk handed over is hashed, so the
/// order of the content is kept. A hashing error surfaces at the next call, after which every
/// call fails: the hash is of no use, and an upload can only be suspended (a resume hashes
/// again what is on disk) or aborted.
pub struct HashBehind<W: Write + Send + 'static> {
    tree: Arc<Mutex<TreeHash<W>>>,
    /// `None` once dropped, which ends the thread.
    chunks: Option<SyncSender<Bytes>>,
    /// One result per chunk handed over, in order.
    hashed: Receiver<io::Result<()>>,
    /// Chunks handed over whose result has not been taken.
    queued: usize,
    broken: bool,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> HashBehind<W> {
    pub fn start(tree: TreeHash<W>) -> io::Result<Self> {
        let tree = Arc::new(Mutex::new(tree));
        let (chunks, rx) = mpsc::sync_channel::<Bytes>(DEPTH);
        let (results, hashed) = mpsc::channel();
        let shared = Arc::clone(&tree);
        let thread = std::thread::Builder::new()
            .name("ferry-hash".into())
            .spawn(move || {
                for bytes in rx {
                    // The writer locks only once this thread's queue is empty, so this lock is
                    // never contended.
                    let result = match shared.lock() {
                        Ok(mut tree) => tree.data(&bytes),
                        Err(_) => Err(poisoned()),
                    };
                    drop(bytes);
                    if results.send(result).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            tree,
            chunks: Some(chunks),
            hashed,
            queued: 0,
            broken: false,
            thread: Some(thread),
        })
    }

    /// Hashes `bytes` next, on the hashing thread if it is large enough; returns once it is
    /// queued (an error is one of an earlier chunk).
    pub fn data(&mut self, bytes: Bytes) -> io::Result<()> {
        if bytes.len() < MIN_BEHIND {
            return self.tree()?.data(&bytes);
        }
        if self.queued == DEPTH {
            self.take_one()?;
        }
        self.check()?;
        let sent = self.chunks.as_ref().map(|chunks| chunks.send(bytes));
        if !matches!(sent, Some(Ok(()))) {
            self.broken = true;
            return Err(poisoned());
        }
        self.queued += 1;
        Ok(())
    }

    /// The tree with everything handed over hashed into it.
    pub fn tree(&mut self) -> io::Result<MutexGuard<'_, TreeHash<W>>> {
        self.drain()?;
        self.tree.lock().map_err(|_| poisoned())
    }

    /// The tree, with everything handed over hashed into it, once the thread has ended.
    pub fn into_tree(mut self) -> io::Result<TreeHash<W>> {
        self.drain()?;
        self.stop();
        let tree = Arc::clone(&self.tree);
        drop(self);
        Arc::try_unwrap(tree)
            .map_err(|_| poisoned())?
            .into_inner()
            .map_err(|_| poisoned())
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.queued > 0 {
            self.take_one()?;
        }
        self.check()
    }

    /// Ends the thread (it finishes what it holds first).
    fn stop(&mut self) {
        drop(self.chunks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Makes the hash unusable: content it has taken in did not reach the file.
    pub fn poison(&mut self) {
        self.broken = true;
    }

    fn take_one(&mut self) -> io::Result<()> {
        let result = self.hashed.recv().unwrap_or_else(|_| Err(poisoned()));
        self.queued -= 1;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "the upload's hash failed earlier; suspend and resume the upload",
            ));
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for HashBehind<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poisoned() -> io::Error {
    io::Error::other("the upload's hashing thread failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockhash::BLOCK_SIZE;
    use crate::blocks::BlocksWriter;

    fn tree(dir: &tempfile::TempDir) -> TreeHash<BlocksWriter> {
        let blocks = BlocksWriter::create(&dir.path().join("blocks")).unwrap();
        TreeHash::new(BLOCK_SIZE, blocks)
    }

    /// Chunks of every size, some behind and some in place, hash in their order.
    #[test]
    fn keeps_the_order_of_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let mut behind = HashBehind::start(tree(&dir)).unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 977) as u8).collect();
        let sizes = [1, 300_000, 4_096, 65_536, 65_535, 1 << 20, 17];
        let mut at = 0;
        for len in sizes.iter().cycle() {
            let end = (at + len).min(content.len());
            behind
                .data(Bytes::copy_from_slice(&content[at..end]))
                .unwrap();
            at = end;
            if at == content.len() {
                break;
            }
        }
        assert_eq!(behind.tree().unwrap().bytes(), content.len() as u64);
        let root = behind.into_tree().unwrap().finish().unwrap();
        assert_eq!(root, *blake3::hash(&content).as_bytes());
    }

    #[test]
    fn a_poisoned_hash_refuses_everything_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut behind = HashBehind::start(tree(&dir)).unwrap();
        behind.data(Bytes::from(vec![1; 1 << 20])).unwrap();
        behind.poison();
        assert!(behind.data(Bytes::from(vec![1; 1 << 20])).is_err());
        assert!(behind.tree().is_err());
    }
}
