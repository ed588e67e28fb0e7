//! The client's connection actor: allocates serials, sends CALLs and CANCELs, and routes each
//! REPLY to the call waiting for it and each event to its subscribers.

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};
use ferry_codec::{
    Credit, DecodeError, Frame, FrameCodec, MAX_TRAILER, MessageType, Route, Status,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, warn};

use crate::config::ClientConfig;
use crate::connection::keepalive::{Keepalive, Tick};
use crate::connection::reader::FrameReader;
use crate::connection::transport::Transport;
use crate::connection::writer::{Outbox, Room, WriterStopped, spawn_writer};
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::memory::MemoryBudget;
use crate::metrics::{Counters, Traffic};
use crate::program::StreamEnds;
use crate::stream::{
    Direction, FromPeer, Notice, StreamActor, StreamNotice, StreamSetup, admit_inbound,
};
use std::sync::{Arc, OnceLock};

/// A call whose REPLY has not arrived yet.
struct Pending {
    route: Route,
    /// Tells this call apart from a later call that reuses the serial.
    id: u64,
    /// Where the REPLY goes; `None` once the caller gave up: the serial stays reserved until
    /// its REPLY arrives, which is then dropped.
    reply: Option<oneshot::Sender<Result<Bytes, CallError>>>,
    stream: Option<PendingStream>,
}

struct PendingStream {
    actor: Addr<StreamActor>,
    direction: Direction,
    /// Credit the server may still spend on data for us.
    allowance: u64,
    /// STREAM/OK frames we sent (our finish, then our confirmation).
    oks_sent: u8,
    /// We have not sent our last frame for this serial yet.
    open: bool,
}

/// How long a connection whose writes fail waits for the server's last frames (section 9.3 of
/// PROTOCOL.md: a GOAWAY comes before the close). They are already on this host by then.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_millis(500);

pub struct ClientConnection {
    config: ClientConfig,
    counters: Arc<Counters>,
    outbox: Outbox,
    pending: HashMap<u32, Pending>,
    next_serial: u32,
    next_call_id: u64,
    subscribers: Vec<Subscriber>,
    keepalive: Option<Keepalive>,
    /// The PINGs sent and not yet answered, oldest first (a peer answers each one, in order):
    /// `Some` for a [`Ping`] awaiting its PONG, `None` for a keepalive probe.
    pings: VecDeque<Option<oneshot::Sender<()>>>,
    /// Why the connection ended, first cause wins; shared with [`Client`](super::Client) so
    /// calls made after the actor stopped fail with it too.
    closed: Arc<OnceLock<CallError>>,
    /// Set by the server's SHUTDOWN notice, or by a local close: no new calls.
    refusing: Option<CallError>,
    span: tracing::Span,
    writer_task: tokio::task::JoinHandle<()>,
}

struct Subscriber {
    program: u32,
    procedure: u32,
    tx: mpsc::Sender<Frame>,
}

impl ClientConnection {
    pub fn start(
        transport: Transport,
        config: ClientConfig,
        counters: Arc<Counters>,
        closed: Arc<OnceLock<CallError>>,
    ) -> Addr<Self> {
        Self::create(move |ctx| {
            let codec = FrameCodec::new(config.limits);
            let memory = MemoryBudget::new(config.max_memory_per_connection, counters.clone());
            ctx.add_stream(FrameReader::new(transport.read, codec, memory));
            let traffic = Traffic {
                total: counters.clone(),
                connection: None,
            };
            let (outbox, writer) = Outbox::new(
                transport.write,
                config.write_queue,
                config.max_send_queue,
                traffic,
            );
            let writer_task = spawn_writer(writer, ctx.address());
            let keepalive = config.keepalive.map(Keepalive::new);
            if let Some(keepalive) = &keepalive {
                Self::watch_keepalive(ctx, keepalive);
            }
            Self {
                keepalive,
                span: info_span!("client", peer = %transport.peer),
                config,
                counters,
                outbox,
                pending: HashMap::new(),
                next_serial: 1,
                next_call_id: 0,
                subscribers: Vec::new(),
                pings: VecDeque::new(),
                closed,
                refusing: None,
                writer_task,
            }
        })
    }

