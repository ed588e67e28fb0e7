//! Sparse files: reading a file as data and holes (with `lseek(SEEK_DATA / SEEK_HOLE)`) and
//! writing chunks back so holes stay holes. Used by the volume store and by `ferry` for local
//! files.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use bytes::Bytes;
use ferry_codec::Chunk;

use crate::writeback::Writeback;

/// One run of a file, starting at the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// This many bytes are stored.
    Data(u64),
    /// This many bytes are a hole: they read as zeros and take no space.
    Hole(u64),
}

/// Walks `[pos, end)` of a file as data and holes, with `lseek(SEEK_DATA / SEEK_HOLE)`, so a
/// sparse file can be copied without reading its zeros. Two `lseek`s per data run, none per
/// chunk: the end of the current run is remembered.
///
/// On a file system without the lseek extension every byte is reported as data, which is
/// slower but correct. The file must not change while it is walked; the store never modifies
/// a volume in place (it replaces it by rename), and an upload's partial file is walked only
/// by its own owner.
#[derive(Debug)]
pub struct ExtentCursor {
    pos: u64,
    end: u64,
    /// Bytes before this offset (and at or after `pos`) are known to be data.
    data_end: u64,
    /// Cleared when the file system does not support SEEK_DATA.
    sparse: bool,
}

impl ExtentCursor {
    pub fn new(start: u64, end: u64) -> Self {
        Self {
            pos: start,
            end,
            data_end: start,
            sparse: true,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn end(&self) -> u64 {
        self.end
    }

    /// The extent at the cursor, clipped to the end of the range; `None` at the end. Does not
    /// move the cursor: call [`advance`](Self::advance) with what was consumed.
    pub fn peek(&mut self, file: &File) -> io::Result<Option<Extent>> {
        let pos = self.pos;
        let end = self.end;
        if pos >= end {
            return Ok(None);
        }
        if pos < self.data_end {
            return Ok(Some(Extent::Data(self.data_end.min(end) - pos)));
        }
        if !self.sparse {
            self.data_end = end;
            return Ok(Some(Extent::Data(end - pos)));
        }
        match seek(file, pos, libc::SEEK_DATA) {
            // No data at or after `pos`: the rest of the file is a hole.
            Err(err) if err.raw_os_error() == Some(libc::ENXIO) => {
                Ok(Some(Extent::Hole(end - pos)))
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {
                self.sparse = false;
                self.data_end = end;
                Ok(Some(Extent::Data(end - pos)))
            }
            Err(err) => Err(err),
            Ok(data) if data > pos => Ok(Some(Extent::Hole(data.min(end) - pos))),
            Ok(_) => {
                // Data at `pos`; it runs to the next hole (the end of the file counts as one).
                let hole = seek(file, pos, libc::SEEK_HOLE)?;
                self.data_end = if hole > pos { hole } else { end };
                Ok(Some(Extent::Data(self.data_end.min(end) - pos)))
            }
        }
    }

    pub fn advance(&mut self, consumed: u64) {
        self.pos += consumed;
    }
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a file descriptor we own; it only moves the file offset, which every
    // read sets again before it reads.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as u64)
    }
}

/// Reads `[start, end)` of a file as [`Chunk`]s: data of at most `max` bytes per chunk, and
/// holes (of any length: a hole costs nothing to send) without reading them.
#[derive(Debug)]
pub struct SparseReader {
    file: File,
    cursor: ExtentCursor,
}

impl SparseReader {
    pub fn new(file: File, start: u64, end: u64) -> Self {
        Self {
            file,
            cursor: ExtentCursor::new(start, end),
        }
    }

    /// Where the next chunk starts.
    pub fn position(&self) -> u64 {
        self.cursor.pos()
    }

    /// Bytes of the range not yet returned.
    pub fn remaining(&self) -> u64 {
        self.cursor.end() - self.cursor.pos()
    }

    /// The next chunk, `None` at the end. Each data chunk is one positional read into a
    /// buffer allocated for it, which becomes the chunk's `Bytes` without another copy.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Chunk>> {
        self.next_chunk_before(max, u64::MAX)
    }

    /// [`next_chunk`](Self::next_chunk), with no chunk (a hole included) reaching past the
    /// offset `stop`: what a walk block by block reads. `None` at `stop` as at the end.
    pub fn next_chunk_before(&mut self, max: usize, stop: u64) -> io::Result<Option<Chunk>> {
        if max == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "max chunk size is 0",
            ));
        }
        let pos = self.cursor.pos();
        let room = stop.saturating_sub(pos);
        if room == 0 {
            return Ok(None);
        }
        let chunk = match self.cursor.peek(&self.file)? {
            None => return Ok(None),
            Some(Extent::Hole(n)) => Chunk::Hole(n.min(room)),
            Some(Extent::Data(n)) => {
                let n = n.min(max as u64).min(room) as usize;
                // `read_to_end` reads into the vector's spare capacity without zero-filling it
                // first (a memset of every byte was 9% of `ferry vol upload`'s CPU).
                let mut buffer = Vec::with_capacity(n);
                (&self.file).seek(io::SeekFrom::Start(pos))?;
                (&self.file).take(n as u64).read_to_end(&mut buffer)?;
                if buffer.len() < n {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ended at {} inside a data extent",
                            pos + buffer.len() as u64
                        ),
                    ));
                }
                Chunk::Data(Bytes::from(buffer))
            }
        };
        self.cursor.advance(chunk.len());
        Ok(Some(chunk))
    }
}

