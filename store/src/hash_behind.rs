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
//!
//! Threads are few: at most twice the cores' count hash at once in a process
//! ([`max_threads`]); a transfer that finds them all taken hashes on the caller's thread,
//! after each write, as it did before. So a peer that opens a thousand uploads costs the
//! node no thousand threads, and the machine's cores are all the parallelism there is anyway.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::blockhash::TreeHash;

/// Data chunks that may wait to be hashed while the writer goes on.
const DEPTH: usize = 2;

/// The smallest chunk handed to the hashing thread; smaller ones are hashed by the caller.
const MIN_BEHIND: usize = 64 * 1024;

/// Hashing threads running in this process.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// At most this many hashing threads at once: twice the cores.
pub fn max_threads() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| 2 * std::thread::available_parallelism().map_or(1, usize::from))
}

/// The content hash of a transfer (with its block hashes going to `W`), fed from the writer's
/// thread and computed on another when one is free.
///
/// Whoever needs the tree itself (a hole, a KEEP, the root, the commit) takes it with
/// [`tree`](Self::tree), which first waits until every chunk handed over is hashed, so the
/// order of the content is kept. A hashing error surfaces at the next call, after which every
/// call fails: the hash is of no use, and an upload can only be suspended (a resume hashes
/// again what is on disk) or aborted.
pub struct HashBehind<W: Write + Send + 'static> {
    tree: Arc<Mutex<TreeHash<W>>>,
    /// The hashing thread, if one was free when the transfer began.
    worker: Option<Worker>,
    broken: bool,
}

/// A hashing thread and the two channels to it; it holds one of [`THREADS`].
struct Worker {
    chunks: SyncSender<Bytes>,
    /// One result per chunk handed over, in order.
    hashed: Receiver<io::Result<()>>,
    /// Chunks handed over whose result has not been taken.
    queued: usize,
    thread: JoinHandle<()>,
}

