//! The server's connection actor: reads frames off the socket and hands each to its router,
//! keeps the connection's timers (handshake, authentication, idle, keepalive), and takes the
//! messages of its calls, streams and server. Each piece of its state has its own module:
//!
//! - [`router`]: routing by type and serial, and every REPLY;
//! - [`serials`]: the serial table (open calls and their streams);
//! - `connection::credit` (shared with the client): credit windows of the uploads and its
//!   distribution among them;
//! - [`admission`]: the limits a new CALL must fit;
//! - [`identity`]: who the peer is and what it may call;
//! - [`shutdown`]: draining and closing.

mod admission;
mod identity;
mod router;
mod serials;
mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ferry_codec::proto::ErrorCode;
use ferry_codec::{DecodeError, Frame, FrameCodec};
use tracing::{debug, info_span, warn};

use crate::connection::credit::ReceiveCredit;
use crate::connection::keepalive::{Keepalive, Tick};
use crate::connection::reader::FrameReader;
use crate::connection::transport::Transport;
use crate::connection::writer::{Outbox, WriterStopped, spawn_writer};
use crate::control::ControlMessage;
use crate::memory::MemoryBudget;
use crate::metrics::{ConnectionStats, Traffic};
use crate::program::{ConnectionContext, SetIdentity};
use crate::server::call::CallDone;
use crate::server::connection::identity::Access;
use crate::server::connection::router::{Reports, Router};
use crate::server::connection::serials::SerialTable;
use crate::server::connection::shutdown::Closing;
use crate::server::directory::{BeginShutdown, Disconnect, Listed};
use crate::server::shared::{ConnectionSlot, ServerShared};
use crate::stream::StreamNotice;

pub struct ServerConnection {
    id: u64,
    router: Router,
    traffic: Traffic,
    keepalive: Option<Keepalive>,
    got_first_frame: bool,
    writer_task: tokio::task::JoinHandle<()>,
    /// Held for the connection's life: its place in the connection limits.
    _slot: ConnectionSlot,
}

impl ServerConnection {
    /// Starts the actor for an accepted socket on the current arbiter.
    pub(crate) fn start(
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
            // One address that every call and stream of the connection reports to.
            let address = Arc::new(ctx.address());
            let access = Access::new(shared.auth.as_ref(), transport.peer_uid);
            let context = Arc::new(ConnectionContext {
                peer: peer.clone(),
                outbox,
                server: shared.view(),
                identity: access.identity().cloned(),
                memory,
                identities: address.clone(),
            });
            Self {
                id,
                keepalive: config.keepalive.map(Keepalive::new),
                traffic,
                got_first_frame: false,
                writer_task,
                router: Router {
                    span: info_span!("connection", id, peer = %peer),
                    stats,
                    table: SerialTable::new(),
                    credit: ReceiveCredit::new(config.stream_window, config.connection_window),
                    access,
                    closing: Closing::default(),
                    reports: Reports::new(&address),
                    context,
                    shared: shared.clone(),
                },
                _slot: slot,
            }
        })
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let router = &mut self.router;
        let config = &router.shared.config;
        if !self.got_first_frame
            && router.table.last_activity().elapsed() >= config.handshake_timeout
        {
            router.shared.counters.limit_rejections.inc();
            return router.close_with(
                ctx,
                ErrorCode::DeadlineExceeded,
                "no frame within the handshake timeout".into(),
            );
        }
        if router.access.timed_out(router.shared.auth.as_ref()) {
            router.shared.counters.auth_refusals.inc();
            return router.close_with(
                ctx,
                ErrorCode::Unauthenticated,
                "not authenticated within the authentication timeout".into(),
            );
        }
        if router.table.is_empty() && router.table.last_activity().elapsed() >= config.idle_timeout
        {
            router.close_with(ctx, ErrorCode::DeadlineExceeded, "idle timeout".into());
        }
    }
}

