//! The server's connection actor: decodes frames, routes them by serial to call actors, owns
//! the serial table and sends every REPLY, so a serial is freed before its REPLY is queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use ferry_codec::proto::{ErrorCode, Layer, Shutdown, Side};
use ferry_codec::{DecodeError, Frame, FrameCodec, MessageType, Status};
use tokio_util::codec::FramedRead;
use tracing::{debug, info_span, warn};

use crate::connection::keepalive::{Keepalive, Tick};
use crate::connection::transport::Transport;
use crate::connection::writer::Outbox;
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::program::CallContext;
use crate::server::ServerShared;
use crate::server::call::{CallActor, CallDone, StopCall};

/// How long a closing connection waits for its last frames (GOAWAY) to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes the reader asks the kernel for at a time; large enough for a 256 KiB chunk.
const READ_CAPACITY: usize = 512 * 1024;

pub struct ServerConnection {
    id: u64,
    peer: Arc<str>,
    shared: Arc<ServerShared>,
    outbox: Outbox,
    calls: HashMap<u32, Addr<CallActor>>,
    keepalive: Option<Keepalive>,
    got_first_frame: bool,
    last_call_activity: Instant,
    draining: bool,
    closing: bool,
    span: tracing::Span,
}

impl ServerConnection {
    /// Starts the actor for an accepted socket on the current arbiter.
    pub fn start(id: u64, transport: Transport, shared: Arc<ServerShared>) -> Addr<Self> {
        Self::create(move |ctx| {
            let config = &shared.config;
            let codec = FrameCodec::new(config.limits);
            ctx.add_stream(FramedRead::with_capacity(transport.read, codec, READ_CAPACITY));
            let (outbox, writer) =
                Outbox::new(transport.write, config.write_queue, shared.counters.clone());
            ctx.spawn(actix::fut::wrap_future::<_, Self>(writer).map(|result, act, ctx| {
                if let Err(error) = result {
                    debug!(parent: &act.span, %error, "writer stopped");
                }
                ctx.stop();
            }));
            Self {
                id,
                span: info_span!("connection", id, peer = %transport.peer),
                peer: transport.peer.into(),
                keepalive: config.keepalive.map(Keepalive::new),
                outbox,
                calls: HashMap::new(),
                got_first_frame: false,
                last_call_activity: Instant::now(),
                draining: false,
                closing: false,
                shared,
            }
        })
    }

