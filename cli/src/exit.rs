//! How `ferry` fails: one message that says what failed and what to do, and an exit code per
//! class of error so scripts can tell them apart.

use ferry_actors::{CallError, ErrorCode};
use ferry_node::uri::AccessError;

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
    /// The result is printed but incomplete: some nodes did not answer (`vol list
    /// --cluster`). As rsync's 23/24, a code of its own, so a script can use what it got.
    Partial = 10,
    /// Interrupted (Ctrl-C): what was stopped, and what that left, is in the message.
    Interrupted = 130,
}

/// A failure of a `ferry` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {uri}: {source}{}", connect_hint(source))]
    Connect { uri: String, source: AccessError },
    #[error("{context}: {} ({})", error.message, error.code.as_str_name().to_lowercase().replace('_', " "))]
    Call { context: String, error: CallError },
    #[error("{context}: {source}")]
    Local {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Mismatch(String),
    /// A local file is in the way (a download's destination without --force).
    #[error("{0}")]
    Exists(String),
    /// The result was printed, but some of it is missing (which, and why, is the message).
    #[error("{0}")]
    Partial(String),
    /// Ctrl-C: what it stopped, and what that left (each command says its own).
    #[error("interrupted: {0}")]
    Interrupted(&'static str),
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

    /// A local write failed with EPIPE: the reader of stdout went away (data of
    /// `vol download NAME -`). Files and devices never fail so, and uploads read only
    /// regular files and block devices, so no other local I/O can.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, Self::Local { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    pub fn exit(&self) -> Exit {
        match self {
            Self::Usage(_) => Exit::Usage,
            Self::Connect {
                source: AccessError::Auth { error, .. },
                ..
            } => call_exit(error),
            // The command line lacks the CA, or names one that cannot be read.
            Self::Connect {
                source: AccessError::NoCa | AccessError::Tls(_),
                ..
            } => Exit::Usage,
            Self::Connect { .. } => Exit::Connection,
            Self::Local { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Exit::NotFound,
                std::io::ErrorKind::AlreadyExists => Exit::AlreadyExists,
                std::io::ErrorKind::PermissionDenied => Exit::Denied,
                std::io::ErrorKind::InvalidInput => Exit::Invalid,
                _ => Exit::Failure,
            },
            Self::Mismatch(_) => Exit::Mismatch,
            Self::Exists(_) => Exit::AlreadyExists,
            Self::Partial(_) => Exit::Partial,
            Self::Interrupted(_) => Exit::Interrupted,
            Self::Call { error, .. } => call_exit(error),
        }
    }
}

/// What to try when a node did not answer (not when the command line or a password was wrong).
fn connect_hint(error: &AccessError) -> &'static str {
    match error {
        AccessError::Connect(_) => {
            "\n  is ferryd running? start it with `ferryd`, or say where it is with -c URI"
        }
        _ => "",
    }
}

/// The exit code for a failed call. A connection the node closed with a GOAWAY is a connection
/// failure (3), unless the GOAWAY said the node is at a connection limit (9, busy) or the
/// client did not authenticate in time (7).
fn call_exit(error: &CallError) -> Exit {
    match error.cause {
        Some(ErrorCode::ResourceExhausted) => return Exit::Busy,
        Some(ErrorCode::Unauthenticated) => return Exit::Denied,
        _ => {}
    }
    match error.code {
        ErrorCode::ConnectionLost | ErrorCode::ShuttingDown | ErrorCode::DeadlineExceeded => {
            Exit::Connection
        }
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
    }
}
