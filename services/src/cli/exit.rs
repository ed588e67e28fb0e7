//! How `ferry` fails: one message that says what failed and what to do, and an exit code per
//! class of error so scripts can tell them apart.

use ferry_actors::{CallError, ErrorCode};

/// Exit codes, documented in README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    /// Anything not classified below (internal errors, protocol violations).
    Failure = 1,
    /// Command-line usage error (clap uses 2 as well).
    Usage = 2,
    /// Could not connect, or the connection was lost.
    Connection = 3,
    NotFound = 4,
    AlreadyExists = 5,
    /// The request was refused as invalid (bad name, bad range, bad size).
    Invalid = 6,
    /// Not allowed, or not authenticated.
    Denied = 7,
    /// The data did not match (checksum, size) or the object is not in the right state.
    Mismatch = 8,
    /// A limit of the node was hit; retrying later may work.
    Busy = 9,
    /// Interrupted (Ctrl-C): the transfer was aborted and the node discarded it.
    Interrupted = 130,
}

/// A failure of a `ferry` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot connect to {uri}: {source}\n  is ferryd running? start it with `ferryd`, or say where it is with -c URI"
    )]
    Connect {
        uri: String,
        source: super::uri::AccessError,
    },
    #[error("{context}: {} ({})", error.message, error.code.as_str_name().to_lowercase().replace('_', " "))]
    Call { context: String, error: CallError },
    #[error("{context}: {source}")]
    Local {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Mismatch(String),
    #[error("interrupted: the transfer was aborted and the node discarded what it had received")]
    Interrupted,
}

impl CliError {
    pub fn call(context: impl Into<String>) -> impl FnOnce(CallError) -> Self {
        let context = context.into();
        move |error| Self::Call { context, error }
    }

    pub fn local(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Local { context, source }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::Connect {
                source: super::uri::AccessError::Auth { .. },
                ..
            } => Exit::Denied,
            Self::Connect { .. } => Exit::Connection,
            Self::Local { .. } => Exit::Failure,
            Self::Mismatch(_) => Exit::Mismatch,
            Self::Interrupted => Exit::Interrupted,
            Self::Call { error, .. } => match error.code {
                ErrorCode::ConnectionLost
                | ErrorCode::ShuttingDown
                | ErrorCode::DeadlineExceeded => Exit::Connection,
                ErrorCode::NotFound => Exit::NotFound,
                ErrorCode::AlreadyExists => Exit::AlreadyExists,
                ErrorCode::BadRequest
                | ErrorCode::UnknownProgram
                | ErrorCode::UnknownVersion
                | ErrorCode::UnknownProcedure => Exit::Invalid,
                ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => Exit::Denied,
                ErrorCode::FailedPrecondition => Exit::Mismatch,
                ErrorCode::ResourceExhausted => Exit::Busy,
                ErrorCode::Cancelled | ErrorCode::Aborted => Exit::Interrupted,
                _ => Exit::Failure,
            },
        }
    }
}
