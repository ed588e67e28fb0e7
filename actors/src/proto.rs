//! Messages of the auth program (`proto/ferry/auth/v1/auth.proto`). A leaf: the roles defined
//! there are part of every connection's identity ([`crate::identity`]), which the runtime
//! needs below the auth program ([`crate::auth`]) that exchanges the rest.

pub mod auth {
    include!(concat!(env!("OUT_DIR"), "/ferry.auth.v1.rs"));
}
