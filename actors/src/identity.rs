//! Who a connection is: its identity and the role it acts in. A leaf the whole runtime reads:
//! the server connection keeps one, a call's context carries it, the access policy
//! ([`crate::access`]) decides from it.

pub use crate::proto::auth::Role;

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}
