//! Authentication and authorization: nothing but the auth program before an identity, SCRAM
//! refusing wrong, missing, truncated and replayed exchanges, unknown users answered like known
//! ones, roles checked per procedure.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{PROMPTLY, quick_server_config, raw_frame, read_non_ping, send};
use ferry_actors::auth::proto::Authenticated;
use ferry_actors::auth::{AuthClient, AuthConfig, Authorizer, DEFAULT_ITERATIONS, Role, User};
use ferry_actors::codec::Route;
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest};
use ferry_actors::test_program::{TestClient, TestProgram, TestService};
use ferry_actors::{
    CallOptions, Client, ClientConfig, ClientStream, ErrorCode, Server, ServerHandle,
};

/// The test program's policy: reading is read-only, uploading needs read-write; any other
/// program needs admin (as ferryd's policy has it).
struct Policy;

impl Authorizer for Policy {
    fn required(&self, route: Route) -> Role {
        match (route.program, route.procedure) {
            (TestProgram::NUMBER, 4 | 6) => Role::ReadWrite,
            (TestProgram::NUMBER, _) => Role::ReadOnly,
            _ => Role::Admin,
        }
    }
}

struct Secured {
    handle: ServerHandle,
    tcp: String,
    unix: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn secured(unix_users: HashMap<u32, Role>) -> Secured {
    let mut users = HashMap::new();
    users.insert(
        "alice".to_owned(),
        User::from_password("wonderland", Role::ReadWrite, DEFAULT_ITERATIONS).unwrap(),
    );
    users.insert(
        "bob".to_owned(),
        User::from_password("builder", Role::ReadOnly, DEFAULT_ITERATIONS).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("s.sock");
    let handle = Server::new(quick_server_config())
        .program(TestProgram::serve(TestService::default()))
        .authentication(AuthConfig {
            credentials: Arc::new(users),
            authorizer: Arc::new(Policy),
            unix_users,
            anonymous: None,
            timeout: Duration::from_millis(500),
        })
        .listen_tcp("127.0.0.1:0")
        .listen_unix(&unix)
        .start()
        .await
        .unwrap();
    Secured {
        tcp: handle.tcp_addrs()[0].to_string(),
        handle,
        unix,
        _dir: dir,
    }
}

async fn connect(server: &Secured) -> Client {
    Client::connect_tcp(&server.tcp, ClientConfig::default())
        .await
        .unwrap()
}

#[actix_rt::test]
async fn nothing_but_authentication_is_reachable_before_it() {
    let server = secured(HashMap::new()).await;
    let client = connect(&server).await;
    let error = TestClient::new(client.clone())
        .echo(&EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated, "{error}");
    let identity = client.authenticate("bob", "builder").await.unwrap();
    assert_eq!(
        (identity.name.as_str(), identity.role),
        ("bob", Role::ReadOnly)
    );
    TestClient::new(client)
        .echo(&EchoRequest::default())
        .await
        .unwrap();
}

#[actix_rt::test]
async fn wrong_and_unknown_credentials_get_the_same_refusal_and_leak_nothing() {
    let server = secured(HashMap::new()).await;
    for (user, password) in [("alice", "wrong"), ("mallory", "wonderland"), ("", "")] {
        let client = connect(&server).await;
        let error = client.authenticate(user, password).await.unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated, "{user}: {error}");
        assert!(
            !error.message.contains("wonderland"),
            "a secret leaked: {error}"
        );
        // Still unauthenticated, and the connection still serves the auth program.
        let error = TestClient::new(client.clone())
            .echo(&EchoRequest::default())
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        client.authenticate("alice", "wonderland").await.unwrap();
    }
}

/// PROTOCOL.md section 6: a program the server does not serve is UNKNOWN_PROGRAM to anyone
/// identified, whatever the role its number would need; before authentication it is, like
/// everything, UNAUTHENTICATED (which programs exist is not told to strangers).
#[actix_rt::test]
async fn an_unknown_program_is_unknown_to_every_role_and_hidden_before_authentication() {
    let server = secured(HashMap::new()).await;
    let client = connect(&server).await;
    let nowhere = Route::new(0x6e6f_7065, 1, 1);
    let call = || client.call_raw(nowhere, Bytes::new(), CallOptions::default());
    assert_eq!(call().await.unwrap_err().code, ErrorCode::Unauthenticated);
    client.authenticate("bob", "builder").await.unwrap();
    let error = call().await.unwrap_err();
    assert_eq!(error.code, ErrorCode::UnknownProgram, "{error}");
}

#[actix_rt::test]
async fn a_read_only_identity_cannot_upload_but_a_read_write_one_can() {
    let server = secured(HashMap::new()).await;
    let reader = connect(&server).await;
    reader.authenticate("bob", "builder").await.unwrap();
    let error = TestClient::new(reader)
        .sink(&SinkRequest::default())
        .await
        .unwrap()
        .finish()
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::PermissionDenied, "{error}");
    assert!(error.message.contains("read_write"), "{error}");

