//! A whole frame: header plus payload, with constructors for every kind the protocol defines.

use bytes::Bytes;

use crate::header::{Header, MIN_FRAME_LEN, MessageType, Status, WireHead};
use crate::payload::{Credit, Hole, encode_message};
use crate::proto::ErrorBody;

/// One frame. The payload is reference-counted: decoding splits it out of the read buffer and
/// encoding hands it to the writer as is, so payload bytes are never copied by the codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(header: Header, payload: Bytes) -> Self {
        Self { header, payload }
    }

    /// Total size on the wire, length word included; this is also what the frame costs in
    /// stream credit.
    pub fn wire_len(&self) -> usize {
        MIN_FRAME_LEN + self.payload.len()
    }

    /// The length word plus header, and the payload untouched: the two buffers of a vectored
    /// write.
    pub fn wire_parts(&self) -> (WireHead, &Bytes) {
        (self.header.encode(self.payload.len()), &self.payload)
    }

    /// Same header routing fields, another type, status and payload: stream, credit and cancel
    /// frames repeat the program, version, procedure and serial of the call they belong to.
    pub fn sibling(&self, kind: MessageType, status: Status, payload: Bytes) -> Self {
        Self::new(
            Header {
                kind,
                status,
                ..self.header
            },
            payload,
        )
    }

    fn build(route: Route, kind: MessageType, serial: u32, status: Status, payload: Bytes) -> Self {
        Self::new(
            Header {
                program: route.program,
                version: route.version,
                procedure: route.procedure,
                kind,
                serial,
                status,
            },
            payload,
        )
    }

    pub fn call(route: Route, serial: u32, payload: Bytes) -> Self {
        Self::build(route, MessageType::Call, serial, Status::Ok, payload)
    }

    pub fn reply_ok(route: Route, serial: u32, payload: Bytes) -> Self {
        Self::build(route, MessageType::Reply, serial, Status::Ok, payload)
    }

    pub fn reply_error(route: Route, serial: u32, error: &ErrorBody) -> Self {
        Self::build(
            route,
            MessageType::Reply,
            serial,
            Status::Error,
            encode_message(error),
        )
    }

    pub fn message(route: Route, serial: u32, payload: Bytes) -> Self {
        Self::build(route, MessageType::Message, serial, Status::Ok, payload)
    }

    /// A chunk of stream data; the payload must not be empty.
    pub fn stream_data(route: Route, serial: u32, data: Bytes) -> Self {
        Self::build(route, MessageType::Stream, serial, Status::Continue, data)
    }

    /// The end of one direction of a stream, or the receiver's confirmation of that end.
    pub fn stream_finish(route: Route, serial: u32) -> Self {
        Self::stream_finish_with(route, serial, Bytes::new())
    }

    /// A finish carrying a trailer: what the procedure says its sender vouches for once all
    /// its data is out (the volume program's UPLOAD: `UploadFinish`, the content's BLAKE3).
    pub fn stream_finish_with(route: Route, serial: u32, trailer: Bytes) -> Self {
        Self::build(route, MessageType::Stream, serial, Status::Ok, trailer)
    }

    pub fn stream_abort(route: Route, serial: u32, error: &ErrorBody) -> Self {
        Self::build(
            route,
            MessageType::Stream,
            serial,
            Status::Error,
            encode_message(error),
        )
    }

    pub fn hole(route: Route, serial: u32, hole: Hole) -> Self {
        Self::build(
            route,
            MessageType::StreamHole,
            serial,
            Status::Continue,
            hole.encode(),
        )
    }

    pub fn credit(route: Route, serial: u32, credit: Credit) -> Self {
        Self::build(
            route,
            MessageType::Credit,
            serial,
            Status::Ok,
            credit.encode(),
        )
    }

    pub fn cancel(route: Route, serial: u32) -> Self {
        Self::build(route, MessageType::Cancel, serial, Status::Ok, Bytes::new())
    }

    pub fn route(&self) -> Route {
        Route {
            program: self.header.program,
            version: self.header.version,
            procedure: self.header.procedure,
        }
    }
}

/// Program, version and procedure: where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub program: u32,
    pub version: u32,
    pub procedure: u32,
}

impl Route {
    pub const fn new(program: u32, version: u32, procedure: u32) -> Self {
        Self {
            program,
            version,
            procedure,
        }
    }
}
