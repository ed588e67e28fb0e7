//! The server's connection actor: decodes frames, routes them by serial to call and stream
//! actors, owns the serial table and sends every REPLY, so a serial is freed exactly when
//! docs/PROTOCOL.md says.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Shutdown, Side};
use ferry_codec::{
    Credit, DecodeError, Frame, FrameCodec, MAX_TRAILER, MessageType, Route, Status,
};
use tracing::{debug, info_span, warn};

use crate::auth::{AuthProgram, Identity, Role};
use crate::connection::keepalive::{Keepalive, Tick};
use crate::connection::reader::FrameReader;
use crate::connection::transport::Transport;
use crate::connection::writer::{Outbox, Room, WriterStopped, spawn_writer};
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::memory::{self, Charge, MemoryBudget};
use crate::metrics::{ConnectionStats, Traffic};
use crate::program::{CallContext, SetIdentity, StreamEnds};
use crate::server::call::{CallActor, CallDone, StopCall};
use crate::server::{ConnectionSlot, ServerShared, ServerView};
use crate::stream::{
    Direction, FromPeer, Notice, StreamActor, StreamNotice, StreamSetup, admit_inbound,
};

/// How long a closing connection waits for its last frames (GOAWAY) to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A serial the server has not freed yet.
struct OpenCall {
    route: Route,
    started: Instant,
    /// The running handler; `None` once the REPLY was sent.
    call: Option<Addr<CallActor>>,
    stream: Option<OpenStream>,
    /// What the CALL's payload is charged to the connection's budget; the REPLY takes it on.
    charge: Option<Arc<Charge>>,
}

struct OpenStream {
    actor: Addr<StreamActor>,
    /// Tells the stream actor to send nothing more (set when the REPLY is queued).
    halted: Arc<AtomicBool>,
    direction: Direction,
    /// Credit the client may still spend on data for us.
    allowance: u64,
    /// Credit the consumer drained that is not yet granted back: held while the connection's
    /// streams together hold `connection_window` (see `ServerConnection::distribute`).
    owed: u64,
    /// STREAM/OK frames received from the client (its finish, then its confirmation).
    client_oks: u8,
    /// The client has not sent its last frame for this serial yet.
    client_open: bool,
    /// The client aborted the stream (so the REPLY/ERROR that follows is not a server abort).
    aborted_by_client: bool,
}

pub struct ServerConnection {
    id: u64,
    peer: Arc<str>,
    stats: Arc<ConnectionStats>,
    traffic: Traffic,
    shared: Arc<ServerShared>,
    outbox: Outbox,
    calls: HashMap<u32, OpenCall>,
    /// Streams with credit owed, in the order they are to be paid.
    owing: VecDeque<u32>,
    keepalive: Option<Keepalive>,
    got_first_frame: bool,
    last_call_activity: Instant,
    draining: bool,
    closing: bool,
    span: tracing::Span,
    /// Who the peer is; `None` until it authenticates (only with an auth config).
    identity: Option<Identity>,
    started: Instant,
    writer_task: tokio::task::JoinHandle<()>,
    /// What this connection's data may hold (read blocks, download read-ahead).
    memory: MemoryBudget,
    /// Held for the connection's life: its place in the connection limits.
    _slot: ConnectionSlot,
}

/// CALL payloads of at least this many bytes are charged to the connection's memory budget;
/// smaller ones are bounded by `max_in_flight_calls` (4 MiB per connection at most).
const CHARGED_CALL: usize = 4096;