    let writer = connect(&server).await;
    writer.authenticate("alice", "wonderland").await.unwrap();
    let mut upload = TestClient::new(writer)
        .sink(&SinkRequest::default())
        .await
        .unwrap();
    upload.send(Bytes::from_static(b"allowed")).await.unwrap();
    assert_eq!(upload.finish().await.unwrap().bytes, 7);
    assert!(server.handle.counters().auth_refusals.get() >= 1);
}

#[actix_rt::test]
async fn a_connection_that_never_authenticates_is_closed_after_the_timeout() {
    let server = secured(HashMap::new()).await;
    let mut stream = tokio::net::TcpStream::connect(&server.tcp).await.unwrap();
    // An Echo, refused; then silence.
    send(&mut stream, &raw_frame(0x7465_7374, 1, 1, 0, 1, 0, &[])).await;
    let refused = read_non_ping(&mut stream).await.unwrap();
    assert_eq!((refused.kind, refused.status), (1, 1));
    let goaway = tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((goaway.program, goaway.procedure), (0x6672_7279, 2));
    assert!(
        tokio::time::timeout(PROMPTLY, read_non_ping(&mut stream))
            .await
            .unwrap()
            .is_none()
    );
}

#[actix_rt::test]
async fn a_truncated_exchange_is_refused() {
    let server = secured(HashMap::new()).await;
    let client = connect(&server).await;
    let mut exchange = AuthClient::new(client.clone())
        .scram_sha256(&Default::default())
        .await
        .unwrap();
    let (outgoing, _) = exchange.ends();
    // Finish without sending the client-first message.
    outgoing.unwrap().finish().await.unwrap();
    let error = exchange.finish().await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated, "{error}");
    let error = TestClient::new(client)
        .echo(&EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}

/// Opens a SCRAM exchange on `client` and sends `client_first`: the exchange, and the
/// server-first message it was answered with.
async fn begin(client: &Client, client_first: &str) -> (ClientStream<Authenticated>, String) {
    let mut exchange = AuthClient::new(client.clone())
        .scram_sha256(&Default::default())
        .await
        .unwrap();
    let (outgoing, incoming) = exchange.ends();
    outgoing
        .unwrap()
        .send(Bytes::from(client_first.to_owned()))
        .await
        .unwrap();
    let server_first = incoming.unwrap().recv_bytes().await.unwrap().unwrap();
    let server_first = String::from_utf8(server_first.to_vec()).unwrap();
    (exchange, server_first)
}

/// What a server-first message offers a user: the salt (base64) and the iteration count.
#[derive(Debug, PartialEq, Eq)]
struct Offer {
    salt: String,
    iterations: u32,
}

impl Offer {
    /// Bytes of the salt: base64 of it is padded to whole groups of four characters.
    fn salt_len(&self) -> usize {
        let padding = self.salt.bytes().rev().take_while(|&b| b == b'=').count();
        self.salt.len() / 4 * 3 - padding
    }
}

