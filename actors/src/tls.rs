//! TLS for TCP connections, through OpenSSL (the `openssl` and `tokio-openssl` crates).
//!
//! The server presents a certificate and key from PEM files; clients verify it against a CA
//! certificate and the host name they dialled, and trust nothing else (the system's roots are
//! not used: a Ferry cluster has its own CA). Decrypted bytes are read straight into the
//! reader's blocks (OpenSSL reads into uninitialised memory), so stream chunks above TLS are as
//! zero-copy as over plain TCP.
//!
//! Both sides offer TLS 1.3 and accept TLS 1.2 unless told otherwise ([`TlsVersion`]). OpenSSL
//! is used directly rather than through native-tls because native-tls builds its acceptor from
//! Mozilla's version 4 "intermediate" profile, which switches TLS 1.3 off. The suites are
//! Mozilla's version 5 "intermediate" ones with AES-128-GCM first: the server picks by its own
//! order, except that a client listing ChaCha20 first (one without AES instructions) gets
//! ChaCha20.

use std::path::Path;

use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslOptions, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// TLS 1.3 suites in Ferry's order of preference (both sides).
const SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// Why TLS material could not be loaded, or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Setup(#[from] ErrorStack),
    #[error("{what}: no certificate in the PEM")]
    NoCertificate { what: &'static str },
    #[error("TLS handshake: {0}")]
    Handshake(#[from] openssl::ssl::Error),
}

/// The lowest TLS version a side accepts; both sides always offer TLS 1.3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default: TLS 1.2 peers still connect).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    fn openssl(self) -> SslVersion {
        match self {
            Self::Tls12 => SslVersion::TLS1_2,
            Self::Tls13 => SslVersion::TLS1_3,
        }
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    /// `"1.2"` or `"1.3"`, as configuration files spell them.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            other => Err(format!(
                "TLS version {other:?} is not supported: use \"1.2\" or \"1.3\""
            )),
        }
    }
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
    acceptor: SslAcceptor,
}

impl ServerTls {
    /// From a PEM certificate (chain, the node's own certificate first) and a PEM private key,
    /// accepting TLS 1.2 and 1.3.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_with(cert, key, TlsVersion::default())
    }

    /// As [`from_pem`](Self::from_pem), refusing clients below `min`.
    pub fn from_pem_with(cert: &[u8], key: &[u8], min: TlsVersion) -> Result<Self, TlsError> {
        let mut chain = X509::stack_from_pem(cert)?.into_iter();
        let leaf = chain.next().ok_or(TlsError::NoCertificate {
            what: "the server certificate",
        })?;
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
        builder.set_certificate(&leaf)?;
        for cert in chain {
            builder.add_extra_chain_cert(cert)?;
        }
        let key = PKey::private_key_from_pem(key)?;
        builder.set_private_key(&key)?;
        builder.check_private_key()?;
        builder.set_min_proto_version(Some(min.openssl()))?;
        builder.set_ciphersuites(SUITES)?;
        builder.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::PRIORITIZE_CHACHA);
        // Read-ahead lets OpenSSL take what the socket holds in one read instead of a record's
        // 5-byte header and then its body: about a third as many `recvfrom` calls on a TLS stream and
        // 10-33% less CPU per GB at 64 KiB chunks (docs/BENCHMARKS.md). The frame reader
        // reads until the stream is pending, so bytes OpenSSL holds are never left unread.
        builder.set_read_ahead(true);
        Ok(Self {
            acceptor: builder.build(),
        })
    }

    /// As [`from_pem_with`](Self::from_pem_with), from PEM files.
    pub fn from_files(cert: &Path, key: &Path, min: TlsVersion) -> Result<Self, TlsError> {
        Self::from_pem_with(&read(cert)?, &read(key)?, min)
    }

    /// Runs the server's handshake on an accepted socket.
    pub async fn accept(&self, tcp: TcpStream) -> Result<SslStream<TcpStream>, TlsError> {
        let ssl = openssl::ssl::Ssl::new(self.acceptor.context())?;
        let mut stream = SslStream::new(ssl, tcp)?;
        std::pin::Pin::new(&mut stream).accept().await?;
        Ok(stream)
    }
}

/// The client side: the CA that signed the servers' certificates.
#[derive(Clone)]
pub struct ClientTls {
    connector: SslConnector,
}

impl ClientTls {
    /// Trusting only `ca` (PEM, one or more certificates), accepting TLS 1.2 and 1.3.
    pub fn from_ca_pem(ca: &[u8]) -> Result<Self, TlsError> {
        Self::from_ca_pem_with(ca, TlsVersion::default())
    }

    /// As [`from_ca_pem`](Self::from_ca_pem), refusing servers below `min`.
    pub fn from_ca_pem_with(ca: &[u8], min: TlsVersion) -> Result<Self, TlsError> {
        let roots = X509::stack_from_pem(ca)?;
        if roots.is_empty() {
            return Err(TlsError::NoCertificate { what: "the CA" });
        }
        let mut store = X509StoreBuilder::new()?;
        for root in roots {
            store.add_cert(root)?;
        }
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        // Replaces the store the builder filled from the system's default paths.
        builder.set_cert_store(store.build());
        builder.set_verify(SslVerifyMode::PEER);
        builder.set_min_proto_version(Some(min.openssl()))?;
        builder.set_ciphersuites(SUITES)?;
        // As the server's: one socket read for several records.
        builder.set_read_ahead(true);
        Ok(Self {
            connector: builder.build(),
        })
    }

    pub fn from_ca_file(ca: &Path) -> Result<Self, TlsError> {
        Self::from_ca_pem(&read(ca)?)
    }

    /// Runs the client's handshake on a connected socket; the server's certificate must
    /// chain to the CA and carry `server_name` (a DNS name or an IP address).
    pub async fn connect(
        &self,
        server_name: &str,
        tcp: TcpStream,
    ) -> Result<SslStream<TcpStream>, TlsError> {
        let ssl = self.connector.configure()?.into_ssl(server_name)?;
        let mut stream = SslStream::new(ssl, tcp)?;
        std::pin::Pin::new(&mut stream).connect().await?;
        Ok(stream)
    }
}
