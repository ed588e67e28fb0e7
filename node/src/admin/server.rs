//! The admin program's server: what the node is, who is connected, and disconnecting one of
//! them.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry_actors::program::CallContext;
use ferry_actors::{CallError, ErrorCode};

use crate::admin::program::AdminHandler;
use crate::proto::admin::{
    Client, ClientsReply, ClientsRequest, DisconnectReply, DisconnectRequest, InfoRequest,
    ServerInfo,
};

pub struct AdminService {
    pub data_dir: PathBuf,
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl AdminHandler for AdminService {
    async fn info(&self, _: InfoRequest, context: CallContext) -> Result<ServerInfo, CallError> {
        let server = context.server();
        let config = server.config();
        Ok(ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_millis: server
                .started()
                .elapsed()
                .map_or(0, |d| d.as_millis() as u64),
            max_frame: u64::from(config.limits.max_frame),
            max_chunk: u64::from(config.limits.max_chunk),
            stream_window: u64::from(config.stream_window),
            max_in_flight_calls: config.max_in_flight_calls as u64,
            max_connections: config.max_connections as u64,
            connections_open: server.counters().connections_open.get(),
            data_dir: self.data_dir.display().to_string(),
        })
    }

    async fn clients(
        &self,
        _: ClientsRequest,
        context: CallContext,
    ) -> Result<ClientsReply, CallError> {
        let clients = context
            .server()
            .connections()
            .iter()
            .map(|c| Client {
                id: c.id,
                peer: c.peer.to_string(),
                since_millis: millis(c.since),
                calls_in_flight: c.calls_in_flight.get(),
                streams_open: c.streams_open.get(),
                bytes_in: c.bytes_in.get(),
                bytes_out: c.bytes_out.get(),
            })
            .collect();
        Ok(ClientsReply { clients })
    }

    async fn disconnect(
        &self,
        request: DisconnectRequest,
        context: CallContext,
    ) -> Result<DisconnectReply, CallError> {
        if context.server().disconnect(request.id) {
            Ok(DisconnectReply {})
        } else {
            Err(CallError::application(
                ErrorCode::NotFound,
                format!(
                    "no client with id {} is connected (see `ferry admin clients`)",
                    request.id
                ),
            ))
        }
    }
}
