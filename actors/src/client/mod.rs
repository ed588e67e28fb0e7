//! The client library: one connection, many concurrent typed calls, cancellation by drop.
//!
//! A `Client` must be created inside an actix `System` (for example under `#[actix::main]`);
//! its methods may then be called from any task or thread.

mod connection;

use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use ferry_codec::proto::{ErrorCode, Layer, Side};
use ferry_codec::{Frame, Route, encode_message};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::ClientConfig;
use crate::connection::transport::Transport;
use crate::error::{CallError, ConnectError};
use crate::metrics::Counters;
use crate::stream::{Chunk, Direction, Incoming, Outgoing};
use crate::tls::ClientTls;
use connection::{Abandon, Begin, ClientConnection, Close, Ping, Subscribe};

fn lost() -> CallError {
    CallError::connection_lost(Side::Client, "the connection is closed")
}

/// Per-call options.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// Give up (and cancel the call on the server) after this long; overrides the client's
    /// default deadline.
    pub deadline: Option<Duration>,
}

/// A connection to a Ferry server. Cheap to clone; clones share the connection, which closes
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: Addr<ClientConnection>,
    permits: Arc<Semaphore>,
    config: ClientConfig,
    counters: Arc<Counters>,
    /// Why the connection ended, set by its actor.
    closed: Arc<OnceLock<CallError>>,
}

impl Inner {
    /// The error for a call that finds the connection gone: why it ended, if known.
    fn lost(&self) -> CallError {
        self.closed.get().cloned().unwrap_or_else(lost)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.addr.do_send(Close);
    }
}

impl Client {
    pub async fn connect_tcp(address: &str, config: ClientConfig) -> Result<Self, ConnectError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| ConnectError::Io {
                address: address.to_owned(),
                source,
            })?;
        Ok(Self::over(Transport::tcp(stream), config))
    }

    /// Connects over TLS, verifying the server's certificate against `tls`'s CA and
    /// `server_name` (the host name the certificate must carry).
    pub async fn connect_tls(
        address: &str,
        server_name: &str,
        tls: &ClientTls,
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        let timeout = config.connect_timeout;
        let handshake = async {
            let stream = TcpStream::connect(address)
                .await
                .map_err(|source| ConnectError::Io {
                    address: address.to_owned(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            tls.connect(server_name, stream)
                .await
                .map_err(|source| ConnectError::Tls {
                    address: address.to_owned(),
                    source,
                })
        };
        let stream = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| ConnectError::Timeout {
                address: address.to_owned(),
                timeout,
            })??;
        Ok(Self::over(Transport::tls(stream), config))
    }

    pub async fn connect_unix(
        path: impl AsRef<Path>,
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ConnectError::Io {
                address: path.display().to_string(),
                source,
            })?;
        Ok(Self::over(Transport::unix(stream), config))
    }

    fn over(transport: Transport, config: ClientConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let closed = Arc::new(OnceLock::new());
        let addr =
            ClientConnection::start(transport, config.clone(), counters.clone(), closed.clone());
        Self {
            inner: Arc::new(Inner {
                addr,
                permits: Arc::new(Semaphore::new(config.max_in_flight_calls)),
                config,
                counters,
                closed,
            }),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Calls a procedure with a protobuf request and decodes its protobuf response.
    pub async fn call<Req, Resp>(
        &self,
        route: Route,
        request: &Req,
        options: CallOptions,
    ) -> Result<Resp, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let payload = self
            .call_raw(route, encode_message(request), options)
            .await?;
        ferry_codec::decode_message(&payload).map_err(|e| {
            CallError::new(
                ErrorCode::ProtocolViolation,
                Side::Client,
                Layer::Call,
                e.to_string(),
            )
        })
    }

    /// Calls a procedure with an encoded request; returns the encoded response.
    ///
    /// Dropping the returned future before it completes cancels the call: a CANCEL frame
    /// goes to the server, which stops the handler.
    pub async fn call_raw(
        &self,
        route: Route,
        payload: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, CallError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| self.inner.lost())?;
        let (reply, response) = oneshot::channel();
        // Dropped when this future ends, however it ends; the connection then cancels the
        // call unless its REPLY already came.
        let (_waiting, caller_gone) = oneshot::channel::<()>();
        self.inner
            .addr
            .send(Begin {
                route,
                direction: Direction::Unary,
                payload,
                reply,
                caller_gone,
            })
            .await
            .map_err(|_| self.inner.lost())??;
        let deadline = options.deadline.or(self.inner.config.default_deadline);
        let outcome = match deadline {
            None => response.await,
            Some(deadline) => match tokio::time::timeout(deadline, response).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(CallError::new(
                        ErrorCode::DeadlineExceeded,
                        Side::Client,
                        Layer::Call,
                        format!("no reply within {deadline:?}; the call was cancelled"),
                    ));
                }
            },
        };
        outcome.unwrap_or_else(|_| Err(self.inner.lost()))
    }

    /// Opens a streaming call: sends the CALL and returns the stream. The call's result comes
    /// with [`ClientStream::finish`]. Dropping the stream before that aborts it.
    pub async fn open_stream<Req, Resp>(
        &self,
        route: Route,
        direction: Direction,
        request: &Req,
    ) -> Result<ClientStream<Resp>, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.inner.lost())?;
        let (reply, response) = oneshot::channel();
        let (waiting, caller_gone) = oneshot::channel::<()>();
        let began = self
            .inner
            .addr
            .send(Begin {
                route,
                direction,
                payload: encode_message(request),
                reply,
                caller_gone,
            })
            .await
            .map_err(|_| self.inner.lost())??;
        Ok(ClientStream {
            _client: self.clone(),
            incoming: began.ends.incoming,
            outgoing: began.ends.outgoing,
            connection: self.inner.addr.clone(),
            serial: began.serial,
            id: began.id,
            response,
            _waiting: waiting,
            _permit: permit,
            _reply: PhantomData,
        })
    }

    /// Receives the MESSAGE frames (events) of one program and procedure. A subscriber that
    /// falls behind by more than `subscriber_queue` events loses the newest ones (counted in
    /// `events_dropped`); the connection never waits for it.
    pub async fn subscribe(
        &self,
        program: u32,
        procedure: u32,
    ) -> Result<mpsc::Receiver<Frame>, CallError> {
        self.inner
            .addr
            .send(Subscribe { program, procedure })
            .await
            .map_err(|_| self.inner.lost())?
    }

    /// Measures the round trip with a keepalive PING (section 9.1 of PROTOCOL.md): open to
    /// every role, and answered by the peer's connection itself, ahead of queued data.
    pub async fn ping(&self) -> Result<Duration, CallError> {
        let started = std::time::Instant::now();
        let pong = self
            .inner
            .addr
            .send(Ping)
            .await
            .map_err(|_| self.inner.lost())??;
        pong.await.map_err(|_| self.inner.lost())?;
        Ok(started.elapsed())
    }

    /// Closes the connection now; calls in flight fail with CONNECTION_LOST.
    pub fn close(&self) {
        self.inner.permits.close();
        self.inner.addr.do_send(Close);
    }
}

