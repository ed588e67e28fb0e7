//! The volume program's declaration: its number, procedures and messages, from which
//! `program!` generates the server's handler trait ([`VolumeHandler`], served by
//! [`super::server`]) and the typed client ([`VolumeClient`]).

use ferry_actors::program;

use crate::proto::volume::{
    BlockHashesReply, BlockHashesRequest, CreateRequest, DeleteReply, DeleteRequest, DownloadReply,
    DownloadRequest, InfoRequest, ListClusterReply, ListClusterRequest, ListReply, ListRequest,
    PeerTransferReply, PeerTransferRequest, UploadReply, UploadRequest, UploadStatusReply,
    UploadStatusRequest, Volume,
};

program! {
    /// The volume store.
    pub program VolumeProgram = 0x766f_6c75, version 1;
    handler VolumeHandler; client VolumeClient;
    procedures {
        /// An empty (sparse) volume of the given size.
        1 => create(CreateRequest) -> Volume;
        2 => list(ListRequest) -> ListReply;
        3 => info(InfoRequest) -> Volume;
        4 => delete(DeleteRequest) -> DeleteReply;
        /// Streams data into a volume; visible only once committed.
        5 => upload(UploadRequest) -> UploadReply [upload];
        /// Where a partial upload stands, to resume it.
        6 => upload_status(UploadStatusRequest) -> UploadStatusReply;
        /// Streams a volume out, holes as holes.
        7 => download(DownloadRequest) -> DownloadReply [download];
        /// Moves a volume to a peer: streams it into the peer's UPLOAD, deletes it here once
        /// the peer committed. Emits PROGRESS events on the call.
        8 => migrate(PeerTransferRequest) -> PeerTransferReply;
        /// Copies a volume to a peer the same way, keeping it here.
        9 => copy(PeerTransferRequest) -> PeerTransferReply;
        /// This node's volumes and every peer's, peers asked concurrently.
        10 => list_cluster(ListClusterRequest) -> ListClusterReply;
        /// A page of a volume's block hashes, for a delta transfer.
        11 => block_hashes(BlockHashesRequest) -> BlockHashesReply;
    }
}

/// Event number of the PROGRESS events a MIGRATE or COPY call emits to its caller (bound to
/// the call's serial); the payload is an [`Event`](crate::proto::events::Event) of kind
/// `progress`.
pub const PROGRESS: u32 = 100;
