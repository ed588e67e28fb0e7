//! The server side of SCRAM-SHA-256 (RFC 5802 section 5, with RFC 7677's hash) from what
//! RFC 5802 section 3 says a server stores: the salt, the iteration count, StoredKey and
//! ServerKey. Neither is enough to log in: a client must prove it knows ClientKey, whose hash
//! StoredKey is, and only the password (or the salted password) yields it.
//!
//! scram-2's server asks its provider for the salted password itself (its `PasswordInfo`), so
//! this module does the server's part with ring's HMAC and SHA-256 (the primitives scram-2
//! uses). The client side stays scram-2's `ScramClient`.
//!
//! ```text
//! SaltedPassword  := Hi(password, salt, i)            (PBKDF2-HMAC-SHA-256)
//! ClientKey       := HMAC(SaltedPassword, "Client Key")
//! StoredKey       := H(ClientKey)
//! ServerKey       := HMAC(SaltedPassword, "Server Key")
//! AuthMessage     := client-first-bare "," server-first "," client-final-without-proof
//! ClientSignature := HMAC(StoredKey, AuthMessage)
//! ClientProof     := ClientKey XOR ClientSignature    (sent by the client)
//! ServerSignature := HMAC(ServerKey, AuthMessage)     (sent by the server: "v=...")
//! ```
//! The server recovers ClientKey as ClientProof XOR ClientSignature and accepts if its hash is
//! StoredKey.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac};

/// Bytes of a new user's salt (and of a decoy's).
pub(crate) const SALT_LEN: usize = 16;

/// Fills `bytes` from the system's random source.
pub(crate) fn random(bytes: &mut [u8]) -> std::io::Result<()> {
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, bytes)
}

/// Bytes of StoredKey and ServerKey: SHA-256's output.
pub const KEY_LEN: usize = 32;

/// What the server keeps of one password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u16,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl ScramKeys {
    /// The keys of a salted password (`Hi(password, salt, iterations)`).
    pub fn from_salted_password(salted_password: &[u8], salt: Vec<u8>, iterations: u16) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, salted_password);
        let client_key = hmac::sign(&key, b"Client Key");
        let server_key = hmac::sign(&key, b"Server Key");
        Self {
            salt,
            iterations,
            stored_key: sha256(client_key.as_ref()),
            server_key: array(server_key.as_ref()),
        }
    }
}

fn array(bytes: &[u8]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(bytes);
    out
}

fn sha256(bytes: &[u8]) -> [u8; KEY_LEN] {
    array(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    array(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref())
}

/// Equality in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange stopped. Both end it with the same UNAUTHENTICATED answer upstream; the
/// distinction is for the server's own messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The proof is wrong (or the client asked to act as someone else).
    #[error("wrong user name or password")]
    Refused,
}

/// A parsed client-first message.
#[derive(Debug)]
pub struct ClientFirst {
    /// The user name, `=2C` and `=3D` decoded.
    pub user: String,
    gs2_header: String,
    bare: String,
    client_nonce: String,
}

impl ClientFirst {
    /// `gs2-header client-first-bare`: `n,,n=user,r=nonce` (`y,,` too: a client that could
    /// bind to the channel but thinks the server cannot; `p=` channel binding is refused).
    pub fn parse(message: &str) -> Result<Self, ScramError> {
        let mut parts = message.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(ScramError::Malformed("channel binding is not supported"));
            }
            _ => return Err(ScramError::Malformed("bad channel binding flag")),
        }
        // A mandatory extension (`m=`) would come first, where the name must be: refused.
        let mut fields = bare.split(',');
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .ok_or(ScramError::Malformed("no user name"))?;
        let user = decode_name(user)?;
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        // An authorization identity other than the user: acting as someone else is refused.
        if !authzid.is_empty()
            && authzid.strip_prefix("a=").map(decode_name) != Some(Ok(user.clone()))
        {
            return Err(ScramError::Refused);
        }
        Ok(Self {
            gs2_header: format!("{flag},{authzid},"),
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
            user,
        })
    }

    /// The server-first message for `keys`, with `server_nonce` (printable, no comma)
    /// appended to the client's; and the state that checks the client's answer.
    pub fn server_first(self, keys: ScramKeys, server_nonce: &str) -> (ServerFirst, String) {
        let nonce = format!("{}{server_nonce}", self.client_nonce);
        let message = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&keys.salt),
            keys.iterations
        );
        let state = ServerFirst {
            keys,
            auth_prefix: format!("{},{message}", self.bare),
            channel: BASE64.encode(self.gs2_header.as_bytes()),
            nonce,
        };
        (state, message)
    }
}

/// `saslname`: `,` is sent as `=2C` and `=` as `=3D`; any other `=` is malformed.
fn decode_name(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        out.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The server after its first message, waiting for the client's proof.
pub struct ServerFirst {
    keys: ScramKeys,
    /// `client-first-bare "," server-first`: the start of AuthMessage.
    auth_prefix: String,
    /// The `c=` value the client must send: its GS2 header, base64.
    channel: String,
    nonce: String,
}

impl ServerFirst {
    /// Checks `c=…,r=…,p=…`; on success, the server-final message (`v=` ServerSignature),
    /// which proves to the client that the server knows its keys too.
    pub fn client_final(self, message: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let channel = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding"))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if channel != self.channel {
            return Err(ScramError::Malformed(
                "channel binding differs from client-first",
            ));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce differs from server-first"));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != KEY_LEN {
            return Err(ScramError::Refused);
        }
        let auth_message = format!("{},{without_proof}", self.auth_prefix);
        let signature = hmac_sha256(&self.keys.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if !same(&sha256(&client_key), &self.keys.stored_key) {
            return Err(ScramError::Refused);
        }
        let server_signature = hmac_sha256(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    fn rfc7677_keys() -> ScramKeys {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let rounds = std::num::NonZeroU32::new(4096).unwrap();
        let salted = scram_2::hash_password("pencil", rounds, &salt);
        ScramKeys::from_salted_password(&salted, salt, 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_verifies_from_stored_and_server_keys() {
        let first = ClientFirst::parse("n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert_eq!(first.user, "user");
        let (state, server_first) =
            first.server_first(rfc7677_keys(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let server_final = state
            .client_final(
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                 p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(
            server_final,
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn a_wrong_proof_a_changed_nonce_or_channel_are_refused() {
        let exchange = || {
            ClientFirst::parse("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
                .unwrap()
                .server_first(rfc7677_keys(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
                .0
        };
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        assert_eq!(
            exchange().client_final(&format!(
                "c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVM="
            )),
            Err(ScramError::Refused)
        );
        assert!(matches!(
            exchange().client_final(
                "c=biws,r=rOprNGfwEbeRWgbNEkqOother,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            ),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            exchange().client_final(&format!(
                "c=eSws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            )),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn client_first_messages_are_parsed_strictly() {
        assert_eq!(
            ClientFirst::parse("n,,n=a=2Cb=3Dc,r=x").unwrap().user,
            "a,b=c"
        );
        assert!(ClientFirst::parse("y,,n=u,r=x").is_ok());
        assert!(ClientFirst::parse("n,a=u,n=u,r=x").is_ok());
        assert_eq!(
            ClientFirst::parse("n,a=admin,n=u,r=x").err(),
            Some(ScramError::Refused)
        );
        for bad in [
            "",
            "n,,",
            "p=tls-unique,,n=u,r=x",
            "x,,n=u,r=x",
            "n,,n=u",
            "n,,n=a=4,r=x",
            "n,,m=1,n=u,r=x",
        ] {
            assert!(
                matches!(ClientFirst::parse(bad), Err(ScramError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
