//! Where `ferry` connects: `unix:///path/to/ferryd.sock`, `unix:PATH`, `tcp://HOST:PORT` or a
//! bare `HOST:PORT`.

use std::path::PathBuf;

use ferry_actors::{Client, ClientConfig, ConnectError};

use crate::config::{default_data_dir, socket_in};

/// A parsed node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeUri {
    Unix(PathBuf),
    Tcp(String),
}

/// The URI could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad node URI {uri:?}: {reason} (expected unix:///path/to/ferryd.sock or tcp://host:port)")]
pub struct UriError {
    pub uri: String,
    pub reason: String,
}

impl NodeUri {
    /// The node started with defaults on this machine: its unix socket in the default data
    /// directory.
    pub fn local_default() -> Self {
        Self::Unix(socket_in(&default_data_dir()))
    }

    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let error = |reason: &str| UriError {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = uri
            .strip_prefix("unix://")
            .or_else(|| uri.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(error("the unix socket path is empty"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if uri.starts_with("tls://") {
            return Err(error("TLS is not supported by this build yet"));
        }
        let address = uri.strip_prefix("tcp://").unwrap_or(uri);
        if address.contains("://") {
            return Err(error("unknown scheme"));
        }
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(Self::Tcp(address.to_owned()))
            }
            Some(_) => Err(error("the port must be a number from 1 to 65535")),
            None => Err(error("a TCP address needs a port")),
        }
    }

    pub async fn connect(&self, config: ClientConfig) -> Result<Client, ConnectError> {
        match self {
            Self::Unix(path) => Client::connect_unix(path, config).await,
            Self::Tcp(address) => Client::connect_tcp(address, config).await,
        }
    }
}

impl std::fmt::Display for NodeUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            NodeUri::parse("unix:///run/f.sock"),
            Ok(NodeUri::Unix("/run/f.sock".into()))
        );
        assert_eq!(
            NodeUri::parse("unix:rel.sock"),
            Ok(NodeUri::Unix("rel.sock".into()))
        );
        assert_eq!(
            NodeUri::parse("tcp://127.0.0.1:7300"),
            Ok(NodeUri::Tcp("127.0.0.1:7300".into()))
        );
        assert_eq!(
            NodeUri::parse("node1:7300"),
            Ok(NodeUri::Tcp("node1:7300".into()))
        );
        assert_eq!(
            NodeUri::parse("[::1]:7300"),
            Ok(NodeUri::Tcp("[::1]:7300".into()))
        );
    }

    #[test]
    fn refuses_bad_ones_with_a_reason() {
        for (uri, reason) in [
            ("unix://", "empty"),
            ("tcp://host", "needs a port"),
            ("tcp://host:0", "port"),
            ("tcp://host:http", "port"),
            ("http://host:80", "unknown scheme"),
            ("tls://host:7300", "TLS"),
        ] {
            let error = NodeUri::parse(uri).unwrap_err();
            assert!(error.reason.contains(reason), "{uri}: {error}");
            assert!(error.to_string().contains("expected unix://"), "{error}");
        }
    }
}
