//! The auth program: proves who a connection is.
//!
//! A server with an [`AuthConfig`] serves this program and lets nothing else through until
//! the connection has an [`Identity`]: from SCRAM-SHA-256 (RFC 5802/7677) carried over this
//! program's stream, from the peer's uid on a unix socket (`SO_PEERCRED`), or the configured
//! anonymous role. Every later CALL is checked against the role its procedure requires
//! ([`Authorizer`]); a refusal is PERMISSION_DENIED for that call only.
//!
//! The server stores what RFC 5802 has it store, StoredKey and ServerKey with the salt and
//! iteration count ([`scram`]), neither of which logs in; passwords and proofs never appear in
//! logs, metrics or error messages.
//!
//! A program on top of the runtime like any other: the identity model ([`crate::identity`])
//! and the access policy ([`crate::access`]) it fills in are leaves below the server, and are
//! re-exported here under their public names.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use scram_2::ScramClient;

pub use crate::access::{AuthConfig, Authorizer, Credentials, DEFAULT_ITERATIONS, User};
pub use crate::identity::{Identity, Role};
/// Messages of `proto/ferry/auth/v1/auth.proto`.
pub use crate::proto::auth as proto;
pub use crate::scram;
pub use crate::scram::ScramKeys;
use crate::scram::{ClientFirst, KEY_LEN, SALT_LEN, random};

use crate::access::AUTH_PROGRAM;
use crate::error::CallError;
use crate::program::CallContext;
use crate::stream::{Incoming, Outgoing};
use crate::{Client, ErrorCode, Layer, Side, program};
use proto::{Authenticated, ScramStart};

program! {
    /// Authentication: the only program reachable before a connection has an identity.
    pub program AuthProgram = AUTH_PROGRAM, version 1;
    handler AuthHandler; client AuthClient;
    procedures {
        /// SCRAM-SHA-256; its four messages travel as stream data.
        1 => scram_sha256(ScramStart) -> Authenticated [both];
    }
}

/// Largest SCRAM message accepted: real ones are well under 1 KiB.
const MAX_MESSAGE: usize = 4096;

/// Bytes of the server's part of a nonce (24 characters of base64).
const NONCE_LEN: usize = 18;

fn unauthenticated(side: Side, message: &str) -> CallError {
    CallError::new(ErrorCode::Unauthenticated, side, Layer::Call, message)
}

/// The message a wrong user and a wrong password both get, so neither is revealed.
const REFUSED: &str = "wrong user name or password";

/// What the server offers a user it does not know, so that asking cannot tell whether a user
/// exists. A known user's salt and keys are stored: the same on every attempt, and looked up,
/// not computed. A decoy must match on both counts, so it is derived from a server secret and
/// the name (keyed BLAKE3, a pseudorandom function, which ferry-actors already depends on for
/// stream hashing): one name always gets the same salt, different names get unrelated ones,
/// and nothing runs PBKDF2, since the exchange fails at the proof anyway. Its iterations are
/// [`DEFAULT_ITERATIONS`], those of users made by [`User::from_password`].
///
/// The secret is drawn when the server starts and lives in its [`AuthService`], which the
/// server holds for its whole life. Not in [`AuthConfig`]: its fields are public and callers
/// build it as a literal, so a secret there would change every caller. A restart draws a new
/// secret, so a decoy differs across restarts where a stored salt does not.
struct Decoys {
    secret: [u8; blake3::KEY_LEN],
}

impl Decoys {
    fn new() -> std::io::Result<Self> {
        let mut secret = [0u8; blake3::KEY_LEN];
        random(&mut secret)?;
        Ok(Self { secret })
    }

    /// The decoy for `name`: salt and keys are three parts of one keyed output.
    fn keys_for(&self, name: &str) -> ScramKeys {
        let mut derived = [0u8; SALT_LEN + 2 * KEY_LEN];
        blake3::Hasher::new_keyed(&self.secret)
            .update(name.as_bytes())
            .finalize_xof()
            .fill(&mut derived);
        let (salt, keys) = derived.split_at(SALT_LEN);
        let (stored, server) = keys.split_at(KEY_LEN);
        ScramKeys {
            salt: salt.to_vec(),
            iterations: DEFAULT_ITERATIONS,
            stored_key: stored.try_into().expect("KEY_LEN bytes"),
            server_key: server.try_into().expect("KEY_LEN bytes"),
        }
    }
}

