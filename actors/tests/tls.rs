//! TLS on TCP: a client that trusts the cluster's CA connects and streams; a wrong CA, a wrong
//! host name, an expired certificate and a plaintext client all fail clearly, and the server
//! keeps serving everyone else.

mod common;

use common::quick_server_config;
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest};
use ferry_actors::test_program::{TestClient, TestProgram, TestService, pattern};
use ferry_actors::tls::{ClientTls, ServerTls};
use ferry_actors::{Client, ClientConfig, ConnectError, ErrorCode, Server, ServerHandle};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};

/// A certificate authority for one test.
struct Authority {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Authority {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ferry test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A server certificate for `names`, valid until `until` (year).
    fn issue(&self, names: &[&str], until: i32) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client(&self) -> ClientTls {
        ClientTls::from_ca_pem(self.pem.as_bytes()).unwrap()
    }
}

async fn tls_server(cert: &(String, String)) -> (ServerHandle, String) {
    let tls = ServerTls::from_pem(cert.0.as_bytes(), cert.1.as_bytes()).unwrap();
    let handle = Server::new(quick_server_config())
        .program(TestProgram::serve(TestService::default()))
        .listen_tls("127.0.0.1:0", tls)
        .start()
        .await
        .unwrap();
    let address = handle.tcp_addrs()[0].to_string();
    (handle, address)
}

async fn assert_serves(address: &str, ca: &Authority) {
    let client = TestClient::new(
        Client::connect_tls(address, "localhost", &ca.client(), ClientConfig::default())
            .await
            .unwrap(),
    );
    let echoed = client
        .echo(&EchoRequest {
            payload: "over tls".into(),
        })
        .await
        .unwrap();
    assert_eq!(&echoed.payload[..], b"over tls");
    let mut upload = client.sink(&SinkRequest::default()).await.unwrap();
    for i in 0..16u64 {
        upload
            .send(pattern(i * 256 * 1024, 256 * 1024))
            .await
            .unwrap();
    }
    assert_eq!(upload.finish().await.unwrap().bytes, 4 * 1024 * 1024);
}

#[actix_rt::test]
async fn a_client_trusting_the_ca_connects_calls_and_streams() {
    let ca = Authority::new();
    let (_server, address) = tls_server(&ca.issue(&["localhost", "127.0.0.1"], 2099)).await;
    assert_serves(&address, &ca).await;
}

#[actix_rt::test]
async fn wrong_ca_wrong_host_and_expired_certificates_are_refused_and_others_still_served() {
    let ca = Authority::new();
    let (server, address) = tls_server(&ca.issue(&["localhost"], 2099)).await;

    let stranger = Authority::new();
    let error = Client::connect_tls(
        &address,
        "localhost",
        &stranger.client(),
        ClientConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(error, ConnectError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("TLS handshake"), "{error}");

    let error = Client::connect_tls(
        &address,
        "node9.example",
        &ca.client(),
        ClientConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(error, ConnectError::Tls { .. }),
        "wrong host name accepted: {error}"
    );

    let (_expired_server, expired_address) = tls_server(&ca.issue(&["localhost"], 2021)).await;
    let error = Client::connect_tls(
        &expired_address,
        "localhost",
        &ca.client(),
        ClientConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(error, ConnectError::Tls { .. }),
        "expired certificate accepted: {error}"
    );

    // A plaintext client on the TLS port: its frames are not a TLS handshake.
    let plain = TestClient::new(
        Client::connect_tcp(&address, ClientConfig::default())
            .await
            .unwrap(),
    );
    let error = plain.echo(&EchoRequest::default()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ConnectionLost, "{error}");

    common::reach(&server.counters().connections_open, 0).await;
    assert!(
        server.counters().handshake_failures.get() >= 3,
        "failed handshakes were not counted"
    );
    assert_serves(&address, &ca).await;
}
