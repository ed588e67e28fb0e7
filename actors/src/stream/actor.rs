//! The per-stream actor. It owns everything about one stream on one side: the chunks received
//! and not yet consumed, the credit this side may still spend, and the waiters of the handles.
//! The connection owns the serial and the credit it granted; it forwards frames here only when
//! they fit that credit, so this actor's mailbox and queue never hold more than the window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::{ErrorCode, Layer, Side};
use ferry_codec::{Frame, HOLE_LEN, Hole, MIN_FRAME_LEN, Route};
use tokio::sync::oneshot;

use crate::connection::writer::{Outbox, Room};
use crate::error::CallError;
use crate::metrics::Counters;
use crate::stream::Chunk;

/// What a stream tells its connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StreamNotice {
    pub serial: u32,
    pub notice: Notice,
}

pub enum Notice {
    /// The consumer drained this many bytes of credit: grant them to the peer.
    Grant(u32),
    /// This side has sent all its data: queue STREAM/OK after it, carrying this trailer.
    Finish(Bytes),
    /// (Client) the peer's finish was received and the sink committed: queue STREAM/OK.
    Confirm,
    /// (Client) the user gave up on the stream: abort it.
    Abort(CallError),
}

/// Frames and events from the peer, already checked against credit by the connection.
#[derive(Message)]
#[rtype(result = "()")]
pub enum FromPeer {
    Data {
        bytes: Bytes,
        cost: u32,
    },
    Hole {
        length: u64,
        /// The KEEP flag: a range of the receiver's base, not zeros.
        keep: bool,
        cost: u32,
    },
    /// The peer sent all its data; its finish carried this trailer (often empty).
    Finish(Bytes),
    /// (Server) the client confirmed our finish.
    Confirm,
    Credit(u32),
    /// The call is over: its REPLY came or went, or the connection died. `None` for a REPLY/OK.
    End(Option<CallError>),
}

type Waiter<T> = oneshot::Sender<Result<T, CallError>>;

#[derive(Default)]
struct Receiving {
    queue: VecDeque<(Chunk, u32)>,
    finished: bool,
    waiter: Option<Waiter<Option<Chunk>>>,
    /// Credit drained by the consumer and not yet granted back.
    drained: u64,
    /// The local consumer dropped its handle: data is discarded.
    abandoned: bool,
    /// The payload of the peer's finish, once it came.
    trailer: Bytes,
}

#[derive(Default)]
struct Sending {
    credit: u64,
    /// Room in the connection's send queue reserved for the next frame.
    room: Option<Room>,
    /// A reservation is pending: the send queue was full.
    awaiting_room: bool,
    /// Data waiting for credit, and who to tell once it is all queued.
    blocked: Option<(Chunk, Waiter<()>)>,
    finished: bool,
    /// (Server) waiting for the client's confirmation of our finish.
    confirming: Option<Waiter<()>>,
}

pub struct StreamActor {
    counters: Arc<Counters>,
    halted: Arc<AtomicBool>,
    serial: u32,
    route: Route,
    side: Side,
    outbox: Outbox,
    owner: Recipient<StreamNotice>,
    window: u32,
    max_chunk: u32,
    receiving: Option<Receiving>,
    sending: Option<Sending>,
    /// Why the stream ended, once it has; every later request is answered with it.
    ended: Option<CallError>,
}

/// Stream settings fixed when the stream opens.
pub struct StreamSetup {
    pub counters: Arc<Counters>,
    /// Set by the connection when the call's REPLY is queued: from then on the stream sends
    /// nothing, even for credit that was already in its mailbox (the REPLY is a serial's last
    /// frame).
    pub halted: Arc<AtomicBool>,
    pub serial: u32,
    pub route: Route,
    pub side: Side,
    pub outbox: Outbox,
    pub owner: Recipient<StreamNotice>,
    pub window: u32,
    pub max_chunk: u32,
    pub receives: bool,
    pub sends: bool,
}

impl StreamActor {
    pub(crate) fn new(setup: StreamSetup) -> Self {
        Self {
            counters: setup.counters,
            halted: setup.halted,
            serial: setup.serial,
            route: setup.route,
            side: setup.side,
            outbox: setup.outbox,
            owner: setup.owner,
            window: setup.window,
            max_chunk: setup.max_chunk,
            receiving: setup.receives.then(Receiving::default),
            sending: setup.sends.then(Sending::default),
            ended: None,
        }
    }

