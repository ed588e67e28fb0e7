//! The JSON files beside the data: a volume's sidecar and a partial upload's state.
//!
//! Both are small, written whole to a temporary file and renamed into place, so a reader sees
//! the old version or the new one, never a torn one. Unknown fields are ignored, so a newer
//! daemon can add fields without breaking an older one reading the same store.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, StoreError};
use crate::sys;

/// The version written into every JSON file, for future migrations.
pub(crate) const FORMAT: u32 = 1;

/// `meta/<name>.json`: what the store knows about a committed volume besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VolumeMeta {
    pub format: u32,
    /// The size the volume was committed with; a data file of another size means this
    /// sidecar is stale and is not trusted.
    pub size: u64,
    /// BLAKE3 of the whole content, holes as zeros, in hex; `null` if not computed.
    #[serde(with = "hex_checksum")]
    pub checksum: Option<[u8; 32]>,
    /// Unix milliseconds.
    pub created: u64,
    /// Unix milliseconds.
    pub modified: u64,
}

/// `partial/<name>.json`: what a resumed upload must know that its data file cannot tell.
/// The upload's offset is not stored: it is the length of `partial/<name>.part`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartialMeta {
    pub format: u32,
    pub expected_size: Option<u64>,
    #[serde(with = "hex_checksum")]
    pub expected_checksum: Option<[u8; 32]>,
    pub overwrite: bool,
    /// Whether the upload may be resumed after it was interrupted (see
    /// [`UploadOptions::resumable`](crate::UploadOptions::resumable)). One that may not is
    /// removed by the next recovery or expiry sweep whatever its age, since nothing would
    /// ever continue it. Missing in files written before the field existed, all of which
    /// were resumable.
    #[serde(default = "resumable_by_default")]
    pub resumable: bool,
    /// A delta upload's base: the checksum of the version its KEEP ranges copy from. Missing
    /// (a full upload) in files written before deltas existed.
    #[serde(
        default,
        with = "hex_checksum",
        skip_serializing_if = "Option::is_none"
    )]
    pub base: Option<[u8; 32]>,
    /// When the upload began, unix milliseconds.
    pub created: u64,
    /// Last activity, unix milliseconds: begin, resume, suspend, and during writes at most
    /// every [`TOUCH_INTERVAL`](crate::upload::TOUCH_INTERVAL). Expiry is measured from here.
    pub updated: u64,
}

fn resumable_by_default() -> bool {
    true
}

/// Reads a JSON file of the store; `Ok(None)` if it does not exist.
pub(crate) fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::io(format!("reading {}", path.display()), err)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
}

/// Writes `value` as JSON to `path` through a temporary file in the same directory and a
/// rename. With `durable`, the file and the directory are synced, so the new version survives
/// a crash once this returns; without, a crash may bring back the previous version (never a
/// torn one on the journaling file systems the store is meant for).
pub(crate) fn write<T: Serialize>(path: &Path, value: &T, durable: bool) -> Result<(), StoreError> {
    let dir = path.parent().expect("store files live in a directory");
    let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("meta");
    let (temp, mut file) = sys::create_temp(dir, stem)
        .context(|| format!("creating a temporary file in {}", dir.display()))?;
    let result = (|| {
        let json = serde_json::to_vec_pretty(value).expect("store metadata always serializes");
        file.write_all(&json)
            .context(|| format!("writing {}", temp.display()))?;
        if durable {
            file.sync_all()
                .context(|| format!("syncing {}", temp.display()))?;
        }
        std::fs::rename(&temp, path)
            .context(|| format!("renaming {} to {}", temp.display(), path.display()))?;
        if durable {
            sys::fsync_dir(dir).context(|| format!("syncing directory {}", dir.display()))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = sys::remove_if_exists(&temp);
    }
    result
}

/// `Option<[u8; 32]>` as a lowercase hex string or `null`.
mod hex_checksum {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|err| D::Error::custom(format!("checksum {text:?}: {err}")))?;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.json");
        let meta = VolumeMeta {
            format: FORMAT,
            size: 42,
            checksum: Some([0xab; 32]),
            created: 1,
            modified: 2,
        };
        write(&path, &meta, true).unwrap();
        assert_eq!(read::<VolumeMeta>(&path).unwrap(), Some(meta));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&"ab".repeat(32)), "{text}");

        std::fs::write(
            &path,
            r#"{"format":2,"size":1,"checksum":null,"created":3,"modified":4,"future":true}"#,
        )
        .unwrap();
        let read_back = read::<VolumeMeta>(&path).unwrap().unwrap();
        assert_eq!(read_back.checksum, None);
        assert_eq!(read_back.modified, 4);

        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            read::<VolumeMeta>(&path),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(
            read::<VolumeMeta>(&dir.path().join("none.json")).unwrap(),
            None
        );
        // Only the final file is left: no temporaries.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
