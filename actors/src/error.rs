//! The typed outcome of a failed call, and how it maps to the wire's error body.

use std::fmt;

use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};

/// Why a call (or, later, a stream) failed: the wire's error body as a Rust value.
///
/// The same type describes failures raised by the remote peer (decoded from REPLY/ERROR) and
/// failures raised locally (connection lost, deadline, shutdown notice); `side` and `layer` say
/// who raised it and where, so a caller can tell "the server refused" from "the link died".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub code: ErrorCode,
    pub message: String,
    pub side: Side,
    pub layer: Layer,
    /// For a CONNECTION_LOST that followed the peer's GOAWAY: the code the GOAWAY gave (a limit
    /// hit, a shutdown, a protocol violation), so a caller can tell "refused" from "the link
    /// died". Local only: never on the wire.
    pub cause: Option<ErrorCode>,
}

impl CallError {
    pub fn new(code: ErrorCode, side: Side, layer: Layer, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            side,
            layer,
            cause: None,
        }
    }

    /// An error raised by a server-side handler (the common case for program code).
    pub fn application(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, Side::Server, Layer::Application, message)
    }

    /// The connection died; raised locally on whichever side noticed.
    pub fn connection_lost(side: Side, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ConnectionLost, side, Layer::Connection, message)
    }

    /// The connection closed after the peer's GOAWAY said why (section 9.3 of PROTOCOL.md).
    pub fn after_goaway(goaway: CallError) -> Self {
        Self {
            cause: Some(goaway.code),
            ..Self::connection_lost(
                goaway.side,
                format!(
                    "the server closed the connection ({}): {}",
                    goaway.code.as_str_name().to_lowercase().replace('_', " "),
                    goaway.message
                ),
            )
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code as i32,
            message: self.message.clone(),
            side: self.side as i32,
            layer: self.layer as i32,
        }
    }

    /// Reads an error body; unknown codes become INTERNAL as docs/PROTOCOL.md requires.
    pub fn from_body(body: ErrorBody) -> Self {
        Self {
            code: ErrorCode::try_from(body.code).unwrap_or(ErrorCode::Internal),
            side: Side::try_from(body.side).unwrap_or(Side::Unspecified),
            layer: Layer::try_from(body.layer).unwrap_or(Layer::Unspecified),
            message: body.message,
            cause: None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (raised by {} at the {} layer): {}",
            self.code.as_str_name().to_lowercase().replace('_', " "),
            self.side.as_str_name().to_lowercase(),
            self.layer.as_str_name().to_lowercase(),
            self.message
        )
    }
}

impl std::error::Error for CallError {}

/// A client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {address} failed: {source}")]
    Tls {
        address: String,
        source: crate::tls::TlsError,
    },
    #[error("connecting to {address}: no answer within {timeout:?}")]
    Timeout {
        address: String,
        timeout: std::time::Duration,
    },
}

/// A server could not start: a listener would not bind, or its decoy secret could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listening on {address}: {source}")]
    Io {
        address: String,
        source: std::io::Error,
    },
    /// The secret that SCRAM answers for unknown users derive from could not be drawn.
    #[error("drawing the SCRAM decoy secret from /dev/urandom: {0}")]
    DecoySecret(#[source] std::io::Error),
}