    fn error(&self, code: ErrorCode, message: &str) -> CallError {
        CallError::new(code, self.side, Layer::Stream, message)
    }

    fn notify(&self, notice: Notice) {
        self.owner.do_send(StreamNotice {
            serial: self.serial,
            notice,
        });
    }

    /// Hands the next chunk to a waiting consumer and grants back the credit it frees.
    fn deliver(&mut self) {
        let Some(receiving) = self.receiving.as_mut() else {
            return;
        };
        if receiving.waiter.is_none() {
            return;
        }
        let outcome = if let Some((chunk, cost)) = receiving.queue.pop_front() {
            receiving.drained += u64::from(cost);
            self.counters.stream_buffered_bytes.sub(u64::from(cost));
            Ok(Some(chunk))
        } else if receiving.finished {
            Ok(None)
        } else if let Some(error) = &self.ended {
            Err(error.clone())
        } else {
            return;
        };
        let _ = receiving.waiter.take().expect("checked").send(outcome);
        // Grant in steps of a quarter window: fewer CREDIT frames, and the sender never runs
        // dry while the consumer keeps up.
        if receiving.drained >= u64::from(self.window / 4).max(1) && self.ended.is_none() {
            let grant = receiving.drained as u32;
            receiving.drained = 0;
            self.notify(Notice::Grant(grant));
        }
    }

    /// Queues as much of the blocked data as credit and the connection's send queue allow.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(sending) = self.sending.as_mut() else {
            return;
        };
        if self.halted.load(Ordering::Relaxed) {
            sending.room = None;
            return;
        }
        let Some((mut rest, done)) = sending.blocked.take() else {
            return;
        };
        let head = MIN_FRAME_LEN as u64;
        loop {
            // The next frame's wire length, as far as credit allows.
            let wanted = match &rest {
                Chunk::Data(bytes) if bytes.is_empty() => {
                    let _ = done.send(Ok(()));
                    return;
                }
                Chunk::Data(bytes) if sending.credit > head => {
                    head + (sending.credit - head)
                        .min(u64::from(self.max_chunk))
                        .min(bytes.len() as u64)
                }
                Chunk::Hole(_) | Chunk::Keep(_) if sending.credit >= head + HOLE_LEN as u64 => {
                    head + HOLE_LEN as u64
                }
                _ => {
                    self.counters.credit_stalls.inc();
                    break;
                }
            };
            let reserved = sending.room.take();
            let Some(room) = reserved.or_else(|| self.outbox.try_reserve(wanted as usize)) else {
                await_room(sending, &self.outbox, &self.counters, wanted, ctx);
                break;
            };
            let sent = match &mut rest {
                Chunk::Data(bytes) => {
                    // A reservation made for a smaller credit (or clamped to the whole send
                    // queue) bounds the piece too.
                    let fits = (wanted.min(room.bytes() as u64) - head) as usize;
                    let piece = bytes.split_to(fits);
                    sending.credit -= head + piece.len() as u64;
                    Frame::stream_data(self.route, self.serial, piece)
                }
                Chunk::Hole(length) => {
                    sending.credit -= wanted;
                    Frame::hole(self.route, self.serial, Hole::new(*length))
                }
                Chunk::Keep(length) => {
                    sending.credit -= wanted;
                    Frame::hole(self.route, self.serial, Hole::keep(*length))
                }
            };
            let is_hole = !matches!(rest, Chunk::Data(_));
            let outcome = self.outbox.send_data(sent, room).map_err(|_| {
                CallError::connection_lost(self.side, "the connection's writer stopped")
            });
            if outcome.is_err() || is_hole {
                let _ = done.send(outcome);
                return;
            }
        }
        sending.blocked = Some((rest, done));
    }

    fn end(&mut self, error: Option<CallError>) {
        if self.ended.is_some() {
            return;
        }
        let unfinished = self.error(
            ErrorCode::Aborted,
            "the call ended before the stream finished",
        );
        let error = error.unwrap_or(unfinished);
        self.ended = Some(error.clone());
        if !self.receiving.as_ref().is_some_and(|r| r.finished) {
            // Chunks not yet consumed are dropped: an ended stream holds no memory.
            self.discard_queue();
        }
        self.deliver();
        if let Some(sending) = self.sending.as_mut() {
            sending.room = None;
            if let Some((_, done)) = sending.blocked.take() {
                let _ = done.send(Err(error.clone()));
            }
            if let Some(confirming) = sending.confirming.take() {
                let _ = confirming.send(Err(error));
            }
        }
    }
}