impl<W: Write + Send + 'static> HashBehind<W> {
    /// Starts hashing on a thread of its own if fewer than [`max_threads`] are running, in
    /// place otherwise. Never fails: a thread that cannot be started means hashing in place.
    pub fn start(tree: TreeHash<W>) -> Self {
        let tree = Arc::new(Mutex::new(tree));
        let worker = THREADS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_threads()).then_some(n + 1)
            })
            .ok()
            .and_then(|_| {
                let worker = Worker::spawn(Arc::clone(&tree));
                if worker.is_none() {
                    THREADS.fetch_sub(1, Ordering::AcqRel);
                }
                worker
            });
        Self {
            tree,
            worker,
            broken: false,
        }
    }

    /// Whether chunks are hashed on a thread of their own.
    #[cfg(test)]
    fn behind(&self) -> bool {
        self.worker.is_some()
    }

    /// Hashes `bytes` next, on the hashing thread if there is one and the chunk is large
    /// enough; returns once it is queued (an error may be one of an earlier chunk).
    pub fn data(&mut self, bytes: Bytes) -> io::Result<()> {
        if self.worker.is_none() || bytes.len() < MIN_BEHIND {
            return self.tree()?.data(&bytes);
        }
        self.wait_until(DEPTH - 1)?;
        if self
            .worker
            .as_mut()
            .is_some_and(|worker| worker.send(bytes))
        {
            Ok(())
        } else {
            self.broken = true;
            Err(poisoned())
        }
    }

    /// The tree with everything handed over hashed into it.
    pub fn tree(&mut self) -> io::Result<MutexGuard<'_, TreeHash<W>>> {
        self.wait_until(0)?;
        self.tree.lock().map_err(|_| poisoned())
    }

    /// The tree, with everything handed over hashed into it, once the thread has ended.
    pub fn into_tree(mut self) -> io::Result<TreeHash<W>> {
        self.wait_until(0)?;
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
        let tree = Arc::clone(&self.tree);
        drop(self);
        Arc::try_unwrap(tree)
            .map_err(|_| poisoned())?
            .into_inner()
            .map_err(|_| poisoned())
    }

    /// Makes the hash unusable: content it has taken in did not reach the file.
    pub fn poison(&mut self) {
        self.broken = true;
    }

    /// Waits until at most `queued` chunks are left to hash; fails on a hashing error, this
    /// one or an earlier one.
    fn wait_until(&mut self, queued: usize) -> io::Result<()> {
        if let Some(worker) = &mut self.worker {
            while worker.queued > queued {
                if let Err(error) = worker.take_one() {
                    self.broken = true;
                    return Err(error);
                }
            }
        }
        self.check()
    }

    fn check(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "the transfer's hash failed earlier; an upload can be suspended and resumed",
            ));
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for HashBehind<W> {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

impl Worker {
    /// The thread, or `None` if the system would not start one.
    fn spawn<W: Write + Send + 'static>(tree: Arc<Mutex<TreeHash<W>>>) -> Option<Self> {
        let (chunks, rx) = mpsc::sync_channel::<Bytes>(DEPTH);
        let (results, hashed) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ferry-hash".into())
            .spawn(move || {
                for bytes in rx {
                    // The owner locks only once this thread's queue is empty, so this lock is
                    // never contended.
                    let result = match tree.lock() {
                        Ok(mut tree) => tree.data(&bytes),
                        Err(_) => Err(poisoned()),
                    };
                    drop(bytes);
                    if results.send(result).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Self {
            chunks,
            hashed,
            queued: 0,
            thread,
        })
    }

    /// Hands a chunk over; `false` if the thread is gone.
    fn send(&mut self, bytes: Bytes) -> bool {
        let sent = self.chunks.send(bytes).is_ok();
        self.queued += usize::from(sent);
        sent
    }

    fn take_one(&mut self) -> io::Result<()> {
        self.queued -= 1;
        self.hashed.recv().unwrap_or_else(|_| Err(poisoned()))
    }

    /// Ends the thread (it hashes what it holds first) and gives its place back.
    fn stop(self) {
        drop(self.chunks);
        let _ = self.thread.join();
        THREADS.fetch_sub(1, Ordering::AcqRel);
    }
}

fn poisoned() -> io::Error {
    io::Error::other("the transfer's hashing thread failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockhash::BLOCK_SIZE;
    use crate::blocks::BlocksWriter;

    /// Held by every test here: they share the process's hashing threads, and each needs to
    /// know whether it got one.
    static THREADS_IN_USE: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        THREADS_IN_USE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tree(dir: &tempfile::TempDir) -> TreeHash<BlocksWriter> {
        let blocks = BlocksWriter::create(&dir.path().join("blocks")).unwrap();
        TreeHash::new(BLOCK_SIZE, blocks)
    }

    /// Chunks of every size, some behind and some in place, hash in their order, and the tree
    /// is taken only once what was handed over is in it.
    #[test]
    fn keeps_the_order_of_the_content() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let mut behind = HashBehind::start(tree(&dir));
        assert!(behind.behind());
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
        // Hashing 16 MiB takes milliseconds: a tree taken without waiting would miss it.
        let large = vec![3; 16 << 20];
        behind.data(Bytes::from(large.clone())).unwrap();
        assert_eq!(
            behind.tree().unwrap().bytes(),
            (content.len() + large.len()) as u64
        );
        let root = behind.into_tree().unwrap().finish().unwrap();
        let whole = [content, large].concat();
        assert_eq!(root, *blake3::hash(&whole).as_bytes());
    }

    /// Past [`max_threads`] transfers hash in place, with the same result.
    #[test]
    fn threads_are_bounded() {
        let _serial = serial();
        let content = Bytes::from(vec![7; 1 << 20]);
        let mut all: Vec<_> = (0..max_threads() + 2)
            .map(|_| HashBehind::start(TreeHash::default()))
            .collect();
        // Other tests may hold threads too, but never more than the bound all together.
        assert!(all.iter().filter(|behind| !behind.behind()).count() >= 2);
        for behind in &mut all {
            behind.data(content.clone()).unwrap();
        }
        let expected = *blake3::hash(&content).as_bytes();
        for behind in all {
            assert_eq!(behind.into_tree().unwrap().root(), expected);
        }
    }

    #[test]
    fn a_poisoned_hash_refuses_everything_after() {
        let _serial = serial();
        let mut behind = HashBehind::start(TreeHash::default());
        behind.data(Bytes::from(vec![1; 1 << 20])).unwrap();
        behind.poison();
        assert!(behind.data(Bytes::from(vec![1; 1 << 20])).is_err());
        assert!(behind.tree().is_err());
    }
}
