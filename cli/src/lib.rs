//! `ferry`, the command-line client of a Ferry node: volumes, events and administration.
//!
//! Output is for people on a terminal (tables, progress bars on stderr) and for programs with
//! `--json` (one JSON document per result, one JSON line per event). Errors say what failed and
//! what to do, and exit with a code per class of error (see [`Exit`]).
//!
//! Modules, top down (they import in one direction only, `.ci/check-imports.py` checks it):
//! `run` (one command, from connecting to printing) over `transfer` (uploads, downloads,
//! migrations and copies) over `patch` (a delta download); below them `output` (what is
//! printed), `report` (what a transfer reports), `source` (the file an upload reads), `args`
//! (the command line) and `exit` (errors and exit codes). The node's programs and their
//! clients are `ferry-node`'s.

mod args;
mod exit;
mod output;
mod patch;
mod report;
mod run;
mod source;
mod transfer;

pub use args::{Admin, Args, Command, Vol};
pub use exit::{CliError, Exit};
pub use ferry_node::uri::{Access, AccessError, NodeUri, UriError};
pub use run::main;