    /// Ticks the keepalive, if there is one. Set up from `start` rather than from `started`:
    /// an actor dropped before its first poll (a command that fails locally right after
    /// connecting) runs `started` while the runtime shuts down, where no timer can be made.
    fn watch_keepalive(ctx: &mut Context<Self>, keepalive: &Keepalive) {
        ctx.run_interval(keepalive.config().interval, |act, ctx| {
            let Some(keepalive) = act.keepalive.as_mut() else {
                return;
            };
            match keepalive.tick() {
                Tick::Quiet => {}
                Tick::Ping => {
                    act.pings.push_back(None);
                    act.send(ctx, ControlMessage::Ping.to_frame());
                }
                Tick::Dead => {
                    act.counters.keepalive_timeouts.inc();
                    warn!(parent: &act.span, "keepalive: server silent, closing");
                    act.fail_all(CallError::connection_lost(
                        Side::Client,
                        "keepalive: no sign of life from the server",
                    ));
                    ctx.stop();
                }
            }
        });
    }

    fn send(&self, ctx: &mut Context<Self>, frame: Frame) {
        if let Err(frame) = self.outbox.try_send(frame) {
            let outbox = self.outbox.clone();
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = outbox.send(frame).await;
            }));
        }
    }

    /// The next serial not in use, skipping 0.
    fn allocate_serial(&mut self) -> u32 {
        loop {
            let serial = self.next_serial;
            self.next_serial = self.next_serial.wrapping_add(1).max(1);
            if !self.pending.contains_key(&serial) {
                return serial;
            }
        }
    }

    fn on_reply(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        let Some(pending) = self.pending.remove(&serial) else {
            self.counters.protocol_violations.inc();
            debug!(parent: &self.span, serial, "REPLY for a serial not in flight");
            return;
        };
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
                .actor
                .do_send(FromPeer::End(outcome.as_ref().err().cloned()));
        }
        if let Some(tx) = pending.reply {
            let _ = tx.send(outcome);
        }
    }

    fn on_stream_frame(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        let max_chunk = self.config.limits.max_chunk;
        let Some(stream) = self
            .pending
            .get_mut(&serial)
            .and_then(|p| p.stream.as_mut())
        else {
            // Data of a stream we aborted, still in flight: discard.
            return;
        };
        match (frame.header.kind, frame.header.status) {
            (MessageType::Credit, _) => match ferry_codec::Credit::decode(&frame.payload) {
                Ok(credit) if stream.direction.client_sends() => {
                    stream.actor.do_send(FromPeer::Credit(credit.0))
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
                stream.actor.do_send(FromPeer::Finish(frame.payload))
            }
            (MessageType::Stream, Status::Error) => {
                let body: ErrorBody =
                    ferry_codec::decode_message(&frame.payload).unwrap_or_default();
                stream
                    .actor
                    .do_send(FromPeer::End(Some(CallError::from_body(body))));
            }
            _ if !stream.direction.server_sends() => self.abort_stream(
                ctx,
                serial,
                "stream data in a direction the server does not send".into(),
            ),
            _ => match admit_inbound(frame, &mut stream.allowance, max_chunk) {
                Ok(event) => stream.actor.do_send(event),
                Err(message) => self.abort_stream(ctx, serial, message),
            },
        }
    }

    /// The server broke the stream rules: abort the stream (the REPLY will still come).
    fn abort_stream(&mut self, ctx: &mut Context<Self>, serial: u32, message: String) {
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
    fn close_side(
        &mut self,
        ctx: &mut Context<Self>,
        serial: u32,
        frame: Result<Bytes, CallError>,
    ) {
        let Some(pending) = self.pending.get_mut(&serial) else {
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
                stream.actor.do_send(FromPeer::End(Some(error.clone())));
                self.send(ctx, Frame::stream_abort(route, serial, &error.to_body()));
            }
        }
    }

    fn on_event(&mut self, frame: Frame) {
        let (program, procedure) = (frame.header.program, frame.header.procedure);
        self.subscribers.retain(|s| !s.tx.is_closed());
        for subscriber in &self.subscribers {
            if subscriber.program == program
                && subscriber.procedure == procedure
                && subscriber.tx.try_send(frame.clone()).is_err()
            {
                self.counters.events_dropped.inc();
            }
        }
    }

    fn on_control(&mut self, ctx: &mut Context<Self>, message: ControlMessage) {
        match message {
            ControlMessage::Ping => self.send(ctx, ControlMessage::Pong.to_frame()),
            ControlMessage::Pong => {
                if let Some(Some(waiter)) = self.pings.pop_front() {
                    let _ = waiter.send(());
                }
            }
            ControlMessage::Shutdown(notice) => {
                debug!(parent: &self.span, drain_millis = notice.drain_millis, "server is shutting down");
                self.refusing = Some(CallError::new(
                    ErrorCode::ShuttingDown,
                    Side::Server,
                    Layer::Connection,
                    format!("the server is shutting down: {}", notice.reason),
                ));
            }
            ControlMessage::GoAway(body) => {
                let error = CallError::from_body(body);
                debug!(parent: &self.span, %error, "server said GOAWAY");
                self.fail_all(CallError::after_goaway(error));
                ctx.stop();
            }
        }
    }

    fn fail_all(&mut self, error: CallError) {
        self.pings.clear();
        let _ = self.closed.set(error.clone());
        for (_, pending) in self.pending.drain() {
            if let Some(stream) = pending.stream {
                stream.actor.do_send(FromPeer::End(Some(error.clone())));
            }
            if let Some(tx) = pending.reply {
                let _ = tx.send(Err(error.clone()));
            }
        }
        self.refusing.get_or_insert(error);
    }
}