impl ServerConnection {
    /// Starts the actor for an accepted socket on the current arbiter.
    pub fn start(
        id: u64,
        transport: Transport,
        shared: Arc<ServerShared>,
        slot: ConnectionSlot,
    ) -> Addr<Self> {
        Self::create(move |ctx| {
            let config = &shared.config;
            let codec = FrameCodec::new(config.limits);
            let memory =
                MemoryBudget::new(config.max_memory_per_connection, shared.counters.clone());
            ctx.add_stream(FrameReader::new(transport.read, codec, memory.clone()));
            let peer: Arc<str> = transport.peer.into();
            let stats = Arc::new(ConnectionStats::new(id, peer.clone()));
            let traffic = Traffic {
                total: shared.counters.clone(),
                connection: Some(stats.clone()),
            };
            let (outbox, writer) = Outbox::new(
                transport.write,
                config.write_queue,
                config.max_send_queue,
                traffic.clone(),
            );
            let writer_task = spawn_writer(writer, ctx.address());
            Self {
                id,
                span: info_span!("connection", id, peer = %peer),
                peer,
                stats,
                traffic,
                keepalive: config.keepalive.map(Keepalive::new),
                outbox,
                calls: HashMap::new(),
                owing: VecDeque::new(),
                got_first_frame: false,
                last_call_activity: Instant::now(),
                draining: false,
                closing: false,
                identity: match &shared.auth {
                    None => Some(Identity {
                        name: "anonymous".into(),
                        role: Role::Admin,
                    }),
                    Some(auth) => auth.initial(transport.peer_uid),
                },
                started: Instant::now(),
                writer_task,
                memory,
                shared,
                _slot: slot,
            }
        })
    }

    /// Queues a control frame without blocking the actor when there is room; otherwise pauses
    /// the actor (and so the reader) until the writer catches up: a peer that does not read
    /// its replies gets no more of its requests read.
    fn send(&self, ctx: &mut Context<Self>, frame: Frame) {
        if let Err(frame) = self.outbox.try_send(frame) {
            let outbox = self.outbox.clone();
            ctx.wait(actix::fut::wrap_future(async move {
                let _ = outbox.send(frame).await;
            }));
        }
    }

    fn refuse(&self, ctx: &mut Context<Self>, frame: &Frame, error: &CallError) {
        self.send(
            ctx,
            Frame::reply_error(frame.route(), frame.header.serial, &error.to_body()),
        );
    }

    /// Charges a large CALL's payload to the connection's memory budget, or refuses the call
    /// RESOURCE_EXHAUSTED when it does not fit. The charge is held with the call, then by its
    /// REPLY until that is written: a handler's answer is what it keeps of a large request
    /// (an echo, say), and without the charge a peer that sends large calls and never reads
    /// the replies makes the node hold `max_in_flight_calls` × `max_frame`, and then a full
    /// write queue of them. Refused rather than waited for: a wait would stop the reader, and
    /// with it the CREDIT frames that let downloads give their charges back.
    fn charge_payload(&self, frame: &Frame) -> Result<Option<Arc<Charge>>, CallError> {
        let len = frame.payload.len();
        if len < CHARGED_CALL {
            return Ok(None);
        }
        match self.memory.try_charge(len) {
            Some(charge) => Ok(Some(Arc::new(charge))),
            None => {
                self.shared.counters.limit_rejections.inc();
                self.shared.counters.memory_full.inc();
                Err(CallError::new(
                    ErrorCode::ResourceExhausted,
                    Side::Server,
                    Layer::Call,
                    format!(
                        "a call of {len} bytes does not fit in what this connection may hold now (max_memory_per_connection {})",
                        self.memory.limit()
                    ),
                ))
            }
        }
    }

