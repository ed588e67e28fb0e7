//! Which way a procedure's data flows.

/// Which way data flows for a procedure, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No stream: a plain call.
    Unary,
    /// Client to server.
    Upload,
    /// Server to client.
    Download,
    /// Both at once.
    Both,
}

impl Direction {
    pub fn is_stream(self) -> bool {
        self != Self::Unary
    }

    /// Whether the client sends data in this direction.
    pub fn client_sends(self) -> bool {
        matches!(self, Self::Upload | Self::Both)
    }

    /// Whether the server sends data in this direction.
    pub fn server_sends(self) -> bool {
        matches!(self, Self::Download | Self::Both)
    }

    /// STREAM/OK frames the client sends before its side is closed: its finish (if it
    /// sends) and its confirmation (if it receives).
    pub(crate) fn client_oks(self) -> u8 {
        u8::from(self.client_sends()) + u8::from(self.server_sends())
    }
}
