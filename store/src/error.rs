//! The one error type of the volume store.

use std::io;
use std::path::PathBuf;

use ferry_codec::proto::ErrorCode;

/// The result type of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a volume store operation failed.
///
/// Every message names the volume (or path) and, where there is one, says what the caller can
/// do about it, because these messages end up in front of an operator or a remote client.
/// [`StoreError::code`] maps each variant to the wire's [`ErrorCode`] so the daemon does not
/// have to repeat the table.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name breaks one of the rules of [`validate_name`](crate::validate_name).
    #[error("invalid volume name {}: {reason}", shown(name))]
    InvalidName { name: String, reason: String },

    /// No committed volume of that name.
    #[error("volume {name:?} does not exist")]
    NotFound { name: String },

    /// A committed volume of that name exists and the operation does not replace volumes.
    #[error(
        "volume {name:?} already exists; delete it first, or upload with overwrite to replace it"
    )]
    AlreadyExists { name: String },

    /// `resume_upload` (or `discard_upload`) found no partial upload of that name.
    #[error(
        "no partial upload of volume {name:?} to resume; it was committed, aborted or expired: start a new upload"
    )]
    NoPartialUpload { name: String },

    /// `resume_upload` found a partial upload that was begun as not resumable
    /// ([`UploadOptions::resumable`](crate::UploadOptions::resumable)), such as a replica of
    /// a replicated upload. It is removed by the next expiry sweep or open.
    #[error(
        "the partial upload of volume {name:?} cannot be resumed (it was begun as not resumable, as the replicas of a replicated upload are); start a new upload"
    )]
    NotResumable { name: String },

    /// Another [`Upload`](crate::Upload) of the same name is open in this process.
    #[error(
        "an upload of volume {name:?} is in progress; wait for it to finish or be suspended, then resume it"
    )]
    UploadInProgress { name: String },

    /// The uploaded bytes do not hash to the checksum announced at `begin_upload`. The partial
    /// upload has been deleted.
    #[error(
        "checksum mismatch for volume {name:?}: expected blake3 {expected}, received data hashes to {actual}; the upload was discarded, upload it again"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    /// The upload was committed with a size other than the one announced at `begin_upload`.
    /// The partial upload has been deleted.
    #[error(
        "size mismatch for volume {name:?}: expected {expected} bytes, received {actual}; the upload was discarded, upload it again"
    )]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },

    /// A chunk would carry the upload past its announced size. Nothing of the chunk was
    /// written; the upload stays at `offset`.
    #[error(
        "chunk of {chunk} bytes at offset {offset} would exceed the expected size of {expected} bytes of volume {name:?}"
    )]
    BeyondExpectedSize {
        name: String,
        expected: u64,
        offset: u64,
        chunk: u64,
    },

    /// A delta upload's base is not the version it names (replaced, deleted, or never had
    /// that checksum). Nothing was written; the client starts over (in full, or against the
    /// version there is now).
    #[error(
        "volume {name:?} is no longer the base this delta was made against (blake3 {expected}): {now}; upload it again"
    )]
    BaseChanged {
        name: String,
        expected: String,
        now: String,
    },

    /// A KEEP range the upload cannot honour: no base, or past the base's end.
    #[error("upload {name:?}: {reason}")]
    BadKeep { name: String, reason: String },

    /// A volume (to create, or an upload's expected size or its data so far) over the store's
    /// `max_volume_size`.
    #[error(
        "volume {name:?} would be {size} bytes, over this node's max_volume_size of {limit} bytes"
    )]
    TooLarge { name: String, size: u64, limit: u64 },

    /// A download range that does not lie within the volume. Ranges are never clamped.
    #[error(
        "range offset {offset}, length {} is outside volume {name:?} of {size} bytes; ask for a range within the volume",
        length.map_or_else(|| "to the end".to_string(), |l| l.to_string())
    )]
    InvalidRange {
        name: String,
        offset: u64,
        length: Option<u64>,
        size: u64,
    },

    /// Another process (or another `VolumeStore` in this one) holds the store's lock.
    #[error(
        "volume store at {} is in use by another process (its lock file is held); stop that process or use another directory",
        root.display()
    )]
    Locked { root: PathBuf },

    /// The [`StoreConfig`](crate::StoreConfig) cannot work.
    /// The upload's stream ended while a hole was being hashed ([`Upload::stopper`](crate::Upload::stopper)).
    #[error("upload {name:?} was stopped while it hashed a hole: its stream ended")]
    Stopped { name: String },
    #[error("invalid volume store configuration: {reason}")]
    InvalidConfig { reason: String },

    /// A file of the store's own making does not parse.
    #[error("{} is corrupt: {reason}; remove it by hand after checking it", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The operating system refused; `context` says what the store was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// The wire error code that fits this error, for the daemon's replies.
    ///
    /// | variant | code |
    /// |---|---|
    /// | `InvalidName`, `InvalidRange`, `BeyondExpectedSize`, `BadKeep` | `BAD_REQUEST` |
    /// | `NotFound`, `NoPartialUpload` | `NOT_FOUND` |
    /// | `AlreadyExists` | `ALREADY_EXISTS` |
    /// | `UploadInProgress`, `NotResumable` | `FAILED_PRECONDITION` |
    /// | `TooLarge` | `RESOURCE_EXHAUSTED` |
    /// | `ChecksumMismatch`, `SizeMismatch` | `FAILED_PRECONDITION` (what the upload announced does not hold; sending the same again fails again) |
    /// | `BaseChanged` | `FAILED_PRECONDITION` (the delta's base is gone: upload in full) |
    /// | `Stopped` | `CANCELLED` (the upload's stream already ended) |
    /// | `Io` with "no space left", "quota exceeded" or "file too large" | `RESOURCE_EXHAUSTED` |
    /// | `Locked`, `InvalidConfig`, `Corrupt`, other `Io` | `INTERNAL` |
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidName { .. }
            | Self::InvalidRange { .. }
            | Self::BeyondExpectedSize { .. }
            | Self::BadKeep { .. } => ErrorCode::BadRequest,
            Self::NotFound { .. } | Self::NoPartialUpload { .. } => ErrorCode::NotFound,
            Self::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Self::UploadInProgress { .. }
            | Self::NotResumable { .. }
            | Self::ChecksumMismatch { .. }
            | Self::SizeMismatch { .. }
            | Self::BaseChanged { .. } => ErrorCode::FailedPrecondition,
            Self::TooLarge { .. } => ErrorCode::ResourceExhausted,
            Self::Stopped { .. } => ErrorCode::Cancelled,
            Self::Io { source, .. }
                if matches!(
                    source.kind(),
                    io::ErrorKind::StorageFull
                        | io::ErrorKind::QuotaExceeded
                        | io::ErrorKind::FileTooLarge
                ) =>
            {
                ErrorCode::ResourceExhausted
            }
            Self::Locked { .. }
            | Self::InvalidConfig { .. }
            | Self::Corrupt { .. }
            | Self::Io { .. } => ErrorCode::Internal,
        }
    }

    /// The disk (or the node's quota on it) is full: an upload that hit this is kept, to be
    /// resumed once there is room.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }

    /// An [`Io`](Self::Io) error; `context` says what was being done and to what.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A name for an error message: quoted and escaped, and cut short if a client sent a very long
/// one, so a hostile name cannot flood the logs.
fn shown(name: &str) -> String {
    const MAX: usize = 64;
    if name.len() <= MAX {
        return format!("{name:?}");
    }
    let mut end = MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &name[..end], name.len())
}

/// A short way to attach context to `io::Result`s inside the store.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::io(context(), source))
    }
}