impl Actor for ClientConnection {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.writer_task.abort();
        self.fail_all(CallError::connection_lost(
            Side::Client,
            "the connection was closed",
        ));
    }
}

impl StreamHandler<Result<Frame, DecodeError>> for ClientConnection {
    fn handle(&mut self, item: Result<Frame, DecodeError>, ctx: &mut Self::Context) {
        let frame = match item {
            Ok(frame) => frame,
            Err(error) => {
                warn!(parent: &self.span, %error, "reading from the server failed");
                self.fail_all(CallError::connection_lost(
                    Side::Client,
                    format!("reading from the server: {error}"),
                ));
                return ctx.stop();
            }
        };
        if let Some(keepalive) = &mut self.keepalive {
            keepalive.received();
        }
        Traffic {
            total: self.counters.clone(),
            connection: None,
        }
        .received(&frame);
        if let Some(message) = ControlMessage::parse(&frame) {
            return self.on_control(ctx, message);
        }
        match frame.header.kind {
            MessageType::Reply => self.on_reply(ctx, frame),
            MessageType::Message => self.on_event(frame),
            MessageType::Stream | MessageType::StreamHole | MessageType::Credit => {
                self.on_stream_frame(ctx, frame)
            }
            kind => {
                self.counters.protocol_violations.inc();
                debug!(parent: &self.span, ?kind, serial = frame.header.serial, "unexpected frame from the server");
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.fail_all(CallError::connection_lost(
            Side::Client,
            "the server closed the connection",
        ));
        ctx.stop();
    }
}

impl Handler<WriterStopped> for ClientConnection {
    type Result = ();

    /// A write failed: the server closed or reset the connection. Its last frames may still be
    /// unread (a GOAWAY saying why: a limit, a shutdown), so the reader gets a moment to reach
    /// them, or the end of the stream, before the calls fail for a reason less precise.
    fn handle(&mut self, _: WriterStopped, ctx: &mut Self::Context) {
        ctx.run_later(LAST_WORDS, |act, ctx| {
            act.fail_all(CallError::connection_lost(
                Side::Client,
                "writing to the server failed",
            ));
            ctx.stop();
        });
    }
}

/// Start a call: allocate a serial, remember where its REPLY goes, queue the CALL.
#[derive(Message)]
#[rtype(result = "Result<Began, CallError>")]
pub struct Begin {
    pub route: Route,
    pub direction: Direction,
    pub payload: Bytes,
    pub reply: oneshot::Sender<Result<Bytes, CallError>>,
    /// Resolves when the caller stops waiting (its future completed or was dropped); if the
    /// REPLY has not come by then, the call is cancelled.
    pub caller_gone: oneshot::Receiver<()>,
}

/// A call that was sent: what the caller needs to follow it up.
pub struct Began {
    pub serial: u32,
    /// Tells this call apart from a later one on the same serial.
    pub id: u64,
    pub ends: StreamEnds,
}

impl Handler<Begin> for ClientConnection {
    type Result = Result<Began, CallError>;

    fn handle(&mut self, begin: Begin, ctx: &mut Self::Context) -> Self::Result {
        if let Some(error) = &self.refusing {
            return Err(error.clone());
        }
        let serial = self.allocate_serial();
        let id = self.next_call_id;
        self.next_call_id += 1;
        let (route, direction) = (begin.route, begin.direction);
        self.counters.calls_total.inc();
        self.send(ctx, Frame::call(route, serial, begin.payload));
        let mut ends = StreamEnds::default();
        let stream = direction.is_stream().then(|| {
            let window = self.config.stream_window;
            let (actor, opened) = StreamActor::open(StreamSetup {
                halted: Arc::default(),
                counters: self.counters.clone(),
                serial,
                route,
                side: Side::Client,
                outbox: self.outbox.clone(),
                owner: ctx.address().recipient(),
                window,
                max_chunk: self.config.limits.max_chunk,
                receives: direction.server_sends(),
                sends: direction.client_sends(),
            });
            ends = opened;
            if direction.server_sends() {
                self.send(ctx, Frame::credit(route, serial, Credit(window)));
            }
            PendingStream {
                actor,
                direction,
                allowance: if direction.server_sends() {
                    u64::from(window)
                } else {
                    0
                },
                oks_sent: 0,
                open: true,
            }
        });
        self.pending.insert(
            serial,
            Pending {
                route,
                id,
                reply: Some(begin.reply),
                stream,
            },
        );
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(begin.caller_gone)
                .map(move |_, act, ctx| act.abandon(ctx, serial, id)),
        );
        Ok(Began { serial, id, ends })
    }
}

/// The caller dropped a stream. Sent through the mailbox, so it is handled before any call
/// the caller makes afterwards: a round trip after it proves the abort went out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandon {
    pub serial: u32,
    pub id: u64,
}

