//! Ferry's services: the programs `ferryd` serves (volume store, events, admin), the node that
//! assembles them, and the library behind the `ferry` command-line client.
//!
//! [`store`] is the volume store: named volumes on disk with atomic publication, resumable
//! uploads and sparse-aware downloads. It does no networking; [`volume`] wires it to streams.

pub mod admin;
pub mod blockhash;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delta;
pub mod discovery;
pub mod events;
pub mod health;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod proto;
pub mod security;
pub mod sparse;
pub mod store;
pub mod volume;
pub mod writeback;
