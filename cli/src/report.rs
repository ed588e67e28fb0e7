//! What a transfer reports when it is done, for [`Output`](crate::output::Output) to print.

use std::path::PathBuf;
use std::time::Duration;

use ferry_node::proto::volume::{PeerTransferReply, Replica, Volume};

pub struct UploadReport {
    pub volume: Option<Volume>,
    /// The copies on the node's peers (a replicated upload).
    pub replicas: Vec<Replica>,
    /// Data bytes sent on this run (holes not counted).
    pub bytes_sent: u64,
    pub hole_bytes: u64,
    /// Bytes the node took from the version it held (a delta's unchanged blocks).
    pub kept_bytes: u64,
    /// Bytes of block hashes fetched for the delta.
    pub hash_bytes: u64,
    pub resumed_from: u64,
    pub took: Duration,
}

pub struct DownloadReport {
    pub file: PathBuf,
    pub bytes: u64,
    pub hole_bytes: u64,
    /// Bytes taken from the existing file (a delta download).
    pub kept_bytes: u64,
    pub hash_bytes: u64,
    pub checksum: Vec<u8>,
    pub took: Duration,
}

pub struct PeerReport {
    pub migrate: bool,
    pub reply: PeerTransferReply,
    pub took: Duration,
}
