//! The receiving side's credit check, the same on both ends of a connection: a data or hole
//! frame from the peer is admitted only within the credit the peer still has.

use ferry_codec::{Frame, Hole, MessageType};

use crate::stream::state::FromPeer;

/// Checks a STREAM/CONTINUE or STREAM_HOLE frame from the peer against the stream's limits and
/// the credit the peer still has, and spends that credit. The error says which rule broke.
pub(crate) fn admit_inbound(
    frame: Frame,
    allowance: &mut u64,
    max_chunk: u32,
) -> Result<FromPeer, String> {
    let cost = frame.wire_len() as u64;
    let event = match frame.header.kind {
        MessageType::StreamHole => {
            let hole = Hole::decode(&frame.payload).map_err(|e| e.to_string())?;
            FromPeer::Hole {
                length: hole.length,
                keep: hole.is_keep(),
                cost: cost as u32,
            }
        }
        _ if frame.payload.is_empty() => return Err("empty stream data chunk".into()),
        _ if frame.payload.len() > max_chunk as usize => {
            return Err(format!(
                "stream chunk of {} bytes exceeds max_chunk ({max_chunk})",
                frame.payload.len()
            ));
        }
        _ => FromPeer::Data {
            bytes: frame.payload,
            cost: cost as u32,
        },
    };
    if cost > *allowance {
        return Err(format!(
            "frame of {cost} bytes exceeds the remaining credit of {allowance} bytes"
        ));
    }
    *allowance -= cost;
    Ok(event)
}