/// Asks the server, on a new connection as an outsider would, what it offers `user`; the
/// exchange is abandoned after the server-first message, before any proof.
async fn offer(server: &Secured, user: &str) -> Offer {
    let client = connect(server).await;
    let (_, client_first) = scram_2::ScramClient::new(user, "guess", None).client_first();
    let (_, server_first) = begin(&client, &client_first).await;
    let field = |key: &str| {
        server_first
            .split(',')
            .find_map(|field| field.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {server_first:?}"))
            .to_owned()
    };
    Offer {
        salt: field("s="),
        iterations: field("i=").parse().unwrap(),
    }
}

/// Sends two recorded SCRAM client messages on a new exchange, whatever the server says.
async fn replay(
    client: &Client,
    client_first: &str,
    client_final: &str,
) -> Result<(), ferry_actors::CallError> {
    let mut exchange = AuthClient::new(client.clone())
        .scram_sha256(&Default::default())
        .await?;
    let (outgoing, incoming) = exchange.ends();
    let (outgoing, incoming) = (outgoing.unwrap(), incoming.unwrap());
    outgoing.send(Bytes::from(client_first.to_owned())).await?;
    incoming.recv_bytes().await?;
    outgoing.send(Bytes::from(client_final.to_owned())).await?;
    incoming.recv_bytes().await?;
    outgoing.finish().await?;
    exchange.finish().await.map(|_| ())
}

#[actix_rt::test]
async fn a_replayed_exchange_is_refused() {
    let server = secured(HashMap::new()).await;
    // Record a genuine exchange.
    let honest = connect(&server).await;
    let (scram, client_first) =
        scram_2::ScramClient::new("alice", "wonderland", None).client_first();
    let (mut exchange, server_first) = begin(&honest, &client_first).await;
    let (scram, client_final) = scram
        .handle_server_first(&server_first)
        .unwrap()
        .client_final();
    let (outgoing, incoming) = exchange.ends();
    let (outgoing, incoming) = (outgoing.unwrap(), incoming.unwrap());
    outgoing
        .send(Bytes::from(client_final.clone()))
        .await
        .unwrap();
    let server_final =
        String::from_utf8(incoming.recv_bytes().await.unwrap().unwrap().to_vec()).unwrap();
    scram.handle_server_final(&server_final).unwrap();
    outgoing.finish().await.unwrap();
    assert!(incoming.recv().await.unwrap().is_none());
    exchange.finish().await.unwrap();

    // Replaying both client messages on a new connection: the server's nonce differs.
    let attacker = connect(&server).await;
    let error = replay(&attacker, &client_first, &client_final)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated, "{error}");
    let error = TestClient::new(attacker)
        .echo(&EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}

/// Asking twice must not tell an unknown user from a known one: a known user's salt is stored,
/// so the same on every attempt, and an unknown user's decoy must be too (issue 13, defect 4:
/// it was fresh and random each time). Different unknown users get different salts, as
/// different known users do.
#[actix_rt::test]
async fn an_unknown_user_is_offered_the_same_salt_and_iterations_every_time() {
    let server = secured(HashMap::new()).await;
    let first = offer(&server, "mallory").await;
    for attempt in 2..=3 {
        assert_eq!(
            offer(&server, "mallory").await,
            first,
            "attempt {attempt} for an unknown user was offered something else"
        );
    }
    assert_eq!(offer(&server, "alice").await, offer(&server, "alice").await);
    assert_ne!(offer(&server, "trudy").await.salt, first.salt);
}

/// An unknown user's decoy has the shape of a known user's offer: as long a salt, as many
/// iterations.
#[actix_rt::test]
async fn an_unknown_user_is_offered_a_salt_and_iterations_like_a_known_users() {
    let server = secured(HashMap::new()).await;
    let known = offer(&server, "alice").await;
    let unknown = offer(&server, "mallory").await;
    assert_eq!(
        unknown.salt_len(),
        known.salt_len(),
        "{unknown:?} {known:?}"
    );
    assert_eq!(unknown.iterations, known.iterations);
    assert_eq!(known.iterations, u32::from(DEFAULT_ITERATIONS));
}

#[actix_rt::test]
async fn unix_peers_known_by_uid_need_no_password() {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let server = secured(HashMap::from([(uid, Role::Admin)])).await;
    let local = Client::connect_unix(&server.unix, ClientConfig::default())
        .await
        .unwrap();
    TestClient::new(local)
        .echo(&EchoRequest::default())
        .await
        .unwrap();
    let remote = connect(&server).await;
    let error = TestClient::new(remote)
        .echo(&EchoRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}