/// A streaming call seen from the client: its data ends and, at the end, its result.
///
/// Upload: [`send`](Self::send) data, then [`finish`](Self::finish); the server's REPLY is
/// the confirmation that its sink committed. Download: [`recv`](Self::recv) until `None`,
/// commit what was received, then `finish` to confirm. Both directions: use
/// [`ends`](Self::ends) to drive sending and receiving concurrently. Dropping the stream
/// before `finish` returns aborts it; the server discards what it received.
pub struct ClientStream<R> {
    /// Keeps the connection open as long as the stream lives.
    _client: Client,
    incoming: Option<Incoming>,
    outgoing: Option<Outgoing>,
    connection: Addr<ClientConnection>,
    serial: u32,
    id: u64,
    response: oneshot::Receiver<Result<Bytes, CallError>>,
    _waiting: oneshot::Sender<()>,
    _permit: OwnedSemaphorePermit,
    _reply: PhantomData<fn() -> R>,
}

fn no_direction(which: &str) -> CallError {
    CallError::new(
        ErrorCode::FailedPrecondition,
        Side::Client,
        Layer::Stream,
        format!("this procedure does not {which} data"),
    )
}

impl<R: prost::Message + Default> ClientStream<R> {
    /// The sending and receiving ends, borrowed separately so both can run at once.
    pub fn ends(&mut self) -> (Option<&mut Outgoing>, Option<&mut Incoming>) {
        (self.outgoing.as_mut(), self.incoming.as_mut())
    }

    fn outgoing(&mut self) -> Result<&mut Outgoing, CallError> {
        self.outgoing.as_mut().ok_or_else(|| no_direction("upload"))
    }

    fn incoming(&mut self) -> Result<&mut Incoming, CallError> {
        self.incoming
            .as_mut()
            .ok_or_else(|| no_direction("download"))
    }

    pub async fn send(&mut self, data: Bytes) -> Result<(), CallError> {
        self.outgoing()?.send(data).await
    }

    pub async fn send_hole(&mut self, length: u64) -> Result<(), CallError> {
        self.outgoing()?.send_hole(length).await
    }

    pub async fn send_chunk(&mut self, chunk: Chunk) -> Result<(), CallError> {
        self.outgoing()?.send_chunk(chunk).await
    }

    pub async fn recv(&mut self) -> Result<Option<Chunk>, CallError> {
        self.incoming()?.recv().await
    }

    pub async fn recv_bytes(&mut self) -> Result<Option<Bytes>, CallError> {
        self.incoming()?.recv_bytes().await
    }

    /// Finishes what this side sends, confirms what it received (which must have been read
    /// to its end), and returns the call's result: the server's word that its side committed.
    pub async fn finish(self) -> Result<R, CallError> {
        self.finish_with(Bytes::new()).await
    }

    /// [`finish`](Self::finish), with a trailer on this side's STREAM/OK (an upload's
    /// `UploadFinish`: the checksum, known only once everything was read and sent).
    pub async fn finish_with(mut self, trailer: Bytes) -> Result<R, CallError> {
        if let Some(outgoing) = self.outgoing.as_mut() {
            outgoing.finish_with(trailer).await?;
        }
        if let Some(incoming) = self.incoming.as_mut() {
            // Not read to its end: either the call already failed (its error is the answer),
            // or data is left, which finishing would silently drop.
            if !incoming.is_done() && incoming.recv().await?.is_some() {
                return Err(CallError::new(
                    ErrorCode::FailedPrecondition,
                    Side::Client,
                    Layer::Stream,
                    "read the stream to its end before finishing it",
                ));
            }
            incoming.confirm().await?;
        }
        let payload = (&mut self.response).await.unwrap_or_else(|_| Err(lost()))?;
        ferry_codec::decode_message(&payload).map_err(|e| {
            CallError::new(
                ErrorCode::ProtocolViolation,
                Side::Client,
                Layer::Call,
                e.to_string(),
            )
        })
    }
}

impl<R> Drop for ClientStream<R> {
    fn drop(&mut self) {
        // A no-op once the REPLY came; otherwise the stream is aborted.
        self.connection.do_send(Abandon {
            serial: self.serial,
            id: self.id,
        });
    }
}
