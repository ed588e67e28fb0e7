//! Routing of one client connection's frames: each REPLY to the call waiting for it, stream
//! frames and credit to their stream, events to their subscribers, control messages to the
//! connection; and the frames this side sends for its calls (CALL, CANCEL, credit, its
//! finish, confirmation or abort). Its state has its own modules: the calls in flight
//! ([`PendingCalls`]), the event subscribers ([`Subscribers`]), the PINGs awaiting their
//! PONG ([`Pings`]) and why the connection refuses calls or ended ([`Closing`]).

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};
use ferry_codec::{Credit, Frame, MAX_TRAILER, MessageType, Route, Status};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::client::connection::closing::Closing;
use crate::client::connection::events::Subscribers;
use crate::client::connection::pending::{Pending, PendingCalls, PendingStream};
use crate::client::connection::pings::Pings;
use crate::config::ClientConfig;
use crate::connection::credit::ReceiveCredit;
use crate::connection::report::Report;
use crate::connection::writer::{Outbox, Room};
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::metrics::Counters;
use crate::stream::{
    self, Direction, FromPeer, Notice, StreamEnds, StreamNotice, StreamSetup, admit_inbound,
};

/// The actor a router works for: it takes the notices of its streams.
pub(super) trait Owner: Actor<Context = Context<Self>> + Handler<StreamNotice> {}

impl<A> Owner for A where A: Actor<Context = Context<A>> + Handler<StreamNotice> {}

/// A call that was sent: what the caller needs to follow it up.
pub struct Began {
    pub serial: u32,
    /// Tells this call apart from a later one on the same serial.
    pub id: u64,
    pub ends: StreamEnds,
}

/// What one client connection routes by, and where its frames go.
pub(super) struct Router {
    pub config: ClientConfig,
    pub counters: Arc<Counters>,
    pub outbox: Outbox,
    pub span: tracing::Span,
    pub calls: PendingCalls,
    /// Credit of the downloads, shared within the connection's window.
    pub credit: ReceiveCredit,
    pub subscribers: Subscribers,
    pub pings: Pings,
    pub closing: Closing,
    /// Where the connection's streams send their notices: its one shared address.
    pub notices: Arc<dyn Report<StreamNotice>>,
}

impl Router {
    /// Queues a control frame ([`Outbox::send_or_pause`]).
    pub fn send<A: Owner>(&self, ctx: &mut Context<A>, frame: Frame) {
        self.outbox.send_or_pause(ctx, frame);
    }

    /// Pays owed download credit as far as the connection's budget allows
    /// ([`ReceiveCredit::distribute`]).
    fn distribute<A: Owner>(&mut self, ctx: &mut Context<A>) {
        let outbox = &self.outbox;
        self.credit.distribute(|route, serial, grant| {
            outbox.send_or_pause(ctx, Frame::credit(route, serial, Credit(grant)));
        });
    }

