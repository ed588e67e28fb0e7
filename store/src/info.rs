//! What the store knows about a committed volume.

use std::time::SystemTime;

/// What the store knows about a committed volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    /// The volume's length in bytes, holes included.
    pub size: u64,
    /// Bytes the file system actually allocated (`st_blocks * 512`); far below `size` for a
    /// sparse volume.
    pub allocated: u64,
    /// BLAKE3 of the whole content (holes as zeros), as verified or computed at commit.
    /// `None` for volumes made by [`VolumeStore::create`] (all zeros; hashing terabytes of
    /// zeros at create time would cost minutes of CPU for a checksum anyone can compute) and
    /// for volumes whose sidecar is missing or unreadable.
    pub checksum: Option<[u8; 32]>,
    /// When the volume was first created or committed. An overwriting upload keeps it.
    pub created: SystemTime,
    /// When the volume's content was last created or replaced.
    pub modified: SystemTime,
}

impl VolumeInfo {
    /// The checksum as lowercase hex.
    pub fn checksum_hex(&self) -> Option<String> {
        self.checksum.map(hex::encode)
    }
}
