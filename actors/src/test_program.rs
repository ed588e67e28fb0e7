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

use proto::{
    EchoReply, EchoRequest, FailReply, FailRequest, SleepReply, SleepRequest, Tick, TicksReply,
    TicksRequest,
};

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
}

/// The server side of the test program.
#[derive(Debug, Default, Clone)]
pub struct TestService {
    pub observations: Arc<TestObservations>,
}

/// Counts a Sleep handler that is dropped before it completes.
struct DropWatch {
    observations: Arc<TestObservations>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.observations.sleeps_dropped.inc();
            self.observations.sleeps_dropped_signal.notify_waiters();
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
        let mut watch = DropWatch {
            observations: self.observations.clone(),
            finished: false,
        };
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

    async fn ticks(&self, request: TicksRequest, context: CallContext) -> Result<TicksReply, CallError> {
        for n in 0..request.count {
            context.emit(TestProgram::NUMBER, TICK_EVENT, &Tick { n }).await?;
        }
        Ok(TicksReply {
            sent: request.count,
        })
    }
}
