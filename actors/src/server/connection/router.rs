//! Routing of one server connection's frames by type and serial: a CALL opens a serial (after
//! the connection's limits and the caller's role admit it) and starts its call task; CANCEL,
//! STREAM, STREAM_HOLE and CREDIT go to the open serial they name; the one REPLY of each call
//! is sent here, so a serial is freed exactly when docs/PROTOCOL.md says. The state it routes
//! by has its own modules: the serial table ([`SerialTable`]), upload credit
//! ([`ReceiveCredit`]), the connection's identity ([`Access`]) and its way out ([`Closing`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::{ErrorBody, ErrorCode, Layer, Side};
use ferry_codec::{Credit, Frame, MAX_TRAILER, MessageType, Status};
use tracing::{debug, info_span, warn};

use crate::connection::credit::ReceiveCredit;
use crate::connection::report::Report;
use crate::connection::writer::Room;
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::identity::Identity;
use crate::memory;
use crate::metrics::ConnectionStats;
use crate::program::{CallContext, ConnectionContext, SetIdentity};
use crate::server::call::{CallDone, RunningCall};
use crate::server::connection::admission;
use crate::server::connection::identity::Access;
use crate::server::connection::serials::{OpenCall, OpenStream, SerialTable};
use crate::server::connection::shutdown::Closing;
use crate::server::shared::ServerShared;
use crate::stream::{self, FromPeer, Notice, StreamEnds, StreamNotice, StreamSetup, admit_inbound};

/// The actor a router works for: it takes the outcomes of calls, the notices of streams and
/// the identity the auth program establishes.
pub(super) trait Owner:
    Actor<Context = Context<Self>> + Handler<CallDone> + Handler<StreamNotice> + Handler<SetIdentity>
{
}

impl<A> Owner for A where
    A: Actor<Context = Context<A>>
        + Handler<CallDone>
        + Handler<StreamNotice>
        + Handler<SetIdentity>
{
}

/// Where a connection's calls and streams report: views of the connection's one shared
/// address ([`Report`]).
pub(super) struct Reports {
    pub done: Arc<dyn Report<CallDone>>,
    pub notices: Arc<dyn Report<StreamNotice>>,
}

impl Reports {
    pub fn new<A: Owner>(owner: &Arc<Addr<A>>) -> Self {
        Self {
            done: owner.clone(),
            notices: owner.clone(),
        }
    }
}

/// What one server connection routes by, and where its frames go.
pub(super) struct Router {
    pub shared: Arc<ServerShared>,
    pub span: tracing::Span,
    pub stats: Arc<ConnectionStats>,
    pub table: SerialTable,
    pub credit: ReceiveCredit,
    pub access: Access,
    pub closing: Closing,
    pub reports: Reports,
    /// What each call's [`CallContext`] shares, the connection's outbox and memory budget (what
    /// its data may hold: read blocks, download read-ahead) among them.
    pub context: Arc<ConnectionContext>,
}

impl Router {
    /// The auth program established who the peer is: later calls see the new identity.
    pub fn set_identity(&mut self, identity: Identity) {
        self.access.set(identity);
        self.context = Arc::new(ConnectionContext {
            identity: self.access.identity().cloned(),
            ..(*self.context).clone()
        });
    }

    /// Queues a control frame (`Outbox::send_or_pause`).
    pub fn send<A: Owner>(&self, ctx: &mut Context<A>, frame: Frame) {
        self.context.outbox.send_or_pause(ctx, frame);
    }

    pub fn refuse<A: Owner>(&self, ctx: &mut Context<A>, frame: &Frame, error: &CallError) {
        self.send(
            ctx,
            Frame::reply_error(frame.route(), frame.header.serial, &error.to_body()),
        );
    }

    /// A violation answered for one serial: on the CALL layer for the call as such (its CALL,
    /// a CANCEL, a REPLY from the client), on the STREAM layer for its stream's frames (data,
    /// holes, credit), as section 6.2 says.
    pub fn violation_error(&self, serial: u32, layer: Layer, message: String) -> CallError {
        self.shared.counters.protocol_violations.inc();
        warn!(parent: &self.span, serial, "protocol violation: {message}");
        CallError::new(ErrorCode::ProtocolViolation, Side::Server, layer, message)
    }