/// Writes chunks one after the other from offset 0: data where it belongs, holes by extending
/// the file without writing, so they take no space.
pub struct SparseWriter<'a> {
    file: &'a File,
    offset: u64,
    writeback: Writeback,
}

impl<'a> SparseWriter<'a> {
    pub fn new(file: &'a File) -> Self {
        Self {
            file,
            offset: 0,
            writeback: Writeback::new(0),
        }
    }

    pub fn write(&mut self, chunk: &Chunk) -> io::Result<()> {
        write_chunk_at(self.file, self.offset, chunk)?;
        self.offset += chunk.len();
        self.writeback.wrote(self.file, self.offset);
        Ok(())
    }

    /// Copies the next `len` bytes from the same offsets of `from` ([`copy_range`]).
    pub fn keep(&mut self, from: &File, len: u64) -> io::Result<()> {
        copy_range(from, self.file, self.offset, len)?;
        self.offset += len;
        self.writeback.wrote(self.file, self.offset);
        Ok(())
    }

    /// Where the next chunk goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sets the final length (a trailing hole) and syncs the data.
    pub fn finish(self) -> io::Result<()> {
        self.file.set_len(self.offset)?;
        self.file.sync_all()
    }
}

/// Writes one chunk at `offset`: data with a positional write, a hole by extending the file to
/// its end if needed (a hole inside the file's current length must already read as zeros).
pub fn write_chunk_at(file: &File, offset: u64, chunk: &Chunk) -> io::Result<()> {
    match chunk {
        Chunk::Data(bytes) => file.write_all_at(bytes, offset),
        Chunk::Hole(length) => {
            let end = offset + length;
            if file.metadata()?.len() < end {
                file.set_len(end)?;
            }
            Ok(())
        }
        Chunk::Keep(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a KEEP range where the file has no base to keep from",
        )),
    }
}

/// Copies `len` bytes at `offset` of `from` to the same offset of `to` with
/// `copy_file_range(2)`: inside the kernel, and on file systems with shared extents (XFS,
/// Btrfs) without copying data at all. Falls back to reading and writing where the call is
/// not supported (other file systems, older kernels).
pub fn copy_range(from: &File, to: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < len {
        let mut off_in = (offset + done) as libc::loff_t;
        let mut off_out = off_in;
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open files owned by the caller, and the offsets are
        // locals the kernel updates.
        let n = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        match n {
            n if n > 0 => done += n as u64,
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => {
                let err = io::Error::last_os_error();
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) {
                    return Err(err);
                }
                let mut buffer = vec![0; (len - done).min(1 << 20) as usize];
                while done < len {
                    let n = ((len - done) as usize).min(buffer.len());
                    from.read_exact_at(&mut buffer[..n], offset + done)?;
                    to.write_all_at(&buffer[..n], offset + done)?;
                    done += n as u64;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_range_copies_at_the_same_offset() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let from = File::create_new(dir.path().join("from")).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        from.write_all_at(&data, 0).unwrap();
        let to = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("to"))
            .unwrap();
        copy_range(&from, &to, 1000, 2_000_000).unwrap();
        let mut back = vec![0; 2_000_000];
        to.read_exact_at(&mut back, 1000).unwrap();
        assert!(back == data[1000..2_001_000]);
        assert!(
            copy_range(&from, &to, 2_999_000, 5000).is_err(),
            "past the end"
        );
    }

    #[test]
    fn extents_of_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sparse");
        let file = File::create(&path).unwrap();
        let mib = 1 << 20;
        file.write_all_at(&vec![1; mib], 0).unwrap();
        file.write_all_at(&vec![2; mib], 9 * mib as u64).unwrap();
        file.set_len(12 * mib as u64).unwrap();
        let mut cursor = ExtentCursor::new(0, 12 * mib as u64);
        let mut extents = Vec::new();
        while let Some(extent) = cursor.peek(&file).unwrap() {
            let n = match extent {
                Extent::Data(n) | Extent::Hole(n) => n,
            };
            extents.push(extent);
            cursor.advance(n);
        }
        let total: u64 = extents
            .iter()
            .map(|e| match e {
                Extent::Data(n) | Extent::Hole(n) => n,
            })
            .sum();
        assert_eq!(total, 12 * mib as u64);
        assert!(
            extents.contains(&Extent::Hole(8 * mib as u64)),
            "{extents:?}"
        );
        assert_eq!(
            extents.last(),
            Some(&Extent::Hole(2 * mib as u64)),
            "{extents:?}"
        );
    }
}
