//! Whether a new CALL fits the connection's limits: calls in flight, streams open, the upload
//! windows the connection may buffer, and the memory a large CALL's payload takes. Each check
//! answers with the error that refuses the call, and counts the refusal.

use std::sync::Arc;

use ferry_codec::Frame;
use ferry_codec::proto::{ErrorCode, Layer, Side};

use crate::error::CallError;
use crate::memory::{Charge, MemoryBudget};
use crate::server::connection::serials::SerialTable;
use crate::server::shared::ServerShared;

/// CALL payloads of at least this many bytes are charged to the connection's memory budget;
/// smaller ones are bounded by `max_in_flight_calls` (4 MiB per connection at most).
const CHARGED_CALL: usize = 4096;

/// Whether another call fits under `max_in_flight_calls`.
pub(super) fn calls_in_flight(shared: &ServerShared, table: &SerialTable) -> Option<CallError> {
    if table.len() < shared.config.max_in_flight_calls {
        return None;
    }
    shared.counters.limit_rejections.inc();
    Some(CallError::new(
        ErrorCode::ResourceExhausted,
        Side::Server,
        Layer::Call,
        format!(
            "{} calls already open on this connection (max_in_flight_calls)",
            table.len()
        ),
    ))
}

/// Whether a streaming CALL fits the connection's stream limits.
pub(super) fn stream_limits(
    shared: &ServerShared,
    table: &SerialTable,
    frame: &Frame,
) -> Option<CallError> {
    let direction = shared.registry.direction(frame);
    if !direction.is_stream() {
        return None;
    }
    let config = &shared.config;
    let streams: Vec<_> = table.streams().collect();
    let exhausted = |message: String| {
        shared.counters.limit_rejections.inc();
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

/// Charges a large CALL's payload to the connection's memory budget, or refuses the call
/// RESOURCE_EXHAUSTED when it does not fit. The charge is held with the call, then by its
/// REPLY until that is written: a handler's answer is what it keeps of a large request
/// (an echo, say), and without the charge a peer that sends large calls and never reads
/// the replies makes the node hold `max_in_flight_calls` × `max_frame`, and then a full
/// write queue of them. Refused rather than waited for: a wait would stop the reader, and
/// with it the CREDIT frames that let downloads give their charges back.
pub(super) fn charge_payload(
    shared: &ServerShared,
    memory: &MemoryBudget,
    frame: &Frame,
) -> Result<Option<Arc<Charge>>, CallError> {
    let len = frame.payload.len();
    if len < CHARGED_CALL {
        return Ok(None);
    }
    match memory.try_charge(len) {
        Some(charge) => Ok(Some(Arc::new(charge))),
        None => {
            shared.counters.limit_rejections.inc();
            shared.counters.memory_full.inc();
            Err(CallError::new(
                ErrorCode::ResourceExhausted,
                Side::Server,
                Layer::Call,
                format!(
                    "a call of {len} bytes does not fit in what this connection may hold now (max_memory_per_connection {})",
                    memory.limit()
                ),
            ))
        }
    }
}
