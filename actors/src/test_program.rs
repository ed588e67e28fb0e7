//! The test program (`0x74657374`, "test", version 1): for tests, benchmarks and peers written
//! in other languages. Its procedures are numbered in docs/PROTOCOL.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::CallError;
use crate::metrics::Counter;
use crate::program::CallContext;
use crate::{ErrorCode, program};

/// Messages of `proto/ferry/test/v1/test.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/ferry.test.v1.rs"));
}

use bytes::Bytes;
use proto::{
    EchoReply, EchoRequest, EchoStreamReply, EchoStreamRequest, FailReply, FailRequest, SinkReply,
    SinkRequest, SleepReply, SleepRequest, SourceReply, SourceRequest, Tick, TicksReply,
    TicksRequest,
};

use crate::stream::{Chunk, ContentHash, Incoming, Outgoing};

/// Event number of [`Tick`] events (the procedure field of their MESSAGE frames).
pub const TICK_EVENT: u32 = 100;

program! {
    /// The test program.
    pub program TestProgram = 0x7465_7374, version 1;
    handler TestHandler; client TestClient;
    procedures {
        /// Returns the request's payload.
        1 => echo(EchoRequest) -> EchoReply;
        /// Replies after the requested time; stops at once when cancelled.
        2 => sleep(SleepRequest) -> SleepReply;
        /// Fails with the requested error code and message.
        3 => fail(FailRequest) -> FailReply;
        /// Consumes an upload and reports its size and checksum.
        4 => sink(SinkRequest) -> SinkReply [upload];
        /// Sends a deterministic pattern, optionally sparse.
        5 => source(SourceRequest) -> SourceReply [download];
        /// Sends every chunk straight back.
        6 => echo_stream(EchoStreamRequest) -> EchoStreamReply [both];
        /// Emits `count` Tick events, then replies.
        7 => ticks(TicksRequest) -> TicksReply;
    }
}

/// What the test service observed, for tests to await.
#[derive(Debug, Default)]
pub struct TestObservations {
    /// Sleep handlers whose future was dropped before it finished (cancelled calls).
    pub sleeps_dropped: Counter,
    pub sleeps_dropped_signal: tokio::sync::Notify,
    /// Sink handlers dropped before the upload finished: their partial data was discarded.
    pub sinks_discarded: Counter,
    pub sinks_discarded_signal: tokio::sync::Notify,
}

/// The byte at `offset` of the Source pattern.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// The pattern's bytes from offset 0, long enough to slice any chunk out of.
static PATTERN: [u8; PATTERN_LEN] = {
    let mut bytes = [0u8; PATTERN_LEN];
    let mut i = 0;
    while i < PATTERN_LEN {
        bytes[i] = (i % 251) as u8;
        i += 1;
    }
    bytes
};
const MAX_PATTERN_CHUNK: usize = 1024 * 1024;
const PATTERN_LEN: usize = MAX_PATTERN_CHUNK + 251;

/// `len` bytes (at most 1 MiB) of the Source pattern starting at `offset`, sliced out of a
/// static buffer: producing them allocates and copies nothing.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    assert!(len <= MAX_PATTERN_CHUNK, "pattern chunks are at most 1 MiB");
    let start = (offset % 251) as usize;
    Bytes::from_static(&PATTERN[start..start + len])
}

/// The server side of the test program.
#[derive(Debug, Default, Clone)]
pub struct TestService {
    pub observations: Arc<TestObservations>,
}

/// Counts a handler that is dropped before it completes.
struct DropWatch<'a> {
    counter: &'a Counter,
    signal: &'a tokio::sync::Notify,
    finished: bool,
}

impl<'a> DropWatch<'a> {
    fn new(counter: &'a Counter, signal: &'a tokio::sync::Notify) -> Self {
        Self {
            counter,
            signal,
            finished: false,
        }
    }
}

impl Drop for DropWatch<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.counter.inc();
            self.signal.notify_waiters();
        }
    }
}

impl TestHandler for TestService {
    async fn echo(&self, request: EchoRequest, _: CallContext) -> Result<EchoReply, CallError> {
        Ok(EchoReply {
            payload: request.payload,
        })
    }