/// The connection's send queue is full: reserves `wanted` bytes of it as soon as they are free
/// (once per stall), then pumps again, unless the stream ended meanwhile.
fn await_room(
    sending: &mut Sending,
    outbox: &Outbox,
    counters: &Counters,
    wanted: u64,
    ctx: &mut Context<StreamActor>,
) {
    if sending.awaiting_room {
        return;
    }
    sending.awaiting_room = true;
    counters.send_queue_stalls.inc();
    let reserve = fut::wrap_future::<_, StreamActor>(outbox.reserve(wanted as usize));
    ctx.spawn(reserve.map(|room, actor, ctx| {
        if let Some(sending) = actor.sending.as_mut() {
            sending.awaiting_room = false;
            if actor.ended.is_none() {
                sending.room = Some(room);
                actor.pump(ctx);
            }
        }
    }));
}

impl StreamActor {
    fn discard_queue(&mut self) {
        if let Some(receiving) = self.receiving.as_mut() {
            let held: u64 = receiving
                .queue
                .drain(..)
                .map(|(_, cost)| u64::from(cost))
                .sum();
            self.counters.stream_buffered_bytes.sub(held);
        }
    }
}

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.counters.streams_open.inc();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.discard_queue();
        self.counters.streams_open.dec();
    }
}

impl Handler<FromPeer> for StreamActor {
    type Result = ();

    fn handle(&mut self, event: FromPeer, ctx: &mut Self::Context) {
        match event {
            FromPeer::Data { bytes, cost } => self.received(Chunk::Data(bytes), cost),
            FromPeer::Hole { length, keep, cost } => {
                let chunk = if keep {
                    Chunk::Keep(length)
                } else {
                    Chunk::Hole(length)
                };
                self.received(chunk, cost)
            }
            FromPeer::Finish(trailer) => {
                if let Some(receiving) = self.receiving.as_mut() {
                    receiving.finished = true;
                    receiving.trailer = trailer;
                }
                self.deliver();
            }
            FromPeer::Confirm => {
                if let Some(confirming) = self.sending.as_mut().and_then(|s| s.confirming.take()) {
                    let _ = confirming.send(Ok(()));
                }
            }
            FromPeer::Credit(grant) => {
                if let Some(sending) = self.sending.as_mut() {
                    // Credit beyond 2^32-1 outstanding is capped (docs/PROTOCOL.md 7.5).
                    sending.credit = (sending.credit + u64::from(grant)).min(u64::from(u32::MAX));
                }
                self.pump(ctx);
            }
            FromPeer::End(error) => self.end(error),
        }
    }
}

impl StreamActor {
    fn received(&mut self, chunk: Chunk, cost: u32) {
        let Some(receiving) = self.receiving.as_mut() else {
            return;
        };
        if receiving.abandoned || self.ended.is_some() {
            return;
        }
        receiving.queue.push_back((chunk, cost));
        self.counters.stream_buffered_bytes.add(u64::from(cost));
        self.deliver();
    }
}

/// Next chunk, or `None` once the peer finished.
pub struct Recv;

impl Message for Recv {
    type Result = oneshot::Receiver<Result<Option<Chunk>, CallError>>;
}

impl Handler<Recv> for StreamActor {
    type Result = MessageResult<Recv>;

    fn handle(&mut self, _: Recv, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.receiving.as_mut() {
            Some(receiving) => {
                receiving.waiter = Some(tx);
                self.deliver();
            }
            None => {
                let _ = tx.send(Err(self.error(
                    ErrorCode::FailedPrecondition,
                    "this stream receives no data on this side",
                )));
            }
        }
        MessageResult(rx)
    }
}

