//! The file system primitives the store's crash safety rests on: durable directory entries,
//! renames that never replace, and temporary names.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
