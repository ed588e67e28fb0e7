//! Who the peer of one server connection is, and whether it may make a call: the identity it
//! started with (a known unix uid, the anonymous role, or the admin when the server has no
//! authentication), the one the auth program gave it, and the deadline for getting one.

use std::time::Instant;

use ferry_codec::Route;
use ferry_codec::proto::{ErrorCode, Layer, Side};

use crate::access::{AUTH_PROGRAM, AuthConfig};
use crate::error::CallError;
use crate::identity::{Identity, Role};
use crate::server::shared::ServerShared;

/// The identity of one connection.
pub(super) struct Access {
    /// Who the peer is; `None` until it authenticates (only with an auth config).
    identity: Option<Identity>,
    /// When the connection started: it has `timeout` of the auth config to authenticate.
    since: Instant,
}

impl Access {
    /// The identity a new connection starts with.
    pub fn new(auth: Option<&AuthConfig>, peer_uid: Option<u32>) -> Self {
        Self {
            identity: match auth {
                None => Some(Identity {
                    name: "anonymous".into(),
                    role: Role::Admin,
                }),
                Some(auth) => auth.initial(peer_uid),
            },
            since: Instant::now(),
        }
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The auth program established who the connection is.
    pub fn set(&mut self, identity: Identity) {
        self.identity = Some(identity);
    }

    /// Whether the connection is still without an identity after the authentication timeout.
    pub fn timed_out(&self, auth: Option<&AuthConfig>) -> bool {
        auth.is_some_and(|auth| self.identity.is_none() && self.since.elapsed() >= auth.timeout)
    }

    /// Whether this connection may make a call to `route`: the auth program is open to all;
    /// everything else needs an identity whose role is at least what the procedure requires.
    pub fn authorize(&self, shared: &ServerShared, route: Route) -> Option<CallError> {
        let auth = shared.auth.as_ref()?;
        if route.program == AUTH_PROGRAM {
            return None;
        }
        let Some(identity) = &self.identity else {
            shared.counters.auth_refusals.inc();
            return Some(CallError::new(
                ErrorCode::Unauthenticated,
                Side::Server,
                Layer::Call,
                "authenticate first (the auth program); nothing else is reachable before",
            ));
        };
        // A program this server does not serve is answered UNKNOWN_PROGRAM (or _VERSION) by
        // the dispatcher, whatever the caller's role: only the identified get that far.
        if !shared.registry.serves(route.program, route.version) {
            return None;
        }
        let required = auth.authorizer.required(route);
        if identity.role < required {
            shared.counters.auth_refusals.inc();
            return Some(CallError::new(
                ErrorCode::PermissionDenied,
                Side::Server,
                Layer::Call,
                format!(
                    "{} has role {} but this procedure needs {}",
                    identity.name,
                    identity.role.as_str_name().to_lowercase(),
                    required.as_str_name().to_lowercase()
                ),
            ));
        }
        None
    }
}
