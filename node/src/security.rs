//! ferryd's security settings: TLS, users and roles, and which role each procedure needs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_actors::auth::{AuthConfig, Authorizer, Role, ScramKeys, User};
use ferry_actors::codec::Route;
use ferry_actors::tls::TlsVersion;
use serde::{Deserialize, Serialize};

use crate::admin::AdminProgram;
use crate::events::EventsProgram;
use crate::volume::VolumeProgram;

/// A role as the config file (and `ferry hash-password --role`) spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RoleName {
    ReadOnly,
    ReadWrite,
    Admin,
}

impl RoleName {
    /// As the config file and `--role` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::ReadWrite => "read-write",
            Self::Admin => "admin",
        }
    }
}

impl From<RoleName> for Role {
    fn from(role: RoleName) -> Self {
        match role {
            RoleName::ReadOnly => Role::ReadOnly,
            RoleName::ReadWrite => Role::ReadWrite,
            RoleName::Admin => Role::Admin,
        }
    }
}

/// A SCRAM user, `[[security.users]]`: the salt, the iteration count, StoredKey and ServerKey
/// (RFC 5802 section 3), none of which logs in (make one with
/// `ferry hash-password NAME --role ROLE`).
///
/// Entries made before StoredKey/ServerKey hold `salted_password` instead, which does log in
/// if the config leaks: still read (the keys are derived from it at start) with a warning to
/// make the entry again (docs/SECURITY.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub role: RoleName,
    /// Hex of the 16-byte salt.
    pub salt: String,
    pub iterations: u16,
    /// Hex of SHA-256(HMAC(SaltedPassword, "Client Key")).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_key: Option<String>,
    /// Hex of HMAC(SaltedPassword, "Server Key").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<String>,
    /// Deprecated: hex of PBKDF2-HMAC-SHA-256(password, salt, iterations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salted_password: Option<String>,
}

impl UserEntry {
    /// What the runtime checks proofs with.
    fn keys(&self) -> Result<ScramKeys, SecurityError> {
        let hex = |what, value: &str| {
            hex::decode(value).map_err(|_| SecurityError::BadHex {
                name: self.name.clone(),
                what,
            })
        };
        let key = |what, value: &str| {
            hex(what, value)?
                .try_into()
                .map_err(|_| SecurityError::BadKey {
                    name: self.name.clone(),
                    what,
                })
        };
        let salt = hex("salt", &self.salt)?;
        match (&self.stored_key, &self.server_key, &self.salted_password) {
            (Some(stored), Some(server), None) => Ok(ScramKeys {
                salt,
                iterations: self.iterations,
                stored_key: key("stored_key", stored)?,
                server_key: key("server_key", server)?,
            }),
            (None, None, Some(salted)) => Ok(ScramKeys::from_salted_password(
                &hex("salted_password", salted)?,
                salt,
                self.iterations,
            )),
            _ => Err(SecurityError::UserKeys {
                name: self.name.clone(),
            }),
        }
    }
}

/// `[security]` of the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// TLS listen address (`""`: off). Needs `tls_cert` and `tls_key`.
    pub tls: String,
    /// PEM certificate chain of this node.
    pub tls_cert: PathBuf,
    /// PEM private key of this node.
    pub tls_key: PathBuf,
    /// The oldest TLS version clients may use: "1.2" (the default) or "1.3". TLS 1.3 is
    /// always offered and is what current clients negotiate.
    pub tls_min_version: TlsMinVersion,
    /// Plain TCP may listen on a non-loopback address only with this set: traffic is then
    /// readable on the network (credentials stay safe: SCRAM never sends them).
    pub allow_plain_tcp: bool,
    /// The role of connections that do not authenticate: "none" (they must) or a role.
    pub anonymous_role: Option<RoleName>,
    /// Unix-socket peers by uid and their role. Default: root and the user ferryd runs as are
    /// admins; everyone else must authenticate.
    pub unix_users: Option<HashMap<u32, RoleName>>,
    /// A connection without an identity after this long is closed.
    pub auth_timeout_secs: u64,
    pub users: Vec<UserEntry>,
    /// More users, from a separate TOML file of `[[security.users]]` entries (what
    /// `ferry hash-password` prints), read at start: lets the users live in a secret (a
    /// Kubernetes Secret) while the rest of the configuration does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
}

/// `[security] tls_min_version`, spelled as TLS versions are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl From<TlsMinVersion> for TlsVersion {
    fn from(version: TlsMinVersion) -> Self {
        match version {
            TlsMinVersion::Tls12 => TlsVersion::Tls12,
            TlsMinVersion::Tls13 => TlsVersion::Tls13,
        }
    }
}

/// The content of [`SecurityConfig::users_file`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    security: UsersSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersSection {
    #[serde(default)]
    users: Vec<UserEntry>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            tls: String::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_min_version: TlsMinVersion::default(),
            allow_plain_tcp: false,
            anonymous_role: None,
            unix_users: None,
            auth_timeout_secs: 10,
            users: Vec::new(),
            users_file: None,
        }
    }
}

/// A security setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("user {name:?}: {what} is not valid hex")]
    BadHex { name: String, what: &'static str },
    #[error(
        "plain TCP on {address} is reachable from the network; listen on 127.0.0.1, use TLS ([security] tls), or set [security] allow_plain_tcp = true"
    )]
    PlainTcpExposed { address: String },
    #[error("[security] tls is set but tls_cert or tls_key is missing")]
    TlsFilesMissing,
    #[error("reading users_file {path}: {source}")]
    UsersFileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users_file {path} is not a list of [[security.users]]: {source}")]
    UsersFileParse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("user {name:?} is defined twice (in [[security.users]] and users_file)")]
    DuplicateUser { name: String },
    #[error("user {name:?}: {what} is not 32 bytes (64 hex digits)")]
    BadKey { name: String, what: &'static str },
    #[error(
        "user {name:?}: give stored_key and server_key (from `ferry hash-password`), and nothing else"
    )]
    UserKeys { name: String },
}

