//! Tunables of a [`VolumeStore`](crate::VolumeStore).

use std::time::Duration;

use crate::name::DEFAULT_MAX_NAME_LEN;

/// Tunables of a [`VolumeStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long a partial upload may sit idle before it is removed (at open, or by
    /// [`VolumeStore::expire_partials`]). Long enough for a client to reconnect after a
    /// network outage or a daemon restart; short enough that abandoned uploads do not fill the
    /// disk. `Duration::ZERO` removes every partial upload at the next open. Default 24 h.
    pub resume_ttl: Duration,
    /// The longest volume name accepted, in bytes. Default 128, at most
    /// [`MAX_NAME_LEN_LIMIT`].
    pub max_name_len: usize,
    /// The largest volume, in logical bytes (holes included), that may be created or uploaded;
    /// larger ones fail with [`StoreError::TooLarge`]. Besides disk use it bounds CPU: an
    /// upload's holes cost its sender a few bytes on the wire but are hashed as zeros here, at
    /// a few GB/s. Default [`DEFAULT_MAX_VOLUME_SIZE`].
    pub max_volume_size: u64,
    /// Whether a delta upload reads and hashes every block it keeps from its base, instead of
    /// taking the base's stored block hashes for whole blocks. Default `false`: those hashes
    /// were made from the same bytes when the base was committed (and are checked to merge
    /// into its checksum before a delta uses them), and reading the kept blocks would make the
    /// node read the whole image for every delta. What the check adds is catching a base
    /// whose bytes changed on disk under intact hashes (bit rot): with `false`, such damage is
    /// carried into the new version and caught when the version is read (a download verifies
    /// the checksum).
    pub verify_kept_data: bool,
}

/// Default largest volume: 4 TiB, the size of a large real disk image; hashing that many
/// zeros costs about half an hour of one core.
pub const DEFAULT_MAX_VOLUME_SIZE: u64 = 4 << 40;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            resume_ttl: Duration::from_secs(24 * 60 * 60),
            max_name_len: DEFAULT_MAX_NAME_LEN,
            max_volume_size: DEFAULT_MAX_VOLUME_SIZE,
            verify_kept_data: false,
        }
    }
}
