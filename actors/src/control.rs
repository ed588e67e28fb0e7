//! The reserved connection-level programs: keepalive (libvirt's numbers) and Ferry's control
//! program (shutdown notice, GOAWAY). Their frames always use serial 0.

use bytes::Bytes;
use ferry_codec::proto::{ErrorBody, Shutdown};
use ferry_codec::{Frame, Header, MessageType, Route, Status, encode_message};

pub const KEEPALIVE_PROGRAM: u32 = 0x6b65_6570;
pub const KEEPALIVE_VERSION: u32 = 1;
pub const PING: u32 = 1;
pub const PONG: u32 = 2;

pub const CONTROL_PROGRAM: u32 = 0x6672_7279;
pub const CONTROL_VERSION: u32 = 1;
pub const SHUTDOWN: u32 = 1;
pub const GOAWAY: u32 = 2;

/// A connection-level MESSAGE frame, recognised by its program and serial 0.
#[derive(Debug)]
pub enum ControlMessage {
    Ping,
    Pong,
    Shutdown(Shutdown),
    GoAway(ErrorBody),
}

impl ControlMessage {
    /// Recognises a control frame; `None` for anything that is not one.
    pub fn parse(frame: &Frame) -> Option<Self> {
        let h = &frame.header;
        if h.kind != MessageType::Message || h.serial != 0 {
            return None;
        }
        match (h.program, h.procedure) {
            (KEEPALIVE_PROGRAM, PING) => Some(Self::Ping),
            (KEEPALIVE_PROGRAM, PONG) => Some(Self::Pong),
            (CONTROL_PROGRAM, SHUTDOWN) => ferry_codec::decode_message(&frame.payload)
                .ok()
                .map(Self::Shutdown),
            (CONTROL_PROGRAM, GOAWAY) => ferry_codec::decode_message(&frame.payload)
                .ok()
                .map(Self::GoAway),
            _ => None,
        }
    }

    pub fn to_frame(&self) -> Frame {
        let (program, version, procedure, status, payload) = match self {
            Self::Ping => (
                KEEPALIVE_PROGRAM,
                KEEPALIVE_VERSION,
                PING,
                Status::Ok,
                Bytes::new(),
            ),
            Self::Pong => (
                KEEPALIVE_PROGRAM,
                KEEPALIVE_VERSION,
                PONG,
                Status::Ok,
                Bytes::new(),
            ),
            Self::Shutdown(body) => (
                CONTROL_PROGRAM,
                CONTROL_VERSION,
                SHUTDOWN,
                Status::Ok,
                encode_message(body),
            ),
            Self::GoAway(body) => (
                CONTROL_PROGRAM,
                CONTROL_VERSION,
                GOAWAY,
                Status::Error,
                encode_message(body),
            ),
        };
        let route = Route::new(program, version, procedure);
        Frame::new(
            Header {
                program: route.program,
                version: route.version,
                procedure: route.procedure,
                kind: MessageType::Message,
                serial: 0,
                status,
            },
            payload,
        )
    }
}
