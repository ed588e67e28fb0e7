//! TLS for the `stream-tls` workload: one CA and one `localhost` certificate (ECDSA P-256),
//! generated once per process with rcgen, and the two ends of each peer built from them.
//!
//! Ferry uses its own `ServerTls`/`ClientTls` (native-tls, i.e. OpenSSL on Linux). The raw peer
//! — the "OpenSSL pipe" — gets a tokio-native-tls acceptor and connector built exactly as
//! `actors/src/tls.rs` builds Ferry's (PKCS#8 identity, TLS 1.2 minimum, only the CA trusted),
//! so both negotiate the same protocol and cipher with the same OpenSSL.

use std::sync::OnceLock;

use ferry_actors::tls::{ClientTls, ServerTls};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The name the server certificate carries and clients verify.
pub const SERVER_NAME: &str = "localhost";

struct Material {
    ca: String,
    cert: String,
    key: String,
}

fn material() -> &'static Material {
    static MATERIAL: OnceLock<Material> = OnceLock::new();
    MATERIAL.get_or_init(|| {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferry-bench CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("CA certificate")
            .pem();
        let params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).expect("server params");
        let key = KeyPair::generate().expect("server key");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        Material {
            ca,
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    })
}

pub fn ferry_server() -> ServerTls {
    let m = material();
    ServerTls::from_pem(m.cert.as_bytes(), m.key.as_bytes()).expect("Ferry server TLS")
}

pub fn ferry_client() -> ClientTls {
    static CLIENT: OnceLock<ClientTls> = OnceLock::new();
    CLIENT
        .get_or_init(|| ClientTls::from_ca_pem(material().ca.as_bytes()).expect("Ferry client TLS"))
        .clone()
}

/// The raw peer's server end: `ServerTls::from_pem`'s settings.
pub fn raw_acceptor() -> tokio_native_tls::TlsAcceptor {
    let m = material();
    let identity = native_tls::Identity::from_pkcs8(m.cert.as_bytes(), m.key.as_bytes())
        .expect("raw server identity");
    native_tls::TlsAcceptor::builder(identity)
        .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
        .build()
        .expect("raw TLS acceptor")
        .into()
}

/// The raw peer's client end: `ClientTls::from_ca_pem`'s settings. Built once: the raw client
/// connects inside its timed part.
pub fn raw_connector() -> tokio_native_tls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_native_tls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let ca = native_tls::Certificate::from_pem(material().ca.as_bytes())
                .expect("CA certificate");
            native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .disable_built_in_roots(true)
                .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
                .build()
                .expect("raw TLS connector")
                .into()
        })
        .clone()
}

/// The OpenSSL both peers run on (for the records), e.g. "OpenSSL 3.0.17 1 Jul 2025".
pub fn openssl_version() -> &'static str {
    openssl::version::version()
}
