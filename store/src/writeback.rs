//! Writing a large file at the disk's pace: the kernel is asked to write each window of a
//! sequentially written file back to disk as soon as the window is complete, and the writer
//! waits for the window before it, so at most two windows of the file are dirty in the page
//! cache at any time.
//!
//! Without it, a volume's gigabytes pile up as dirty pages until the kernel's dirty limits
//! throttle the writer (on the build machine, plain buffered writes of 2 GiB ran at 240–400 MB/s
//! with 3.9 s of system time, where these windows gave 1.6–1.8 GB/s and 0.8 s), and the
//! `fsync` before a commit then waits for all of them at once. The pages stay cached: a volume
//! read right after it was written is still served from memory.
//!
//! The calls are hints and their errors are ignored: durability comes from the `fsync` that
//! every writer does before it commits, and that `fsync` reports a failing disk.

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// Bytes handed to writeback at a time. Large enough for the disk to see big writes, small
/// enough that two of them are far below the kernel's dirty thresholds.
const WINDOW: u64 = 8 << 20;

/// The writeback state of one sequential writer (one owner: the thread writing the file).
#[derive(Debug)]
pub struct Writeback {
    /// Where the next window to hand to writeback starts.
    next: u64,
    /// Where writing began: windows before it are not this writer's to wait for.
    start: u64,
}

impl Writeback {
    /// For a writer that starts at `offset` (0, or where a resumed upload goes on).
    pub fn new(offset: u64) -> Self {
        let start = offset - offset % WINDOW;
        Self { next: start, start }
    }

    /// The writer has written everything before `end`: starts writeback of each window that is
    /// now complete and waits until the window before it is on disk.
    pub fn wrote(&mut self, file: &File, end: u64) {
        while self.next + WINDOW <= end {
            range(file, self.next, libc::SYNC_FILE_RANGE_WRITE);
            if self.next >= self.start + WINDOW {
                range(
                    file,
                    self.next - WINDOW,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
            self.next += WINDOW;
        }
    }
}

/// `sync_file_range(2)` on one window of `file`.
fn range(file: &File, offset: u64, flags: libc::c_uint) {
    // SAFETY: a valid descriptor owned by `file`; the call reads no memory of ours. Its
    // result is ignored on purpose (see the module's documentation).
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            WINDOW as libc::off64_t,
            flags,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_file_written_through_windows_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create_new(dir.path().join("f")).unwrap();
        let data: Vec<u8> = (0..3 * WINDOW + 12345).map(|i| (i % 251) as u8).collect();
        let start = WINDOW + 7;
        let mut writeback = Writeback::new(start);
        assert_eq!(writeback.next, WINDOW);
        for (i, piece) in data[start as usize..].chunks(1 << 20).enumerate() {
            let at = start + (i << 20) as u64;
            file.write_all_at(piece, at).unwrap();
            writeback.wrote(&file, at + piece.len() as u64);
        }
        assert_eq!(
            writeback.next,
            3 * WINDOW,
            "every complete window was handed over"
        );
        let mut back = vec![0; data.len() - start as usize];
        file.read_exact_at(&mut back, start).unwrap();
        assert_eq!(back, data[start as usize..]);
    }
}
