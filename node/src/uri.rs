//! Where a client connects (`ferry`, or a node to its peers): `unix:///path/to/ferryd.sock`,
//! `unix:PATH`, `tcp://HOST:PORT` or a bare `HOST:PORT`, and how it authenticates there.

use std::path::PathBuf;

use ferry_actors::{Client, ClientConfig, ConnectError};

use crate::paths::{default_data_dir, socket_in};

/// A parsed node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeUri {
    Unix(PathBuf),
    /// Plain TCP.
    Tcp(String),
    /// TLS over TCP: `host:port`, and the host name the certificate must carry.
    Tls {
        address: String,
        host: String,
    },
}

/// What a client needs besides an address: the CA for TLS, credentials for SCRAM.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// PEM file of the CA that signed the nodes' certificates (for `tls://`).
    pub ca: Option<PathBuf>,
    /// User and password to authenticate with after connecting; without them the connection
    /// keeps whatever identity the node gives it (its uid on the unix socket).
    pub credentials: Option<(String, String)>,
}

/// Connecting or authenticating failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("a tls:// address needs the cluster's CA certificate: --ca FILE or FERRY_CA")]
    NoCa,
    #[error("loading the CA certificate: {0}")]
    Tls(#[from] ferry_actors::tls::TlsError),
    #[error("authenticating as {user:?}: {error}")]
    Auth {
        user: String,
        error: ferry_actors::CallError,
    },
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
        let (address, tls) = match uri.strip_prefix("tls://") {
            Some(address) => (address, true),
            None => (uri.strip_prefix("tcp://").unwrap_or(uri), false),
        };
        if address.contains("://") {
            return Err(error("unknown scheme"));
        }
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(if tls {
                    Self::Tls {
                        address: address.to_owned(),
                        host: host
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                    }
                } else {
                    Self::Tcp(address.to_owned())
                })
            }
            Some(_) => Err(error("the port must be a number from 1 to 65535")),
            None => Err(error("a TCP address needs a port")),
        }
    }

    pub async fn connect(&self, config: ClientConfig) -> Result<Client, ConnectError> {
        match self {
            Self::Unix(path) => Client::connect_unix(path, config).await,
            Self::Tcp(address) | Self::Tls { address, .. } => {
                Client::connect_tcp(address, config).await
            }
        }
    }

    /// Connects (with TLS for `tls://`) and authenticates when credentials are given.
    pub async fn connect_with(
        &self,
        config: ClientConfig,
        access: &Access,
    ) -> Result<Client, AccessError> {
        let client = match self {
            Self::Tls { address, host } => {
                let ca = access.ca.as_ref().ok_or(AccessError::NoCa)?;
                let tls = ferry_actors::tls::ClientTls::from_ca_file(ca)?;
                Client::connect_tls(address, host, &tls, config).await?
            }
            _ => self.connect(config).await?,
        };
        if let Some((user, password)) = &access.credentials {
            client
                .authenticate(user, password)
                .await
                .map_err(|error| AccessError::Auth {
                    user: user.clone(),
                    error,
                })?;
        }
        Ok(client)
    }
}

impl std::fmt::Display for NodeUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp://{address}"),
            Self::Tls { address, .. } => write!(f, "tls://{address}"),
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
            ("tls://host", "needs a port"),
        ] {
            let error = NodeUri::parse(uri).unwrap_err();
            assert!(error.reason.contains(reason), "{uri}: {error}");
            assert!(error.to_string().contains("expected unix://"), "{error}");
        }
    }
}
