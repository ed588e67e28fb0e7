//! The client's connection actor: reads frames off the socket and hands each to its router,
//! ticks the keepalive, and takes the messages of the [`Client`](crate::Client) (begin a
//! call, abandon one, subscribe, ping, close) and of its streams. Each piece of its state has
//! its own module:
//!
//! - [`router`]: routing by type and serial, and the frames this side sends for its calls;
//! - [`pending`]: the serial table (calls in flight and their streams);
//! - `connection::credit` (shared with the server): credit windows of the downloads and its
//!   distribution among them;
//! - [`events`]: event subscribers;
//! - [`pings`]: PINGs awaiting their PONG;
//! - [`closing`]: why the connection refuses new calls, or ended.

mod closing;
mod events;
mod pending;
mod pings;
mod router;

use std::sync::{Arc, OnceLock};

use actix::prelude::*;
use bytes::Bytes;
use ferry_codec::proto::Side;
use ferry_codec::{DecodeError, Frame, FrameCodec, Route};
use tokio::sync::{mpsc, oneshot};
use tracing::{info_span, warn};

use crate::client::connection::closing::Closing;
use crate::client::connection::events::Subscribers;
use crate::client::connection::pending::PendingCalls;
use crate::client::connection::pings::Pings;
pub use crate::client::connection::router::Began;
use crate::client::connection::router::Router;
use crate::config::ClientConfig;
use crate::connection::credit::ReceiveCredit;
use crate::connection::keepalive::{Keepalive, Tick};
use crate::connection::reader::FrameReader;
use crate::connection::transport::Transport;
use crate::connection::writer::{Outbox, WriterStopped, spawn_writer};
use crate::control::ControlMessage;
use crate::error::CallError;
use crate::memory::MemoryBudget;
use crate::metrics::{Counters, Traffic};
use crate::stream::{Direction, StreamNotice};

/// How long a connection whose writes fail waits for the server's last frames (section 9.3 of
/// PROTOCOL.md: a GOAWAY comes before the close). They are already on this host by then.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_millis(500);

pub struct ClientConnection {
    router: Router,
    keepalive: Option<Keepalive>,
    writer_task: tokio::task::JoinHandle<()>,
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
                router: Router {
                    span: info_span!("client", peer = %transport.peer),
                    // Before `config` moves in.
                    credit: ReceiveCredit::new(config.stream_window, config.connection_window),
                    config,
                    counters,
                    outbox,
                    calls: PendingCalls::new(),
                    subscribers: Subscribers::default(),
                    pings: Pings::default(),
                    closing: Closing::new(closed),
                    notices: Arc::new(ctx.address()),
                },
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
                    act.router.pings.probe();
                    act.router.send(ctx, ControlMessage::Ping.to_frame());
                }
                Tick::Dead => {
                    act.router.counters.keepalive_timeouts.inc();
                    warn!(parent: &act.router.span, "keepalive: server silent, closing");
                    act.router.fail_all(CallError::connection_lost(
                        Side::Client,
                        "keepalive: no sign of life from the server",
                    ));
                    ctx.stop();
                }
            }
        });
    }
}

impl Actor for ClientConnection {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.writer_task.abort();
        self.router.fail_all(CallError::connection_lost(
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
                warn!(parent: &self.router.span, %error, "reading from the server failed");
                self.router.fail_all(CallError::connection_lost(
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
            total: self.router.counters.clone(),
            connection: None,
        }
        .received(&frame);
        self.router.on_frame(ctx, frame);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.router.fail_all(CallError::connection_lost(
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
            act.router.fail_all(CallError::connection_lost(
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

impl Handler<Begin> for ClientConnection {
    type Result = Result<Began, CallError>;

    fn handle(&mut self, begin: Begin, ctx: &mut Self::Context) -> Self::Result {
        let began = self.router.begin(
            ctx,
            begin.route,
            begin.direction,
            begin.payload,
            begin.reply,
        )?;
        let (serial, id) = (began.serial, began.id);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(begin.caller_gone)
                .map(move |_, act, ctx| act.router.abandon(ctx, serial, id)),
        );
        Ok(began)
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
        self.router.abandon(ctx, msg.serial, msg.id);
    }
}

impl Handler<StreamNotice> for ClientConnection {
    type Result = ();

    fn handle(&mut self, msg: StreamNotice, ctx: &mut Self::Context) {
        self.router.on_notice(ctx, msg);
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
        let queue = self.router.config.subscriber_queue;
        Ok(self
            .router
            .subscribers
            .subscribe(msg.program, msg.procedure, queue))
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
        if let Some(error) = self.router.closing.refusal() {
            return Err(error.clone());
        }
        let rx = self.router.pings.ask();
        self.router.send(ctx, ControlMessage::Ping.to_frame());
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
        self.router.fail_all(CallError::connection_lost(
            Side::Client,
            "the client closed the connection",
        ));
        ctx.stop();
    }
}