    /// Queues a frame without blocking the actor when there is room; otherwise pauses the
    /// actor (and so the reader) until the writer catches up: a peer that does not read its
    /// replies gets no more of its requests read.
    fn send(&self, ctx: &mut Context<Self>, frame: Frame) {
        if let Err(frame) = self.outbox.try_send(frame) {
            let outbox = self.outbox.clone();
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = outbox.send(frame).await;
            }));
        }
    }

    fn reply_error(&self, ctx: &mut Context<Self>, frame: &Frame, error: &CallError) {
        self.send(ctx, Frame::reply_error(frame.route(), frame.header.serial, &error.to_body()));
    }

    fn violation(&self, ctx: &mut Context<Self>, frame: &Frame, message: String) {
        self.shared.counters.protocol_violations.inc();
        warn!(parent: &self.span, serial = frame.header.serial, "protocol violation: {message}");
        let error = CallError::new(ErrorCode::ProtocolViolation, Side::Server, Layer::Call, message);
        self.reply_error(ctx, frame, &error);
    }

    /// Sends GOAWAY with `error`, flushes, and stops; the grace timer stops the actor even if
    /// the peer never reads.
    fn close_with(&mut self, ctx: &mut Context<Self>, code: ErrorCode, message: String) {
        if self.closing {
            return;
        }
        self.closing = true;
        debug!(parent: &self.span, ?code, "closing: {message}");
        let body = CallError::new(code, Side::Server, Layer::Connection, message).to_body();
        let outbox = self.outbox.clone();
        ctx.spawn(actix::fut::wrap_future(async move {
            let _ = outbox.send(ControlMessage::GoAway(body).to_frame()).await;
            outbox.close().await;
        }));
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    fn on_call(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        if frame.header.status != Status::Ok {
            return self.violation(ctx, &frame, "CALL must have status OK".into());
        }
        if serial == 0 {
            return self.violation(ctx, &frame, "serial 0 is reserved for the connection".into());
        }
        if self.calls.contains_key(&serial) {
            return self.violation(ctx, &frame, format!("serial {serial} is already in flight"));
        }
        if self.draining {
            let error = CallError::new(
                ErrorCode::ShuttingDown,
                Side::Server,
                Layer::Connection,
                "the server is shutting down and takes no new calls",
            );
            return self.reply_error(ctx, &frame, &error);
        }
        if self.calls.len() >= self.shared.config.max_in_flight_calls {
            self.shared.counters.limit_rejections.inc();
            let error = CallError::new(
                ErrorCode::ResourceExhausted,
                Side::Server,
                Layer::Call,
                format!(
                    "{} calls already in flight on this connection (max_in_flight_calls)",
                    self.calls.len()
                ),
            );
            return self.reply_error(ctx, &frame, &error);
        }
        self.last_call_activity = Instant::now();
        let route = frame.route();
        let context = CallContext {
            serial,
            route,
            peer: self.peer.clone(),
            outbox: self.outbox.clone(),
        };
        let handler = match self.shared.registry.dispatch(&frame, context) {
            Ok(handler) => handler,
            Err(error) => return self.reply_error(ctx, &frame, &error),
        };
        let span = info_span!(parent: &self.span, "call", serial, program = route.program, procedure = route.procedure);
        let call = CallActor::new(serial, route, ctx.address(), handler, span).start();
        self.calls.insert(serial, call);
        self.shared.counters.calls_total.inc();
        self.shared.counters.calls_in_flight.inc();
    }

    /// Forgets a serial; from here on its REPLY may be sent.
    fn finish_call(&mut self, serial: u32) -> Option<Addr<CallActor>> {
        let call = self.calls.remove(&serial)?;
        self.shared.counters.calls_in_flight.dec();
        self.last_call_activity = Instant::now();
        Some(call)
    }

    fn on_cancel(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        // A CANCEL for a serial that is not open raced with its REPLY: ignore it.
        let Some(call) = self.finish_call(serial) else {
            return;
        };
        call.do_send(StopCall);
        self.shared.counters.calls_cancelled.inc();
        let error = CallError::new(
            ErrorCode::Cancelled,
            Side::Server,
            Layer::Call,
            "cancelled by the client",
        );
        self.reply_error(ctx, &frame, &error);
        self.maybe_finish_drain(ctx);
    }

    fn on_control(&mut self, ctx: &mut Context<Self>, message: ControlMessage) {
        match message {
            ControlMessage::Ping => self.send(ctx, ControlMessage::Pong.to_frame()),
            ControlMessage::Pong => {}
            ControlMessage::GoAway(body) => {
                debug!(parent: &self.span, message = %body.message, "client said GOAWAY");
                ctx.stop();
            }
            ControlMessage::Shutdown(_) => {
                self.shared.counters.protocol_violations.inc();
                warn!(parent: &self.span, "client sent SHUTDOWN, which only servers send");
            }
        }
    }

    fn on_frame(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        if let Some(message) = ControlMessage::parse(&frame) {
            return self.on_control(ctx, message);
        }
        match frame.header.kind {
            MessageType::Call => self.on_call(ctx, frame),
            MessageType::Cancel => self.on_cancel(ctx, frame),
            // No stream is open on any serial yet: credit races are ignored, and stream data
            // for a serial that has no stream is discarded and counted.
            MessageType::Credit => {}
            MessageType::Stream | MessageType::StreamHole => {
                self.shared.counters.protocol_violations.inc();
                debug!(parent: &self.span, serial = frame.header.serial, "stream frame for a serial with no stream");
            }
            MessageType::Reply | MessageType::Message => {
                self.shared.counters.protocol_violations.inc();
                warn!(parent: &self.span, kind = ?frame.header.kind, "clients do not send this type");
            }
        }
    }

    fn maybe_finish_drain(&mut self, ctx: &mut Context<Self>) {
        if self.draining && self.calls.is_empty() {
            self.close_with(ctx, ErrorCode::ShuttingDown, "server shut down".into());
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let config = &self.shared.config;
        if !self.got_first_frame && self.last_call_activity.elapsed() >= config.handshake_timeout {
            self.shared.counters.limit_rejections.inc();
            return self.close_with(ctx, ErrorCode::DeadlineExceeded, "no frame within the handshake timeout".into());
        }
        if self.calls.is_empty() && self.last_call_activity.elapsed() >= config.idle_timeout {
            return self.close_with(ctx, ErrorCode::DeadlineExceeded, "idle timeout".into());
        }
    }
}

impl Actor for ServerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(parent: &self.span, "connected");
        self.shared.connections.lock().unwrap().insert(self.id, ctx.address());
        if let Some(&drain) = self.shared.shutdown.get() {
            ctx.notify(BeginShutdown { drain });
        }
        let config = &self.shared.config;
        let period = (config.handshake_timeout.min(config.idle_timeout) / 4).max(Duration::from_millis(10));
        ctx.run_interval(period, |act, ctx| act.on_timer(ctx));
        if let Some(keepalive) = &self.keepalive {
            ctx.run_interval(keepalive.config().interval, |act, ctx| {
                let Some(keepalive) = act.keepalive.as_mut() else { return };
                match keepalive.tick() {
                    Tick::Quiet => {}
                    Tick::Ping => act.send(ctx, ControlMessage::Ping.to_frame()),
                    Tick::Dead => {
                        act.shared.counters.keepalive_timeouts.inc();
                        warn!(parent: &act.span, "keepalive: peer silent, closing");
                        ctx.stop();
                    }
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        debug!(parent: &self.span, calls = self.calls.len(), "disconnected");
        for serial in self.calls.keys().copied().collect::<Vec<_>>() {
            if let Some(call) = self.finish_call(serial) {
                call.do_send(StopCall);
            }
        }
        self.shared.connections.lock().unwrap().remove(&self.id);
        self.shared.counters.connections_open.dec();
    }
}

impl StreamHandler<Result<Frame, DecodeError>> for ServerConnection {
    fn handle(&mut self, item: Result<Frame, DecodeError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        match item {
            Ok(frame) => {
                self.got_first_frame = true;
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.received();
                }
                self.shared.counters.frames_in.inc();
                self.shared.counters.bytes_in.add(frame.wire_len() as u64);
                self.on_frame(ctx, frame);
            }
            Err(DecodeError::Io(error)) => {
                debug!(parent: &self.span, %error, "read failed");
                ctx.stop();
            }
            Err(error) => {
                self.shared.counters.protocol_violations.inc();
                self.close_with(ctx, ErrorCode::ProtocolViolation, error.to_string());
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        if !self.closing {
            ctx.stop();
        }
    }
}

impl Handler<CallDone> for ServerConnection {
    type Result = ();

    fn handle(&mut self, done: CallDone, ctx: &mut Self::Context) {
        // A call cancelled meanwhile was already answered; its late outcome is dropped.
        let Some(call) = self.finish_call(done.serial) else {
            return;
        };
        drop(call);
        let route = done.route;
        let frame = match done.outcome {
            Ok(payload) => Frame::reply_ok(route, done.serial, payload),
            Err(error) => {
                self.shared.counters.calls_failed.inc();
                Frame::reply_error(route, done.serial, &error.to_body())
            }
        };
        self.send(ctx, frame);
        self.maybe_finish_drain(ctx);
    }
}

/// Begin draining: tell the client, refuse new calls, close once open calls are done or the
/// drain time is over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginShutdown {
    pub drain: Duration,
}

impl Handler<BeginShutdown> for ServerConnection {
    type Result = ();

    fn handle(&mut self, msg: BeginShutdown, ctx: &mut Self::Context) {
        if self.draining {
            return;
        }
        self.draining = true;
        let notice = Shutdown {
            drain_millis: msg.drain.as_millis() as u64,
            reason: "server shutting down".into(),
        };
        self.send(ctx, ControlMessage::Shutdown(notice).to_frame());
        self.maybe_finish_drain(ctx);
        ctx.run_later(msg.drain, |act, ctx| {
            act.close_with(ctx, ErrorCode::ShuttingDown, "drain time is over".into())
        });
    }
}