/// Queue data once credit allows; answered when all of it is queued.
pub struct Transmit(pub Chunk);

impl Message for Transmit {
    type Result = oneshot::Receiver<Result<(), CallError>>;
}

impl Handler<Transmit> for StreamActor {
    type Result = MessageResult<Transmit>;

    fn handle(&mut self, Transmit(chunk): Transmit, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let refusal = match (&self.ended, self.sending.as_mut()) {
            (Some(error), _) => Some(error.clone()),
            (None, None) => Some(self.error(
                ErrorCode::FailedPrecondition,
                "this stream sends no data on this side",
            )),
            (None, Some(sending)) if sending.finished => Some(self.error(
                ErrorCode::FailedPrecondition,
                "the stream was already finished",
            )),
            (None, Some(sending)) => {
                sending.blocked = Some((chunk, tx));
                None
            }
        };
        match refusal {
            Some(error) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(Err(error));
                MessageResult(rx)
            }
            None => {
                self.pump(ctx);
                MessageResult(rx)
            }
        }
    }
}

/// The trailer of the peer's finish (empty before it, or if it carried none).
#[derive(Message)]
#[rtype(result = "Bytes")]
pub struct Trailer;

impl Handler<Trailer> for StreamActor {
    type Result = MessageResult<Trailer>;

    fn handle(&mut self, _: Trailer, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.receiving
                .as_ref()
                .map(|receiving| receiving.trailer.clone())
                .unwrap_or_default(),
        )
    }
}

/// End the sending direction, with a trailer on the finish. The server waits for the
/// client's confirmation; the client's confirmation is the REPLY, which the caller awaits
/// separately.
pub struct Finish(pub Bytes);

impl Message for Finish {
    type Result = oneshot::Receiver<Result<(), CallError>>;
}

impl Handler<Finish> for StreamActor {
    type Result = MessageResult<Finish>;

    fn handle(&mut self, Finish(trailer): Finish, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if let Some(error) = &self.ended {
            let _ = tx.send(Err(error.clone()));
            return MessageResult(rx);
        }
        let Some(sending) = self.sending.as_mut() else {
            let _ = tx.send(Err(self.error(
                ErrorCode::FailedPrecondition,
                "this stream sends no data on this side",
            )));
            return MessageResult(rx);
        };
        if !sending.finished {
            sending.finished = true;
            self.notify(Notice::Finish(trailer));
        }
        match self.side {
            Side::Server => self.sending.as_mut().expect("checked").confirming = Some(tx),
            _ => {
                let _ = tx.send(Ok(()));
            }
        }
        MessageResult(rx)
    }
}

/// (Client) confirm the peer's finish once the local sink committed.
#[derive(Message)]
#[rtype(result = "Result<(), CallError>")]
pub struct Confirm;

impl Handler<Confirm> for StreamActor {
    type Result = Result<(), CallError>;

    fn handle(&mut self, _: Confirm, _: &mut Self::Context) -> Self::Result {
        if let Some(error) = &self.ended {
            return Err(error.clone());
        }
        match &self.receiving {
            Some(receiving) if receiving.finished && receiving.queue.is_empty() => {
                self.notify(Notice::Confirm);
                Ok(())
            }
            Some(_) => Err(self.error(
                ErrorCode::FailedPrecondition,
                "the stream has not been received to its end",
            )),
            None => Err(self.error(
                ErrorCode::FailedPrecondition,
                "this stream receives no data on this side",
            )),
        }
    }
}

/// A handle was dropped before its direction was done.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Abandon {
    Receiving,
    Sending,
}

impl Handler<Abandon> for StreamActor {
    type Result = ();

    fn handle(&mut self, which: Abandon, _: &mut Self::Context) {
        if let (Abandon::Receiving, Some(receiving)) = (&which, self.receiving.as_mut()) {
            receiving.abandoned = true;
            self.discard_queue();
        }
        // On the server the handler's outcome settles the call; on the client, dropping a
        // handle aborts the stream.
        if self.side == Side::Client && self.ended.is_none() {
            let error = self.error(ErrorCode::Cancelled, "the client dropped the stream");
            self.notify(Notice::Abort(error.clone()));
            self.end(Some(error));
        }
    }
}