impl Handler<Abandon> for ClientConnection {
    type Result = ();

    fn handle(&mut self, msg: Abandon, ctx: &mut Self::Context) {
        self.abandon(ctx, msg.serial, msg.id);
    }
}

impl ClientConnection {
    /// The caller stopped waiting: if the call is still open, send CANCEL and keep the serial
    /// until the REPLY comes.
    fn abandon(&mut self, ctx: &mut Context<Self>, serial: u32, id: u64) {
        let Some(pending) = self.pending.get_mut(&serial) else {
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
}

impl Handler<StreamNotice> for ClientConnection {
    type Result = ();

    fn handle(&mut self, msg: StreamNotice, ctx: &mut Self::Context) {
        let serial = msg.serial;
        match msg.notice {
            Notice::Grant(grant) => {
                let Some(pending) = self.pending.get_mut(&serial) else {
                    return;
                };
                let route = pending.route;
                if let Some(stream) = pending.stream.as_mut() {
                    stream.allowance += u64::from(grant);
                    self.send(ctx, Frame::credit(route, serial, Credit(grant)));
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
}

/// Receive MESSAGE frames of one program and procedure.
#[derive(Message)]
#[rtype(result = "Result<mpsc::Receiver<Frame>, CallError>")]
pub struct Subscribe {
    pub program: u32,
    pub procedure: u32,
}

impl Handler<Subscribe> for ClientConnection {
    type Result = Result<mpsc::Receiver<Frame>, CallError>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue);
        self.subscribers.push(Subscriber {
            program: msg.program,
            procedure: msg.procedure,
            tx,
        });
        Ok(rx)
    }
}

/// Send a keepalive PING; the receiver resolves on its PONG, or fails if the connection ends
/// first.
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<()>, CallError>")]
pub struct Ping;

impl Handler<Ping> for ClientConnection {
    type Result = Result<oneshot::Receiver<()>, CallError>;

    fn handle(&mut self, _: Ping, ctx: &mut Self::Context) -> Self::Result {
        if let Some(error) = &self.refusing {
            return Err(error.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.pings.push_back(Some(tx));
        self.send(ctx, ControlMessage::Ping.to_frame());
        Ok(rx)
    }
}

/// Close the connection: calls in flight fail with CONNECTION_LOST.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close;

impl Handler<Close> for ClientConnection {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Self::Context) {
        self.fail_all(CallError::connection_lost(
            Side::Client,
            "the client closed the connection",
        ));
        ctx.stop();
    }
}