impl Actor for ServerConnection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(parent: &self.router.span, "connected");
        let shared = &self.router.shared;
        shared.directory.insert(
            self.id,
            Listed {
                shutdown: ctx.address().recipient(),
                disconnect: ctx.address().recipient(),
                stats: self.router.stats.clone(),
            },
        );
        if let Some(&drain) = shared.shutdown.get() {
            ctx.notify(BeginShutdown { drain });
        }
        let config = &shared.config;
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
                    Tick::Ping => act.router.send(ctx, ControlMessage::Ping.to_frame()),
                    Tick::Dead => {
                        act.router.shared.counters.keepalive_timeouts.inc();
                        warn!(parent: &act.router.span, "keepalive: peer silent, closing");
                        // Best effort: a peer that was only frozen learns why when it wakes;
                        // one that is gone costs nothing more (the close grace stops this
                        // actor whether or not the GOAWAY is written).
                        act.router.close_with(
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
        debug!(parent: &self.router.span, calls = self.router.table.len(), "disconnected");
        self.router.connection_lost();
        self.router.shared.directory.remove(self.id);
    }
}

impl StreamHandler<Result<Frame, DecodeError>> for ServerConnection {
    fn handle(&mut self, item: Result<Frame, DecodeError>, ctx: &mut Self::Context) {
        if self.router.closing.closing() {
            return;
        }
        match item {
            Ok(frame) => {
                self.got_first_frame = true;
                if let Some(keepalive) = &mut self.keepalive {
                    keepalive.received();
                }
                self.traffic.received(&frame);
                self.router.on_frame(ctx, frame);
            }
            Err(DecodeError::Io(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                // The peer closed its side inside a frame: a broken peer, told so like any
                // other, and given the whole frames already queued for it.
                self.router.shared.counters.protocol_violations.inc();
                self.router
                    .close_with(ctx, ErrorCode::ProtocolViolation, error.to_string());
            }
            Err(DecodeError::Io(error)) => {
                debug!(parent: &self.router.span, %error, "read failed");
                ctx.stop();
            }
            Err(error) => {
                self.router.shared.counters.protocol_violations.inc();
                self.router
                    .close_with(ctx, ErrorCode::ProtocolViolation, error.to_string());
            }
        }
    }

    /// The peer closed its side: nothing more will be asked, so calls stop, but what is
    /// already queued (replies included) is still written before the connection closes.
    fn finished(&mut self, ctx: &mut Self::Context) {
        let router = &mut self.router;
        router.closing.wind_down(ctx, &router.context.outbox);
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
        self.router.conclude(ctx, done.serial, done.outcome);
    }
}

impl Handler<StreamNotice> for ServerConnection {
    type Result = ();

    fn handle(&mut self, msg: StreamNotice, ctx: &mut Self::Context) {
        self.router.on_notice(ctx, msg);
    }
}

impl Handler<SetIdentity> for ServerConnection {
    type Result = ();

    fn handle(&mut self, SetIdentity(identity): SetIdentity, _: &mut Self::Context) {
        debug!(parent: &self.router.span, name = %identity.name, role = ?identity.role, "authenticated");
        self.router.set_identity(identity);
    }
}

impl Handler<BeginShutdown> for ServerConnection {
    type Result = ();

    fn handle(&mut self, msg: BeginShutdown, ctx: &mut Self::Context) {
        let Some(notice) = self.router.closing.begin_drain(msg.drain) else {
            return;
        };
        self.router.send(ctx, notice);
        self.router.maybe_finish_drain(ctx);
        ctx.run_later(msg.drain, |act, ctx| {
            act.router
                .close_with(ctx, ErrorCode::ShuttingDown, "drain time is over".into())
        });
    }
}

impl Handler<Disconnect> for ServerConnection {
    type Result = ();

    fn handle(&mut self, _: Disconnect, ctx: &mut Self::Context) {
        self.router.close_with(
            ctx,
            ErrorCode::Aborted,
            "disconnected by an administrator".into(),
        );
    }
}