    /// Sends GOAWAY with `error`, flushes, and stops ([`Closing::close_with`]).
    pub fn close_with<A: Owner>(&mut self, ctx: &mut Context<A>, code: ErrorCode, message: String) {
        self.closing
            .close_with(ctx, &self.context.outbox, &self.span, code, message);
    }

    /// Pays owed upload credit as far as the connection's budget allows
    /// ([`ReceiveCredit::distribute`]).
    fn distribute<A: Owner>(&mut self, ctx: &mut Context<A>) {
        let outbox = &self.context.outbox;
        self.credit.distribute(|route, serial, grant| {
            outbox.send_or_pause(ctx, Frame::credit(route, serial, Credit(grant)));
        });
    }

    pub fn on_call<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
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
        } else if self.table.contains(&serial) {
            Some(self.violation_error(
                serial,
                Layer::Call,
                format!("serial {serial} is already open"),
            ))
        } else if self.closing.draining() {
            Some(CallError::new(
                ErrorCode::ShuttingDown,
                Side::Server,
                Layer::Connection,
                "the server is shutting down and takes no new calls",
            ))
        } else {
            admission::calls_in_flight(&self.shared, &self.table)
        };
        let refusal = refusal
            .or_else(|| self.access.authorize(&self.shared, frame.route()))
            .or_else(|| admission::stream_limits(&self.shared, &self.table, &frame));
        if let Some(error) = refusal {
            return self.refuse(ctx, &frame, &error);
        }
        let charge = match admission::charge_payload(&self.shared, &self.context.memory, &frame) {
            Ok(charge) => charge,
            Err(error) => return self.refuse(ctx, &frame, &error),
        };
        self.table.touch();
        let route = frame.route();
        let direction = self.shared.registry.direction(&frame);
        let mut ends = StreamEnds::default();
        let link = direction.is_stream().then(|| {
            let (link, opened) = stream::open(StreamSetup {
                halted: Arc::new(AtomicBool::new(false)),
                counters: self.shared.counters.clone(),
                serial,
                route,
                side: Side::Server,
                outbox: self.context.outbox.clone(),
                owner: self.reports.notices.clone(),
                window: self.shared.config.stream_window,
                max_chunk: self.shared.config.limits.max_chunk,
                receives: direction.client_sends(),
                sends: direction.server_sends(),
            });
            ends = opened;
            link
        });
        let context = CallContext::new(serial, route, self.context.clone());
        let handler = match self.shared.registry.dispatch(&frame, context, ends) {
            Ok(handler) => handler,
            Err(error) => return self.refuse(ctx, &frame, &error),
        };
        let names = self.shared.registry.names(route);
        let span = info_span!(parent: &self.span, "call", serial, program = %names.program, procedure = %names.procedure);
        let call = RunningCall::start(serial, self.reports.done.clone(), handler, span);
        // The first grant (which also accepts the stream) is the window, or what the
        // connection's budget has left (at least a grant step); the rest is owed.
        let first = if direction.client_sends() {
            self.credit.open(serial, route)
        } else {
            0
        };
        if first > 0 {
            self.send(ctx, Frame::credit(route, serial, Credit(first as u32)));
        }
        let stream = link.map(|link| OpenStream {
            link,
            direction,
            client_oks: 0,
            client_open: true,
            aborted_by_client: false,
        });
        self.table.insert(
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
        self.table.update_stats(&self.stats);
    }

    /// Sends the one REPLY of an open call, stops its handler and stream, and frees the
    /// serial unless the client still owes its last frame.
    pub fn conclude<A: Owner>(
        &mut self,
        ctx: &mut Context<A>,
        serial: u32,
        outcome: Result<Bytes, CallError>,
    ) {
        let Some(open) = self.table.get_mut(&serial) else {
            return;
        };
        let Some(call) = open.call.take() else {
            return;
        };
        // Answered: nothing more is granted to its upload.
        self.credit.stop(serial);
        let grace = open
            .stream
            .as_ref()
            .map(|_| self.shared.config.stream_abort_grace);
        call.stop(grace);
        let route = open.route;
        if let Some(stream) = &open.stream {
            stream.link.halt();
            stream
                .link
                .deliver(FromPeer::End(outcome.as_ref().err().cloned()));
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

    /// Frees a serial once its REPLY is out and the client sent its last frame.
    pub fn release_if_done<A: Owner>(&mut self, ctx: &mut Context<A>, serial: u32) {
        let done = self.table.get(&serial).is_some_and(|open| {
            open.call.is_none() && open.stream.as_ref().is_none_or(|s| !s.client_open)
        });
        if done {
            self.table.remove(&serial);
            self.credit.close(serial);
            self.distribute(ctx);
            self.table.update_stats(&self.stats);
            self.shared.counters.calls_in_flight.dec();
            self.table.touch();
            self.maybe_finish_drain(ctx);
        }
    }

    pub fn on_cancel<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        // A CANCEL for a serial that is not open raced with its REPLY: ignore it.
        if self
            .table
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

    pub fn on_stream_frame<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        let serial = frame.header.serial;
        let max_chunk = self.shared.config.limits.max_chunk;
        let Some(open) = self.table.get_mut(&serial) else {
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
                    stream.link.deliver(event);
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
            _ => match admit_inbound(
                frame,
                self.credit
                    .allowance_mut(serial)
                    .expect("an upload has a credit window"),
                max_chunk,
            ) {
                Ok(event) => {
                    stream.link.deliver(event);
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

    pub fn on_credit<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
        let serial = frame.header.serial;
        // Credit for a serial that is not open (or already answered) raced with its end.
        let Some(stream) = self
            .table
            .get(&serial)
            .filter(|open| open.call.is_some())
            .and_then(|open| open.stream.as_ref())
        else {
            return;
        };
        match ferry_codec::Credit::decode(&frame.payload) {
            Ok(Credit(grant)) if stream.direction.server_sends() => {
                stream.link.deliver(FromPeer::Credit(grant))
            }
            Ok(_) => {}
            Err(e) => {
                let error = self.violation_error(serial, Layer::Stream, e.to_string());
                self.conclude(ctx, serial, Err(error));
            }
        }
    }

    pub fn on_control<A: Owner>(&mut self, ctx: &mut Context<A>, message: ControlMessage) {
        match message {
            ControlMessage::Ping => self.send(ctx, ControlMessage::Pong.to_frame()),
            ControlMessage::Pong => {}
            ControlMessage::GoAway(body) => {
                debug!(parent: &self.span, message = %body.message, "client said GOAWAY");
                self.closing.wind_down(ctx, &self.context.outbox);
            }
            ControlMessage::Shutdown(_) => {
                self.shared.counters.protocol_violations.inc();
                warn!(parent: &self.span, "client sent SHUTDOWN, which only servers send");
            }
        }
    }

    pub fn on_frame<A: Owner>(&mut self, ctx: &mut Context<A>, frame: Frame) {
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

    pub fn maybe_finish_drain<A: Owner>(&mut self, ctx: &mut Context<A>) {
        if self.closing.draining() && self.table.is_empty() {
            self.close_with(ctx, ErrorCode::ShuttingDown, "server shut down".into());
        }
    }

    /// A stream's notice: credit its consumer drained, its finish, or its abort.
    pub fn on_notice<A: Owner>(&mut self, ctx: &mut Context<A>, msg: StreamNotice) {
        let serial = msg.serial;
        let Some(open) = self.table.get(&serial).filter(|open| open.call.is_some()) else {
            return;
        };
        let route = open.route;
        match msg.notice {
            Notice::Grant(grant) => {
                if open.stream.is_none() {
                    return;
                }
                self.credit.owe(serial, grant);
                self.distribute(ctx);
            }
            Notice::Finish(trailer) => {
                // After the stream's data on its lane, so it never overtakes a chunk.
                let _ = self.context.outbox.send_data(
                    Frame::stream_finish_with(route, serial, trailer),
                    Room::none(),
                );
            }
            Notice::Confirm => {}
            Notice::Abort(error) => self.conclude(ctx, serial, Err(error)),
        }
    }

    /// The connection is gone: every open call and stream ends with CONNECTION_LOST.
    pub fn connection_lost(&mut self) {
        let lost =
            CallError::connection_lost(Side::Server, "the connection to the client was lost");
        let grace = self.shared.config.stream_abort_grace;
        for (_, open) in self.table.drain() {
            if let Some(stream) = &open.stream {
                stream.link.deliver(FromPeer::End(Some(lost.clone())));
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
                call.stop(grace);
                self.shared.observer.call_finished(
                    open.route,
                    &self.shared.registry.names(open.route),
                    Some(ErrorCode::ConnectionLost),
                    open.started.elapsed(),
                );
            }
            self.shared.counters.calls_in_flight.dec();
        }
    }
}
