//! The file system primitives the store's crash safety rests on: durable directory entries,
//! renames that never replace, temporary names, and the sparse-file extent walk.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Makes the entries of `dir` (files created, renamed or removed in it) durable. A rename is
/// only crash safe once the directories on both sides have been synced.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Renames `from` to `to` unless `to` exists, atomically; fails with
/// [`io::ErrorKind::AlreadyExists`] if it does.
///
/// Uses `renameat2(RENAME_NOREPLACE)` where the kernel and file system have it; otherwise
/// `link` + `unlink`, which is just as atomic for the name (the link fails if `to` exists) and
/// leaves at worst a second name for the same file behind a crash (the source, a temporary or
/// partial file, is cleaned up by recovery). File systems without hard links get a checked
/// rename, which is safe here because the store's lock file keeps other processes out and the
/// namespace lock keeps other threads out.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let c_from = c_path(from)?;
        let c_to = c_path(to)?;
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                c_from.as_ptr(),
                libc::AT_FDCWD,
                c_to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // Not supported by this kernel or file system: fall through to link + unlink.
            Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => {}
            _ => return Err(err),
        }
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(err),
        Err(_) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            fs::rename(from, to)
        }
    }
}

#[cfg(target_os = "linux")]
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Whether a directory entry is one of the store's temporary files. They all start with `.`,
/// which no volume name may, so a volume called `x.tmp` is never mistaken for one.
pub(crate) fn is_temp_name(file_name: &str) -> bool {
    file_name.starts_with('.') && file_name.ends_with(".tmp")
}

/// Creates a new temporary file in `dir` for `name`: `.<name>.<counter>.tmp`, opened
/// exclusively for reading and writing.
pub(crate) fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.{n:016x}.tmp"));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            // Left over by an earlier process that recovery has not seen yet: take the next.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Removes a file; a file that is already gone is not an error. Returns whether it existed.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn from_unix_millis(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis)
}

pub(crate) fn now_millis() -> u64 {
    unix_millis(SystemTime::now())
}

/// One run of a file, starting at the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extent {
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
pub(crate) struct ExtentCursor {
    pos: u64,
    end: u64,
    /// Bytes before this offset (and at or after `pos`) are known to be data.
    data_end: u64,
    /// Cleared when the file system does not support SEEK_DATA.
    sparse: bool,
}

impl ExtentCursor {
    pub(crate) fn new(start: u64, end: u64) -> Self {
        Self {
            pos: start,
            end,
            data_end: start,
            sparse: true,
        }
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// The extent at the cursor, clipped to the end of the range; `None` at the end. Does not
    /// move the cursor: call [`advance`](Self::advance) with what was consumed.
    pub(crate) fn peek(&mut self, file: &File) -> io::Result<Option<Extent>> {
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

    pub(crate) fn advance(&mut self, consumed: u64) {
        self.pos += consumed;
    }
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on a file descriptor we own; it only moves the file offset, which the
    // store never uses (all reads and writes are positional).
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn noreplace_rename_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"new").unwrap();
        fs::write(&b, b"old").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"old");
        assert_eq!(fs::read(&a).unwrap(), b"new");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(fs::read(&b).unwrap(), b"new");
    }

    #[test]
    fn temp_names() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _file) = create_temp(dir.path(), "vol.tmp").unwrap();
        let file_name = path.file_name().unwrap().to_str().unwrap();
        assert!(is_temp_name(file_name), "{file_name}");
        assert!(!is_temp_name("vol.tmp"), "a volume may be called x.tmp");
        assert!(file_name.len() <= ".".len() + "vol.tmp".len() + 22);
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
