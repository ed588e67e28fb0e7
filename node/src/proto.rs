//! Messages of the programs' `.proto` files (`node/proto/`).

pub mod volume {
    include!(concat!(env!("OUT_DIR"), "/ferry.volume.v1.rs"));
}

pub mod events {
    include!(concat!(env!("OUT_DIR"), "/ferry.events.v1.rs"));
}

pub mod admin {
    include!(concat!(env!("OUT_DIR"), "/ferry.admin.v1.rs"));
}
