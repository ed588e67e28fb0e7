//! A raw peer for wire-level tests of a real `ferryd`: frames built with the codec on the
//! node's unix socket, sent when the test says and read only when it chooses.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ferry_actors::codec::{self, Credit, Frame, FrameCodec, MessageType, Route};
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

use super::Daemon;

pub const VOLUME: u32 = 0x766f_6c75;
pub const TEST: u32 = 0x7465_7374;
/// Volume procedures.
pub const UPLOAD: u32 = 5;
pub const DOWNLOAD: u32 = 7;
/// Test program procedures.
pub const ECHO: u32 = 1;
pub const SINK: u32 = 4;

/// What a frame costs in credit beyond its payload: its length word and header.
pub const FRAME_HEAD: u64 = codec::MIN_FRAME_LEN as u64;
/// The default `max_chunk`.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Bound on every wait for the node.
pub const PROMPTLY: Duration = Duration::from_secs(30);

pub fn volume(procedure: u32) -> Route {
    Route::new(VOLUME, 1, procedure)
}

pub fn test(procedure: u32) -> Route {
    Route::new(TEST, 1, procedure)
}

/// A peer on the node's unix socket that sends what it likes and reads only when it chooses.
pub struct Peer {
    pub socket: UnixStream,
    pub codec: FrameCodec,
    inbox: BytesMut,
    /// Credit the node granted per serial and not yet spent.
    pub credit: HashMap<u32, u64>,
}

impl Peer {
    pub fn connect(node: &Daemon) -> Self {
        let socket = UnixStream::connect(&node.unix).unwrap();
        socket.set_read_timeout(Some(PROMPTLY)).unwrap();
        Self {
            socket,
            codec: FrameCodec::default(),
            inbox: BytesMut::new(),
            credit: HashMap::new(),
        }
    }

    pub fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.codec.encode(frame, &mut out).unwrap();
        self.socket.write_all(&out).unwrap();
    }

    pub fn call(&mut self, route: Route, serial: u32, request: &impl Message) {
        self.send(Frame::call(route, serial, request.encode_to_vec().into()));
    }

    /// The next frame from the node (its grants are noted on the way).
    pub fn next(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.inbox).unwrap() {
                if frame.header.kind == MessageType::Credit {
                    let Credit(n) = Credit::decode(&frame.payload).unwrap();
                    *self.credit.entry(frame.header.serial).or_default() += u64::from(n);
                }
                return frame;
            }
            let mut buf = [0u8; 64 * 1024];
            let n = self
                .socket
                .read(&mut buf)
                .expect("the node answers in time");
            assert!(n > 0, "the node closed the connection");
            self.inbox.extend_from_slice(&buf[..n]);
        }
    }

    /// Waits for the node's first grant to `serial`: the upload is accepted.
    pub fn accepted(&mut self, serial: u32) {
        while !self.credit.contains_key(&serial) {
            let frame = self.next();
            assert!(
                frame.header.kind == MessageType::Credit || frame.header.serial != serial,
                "upload {serial} refused: {frame:?}"
            );
        }
    }

    /// Sends `payload` on `serial` as soon as the node's credit allows it.
    pub fn data(&mut self, route: Route, serial: u32, payload: Bytes) {
        let cost = FRAME_HEAD + payload.len() as u64;
        while self.credit.get(&serial).copied().unwrap_or(0) < cost {
            self.next();
        }
        *self.credit.get_mut(&serial).unwrap() -= cost;
        self.send(Frame::stream_data(route, serial, payload));
    }

    /// Sends `len` bytes on `serial` in chunks as large as the credit at hand allows.
    pub fn stream(&mut self, route: Route, serial: u32, len: u64) {
        let mut left = len;
        while left > 0 {
            while self.credit.get(&serial).copied().unwrap_or(0) <= FRAME_HEAD {
                self.next();
            }
            let n = (self.credit[&serial] - FRAME_HEAD)
                .min(MAX_CHUNK as u64)
                .min(left);
            self.data(route, serial, Bytes::from(vec![0x5a; n as usize]));
            left -= n;
        }
    }

    /// Reads until the REPLY for `serial` and returns it.
    pub fn reply(&mut self, serial: u32) -> Frame {
        loop {
            let frame = self.next();
            if frame.header.kind == MessageType::Reply && frame.header.serial == serial {
                return frame;
            }
        }
    }
}
