//! Who may connect and what each may call: the server's authentication and authorization
//! policy ([`AuthConfig`]), the users it knows ([`Credentials`], [`User`]) and the role each
//! procedure requires ([`Authorizer`]). A leaf below the server that applies it and the auth
//! program ([`crate::auth`]) that proves who a connection is.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ferry_codec::Route;

use crate::identity::{Identity, Role};
use crate::scram::{SALT_LEN, ScramKeys, random};

/// The auth program's number: the one program reachable before a connection has an identity.
pub const AUTH_PROGRAM: u32 = 0x6175_7468;

/// A user as the server stores it: never the password, nor the salted password (which logs
/// in), only SCRAM's keys.
#[derive(Clone)]
pub struct User {
    pub keys: ScramKeys,
    pub role: Role,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Iterations of PBKDF2 for new passwords (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u16 = 4096;

impl User {
    /// Salts and hashes `password` with a fresh random salt, and keeps SCRAM's keys of it.
    pub fn from_password(password: &str, role: Role, iterations: u16) -> std::io::Result<Self> {
        let mut salt = vec![0u8; SALT_LEN];
        random(&mut salt)?;
        let rounds = NonZeroU32::new(u32::from(iterations.max(1))).expect("at least 1");
        let salted_password = scram_2::hash_password(password, rounds, &salt);
        Ok(Self {
            keys: ScramKeys::from_salted_password(&salted_password, salt, iterations),
            role,
        })
    }
}

/// Where the server finds users.
pub trait Credentials: Send + Sync + 'static {
    fn user(&self, name: &str) -> Option<User>;
}

impl Credentials for HashMap<String, User> {
    fn user(&self, name: &str) -> Option<User> {
        self.get(name).cloned()
    }
}

/// The role each procedure requires.
pub trait Authorizer: Send + Sync + 'static {
    fn required(&self, route: Route) -> Role;
}

/// Authentication and authorization of a server.
#[derive(Clone)]
pub struct AuthConfig {
    pub credentials: Arc<dyn Credentials>,
    pub authorizer: Arc<dyn Authorizer>,
    /// Unix-socket peers known by uid, with their role; others must authenticate.
    pub unix_users: HashMap<u32, Role>,
    /// The role of a connection that has not authenticated; `None`: it must authenticate.
    pub anonymous: Option<Role>,
    /// A connection without an identity after this long is closed (UNAUTHENTICATED).
    pub timeout: Duration,
}

impl AuthConfig {
    /// The identity a new connection starts with, before any exchange.
    pub(crate) fn initial(&self, peer_uid: Option<u32>) -> Option<Identity> {
        if let Some(role) = peer_uid.and_then(|uid| self.unix_users.get(&uid)) {
            return Some(Identity {
                name: format!("uid:{}", peer_uid.expect("matched")),
                role: *role,
            });
        }
        self.anonymous.map(|role| Identity {
            name: "anonymous".into(),
            role,
        })
    }
}
