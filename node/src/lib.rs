//! A Ferry node: the programs `ferryd` serves (volume, events, admin), their clients, the
//! node's peers, its configuration, security and metrics, and the assembly that starts it all
//! ([`node::start`]). The volume store itself is `ferry-store`; the wire runtime is
//! `ferry-actors`.
//!
//! Modules import in one direction only (`.ci/check-imports.py` checks it), top down:
//!
//! - [`daemon`]: ferryd's process (command line, logs, signals, exit codes);
//! - [`node`]: the assembly of a running node from a [`plan::NodePlan`];
//! - [`plan`] (a configuration checked into what a start needs), [`metrics`] and [`health`]
//!   (the HTTP endpoints);
//! - [`config`] (ferryd's configuration) over [`discovery`] (peers found by DNS) and
//!   [`security`] (TLS, users, the role each procedure needs);
//! - the programs, each one folder of the same shape: its declaration (`program.rs`), its
//!   server (`server.rs`) and, where a client needs more than the generated typed client, its
//!   client helpers: [`volume`] (over [`cluster`], the peers it moves volumes to), [`events`]
//!   (and the event hub), [`admin`];
//! - leaves: [`uri`] (where a client connects and how it authenticates), [`paths`], [`proto`].

pub mod admin;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod events;
pub mod health;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod plan;
pub mod proto;
pub mod security;
pub mod uri;
pub mod volume;