    async fn sleep(&self, request: SleepRequest, _: CallContext) -> Result<SleepReply, CallError> {
        let observations = &self.observations;
        let mut watch = DropWatch::new(
            &observations.sleeps_dropped,
            &observations.sleeps_dropped_signal,
        );
        let started = Instant::now();
        actix_rt::time::sleep(Duration::from_millis(request.millis)).await;
        watch.finished = true;
        Ok(SleepReply {
            slept_millis: started.elapsed().as_millis() as u64,
        })
    }

    async fn fail(&self, request: FailRequest, _: CallContext) -> Result<FailReply, CallError> {
        let code = ErrorCode::try_from(request.code).unwrap_or(ErrorCode::Internal);
        Err(CallError::application(code, request.message))
    }

    async fn ticks(
        &self,
        request: TicksRequest,
        context: CallContext,
    ) -> Result<TicksReply, CallError> {
        for n in 0..request.count {
            context
                .emit(TestProgram::NUMBER, TICK_EVENT, &Tick { n })
                .await?;
        }
        Ok(TicksReply {
            sent: request.count,
        })
    }

    async fn sink(
        &self,
        request: SinkRequest,
        _: CallContext,
        mut incoming: Incoming,
    ) -> Result<SinkReply, CallError> {
        let observations = &self.observations;
        let mut watch = DropWatch::new(
            &observations.sinks_discarded,
            &observations.sinks_discarded_signal,
        );
        // Allocated with the first chunk: an idle upload does not carry BLAKE3's 1.9 KB of
        // state.
        let mut state: Option<Box<ContentHash>> = None;
        while let Some(chunk) = incoming.recv().await? {
            if let Chunk::Keep(_) = chunk {
                return Err(CallError::application(
                    ErrorCode::BadRequest,
                    "SINK has no base: a KEEP range means nothing here",
                ));
            }
            let mut hash = state.take().unwrap_or_default();
            // Inline: a chunk hashes in tens of microseconds, and handing each to the blocking
            // pool cost more in wake-ups than it freed (ferry-bench stream-upload: 0.52x raw
            // that way, 0.99x inline). Holes yield as they go (`absorb`).
            hash.absorb(&chunk).await;
            if request.stall_after > 0 && hash.bytes() >= request.stall_after {
                // A consumer that stops reading: only cancellation ends this.
                std::future::pending::<()>().await;
            }
            state = Some(hash);
        }
        watch.finished = true;
        let hash = state.unwrap_or_default();
        Ok(SinkReply {
            bytes: hash.bytes(),
            hole_bytes: hash.hole_bytes(),
            checksum: hash.finish(),
        })
    }

    async fn source(
        &self,
        request: SourceRequest,
        _: CallContext,
        mut outgoing: Outgoing,
    ) -> Result<SourceReply, CallError> {
        let chunk = match request.chunk {
            0 => 256 * 1024,
            n => u64::from(n).min(MAX_PATTERN_CHUNK as u64),
        };
        let data_run = if request.data_run == 0 {
            request.length
        } else {
            request.data_run
        };
        let mut hash = ContentHash::default();
        let mut offset = 0;
        while offset < request.length {
            if request.fail_after > 0 && offset >= request.fail_after {
                return Err(CallError::application(
                    ErrorCode::Aborted,
                    format!("source failed on purpose at byte {offset}"),
                ));
            }
            let in_run = offset % (data_run + request.hole_run);
            let piece = if in_run < data_run {
                let n = chunk.min(data_run - in_run).min(request.length - offset);
                Chunk::Data(pattern(offset, n as usize))
            } else {
                Chunk::Hole((data_run + request.hole_run - in_run).min(request.length - offset))
            };
            hash.absorb(&piece).await;
            offset += piece.len();
            outgoing.send_chunk(piece).await?;
        }
        outgoing.finish().await?;
        Ok(SourceReply {
            bytes: hash.bytes(),
            checksum: hash.finish(),
        })
    }

    async fn echo_stream(
        &self,
        _: EchoStreamRequest,
        _: CallContext,
        mut incoming: Incoming,
        mut outgoing: Outgoing,
    ) -> Result<EchoStreamReply, CallError> {
        let mut bytes = 0;
        while let Some(chunk) = incoming.recv().await? {
            bytes += chunk.len();
            outgoing.send_chunk(chunk).await?;
        }
        outgoing.finish().await?;
        Ok(EchoStreamReply { bytes })
    }
}
