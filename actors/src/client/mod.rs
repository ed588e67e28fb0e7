//! The client library: one connection, many concurrent typed calls, cancellation by drop.
//!
//! A `Client` must be created inside an actix `System` (for example under `#[actix::main]`);
//! its methods may then be called from any task or thread.

mod connection;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use ferry_codec::proto::{ErrorCode, Layer, Side};
use ferry_codec::{Frame, Route, encode_message};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::ClientConfig;
use crate::connection::transport::Transport;
use crate::error::{CallError, ConnectError};
use crate::metrics::Counters;
use connection::{Begin, ClientConnection, Close, Subscribe};

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
    permits: Semaphore,
    config: ClientConfig,
    counters: Arc<Counters>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.addr.do_send(Close);
    }
}

impl Client {
    pub async fn connect_tcp(address: &str, config: ClientConfig) -> Result<Self, ConnectError> {
        let stream = TcpStream::connect(address).await.map_err(|source| ConnectError::Io {
            address: address.to_owned(),
            source,
        })?;
        Ok(Self::over(Transport::tcp(stream), config))
    }

    pub async fn connect_unix(path: impl AsRef<Path>, config: ClientConfig) -> Result<Self, ConnectError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).await.map_err(|source| ConnectError::Io {
            address: path.display().to_string(),
            source,
        })?;
        Ok(Self::over(Transport::unix(stream), config))
    }

    fn over(transport: Transport, config: ClientConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let addr = ClientConnection::start(transport, config.clone(), counters.clone());
        Self {
            inner: Arc::new(Inner {
                addr,
                permits: Semaphore::new(config.max_in_flight_calls),
                config,
                counters,
            }),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Calls a procedure with a protobuf request and decodes its protobuf response.
    pub async fn call<Req, Resp>(&self, route: Route, request: &Req, options: CallOptions) -> Result<Resp, CallError>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let payload = self.call_raw(route, encode_message(request), options).await?;
        ferry_codec::decode_message(&payload).map_err(|e| {
            CallError::new(ErrorCode::ProtocolViolation, Side::Client, Layer::Call, e.to_string())
        })
    }

    /// Calls a procedure with an encoded request; returns the encoded response.
    ///
    /// Dropping the returned future before it completes cancels the call: a CANCEL frame
    /// goes to the server, which stops the handler.
    pub async fn call_raw(&self, route: Route, payload: Bytes, options: CallOptions) -> Result<Bytes, CallError> {
        let lost = || CallError::connection_lost(Side::Client, "the connection is closed");
        let _permit = self.inner.permits.acquire().await.map_err(|_| lost())?;
        let (reply, response) = oneshot::channel();
        // Dropped when this future ends, however it ends; the connection then cancels the
        // call unless its REPLY already came.
        let (_waiting, caller_gone) = oneshot::channel::<()>();
        self.inner
            .addr
            .send(Begin {
                route,
                payload,
                reply,
                caller_gone,
            })
            .await
            .map_err(|_| lost())??;
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
        outcome.unwrap_or_else(|_| Err(lost()))
    }

    /// Receives the MESSAGE frames (events) of one program and procedure. A subscriber that
    /// falls behind by more than `subscriber_queue` events loses the newest ones (counted in
    /// `events_dropped`); the connection never waits for it.
    pub async fn subscribe(&self, program: u32, procedure: u32) -> Result<mpsc::Receiver<Frame>, CallError> {
        self.inner
            .addr
            .send(Subscribe { program, procedure })
            .await
            .map_err(|_| CallError::connection_lost(Side::Client, "the connection is closed"))?
    }

    /// Closes the connection now; calls in flight fail with CONNECTION_LOST.
    pub fn close(&self) {
        self.inner.permits.close();
        self.inner.addr.do_send(Close);
    }
}
