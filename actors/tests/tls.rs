//! TLS on TCP: a client that trusts the cluster's CA connects and streams; a wrong CA, a wrong
//! host name, an expired certificate and a plaintext client all fail clearly, and the server
//! keeps serving everyone else; both ends read ahead of the record they need.

mod common;

use common::quick_server_config;
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest};
use ferry_actors::test_program::{TestClient, TestProgram, TestService, pattern};
use ferry_actors::tls::{ClientTls, ServerTls, TlsVersion};
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

/// What an independent client (the `openssl s_client` command) negotiated with `address`, with
/// its extra `args`: `Some((protocol, suite))`, or `None` when the handshake failed.
async fn negotiated(address: &str, ca: &Authority, args: &[&str]) -> Option<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    // tokio's process: the server runs on this test's thread and must keep serving.
    let output = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-brief",
            "-verify_return_error",
            "-connect",
            address,
        ])
        .args(["-servername", "localhost", "-verify_hostname", "localhost"])
        .arg("-CAfile")
        .arg(&ca_file)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("the openssl command runs (apt-get install openssl)");
    let text = String::from_utf8_lossy(&output.stderr);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    Some((field("Protocol version:")?, field("Ciphersuite:")?))
}

#[actix_rt::test]
async fn tls_1_3_is_negotiated_by_default_with_aes_gcm_and_tls_1_2_only_down_to_the_minimum() {
    let ca = Authority::new();
    let cert = ca.issue(&["localhost"], 2099);
    let (_server, address) = tls_server(&cert).await;

    let (version, suite) = negotiated(&address, &ca, &[]).await.expect("handshake");
    assert_eq!(version, "TLSv1.3");
    let aes = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("flags") && line.split_whitespace().any(|f| f == "aes"));
    if aes {
        assert_eq!(
            suite, "TLS_AES_128_GCM_SHA256",
            "the CPU has AES instructions"
        );
    }
    // A client that prefers ChaCha20 (one without AES instructions) gets it.
    let chacha = [
        "-ciphersuites",
        "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256",
    ];
    let (_, suite) = negotiated(&address, &ca, &chacha).await.expect("handshake");
    assert_eq!(suite, "TLS_CHACHA20_POLY1305_SHA256");
    // An old client still connects by default, with an AES-GCM suite.
    let (version, suite) = negotiated(&address, &ca, &["-tls1_2"])
        .await
        .expect("handshake");
    assert_eq!(version, "TLSv1.2");
    assert_eq!(suite, "ECDHE-ECDSA-AES128-GCM-SHA256");

    // Ferry's own client and server agree on TLS 1.3: a client refusing anything older
    // connects.
    let strict = ClientTls::from_ca_pem_with(ca.pem.as_bytes(), TlsVersion::Tls13).unwrap();
    let client = TestClient::new(
        Client::connect_tls(&address, "localhost", &strict, ClientConfig::default())
            .await
            .unwrap(),
    );
    client.echo(&EchoRequest::default()).await.unwrap();

    // A server whose minimum is TLS 1.3 refuses a TLS 1.2 client and serves the others.
    let tls =
        ServerTls::from_pem_with(cert.0.as_bytes(), cert.1.as_bytes(), TlsVersion::Tls13).unwrap();
    let strict_server = Server::new(quick_server_config())
        .program(TestProgram::serve(TestService::default()))
        .listen_tls("127.0.0.1:0", tls)
        .start()
        .await
        .unwrap();
    let strict_address = strict_server.tcp_addrs()[0].to_string();
    assert_eq!(negotiated(&strict_address, &ca, &["-tls1_2"]).await, None);
    let (version, _) = negotiated(&strict_address, &ca, &[])
        .await
        .expect("handshake");
    assert_eq!(version, "TLSv1.3");
    assert_serves(&strict_address, &ca).await;
}

/// Bytes waiting in the kernel's receive queue of `socket`.
fn kernel_queue(socket: &tokio::net::TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid for the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut queued) };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    queued as usize
}

/// `records` small TLS records written by `from` and waiting in `to`'s socket: one read of
/// one byte from `to` leaves none of them in the kernel, because OpenSSL reads ahead, taking
/// what the socket holds in one read rather than one record at a time (a third as many
/// `recvfrom` calls on a stream, docs/BENCHMARKS.md).
async fn one_read_takes_every_record<A>(
    from: &mut tokio_openssl::SslStream<A>,
    to: &mut tokio_openssl::SslStream<tokio::net::TcpStream>,
) where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const RECORDS: usize = 8;
    const RECORD: usize = 1000;
    for record in 0..RECORDS {
        // One write, one record.
        from.write_all(&[record as u8; RECORD]).await.unwrap();
        from.flush().await.unwrap();
    }
    // Each record carries at least 5 bytes of header and a 16-byte tag beyond its data.
    let sent = RECORDS * (RECORD + 21);
    for _ in 0..1000 {
        if kernel_queue(to.get_ref()) >= sent {
            break;
        }
        to.get_ref().readable().await.unwrap();
        tokio::task::yield_now().await;
    }
    let queued = kernel_queue(to.get_ref());
    assert!(
        queued >= sent,
        "the records arrived: {queued} of {sent} bytes"
    );
    let mut byte = [0u8; 1];
    assert_eq!(to.read(&mut byte).await.unwrap(), 1);
    assert_eq!(byte[0], 0);
    assert_eq!(
        kernel_queue(to.get_ref()),
        0,
        "a read of one byte left records in the socket: OpenSSL read one record at a time"
    );
}

#[actix_rt::test]
async fn server_and_client_read_ahead_of_the_record_they_need() {
    let ca = Authority::new();
    let cert = ca.issue(&["localhost"], 2099);
    let server_tls = ServerTls::from_pem(cert.0.as_bytes(), cert.1.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client_tls = ca.client();
    let (server, client) = tokio::join!(
        async {
            let tcp = listener.accept().await.unwrap().0;
            // As Ferry's own sockets: Nagle would hold small records back in the sender.
            tcp.set_nodelay(true).unwrap();
            server_tls.accept(tcp).await
        },
        async {
            let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            client_tls.connect("localhost", tcp).await
        }
    );
    let (mut server, mut client) = (server.unwrap(), client.unwrap());
    one_read_takes_every_record(&mut client, &mut server).await;
    one_read_takes_every_record(&mut server, &mut client).await;
}