    /// A frame from the server, by type.
    pub fn on_frame<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        if let Some(message) = ControlMessage::parse(&frame) {
            return self.on_control(ctx, message);
        }
        match frame.header.kind {
            MessageType::Reply => self.on_reply(ctx, frame),
            MessageType::Message => self.subscribers.deliver(frame, &self.counters),
            MessageType::Stream | MessageType::StreamHole | MessageType::Credit => {
                self.on_stream_frame(ctx, frame)
            }
            kind => {
                self.counters.protocol_violations.inc();
                debug!(parent: &self.span, ?kind, serial = frame.header.serial, "unexpected frame from the server");
            }
        }
    }

    /// Starts a call: allocates a serial, remembers where its REPLY goes, queues the CALL (and,
    /// for a download, the stream's first credit).
    pub fn begin<A: Owner>(
        &mut self,
        ctx: &mut Context<A>,
        route: Route,
        direction: Direction,
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, CallError>>,
    ) -> Result<Began, CallError> {
        if let Some(error) = self.closing.refusal() {
            return Err(error.clone());
        }
        let serial = self.calls.allocate_serial();
        let id = self.calls.next_id();
        self.counters.calls_total.inc();
        self.send(ctx, Frame::call(route, serial, payload));
        let mut ends = StreamEnds::default();
        let stream = direction.is_stream().then(|| {
            let window = self.config.stream_window;
            let (link, opened) = stream::open(StreamSetup {
                halted: Arc::default(),
                counters: self.counters.clone(),
                serial,
                route,
                side: Side::Client,
                outbox: self.outbox.clone(),
                owner: self.notices.clone(),
                window,
                max_chunk: self.config.limits.max_chunk,
                receives: direction.server_sends(),
                sends: direction.client_sends(),
            });
            ends = opened;
            if direction.server_sends() {
                // The window, or what the connection's budget has left (at least a grant
                // step); the rest is owed.
                let first = self.credit.open(serial, route);
                self.send(ctx, Frame::credit(route, serial, Credit(first as u32)));
            }
            PendingStream {
                link,
                direction,
                oks_sent: 0,
                open: true,
            }
        });
        self.calls.insert(
            serial,
            Pending {
                route,
                id,
                reply: Some(reply),
                stream,
            },
        );
        Ok(Began { serial, id, ends })
    }

    fn on_reply<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        let serial = frame.header.serial;
        let Some(pending) = self.calls.remove(&serial) else {
            self.counters.protocol_violations.inc();
            debug!(parent: &self.span, serial, "REPLY for a serial not in flight");
            return;
        };
        self.credit.close(serial);
        self.distribute(ctx);
        let outcome = match frame.header.status {
            Status::Ok => Ok(frame.payload),
            Status::Error => Err(
                match ferry_codec::decode_message::<ErrorBody>(&frame.payload) {
                    Ok(body) => CallError::from_body(body),
                    Err(e) => CallError::new(
                        ErrorCode::ProtocolViolation,
                        Side::Client,
                        Layer::Call,
                        format!("bad error body: {e}"),
                    ),
                },
            ),
            Status::Continue => Err(CallError::new(
                ErrorCode::ProtocolViolation,
                Side::Client,
                Layer::Call,
                "REPLY with status CONTINUE",
            )),
        };
        if outcome.is_err() {
            self.counters.calls_failed.inc();
        }
        if let Some(stream) = pending.stream {
            if stream.open {
                // Our side must close before the serial is reused (docs/PROTOCOL.md 5).
                let error = CallError::new(
                    ErrorCode::Aborted,
                    Side::Client,
                    Layer::Stream,
                    "the server ended the call",
                );
                self.send(
                    ctx,
                    Frame::stream_abort(pending.route, serial, &error.to_body()),
                );
            }
            stream
                .link
                .deliver(FromPeer::End(outcome.as_ref().err().cloned()));
        }
        if let Some(tx) = pending.reply {
            let _ = tx.send(outcome);
        }
    }

    fn on_stream_frame<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        let serial = frame.header.serial;
        let max_chunk = self.config.limits.max_chunk;
        let Some(stream) = self.calls.get_mut(&serial).and_then(|p| p.stream.as_mut()) else {
            // Data of a stream we aborted, still in flight: discard.
            return;
        };
        match (frame.header.kind, frame.header.status) {
            (MessageType::Credit, _) => match ferry_codec::Credit::decode(&frame.payload) {
                Ok(credit) if stream.direction.client_sends() => {
                    stream.link.deliver(FromPeer::Credit(credit.0))
                }
                Ok(_) => {}
                Err(e) => self.abort_stream(ctx, serial, e.to_string()),
            },
            (MessageType::Stream, Status::Ok) if frame.payload.len() > MAX_TRAILER => {
                let message = format!(
                    "a STREAM/OK trailer of {} bytes (at most {MAX_TRAILER})",
                    frame.payload.len()
                );
                self.abort_stream(ctx, serial, message)
            }
            (MessageType::Stream, Status::Ok) => {
                stream.link.deliver(FromPeer::Finish(frame.payload))
            }
            (MessageType::Stream, Status::Error) => {
                let body: ErrorBody =
                    ferry_codec::decode_message(&frame.payload).unwrap_or_default();
                stream
                    .link
                    .deliver(FromPeer::End(Some(CallError::from_body(body))));
            }
            _ if !stream.direction.server_sends() => self.abort_stream(
                ctx,
                serial,
                "stream data in a direction the server does not send".into(),
            ),
            _ => match admit_inbound(
                frame,
                self.credit
                    .allowance_mut(serial)
                    .expect("a download has a credit window"),
                max_chunk,
            ) {
                Ok(event) => {
                    stream.link.deliver(event);
                    // Credit spent is room in the connection's budget.
                    self.distribute(ctx);
                }
                Err(message) => self.abort_stream(ctx, serial, message),
            },
        }
    }

    /// The server broke the stream rules: abort the stream (the REPLY will still come).
    fn abort_stream<A: Owner>(&mut self, ctx: &mut Context<A>, serial: u32, message: String) {
        self.counters.protocol_violations.inc();
        warn!(parent: &self.span, serial, "protocol violation by the server: {message}");
        let error = CallError::new(
            ErrorCode::ProtocolViolation,
            Side::Client,
            Layer::Stream,
            message,
        );
        self.close_side(ctx, serial, Err(error));
    }

    /// Sends one of our closing STREAM frames: OK (finish, with its trailer, or confirmation,
    /// after the data on the stream's lane) or ERROR (abort, ahead of everything).
    fn close_side<A: Owner>(
        &mut self,
        ctx: &mut Context<A>,
        serial: u32,
        frame: Result<Bytes, CallError>,
    ) {
        let Some(pending) = self.calls.get_mut(&serial) else {
            return;
        };
        let route = pending.route;
        let Some(stream) = pending.stream.as_mut().filter(|s| s.open) else {
            return;
        };
        match frame {
            Ok(trailer) => {
                stream.oks_sent += 1;
                stream.open = stream.oks_sent < stream.direction.client_oks();
                let _ = self.outbox.send_data(
                    Frame::stream_finish_with(route, serial, trailer),
                    Room::none(),
                );
            }
            Err(error) => {
                stream.open = false;
                // Aborted: nothing more is granted to it.
                self.credit.stop(serial);
                stream.link.deliver(FromPeer::End(Some(error.clone())));
                self.send(ctx, Frame::stream_abort(route, serial, &error.to_body()));
            }
        }
    }

    /// The caller stopped waiting: if the call is still open, send CANCEL and keep the serial
    /// until the REPLY comes.
    pub fn abandon<A: Owner>(&mut self, ctx: &mut Context<A>, serial: u32, id: u64) {
        let Some(pending) = self.calls.get_mut(&serial) else {
            return;
        };
        if pending.id != id || pending.reply.take().is_none() {
            return;
        }
        self.counters.calls_cancelled.inc();
        if pending.stream.is_some() {
            let error = CallError::new(
                ErrorCode::Cancelled,
                Side::Client,
                Layer::Stream,
                "the client gave up on the stream",
            );
            return self.close_side(ctx, serial, Err(error));
        }
        let frame = Frame::cancel(pending.route, serial);
        self.send(ctx, frame);
    }

    /// A stream's notice: credit its consumer drained, its finish or confirmation, or its
    /// abort.
    pub fn on_notice<A: Owner>(&mut self, ctx: &mut Context<A>, msg: StreamNotice) {
        let serial = msg.serial;
        match msg.notice {
            Notice::Grant(grant) => {
                let Some(pending) = self.calls.get_mut(&serial) else {
                    return;
                };
                if pending.stream.is_some() {
                    self.credit.owe(serial, grant);
                    self.distribute(ctx);
                }
            }
            Notice::Finish(trailer) => self.close_side(ctx, serial, Ok(trailer)),
            Notice::Confirm => self.close_side(ctx, serial, Ok(Bytes::new())),
            Notice::Abort(error) => {
                self.counters.calls_cancelled.inc();
                self.close_side(ctx, serial, Err(error));
            }
        }
    }

    fn on_control<A: Owner>(&mut self, ctx: &mut Context<A>, message: ControlMessage) {
        match message {
            ControlMessage::Ping => self.send(ctx, ControlMessage::Pong.to_frame()),
            ControlMessage::Pong => self.pings.answered(),
            ControlMessage::Shutdown(notice) => {
                debug!(parent: &self.span, drain_millis = notice.drain_millis, "server is shutting down");
                self.closing.shutting_down(&notice);
            }
            ControlMessage::GoAway(body) => {
                let error = CallError::from_body(body);
                debug!(parent: &self.span, %error, "server said GOAWAY");
                self.fail_all(CallError::after_goaway(error));
                ctx.stop();
            }
        }
    }

    /// The connection ended: every call and stream in flight fails with `error`, and so does
    /// every later one.
    pub fn fail_all(&mut self, error: CallError) {
        self.pings.clear();
        self.closing.ended(&error);
        for (_, pending) in self.calls.drain() {
            if let Some(stream) = pending.stream {
                stream.link.deliver(FromPeer::End(Some(error.clone())));
            }
            if let Some(tx) = pending.reply {
                let _ = tx.send(Err(error.clone()));
            }
        }
        self.closing.refuse(error);
    }
}