/// Reads one SCRAM message: one chunk of UTF-8.
async fn receive(incoming: &mut Incoming, side: Side) -> Result<String, CallError> {
    match incoming.recv_bytes().await? {
        Some(bytes) if bytes.len() <= MAX_MESSAGE => String::from_utf8(bytes.to_vec())
            .map_err(|_| unauthenticated(side, "a SCRAM message is not UTF-8")),
        Some(_) => Err(unauthenticated(side, "a SCRAM message is too long")),
        None => Err(unauthenticated(side, "the SCRAM exchange ended early")),
    }
}

/// Serves the auth program.
pub struct AuthService {
    credentials: Arc<dyn Credentials>,
    decoys: Decoys,
}

impl AuthService {
    /// Draws the secret that unknown users' decoy salts derive from, held as long as the
    /// service; fails only if the system's random source does.
    pub fn new(credentials: Arc<dyn Credentials>) -> std::io::Result<Self> {
        Ok(Self {
            credentials,
            decoys: Decoys::new()?,
        })
    }
}

impl AuthHandler for AuthService {
    async fn scram_sha256(
        &self,
        _: ScramStart,
        context: CallContext,
        mut incoming: Incoming,
        mut outgoing: Outgoing,
    ) -> Result<Authenticated, CallError> {
        let client_first = receive(&mut incoming, Side::Server).await?;
        let first = ClientFirst::parse(&client_first).map_err(|error| match error {
            scram::ScramError::Refused => unauthenticated(Side::Server, REFUSED),
            malformed => unauthenticated(Side::Server, &malformed.to_string()),
        })?;
        // Unknown users get a decoy ([`Decoys`]): their exchange fails at the proof, as a
        // wrong password's does.
        let (keys, who) = match self.credentials.user(&first.user) {
            Some(user) => (user.keys, Some((first.user.clone(), user.role))),
            None => (self.decoys.keys_for(&first.user), None),
        };
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce).map_err(|error| {
            CallError::new(
                ErrorCode::Internal,
                Side::Server,
                Layer::Call,
                format!("drawing a SCRAM nonce: {error}"),
            )
        })?;
        let nonce = base64::engine::general_purpose::STANDARD.encode(nonce);
        let (stage, server_first) = first.server_first(keys, &nonce);
        outgoing.send(Bytes::from(server_first)).await?;
        let client_final = receive(&mut incoming, Side::Server).await?;
        let server_final = stage
            .client_final(&client_final)
            .map_err(|_| unauthenticated(Side::Server, REFUSED))?;
        let (name, role) = who.ok_or_else(|| unauthenticated(Side::Server, REFUSED))?;
        // The server's signature proves to the client that it knows the password too.
        outgoing.send(Bytes::from(server_final)).await?;
        if incoming.recv().await?.is_some() {
            return Err(unauthenticated(
                Side::Server,
                "data after the SCRAM exchange",
            ));
        }
        outgoing.finish().await?;
        let identity = Identity { name, role };
        context.set_identity(identity.clone());
        Ok(Authenticated {
            identity: identity.name,
            role: identity.role as i32,
        })
    }
}

impl Client {
    /// Authenticates this connection with SCRAM-SHA-256. The server proves it knows the
    /// password too; the password itself never crosses the wire.
    pub async fn authenticate(&self, user: &str, password: &str) -> Result<Identity, CallError> {
        let mut stream = AuthClient::new(self.clone())
            .scram_sha256(&ScramStart {})
            .await?;
        let (outgoing, incoming) = stream.ends();
        let (outgoing, incoming) = (outgoing.expect("both ways"), incoming.expect("both ways"));
        let (scram, client_first) = ScramClient::new(user, password, None).client_first();
        outgoing.send(Bytes::from(client_first)).await?;
        let server_first = receive(incoming, Side::Client).await?;
        let scram = scram
            .handle_server_first(&server_first)
            .map_err(|_| unauthenticated(Side::Client, "malformed SCRAM server-first message"))?;
        let (scram, client_final) = scram.client_final();
        outgoing.send(Bytes::from(client_final)).await?;
        let server_final = receive(incoming, Side::Client).await?;
        scram.handle_server_final(&server_final).map_err(|_| {
            unauthenticated(
                Side::Client,
                "the server could not prove it knows the password",
            )
        })?;
        outgoing.finish().await?;
        if incoming.recv().await?.is_some() {
            return Err(unauthenticated(
                Side::Client,
                "data after the SCRAM exchange",
            ));
        }
        let done = stream.finish().await?;
        Ok(Identity {
            name: done.identity,
            role: Role::try_from(done.role).unwrap_or(Role::Unspecified),
        })
    }
}
