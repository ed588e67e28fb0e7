//! The admin program's declaration: what the node is, who is connected, and disconnecting one
//! of them.

use ferry_actors::program;

use crate::proto::admin::{
    ClientsReply, ClientsRequest, DisconnectReply, DisconnectRequest, InfoRequest, ServerInfo,
};

program! {
    /// Node administration.
    pub program AdminProgram = 0x6164_6d6e, version 1;
    handler AdminHandler; client AdminClient;
    procedures {
        /// Version, uptime and limits.
        1 => info(InfoRequest) -> ServerInfo;
        /// Connected clients with their figures.
        2 => clients(ClientsRequest) -> ClientsReply;
        /// Closes one client's connection.
        3 => disconnect(DisconnectRequest) -> DisconnectReply;
    }
}