    /// A violation answered for one serial: on the CALL layer for the call as such (its CALL,
    /// a CANCEL, a REPLY from the client), on the STREAM layer for its stream's frames (data,
    /// holes, credit), as section 6.2 says.
    fn violation_error(&self, serial: u32, layer: Layer, message: String) -> CallError {
        self.shared.counters.protocol_violations.inc();
        warn!(parent: &self.span, serial, "protocol violation: {message}");
        CallError::new(ErrorCode::ProtocolViolation, Side::Server, layer, message)
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

    /// The peer is done with the connection (it closed its side, or said GOAWAY): what is
    /// already queued is written, never a frame cut short, then the connection closes; the
    /// grace timer closes it anyway if the peer stops reading.
    fn wind_down(&mut self, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let outbox = self.outbox.clone();
        ctx.spawn(actix::fut::wrap_future(async move { outbox.close().await }));
        ctx.run_later(CLOSE_GRACE, |_, ctx| ctx.stop());
    }

    fn on_call(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        if serial == 0 {
            // Section 5: there is no call to answer on serial 0 (a REPLY there would read as
            // a connection frame), so the peer is told once, for the connection.
            self.shared.counters.protocol_violations.inc();
            return self.close_with(
                ctx,
                ErrorCode::ProtocolViolation,
                "a CALL on serial 0, which is reserved for the connection".into(),
            );
        }
        let refusal = if frame.header.status != Status::Ok {
            Some(self.violation_error(serial, Layer::Call, "CALL must have status OK".into()))
        } else if self.calls.contains_key(&serial) {
            Some(self.violation_error(
                serial,
                Layer::Call,
                format!("serial {serial} is already open"),
            ))
        } else if self.draining {
            Some(CallError::new(
                ErrorCode::ShuttingDown,
                Side::Server,
                Layer::Connection,
                "the server is shutting down and takes no new calls",
            ))
        } else if self.calls.len() >= self.shared.config.max_in_flight_calls {
            self.shared.counters.limit_rejections.inc();
            Some(CallError::new(
                ErrorCode::ResourceExhausted,
                Side::Server,
                Layer::Call,
                format!(
                    "{} calls already open on this connection (max_in_flight_calls)",
                    self.calls.len()
                ),
            ))
        } else {
            None
        };
        let refusal = refusal
            .or_else(|| self.authorize(frame.route()))
            .or_else(|| self.stream_limits(&frame));
        if let Some(error) = refusal {
            return self.refuse(ctx, &frame, &error);
        }
        let charge = match self.charge_payload(&frame) {
            Ok(charge) => charge,
            Err(error) => return self.refuse(ctx, &frame, &error),
        };
        self.last_call_activity = Instant::now();
        let route = frame.route();
        let direction = self.shared.registry.direction(&frame);
        let mut ends = StreamEnds::default();
        let halted = Arc::new(AtomicBool::new(false));
        let stream_actor = direction.is_stream().then(|| {
            let (actor, opened) = StreamActor::open(StreamSetup {
                halted: halted.clone(),
                counters: self.shared.counters.clone(),
                serial,
                route,
                side: Side::Server,
                outbox: self.outbox.clone(),
                owner: ctx.address().recipient(),
                window: self.shared.config.stream_window,
                max_chunk: self.shared.config.limits.max_chunk,
                receives: direction.client_sends(),
                sends: direction.server_sends(),
            });
            ends = opened;
            actor
        });
        let context = CallContext {
            serial,
            route,
            peer: self.peer.clone(),
            outbox: self.outbox.clone(),
            server: ServerView::new(self.shared.clone()),
            identity: self.identity.clone(),
            memory: self.memory.clone(),
            connection: ctx.address().recipient(),
        };
        let handler = match self.shared.registry.dispatch(&frame, context, ends) {
            Ok(handler) => handler,
            Err(error) => return self.refuse(ctx, &frame, &error),
        };
        let names = self.shared.registry.names(route);
        let span = info_span!(parent: &self.span, "call", serial, program = %names.program, procedure = %names.procedure);
        let call = CallActor::new(serial, ctx.address(), handler, span).start();
        let window = u64::from(self.shared.config.stream_window);
        // The first grant (which also accepts the stream) is the window, or what the
        // connection's budget has left (at least a grant step); the rest is owed.
        let first = if direction.client_sends() {
            window.min(self.budget_left().max(self.grant_floor()))
        } else {
            0
        };
        if first > 0 {
            self.send(ctx, Frame::credit(route, serial, Credit(first as u32)));
        }
        let stream = stream_actor.map(|actor| OpenStream {
            actor,
            halted,
            direction,
            allowance: first,
            owed: if direction.client_sends() {
                window - first
            } else {
                0
            },
            client_oks: 0,
            client_open: true,
            aborted_by_client: false,
        });
        if first < window && direction.client_sends() {
            self.owing.push_back(serial);
        }
        self.calls.insert(
            serial,
            OpenCall {
                route,
                started: Instant::now(),
                call: Some(call),
                stream,
                charge,
            },
        );
        self.shared.counters.calls_total.inc();
        self.shared.counters.calls_in_flight.inc();
        self.update_stats();
    }

    /// Whether this connection may make a call to `route`: the auth program is open to all;
    /// everything else needs an identity whose role is at least what the procedure requires.
    fn authorize(&self, route: Route) -> Option<CallError> {
        let auth = self.shared.auth.as_ref()?;
        if route.program == AuthProgram::NUMBER {
            return None;
        }
        let Some(identity) = &self.identity else {
            self.shared.counters.auth_refusals.inc();
            return Some(CallError::new(
                ErrorCode::Unauthenticated,
                Side::Server,
                Layer::Call,
                "authenticate first (the auth program); nothing else is reachable before",
            ));
        };
        // A program this server does not serve is answered UNKNOWN_PROGRAM (or _VERSION) by
        // the dispatcher, whatever the caller's role: only the identified get that far.
        if !self.shared.registry.serves(route.program, route.version) {
            return None;
        }
        let required = auth.authorizer.required(route);
        if identity.role < required {
            self.shared.counters.auth_refusals.inc();
            return Some(CallError::new(
                ErrorCode::PermissionDenied,
                Side::Server,
                Layer::Call,
                format!(
                    "{} has role {} but this procedure needs {}",
                    identity.name,
                    identity.role.as_str_name().to_lowercase(),
                    required.as_str_name().to_lowercase()
                ),
            ));
        }
        None
    }

    /// Whether a streaming CALL fits the connection's stream limits.
    fn stream_limits(&self, frame: &Frame) -> Option<CallError> {
        let direction = self.shared.registry.direction(frame);
        if !direction.is_stream() {
            return None;
        }
        let config = &self.shared.config;
        let streams: Vec<_> = self
            .calls
            .values()
            .filter_map(|open| open.stream.as_ref())
            .collect();
        let exhausted = |message: String| {
            self.shared.counters.limit_rejections.inc();
            Some(CallError::new(
                ErrorCode::ResourceExhausted,
                Side::Server,
                Layer::Stream,
                message,
            ))
        };
        if streams.len() >= config.max_streams_per_connection {
            return exhausted(format!(
                "{} streams already open on this connection (max_streams_per_connection)",
                streams.len()
            ));
        }
        if direction.client_sends() {
            let receiving = streams
                .iter()
                .filter(|s| s.direction.client_sends())
                .count() as u64;
            let window = u64::from(config.stream_window);
            if (receiving + 1) * window > config.max_buffered_per_connection {
                return exhausted(format!(
                    "{receiving} uploads of {window} bytes of window each already open on this connection (max_buffered_per_connection {})",
                    config.max_buffered_per_connection
                ));
            }
        }
        None
    }

    /// Keeps the admin figures of this connection current.
    fn update_stats(&self) {
        self.stats.calls_in_flight.set(self.calls.len() as u64);
        let streams = self
            .calls
            .values()
            .filter(|open| open.stream.is_some())
            .count();
        self.stats.streams_open.set(streams as u64);
    }

    /// Sends the one REPLY of an open call, stops its handler and stream, and frees the
    /// serial unless the client still owes its last frame.
    fn conclude(
        &mut self,
        ctx: &mut Context<Self>,
        serial: u32,
        outcome: Result<Bytes, CallError>,
    ) {
        let Some(open) = self.calls.get_mut(&serial) else {
            return;
        };
        let Some(call) = open.call.take() else {
            return;
        };
        let grace = open
            .stream
            .as_ref()
            .map(|_| self.shared.config.stream_abort_grace);
        call.do_send(StopCall { grace });
        let route = open.route;
        if let Some(stream) = &open.stream {
            stream.halted.store(true, Ordering::Relaxed);
            stream
                .actor
                .do_send(FromPeer::End(outcome.as_ref().err().cloned()));
            if let (Err(error), false) = (&outcome, stream.aborted_by_client) {
                self.shared.observer.stream_aborted(
                    route,
                    &self.shared.registry.names(route),
                    Side::Server,
                    error.code,
                );
            }
        }
        let code = outcome.as_ref().err().map(|error| error.code);
        self.shared.observer.call_finished(
            route,
            &self.shared.registry.names(route),
            code,
            open.started.elapsed(),
        );
        let charge = open.charge.take();
        let frame = match outcome {
            Ok(payload) => {
                let payload = match charge {
                    Some(charge) if !payload.is_empty() => memory::pin(payload, charge),
                    _ => payload,
                };
                Frame::reply_ok(route, serial, payload)
            }
            Err(error) => {
                self.shared.counters.calls_failed.inc();
                Frame::reply_error(route, serial, &error.to_body())
            }
        };
        self.send(ctx, frame);
        self.release_if_done(ctx, serial);
    }

    /// Credit the connection's streams may still be granted before they hold
    /// `connection_window` together.
    fn budget_left(&self) -> u64 {
        let held: u64 = self
            .calls
            .values()
            .filter_map(|open| open.stream.as_ref())
            .map(|stream| stream.allowance)
            .sum();
        let budget =
            (self.shared.config.connection_window).max(u64::from(self.shared.config.stream_window));
        budget.saturating_sub(held)
    }

    /// A stream may always hold this much credit, whatever the budget: a quarter window, the
    /// step in which consumers return credit. It keeps every stream moving (no stream waits
    /// for credit that idle streams hold) and caps the budget's overshoot.
    fn grant_floor(&self) -> u64 {
        u64::from(self.shared.config.stream_window / 4).max(1)
    }

    /// Pays owed credit, in turn, as far as the connection's budget allows. The budget bounds
    /// the bytes in flight towards this node on the connection, in the kernel's queues ahead of
    /// a small call's CALL; one stream alone still gets its whole window.
    fn distribute(&mut self, ctx: &mut Context<Self>) {
        if self.owing.is_empty() {
            return;
        }
        let floor = self.grant_floor();
        let mut left = self.budget_left();
        for _ in 0..self.owing.len() {
            let serial = self.owing.pop_front().expect("counted");
            let Some(open) = self
                .calls
                .get_mut(&serial)
                .filter(|open| open.call.is_some())
            else {
                continue;
            };
            let route = open.route;
            let Some(stream) = open.stream.as_mut().filter(|s| s.owed > 0) else {
                continue;
            };
            let grant = stream
                .owed
                .min(left.max(floor.saturating_sub(stream.allowance)));
            // Not in crumbs: a grant is worth a frame once it is a step, or all that is owed.
            let paid = grant > 0 && grant >= stream.owed.min(floor);
            if paid {
                stream.owed -= grant;
                stream.allowance += grant;
                left = left.saturating_sub(grant);
            }
            if stream.owed > 0 {
                self.owing.push_back(serial);
            }
            if paid {
                self.send(ctx, Frame::credit(route, serial, Credit(grant as u32)));
            }
        }
    }

    /// Frees a serial once its REPLY is out and the client sent its last frame.
    fn release_if_done(&mut self, ctx: &mut Context<Self>, serial: u32) {
        let done = self.calls.get(&serial).is_some_and(|open| {
            open.call.is_none() && open.stream.as_ref().is_none_or(|s| !s.client_open)
        });
        if done {
            self.calls.remove(&serial);
            self.distribute(ctx);
            self.update_stats();
            self.shared.counters.calls_in_flight.dec();
            self.last_call_activity = Instant::now();
            self.maybe_finish_drain(ctx);
        }
    }

    fn on_cancel(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        // A CANCEL for a serial that is not open raced with its REPLY: ignore it.
        if self
            .calls
            .get(&frame.header.serial)
            .is_some_and(|open| open.call.is_some())
        {
            self.shared.counters.calls_cancelled.inc();
            let error = CallError::new(
                ErrorCode::Cancelled,
                Side::Client,
                Layer::Call,
                "cancelled by the client",
            );
            self.conclude(ctx, frame.header.serial, Err(error));
        }
    }

    fn on_stream_frame(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        let max_chunk = self.shared.config.limits.max_chunk;
        let Some(open) = self.calls.get_mut(&serial) else {
            // Data for a serial that is not open breaks section 5; OK and ERROR race with a
            // refused CALL's REPLY by design.
            if frame.header.status == Status::Continue {
                self.shared.counters.protocol_violations.inc();
                debug!(parent: &self.span, serial, "stream data for a serial that is not open");
            }
            return;
        };
        let replied = open.call.is_none();
        let route = open.route;
        let Some(stream) = open.stream.as_mut() else {
            let error = self.violation_error(
                serial,
                Layer::Stream,
                "stream frame for a call that has no stream".into(),
            );
            return self.conclude(ctx, serial, Err(error));
        };
        match (frame.header.kind, frame.header.status) {
            (MessageType::Stream, Status::Error) => {
                stream.client_open = false;
                stream.aborted_by_client = true;
                let body: ErrorBody =
                    ferry_codec::decode_message(&frame.payload).unwrap_or_default();
                // Section 7.6: CANCELLED when the client's user cancelled, ABORTED for any
                // other reason (its sink failed, say); raised by the client either way.
                let code = match ErrorCode::try_from(body.code) {
                    Ok(ErrorCode::Cancelled) => ErrorCode::Cancelled,
                    _ => ErrorCode::Aborted,
                };
                let error = CallError::new(
                    code,
                    Side::Client,
                    Layer::Stream,
                    format!("the client aborted the stream: {}", body.message),
                );
                if replied {
                    self.release_if_done(ctx, serial);
                } else {
                    self.shared.counters.calls_cancelled.inc();
                    let code = ErrorCode::try_from(body.code).unwrap_or(ErrorCode::Internal);
                    self.shared.observer.stream_aborted(
                        route,
                        &self.shared.registry.names(route),
                        Side::Client,
                        code,
                    );
                    self.conclude(ctx, serial, Err(error));
                }
            }
            (MessageType::Stream, Status::Ok) if frame.payload.len() > MAX_TRAILER => {
                let error = self.violation_error(
                    serial,
                    Layer::Stream,
                    format!(
                        "a STREAM/OK trailer of {} bytes (at most {MAX_TRAILER})",
                        frame.payload.len()
                    ),
                );
                self.conclude(ctx, serial, Err(error));
            }
            (MessageType::Stream, Status::Ok) => {
                stream.client_oks += 1;
                let expected = stream.direction.client_oks();
                if stream.client_oks > expected {
                    let error = self.violation_error(
                        serial,
                        Layer::Stream,
                        "more STREAM/OK frames than the direction allows".into(),
                    );
                    return self.conclude(ctx, serial, Err(error));
                }
                if stream.client_oks == expected {
                    stream.client_open = false;
                }
                let event = if stream.direction.client_sends() && stream.client_oks == 1 {
                    FromPeer::Finish(frame.payload)
                } else {
                    FromPeer::Confirm
                };
                if replied {
                    self.release_if_done(ctx, serial);
                } else {
                    stream.actor.do_send(event);
                }
            }
            _ if replied => {} // draining an aborted stream: discard, bounded by credit
            _ if !stream.direction.client_sends() || stream.client_oks > 0 => {
                let error = self.violation_error(
                    serial,
                    Layer::Stream,
                    "stream data in a direction that is closed".into(),
                );
                self.conclude(ctx, serial, Err(error));
            }
            _ => match admit_inbound(frame, &mut stream.allowance, max_chunk) {
                Ok(event) => {
                    stream.actor.do_send(event);
                    // Credit spent is room in the connection's budget.
                    self.distribute(ctx);
                }
                Err(message) => {
                    let error = self.violation_error(serial, Layer::Stream, message);
                    self.conclude(ctx, serial, Err(error));
                }
            },
        }
    }

    fn on_credit(&mut self, ctx: &mut Context<Self>, frame: Frame) {
        let serial = frame.header.serial;
        // Credit for a serial that is not open (or already answered) raced with its end.
        let Some(stream) = self
            .calls
            .get(&serial)
            .filter(|open| open.call.is_some())
            .and_then(|open| open.stream.as_ref())
        else {
            return;
        };
        match ferry_codec::Credit::decode(&frame.payload) {
            Ok(Credit(grant)) if stream.direction.server_sends() => {
                stream.actor.do_send(FromPeer::Credit(grant))
            }
            Ok(_) => {}
            Err(e) => {
                let error = self.violation_error(serial, Layer::Stream, e.to_string());
                self.conclude(ctx, serial, Err(error));
            }
        }
    }

    fn on_control(&mut self, ctx: &mut Context<Self>, message: ControlMessage) {
        match message {
            ControlMessage::Ping => self.send(ctx, ControlMessage::Pong.to_frame()),
            ControlMessage::Pong => {}
            ControlMessage::GoAway(body) => {
                debug!(parent: &self.span, message = %body.message, "client said GOAWAY");
                self.wind_down(ctx);
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
        let (kind, status) = (frame.header.kind, frame.header.status);
        let allowed = match kind {
            MessageType::Cancel | MessageType::Credit => status == Status::Ok,
            MessageType::StreamHole => status == Status::Continue,
            _ => true,
        };
        if !allowed {
            // Section 4: answered for that serial only, if it is open.
            let serial = frame.header.serial;
            let layer = if kind == MessageType::Cancel {
                Layer::Call
            } else {
                Layer::Stream
            };
            let error = self.violation_error(
                serial,
                layer,
                format!("{kind:?} with status {status:?} is not allowed"),
            );
            return self.conclude(ctx, serial, Err(error));
        }
        match frame.header.kind {
            MessageType::Call => self.on_call(ctx, frame),
            MessageType::Cancel => self.on_cancel(ctx, frame),
            MessageType::Credit => self.on_credit(ctx, frame),
            MessageType::Stream | MessageType::StreamHole => self.on_stream_frame(ctx, frame),
            MessageType::Reply | MessageType::Message => {
                // Section 8: a violation for that serial, which ends its call if it is open;
                // on a serial that is not open there is nothing to answer (section 5).
                let serial = frame.header.serial;
                let error = self.violation_error(
                    serial,
                    Layer::Call,
                    format!("clients do not send {kind:?} frames (except control messages)"),
                );
                self.conclude(ctx, serial, Err(error));
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
            return self.close_with(
                ctx,
                ErrorCode::DeadlineExceeded,
                "no frame within the handshake timeout".into(),
            );
        }
        if let Some(auth) = &self.shared.auth
            && self.identity.is_none()
            && self.started.elapsed() >= auth.timeout
        {
            self.shared.counters.auth_refusals.inc();
            return self.close_with(
                ctx,
                ErrorCode::Unauthenticated,
                "not authenticated within the authentication timeout".into(),
            );
        }
        if self.calls.is_empty() && self.last_call_activity.elapsed() >= config.idle_timeout {
            self.close_with(ctx, ErrorCode::DeadlineExceeded, "idle timeout".into());
        }
    }
}

impl Actor for ServerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(parent: &self.span, "connected");
        self.shared
            .connections
            .lock()
            .unwrap()
            .insert(self.id, (ctx.address(), self.stats.clone()));
        if let Some(&drain) = self.shared.shutdown.get() {
            ctx.notify(BeginShutdown { drain });
        }
        let config = &self.shared.config;
        let period =
            (config.handshake_timeout.min(config.idle_timeout) / 4).max(Duration::from_millis(10));
        ctx.run_interval(period, |act, ctx| act.on_timer(ctx));
        if let Some(keepalive) = &self.keepalive {
            ctx.run_interval(keepalive.config().interval, |act, ctx| {
                let Some(keepalive) = act.keepalive.as_mut() else {
                    return;
                };
                match keepalive.tick() {
                    Tick::Quiet => {}
                    Tick::Ping => act.send(ctx, ControlMessage::Ping.to_frame()),
                    Tick::Dead => {
                        act.shared.counters.keepalive_timeouts.inc();
                        warn!(parent: &act.span, "keepalive: peer silent, closing");
                        // Best effort: a peer that was only frozen learns why when it wakes;
                        // one that is gone costs nothing more (the close grace stops this
                        // actor whether or not the GOAWAY is written).
                        act.close_with(
                            ctx,
                            ErrorCode::DeadlineExceeded,
                            "keepalive: the peer answered no PING".into(),
                        );
                    }
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.writer_task.abort();
        debug!(parent: &self.span, calls = self.calls.len(), "disconnected");
        let lost =
            CallError::connection_lost(Side::Server, "the connection to the client was lost");
        let grace = self.shared.config.stream_abort_grace;
        for (_, open) in self.calls.drain() {
            if let Some(stream) = &open.stream {
                stream.actor.do_send(FromPeer::End(Some(lost.clone())));
                if open.call.is_some() {
                    self.shared.observer.stream_aborted(
                        open.route,
                        &self.shared.registry.names(open.route),
                        Side::Client,
                        ErrorCode::ConnectionLost,
                    );
                }
            }
            if let Some(call) = open.call {
                let grace = open.stream.is_some().then_some(grace);
                call.do_send(StopCall { grace });
                self.shared.observer.call_finished(
                    open.route,
                    &self.shared.registry.names(open.route),
                    Some(ErrorCode::ConnectionLost),
                    open.started.elapsed(),
                );
            }
            self.shared.counters.calls_in_flight.dec();
        }
        self.shared.connections.lock().unwrap().remove(&self.id);
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
                self.traffic.received(&frame);
                self.on_frame(ctx, frame);
            }
            Err(DecodeError::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                // The peer closed its side inside a frame: a broken peer, told so like any
                // other, and given the whole frames already queued for it.
                self.shared.counters.protocol_violations.inc();
                self.close_with(ctx, ErrorCode::ProtocolViolation, error.to_string());
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

    /// The peer closed its side: nothing more will be asked, so calls stop, but what is
    /// already queued (replies included) is still written before the connection closes.
    fn finished(&mut self, ctx: &mut Self::Context) {
        self.wind_down(ctx);
    }
}

impl Handler<WriterStopped> for ServerConnection {
    type Result = ();

    fn handle(&mut self, _: WriterStopped, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<CallDone> for ServerConnection {
    type Result = ();

    fn handle(&mut self, done: CallDone, ctx: &mut Self::Context) {
        // A call answered meanwhile (cancelled, aborted) drops its late outcome.
        self.conclude(ctx, done.serial, done.outcome);
    }
}

impl Handler<StreamNotice> for ServerConnection {
    type Result = ();

    fn handle(&mut self, msg: StreamNotice, ctx: &mut Self::Context) {
        let serial = msg.serial;
        let Some(open) = self.calls.get(&serial).filter(|open| open.call.is_some()) else {
            return;
        };
        let route = open.route;
        match msg.notice {
            Notice::Grant(grant) => {
                let Some(stream) = self.calls.get_mut(&serial).and_then(|o| o.stream.as_mut())
                else {
                    return;
                };
                if stream.owed == 0 {
                    self.owing.push_back(serial);
                }
                stream.owed += u64::from(grant);
                self.distribute(ctx);
            }
            Notice::Finish(trailer) => {
                // After the stream's data on its lane, so it never overtakes a chunk.
                let _ = self.outbox.send_data(
                    Frame::stream_finish_with(route, serial, trailer),
                    Room::none(),
                );
            }
            Notice::Confirm => {}
            Notice::Abort(error) => self.conclude(ctx, serial, Err(error)),
        }
    }
}

impl Handler<SetIdentity> for ServerConnection {
    type Result = ();

    fn handle(&mut self, SetIdentity(identity): SetIdentity, _: &mut Self::Context) {
        debug!(parent: &self.span, name = %identity.name, role = ?identity.role, "authenticated");
        self.identity = Some(identity);
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

/// Close this connection now (admin "disconnect").
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect;

impl Handler<Disconnect> for ServerConnection {
    type Result = ();

    fn handle(&mut self, _: Disconnect, ctx: &mut Self::Context) {
        self.close_with(
            ctx,
            ErrorCode::Aborted,
            "disconnected by an administrator".into(),
        );
    }
}
