//! TLS for TCP connections, through native-tls (OpenSSL on Linux).
//!
//! The server presents a certificate and key from PEM files; clients verify it against a CA
//! certificate and the host name they dialled, and trust nothing else (the system's roots are
//! not used: a Ferry cluster has its own CA). Decrypted bytes are read straight into the
//! reader's blocks, so stream chunks above TLS are as zero-copy as over plain TCP.

use std::path::Path;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] native_tls::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The server side: its certificate chain and private key.
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) acceptor: tokio_native_tls::TlsAcceptor,
}

impl ServerTls {
    /// From a PEM certificate (chain) and a PEM PKCS#8 private key.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let identity = native_tls::Identity::from_pkcs8(cert, key)?;
        let acceptor = native_tls::TlsAcceptor::builder(identity)
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()?;
        Ok(Self {
            acceptor: acceptor.into(),
        })
    }

    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert)?, &read(key)?)
    }
}

/// The client side: the CA that signed the servers' certificates.
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) connector: tokio_native_tls::TlsConnector,
}

impl ClientTls {
    pub fn from_ca_pem(ca: &[u8]) -> Result<Self, TlsError> {
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(ca)?)
            .disable_built_in_roots(true)
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .build()?;
        Ok(Self {
            connector: connector.into(),
        })
    }

    pub fn from_ca_file(ca: &Path) -> Result<Self, TlsError> {
        Self::from_ca_pem(&read(ca)?)
    }
}