/// The role each procedure of ferryd's programs needs. Unknown programs need admin.
pub struct Policy;

impl Authorizer for Policy {
    fn required(&self, route: Route) -> Role {
        match (route.program, route.procedure) {
            // volume: list, info, upload status, download, cluster view read; the rest writes.
            (VolumeProgram::NUMBER, 2 | 3 | 6 | 7 | 10 | 11) => Role::ReadOnly,
            (VolumeProgram::NUMBER, _) => Role::ReadWrite,
            (EventsProgram::NUMBER, _) => Role::ReadOnly,
            (AdminProgram::NUMBER, _) => Role::Admin,
            // test program: uploads (sink, echo stream) write, the rest reads.
            (0x7465_7374, 4 | 6) => Role::ReadWrite,
            (0x7465_7374, _) => Role::ReadOnly,
            _ => Role::Admin,
        }
    }
}

impl SecurityConfig {
    /// The runtime's authentication settings.
    pub fn auth_config(&self) -> Result<AuthConfig, SecurityError> {
        let mut users = HashMap::new();
        let from_file = match &self.users_file {
            Some(path) => read_users_file(path)?,
            None => Vec::new(),
        };
        for entry in self.users.iter().chain(&from_file) {
            if users.contains_key(&entry.name) {
                return Err(SecurityError::DuplicateUser {
                    name: entry.name.clone(),
                });
            }
            users.insert(
                entry.name.clone(),
                User {
                    keys: entry.keys()?,
                    role: entry.role.into(),
                },
            );
        }
        let unix_users = match &self.unix_users {
            Some(map) => map
                .iter()
                .map(|(uid, role)| (*uid, Role::from(*role)))
                .collect(),
            None => {
                // SAFETY: getuid has no preconditions and cannot fail.
                let own = unsafe { libc::getuid() };
                HashMap::from([(0, Role::Admin), (own, Role::Admin)])
            }
        };
        Ok(AuthConfig {
            credentials: Arc::new(users),
            authorizer: Arc::new(Policy),
            unix_users,
            anonymous: self.anonymous_role.map(Role::from),
            timeout: Duration::from_secs(self.auth_timeout_secs),
        })
    }

    /// What is accepted but should change: users still stored as salted passwords.
    pub fn warnings(&self) -> Vec<String> {
        self.users
            .iter()
            .filter(|entry| entry.salted_password.is_some())
            .map(|entry| {
                format!(
                    "user {:?} is stored as salted_password, which logs in if the config leaks: \
                     replace the entry with `ferry hash-password {} --role {}` (StoredKey and \
                     ServerKey); this format will be refused in a later version",
                    entry.name,
                    entry.name,
                    entry.role.as_str()
                )
            })
            .collect()
    }

    /// Refuses plain TCP on an address other than loopback unless explicitly allowed.
    pub fn check_plain_tcp(&self, address: &str) -> Result<(), SecurityError> {
        let loopback = address
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| address.starts_with("localhost:"));
        if address.is_empty() || loopback || self.allow_plain_tcp {
            Ok(())
        } else {
            Err(SecurityError::PlainTcpExposed {
                address: address.to_owned(),
            })
        }
    }
}

fn read_users_file(path: &std::path::Path) -> Result<Vec<UserEntry>, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::UsersFileRead {
        path: path.to_owned(),
        source,
    })?;
    let file: UsersFile =
        toml::from_str(&text).map_err(|source| SecurityError::UsersFileParse {
            path: path.to_owned(),
            source,
        })?;
    Ok(file.security.users)
}

/// A `[[security.users]]` entry for `name` with a freshly salted `password`.
pub fn user_entry(name: &str, password: &str, role: RoleName) -> std::io::Result<UserEntry> {
    let user = User::from_password(
        password,
        role.into(),
        ferry_actors::auth::DEFAULT_ITERATIONS,
    )?;
    Ok(UserEntry {
        name: name.to_owned(),
        role,
        salt: hex::encode(&user.keys.salt),
        iterations: user.keys.iterations,
        stored_key: Some(hex::encode(user.keys.stored_key)),
        server_key: Some(hex::encode(user.keys.server_key)),
        salted_password: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_adds_users_and_refuses_duplicates_and_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let entry = user_entry("peer", "secret", RoleName::ReadWrite).unwrap();
        let text = toml::to_string(&UsersFileOut {
            security: UsersSectionOut {
                users: vec![entry.clone()],
            },
        })
        .unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, &text).unwrap();
        let mut config = SecurityConfig {
            users_file: Some(path.clone()),
            ..SecurityConfig::default()
        };
        let auth = config.auth_config().unwrap();
        assert!(auth.credentials.user("peer").is_some());

        config.users = vec![entry];
        assert!(matches!(
            config.auth_config(),
            Err(SecurityError::DuplicateUser { .. })
        ));
        std::fs::write(&path, "[security]\ntls = \"0.0.0.0:1\"\n").unwrap();
        config.users.clear();
        assert!(matches!(
            config.auth_config(),
            Err(SecurityError::UsersFileParse { .. })
        ));
        config.users_file = Some(dir.path().join("missing.toml"));
        assert!(matches!(
            config.auth_config(),
            Err(SecurityError::UsersFileRead { .. })
        ));
    }

    #[derive(Serialize)]
    struct UsersFileOut {
        security: UsersSectionOut,
    }

    #[derive(Serialize)]
    struct UsersSectionOut {
        users: Vec<UserEntry>,
    }
}
