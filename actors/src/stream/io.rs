//! tokio and futures adapters for stream handles, so `tokio::io::copy` and stream combinators
//! work on Ferry streams.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Sink, StreamExt};
use tokio::io::AsyncWrite;
use tokio_util::io::StreamReader;

use crate::error::CallError;
use crate::stream::{Incoming, Outgoing};

fn io_error(error: CallError) -> io::Error {
    io::Error::other(error)
}

/// An `AsyncRead` over an [`Incoming`]; holes read as zeros.
pub type IncomingReader<'a> = StreamReader<BoxStream<'a, io::Result<Bytes>>, Bytes>;

impl Incoming {
    /// The stream's bytes as a `futures::Stream` (holes as zeros).
    pub fn bytes(&mut self) -> BoxStream<'_, Result<Bytes, CallError>> {
        futures::stream::unfold(Some(self), |incoming| async move {
            let incoming = incoming?;
            match incoming.recv_bytes().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(incoming))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }

    /// The stream as an `AsyncRead` (holes as zeros).
    pub fn reader(&mut self) -> IncomingReader<'_> {
        use futures::TryStreamExt;
        StreamReader::new(self.bytes().map_err(io_error).boxed())
    }
}

/// Bytes gathered by [`OutgoingWriter`] before they are sent as one chunk.
const WRITE_BUFFER: usize = 256 * 1024;

/// An `AsyncWrite` (and a `Sink<Bytes>`) over an [`Outgoing`]. `AsyncWrite` hands us borrowed
/// slices, so written bytes are gathered into chunks of up to 256 KiB (one copy);
/// [`Outgoing::send`] and the `Sink` are the zero-copy paths. Shutting the writer down flushes
/// it but does not finish the stream: call [`Outgoing::finish`] for that, so a half-written
/// stream is never mistaken for a complete one.
pub struct OutgoingWriter<'a> {
    state: WriterState<'a>,
    buffer: BytesMut,
}

enum WriterState<'a> {
    Idle(&'a mut Outgoing),
    Sending(BoxFuture<'a, (&'a mut Outgoing, Result<(), CallError>)>),
    Failed,
}

impl Outgoing {
    pub fn writer(&mut self) -> OutgoingWriter<'_> {
        OutgoingWriter {
            state: WriterState::Idle(self),
            buffer: BytesMut::new(),
        }
    }
}

impl<'a> OutgoingWriter<'a> {
    /// Waits for a send in progress to end.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let WriterState::Sending(future) = &mut self.state {
            let (outgoing, outcome) = ready!(future.poll_unpin(cx));
            match outcome {
                Ok(()) => self.state = WriterState::Idle(outgoing),
                Err(error) => {
                    self.state = WriterState::Failed;
                    return Poll::Ready(Err(io_error(error)));
                }
            }
        }
        match self.state {
            WriterState::Failed => Poll::Ready(Err(io::Error::other("the stream failed earlier"))),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn start_send(&mut self, bytes: Bytes) {
        let WriterState::Idle(outgoing) = std::mem::replace(&mut self.state, WriterState::Failed)
        else {
            unreachable!("start_send only runs when idle");
        };
        self.state = WriterState::Sending(Box::pin(async move {
            let outcome = outgoing.send(bytes).await;
            (outgoing, outcome)
        }));
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_idle(cx))?;
        if !self.buffer.is_empty() {
            let bytes = self.buffer.split().freeze();
            self.start_send(bytes);
            ready!(self.poll_idle(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OutgoingWriter<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buffer.len() >= WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        } else {
            ready!(this.poll_idle(cx))?;
        }
        let n = buf.len().min(WRITE_BUFFER - this.buffer.len());
        this.buffer.extend_from_slice(&buf[..n]);
        if this.buffer.len() >= WRITE_BUFFER {
            let bytes = this.buffer.split().freeze();
            this.start_send(bytes);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }
}

impl Sink<Bytes> for OutgoingWriter<'_> {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> io::Result<()> {
        match self.state {
            WriterState::Idle(_) => {
                OutgoingWriter::start_send(&mut self, item);
                Ok(())
            }
            _ => Err(io::Error::other("start_send without poll_ready")),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }
}
