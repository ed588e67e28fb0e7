//! What the workloads share: the peers Ferry is measured against, servers of any peer, and
//! the round-robin order of peers.

use crate::Opts;
use crate::common::Addrs;
use crate::ferry::{FerryServer, Settings};
use crate::grpc::{GrpcServer, Tuning};
use crate::raw::RawServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ferry,
    Raw,
    TonicDefault,
    TonicTuned,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ferry => "ferry",
            Self::Raw => "raw",
            Self::TonicDefault => "tonic-default",
            Self::TonicTuned => "tonic-tuned",
        }
    }

    pub fn tuning(self) -> Tuning {
        match self {
            Self::TonicTuned => Tuning::Tuned,
            _ => Tuning::Default,
        }
    }
}

/// The peers of a workload that `--peers` allows, Ferry first.
pub fn peers(opts: &Opts, candidates: &[Peer]) -> Vec<Peer> {
    candidates
        .iter()
        .copied()
        .filter(|p| opts.wants(p.name()))
        .collect()
}

/// The order of peers in round `round`: rotated, so no peer always runs first (on a warm or
/// a cold machine).
pub fn rotated<P: Clone>(peers: &[P], round: usize) -> Vec<P> {
    let mut order = peers.to_vec();
    if !order.is_empty() {
        let n = order.len();
        order.rotate_left(round % n);
    }
    order
}

/// A server of any peer, on its own runner thread, listening on TCP and a unix socket.
pub enum AnyServer {
    Ferry(FerryServer),
    Raw(RawServer),
    Grpc(GrpcServer),
}

impl AnyServer {
    pub fn start(peer: Peer, settings: Settings) -> Self {
        match peer {
            Peer::Ferry => Self::Ferry(FerryServer::start(settings)),
            Peer::Raw => Self::Raw(RawServer::start()),
            Peer::TonicDefault | Peer::TonicTuned => Self::Grpc(GrpcServer::start(peer.tuning())),
        }
    }

    pub fn addrs(&self) -> &Addrs {
        match self {
            Self::Ferry(s) => &s.addrs,
            Self::Raw(s) => &s.addrs,
            Self::Grpc(s) => &s.addrs,
        }
    }
}
