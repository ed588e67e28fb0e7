//! Feeds arbitrary bytes to `FrameCodec` as a peer's byte stream.
//!
//! Each input is decoded under two limits (64 KiB and the default 16 MiB) and three ways of
//! splitting it into reads (all at once, one byte at a time, uneven pieces). Besides "never
//! panics", it checks that:
//! - the outcome does not depend on how the stream was split into reads;
//! - every decoded frame re-encodes to exactly the bytes it was decoded from;
//! - `Ok(None)` consumes nothing, and no byte is lost without an error;
//! - the read buffer never grows far past what arrived (no hostile-size allocation);
//! - the payload helpers accept or reject any payload without panicking.
#![no_main]

use bytes::BytesMut;
use ferry_codec::proto::{ErrorBody, Shutdown};
use ferry_codec::{
    CREDIT_LEN, Credit, Frame, FrameCodec, HOLE_LEN, Hole, Limits, MessageType, decode_message,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};

/// Most the decoder reserves ahead of the bytes that have arrived.
const RESERVE_AHEAD: usize = 1024 * 1024;

/// Uneven read sizes, cycled, so reads end inside the length word, the header and payloads.
const PIECES: [usize; 8] = [7, 1, 13, 2, 29, 4, 3, 64];

#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    /// The decode error, as text (DecodeError is not PartialEq).
    error: Option<String>,
    /// Bytes still buffered at the end; not compared after an error, since how much had
    /// arrived when the error was seen depends on the split.
    leftover: Option<usize>,
}

fn pieces(input: &[u8], split: usize) -> Vec<&[u8]> {
    match split {
        0 => vec![input],
        1 => input.chunks(1).collect(),
        _ => {
            let mut out = Vec::new();
            let mut rest = input;
            for size in PIECES.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                out.push(piece);
                rest = tail;
            }
            out
        }
    }
}

fn decode_all(limits: Limits, input: &[u8], split: usize) -> Outcome {
    let mut codec = FrameCodec::new(limits);
    // Reserving 1 MiB ahead goes through `BytesMut`'s amortised (doubling) growth, so the
    // capacity may reach twice what has arrived plus the reserve; never the announced size.
    let bound = 2 * (input.len() + RESERVE_AHEAD + 28);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    let mut frames = Vec::new();
    for piece in pieces(input, split) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let len = before - buf.len();
                    check_frame(&mut codec, &frame, &input[consumed..consumed + len]);
                    consumed += len;
                    frames.push(frame);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(error) => {
                    return Outcome {
                        frames,
                        error: Some(error.to_string()),
                        leftover: None,
                    };
                }
            }
        }
        assert!(
            buf.capacity() <= bound,
            "capacity {} for {} input bytes",
            buf.capacity(),
            input.len()
        );
    }
    assert_eq!(
        consumed + buf.len(),
        input.len(),
        "bytes lost without an error"
    );
    Outcome {
        frames,
        error: None,
        leftover: Some(buf.len()),
    }
}

fn check_frame(codec: &mut FrameCodec, frame: &Frame, wire: &[u8]) {
    assert_eq!(frame.wire_len(), wire.len());
    let mut again = BytesMut::new();
    codec
        .encode(frame.clone(), &mut again)
        .expect("a frame the decoder accepted fits the same limit");
    assert_eq!(&again[..], wire, "re-encoding differs from the input");

    let payload = &frame.payload[..];
    match frame.header.kind {
        MessageType::StreamHole => {
            assert_eq!(Hole::decode(payload).is_ok(), payload.len() == HOLE_LEN);
        }
        MessageType::Credit => {
            assert_eq!(Credit::decode(payload).is_ok(), payload.len() == CREDIT_LEN);
        }
        _ => {
            let _ = decode_message::<ErrorBody>(payload);
            let _ = decode_message::<Shutdown>(payload);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    for max_frame in [64 * 1024, Limits::DEFAULT_MAX_FRAME] {
        let limits = Limits {
            max_frame,
            ..Limits::default()
        };
        let whole = decode_all(limits, input, 0);
        for split in [1, 2] {
            assert_eq!(
                decode_all(limits, input, split),
                whole,
                "the split into reads changed the outcome"
            );
        }
    }
});
