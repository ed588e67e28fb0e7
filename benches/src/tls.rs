//! TLS for the `stream-tls` workload: one CA and one `localhost` certificate (ECDSA P-256),
//! generated once per process with rcgen, and the two ends of each peer built from them.
//!
//! Ferry uses its own `ServerTls`/`ClientTls` (OpenSSL through tokio-openssl). The raw peer —
//! the "OpenSSL pipe" — runs its handshakes through the same `ServerTls::accept` and
//! `ClientTls::connect` and then moves its bytes over the bare `SslStream`, so both negotiate
//! the same protocol and suite with the same OpenSSL and differ only in what runs above it.

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

/// The OpenSSL both peers run on (for the records), e.g. "OpenSSL 3.0.17 1 Jul 2025".
pub fn openssl_version() -> &'static str {
    openssl::version::version()
}
