//! The local file an upload reads.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::exit::CliError;

/// Opens what an upload reads and finds its size: a regular file, or a block device (a disk
/// uploaded whole). Anything else (a directory, /dev/zero, a pipe) has no size to promise the
/// node, so it is refused rather than uploaded as whatever it yields.
pub fn open_source(path: &Path) -> Result<(File, u64), CliError> {
    use std::io::Seek;
    use std::os::unix::fs::FileTypeExt;
    // The type first: opening a FIFO would wait for a writer.
    let kind = std::fs::metadata(path)
        .map_err(CliError::local(format!("opening {}", path.display())))?
        .file_type();
    if !kind.is_file() && !kind.is_block_device() {
        let what = if kind.is_dir() {
            "a directory"
        } else {
            "not a regular file or block device"
        };
        return Err(CliError::Usage(format!(
            "cannot upload {}: {what}; give a file (its size is what the volume gets)",
            path.display()
        )));
    }
    let mut file =
        File::open(path).map_err(CliError::local(format!("opening {}", path.display())))?;
    let size = file
        .seek(io::SeekFrom::End(0))
        .and_then(|size| file.rewind().map(|()| size))
        .map_err(CliError::local(format!("sizing {}", path.display())))?;
    Ok((file, size))
}
