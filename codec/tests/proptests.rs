//! Property tests: any valid frame sequence survives Encoder -> Decoder however the byte
//! stream is split into reads, and no byte sequence at all makes the decoder panic, lose
//! sync silently or hold more memory than the input justifies.

use bytes::{Bytes, BytesMut};
use ferry_codec::{Frame, FrameCodec, Header, Limits, MessageType, Status};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::{Decoder, Encoder};

/// The decoder never reserves more than this ahead of the bytes that have arrived.
const RESERVE_AHEAD: usize = 1024 * 1024;

fn kind() -> impl Strategy<Value = MessageType> {
    prop_oneof![
        Just(MessageType::Call),
        Just(MessageType::Reply),
        Just(MessageType::Message),
        Just(MessageType::Stream),
        Just(MessageType::StreamHole),
        Just(MessageType::Credit),
        Just(MessageType::Cancel),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Ok),
        Just(Status::Error),
        Just(Status::Continue)
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        kind(),
        any::<u32>(),
        status(),
        vec(any::<u8>(), 0..1500),
    )
        .prop_map(
            |((program, version, procedure), kind, serial, status, payload)| {
                let header = Header {
                    program,
                    version,
                    procedure,
                    kind,
                    serial,
                    status,
                };
                Frame::new(header, Bytes::from(payload))
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        Just(Limits {
            max_frame: 64 * 1024,
            ..Limits::default()
        }),
        Just(Limits {
            max_frame: 100,
            ..Limits::default()
        }),
    ]
}

/// Cuts `data` at the given points (in any order, duplicates allowed) into consecutive pieces.
fn split<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn encode_all(codec: &mut FrameCodec, frames: &[Frame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        codec.encode(frame.clone(), &mut buf).expect("encode");
    }
    buf.to_vec()
}

/// What feeding a byte stream to the decoder piece by piece produced.
struct Fed {
    frames: Vec<Frame>,
    error: bool,
    leftover: usize,
}

/// Feeds `pieces` to `codec` one read at a time, draining every whole frame after each read,
/// and checks the invariants that hold for any input: the buffer stays bounded, `Ok(None)`
/// consumes nothing, each decoded frame re-encodes to exactly the bytes it was decoded from,
/// and without an error every input byte is either consumed or still buffered.
fn feed(codec: &mut FrameCodec, pieces: &[&[u8]]) -> Result<Fed, TestCaseError> {
    let input: Vec<u8> = pieces.concat();
    // Reserving 1 MiB ahead goes through `BytesMut`'s amortised (doubling) growth, so the
    // capacity may reach twice what has arrived plus the reserve; never the announced size.
    let bound = 2 * (input.len() + RESERVE_AHEAD + 28);
    let mut buf = BytesMut::new();
    let mut consumed = 0;
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let len = before - buf.len();
                    let mut again = BytesMut::new();
                    let (head, payload) = frame.wire_parts();
                    again.extend_from_slice(&head);
                    again.extend_from_slice(payload);
                    prop_assert_eq!(&again[..], &input[consumed..consumed + len]);
                    consumed += len;
                    frames.push(frame);
                }
                Ok(None) => {
                    prop_assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(_) => {
                    return Ok(Fed {
                        frames,
                        error: true,
                        leftover: buf.len(),
                    });
                }
            }
            prop_assert!(
                buf.capacity() <= bound,
                "capacity {} over {} for {} input bytes",
                buf.capacity(),
                bound,
                input.len()
            );
        }
        prop_assert!(
            buf.capacity() <= bound,
            "capacity {} over {}",
            buf.capacity(),
            bound
        );
    }
    prop_assert_eq!(
        consumed + buf.len(),
        input.len(),
        "bytes lost without an error"
    );
    Ok(Fed {
        frames,
        error: false,
        leftover: buf.len(),
    })
}

proptest! {
    #[test]
    fn frames_round_trip(frame in frame()) {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(frame.clone(), &mut buf).expect("encode");
        prop_assert_eq!(buf.len(), frame.wire_len());
        let decoded = codec.decode(&mut buf).expect("decode");
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frame_sequences_survive_any_split(
        frames in vec(frame(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut codec = FrameCodec::default();
        let wire = encode_all(&mut codec, &frames);
        let fed = feed(&mut codec, &split(&wire, &cuts))?;
        prop_assert!(!fed.error);
        prop_assert_eq!(fed.leftover, 0);
        prop_assert_eq!(fed.frames, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        limits in limits(),
        data in vec(any::<u8>(), 0..4096),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut codec = FrameCodec::new(limits);
        let fed = feed(&mut codec, &split(&data, &cuts))?;
        prop_assert!(fed.leftover <= data.len());
    }

    /// Random bytes are almost always rejected at the first length word; valid streams with a
    /// few bytes overwritten and the tail cut off reach the header and payload paths.
    #[test]
    fn corrupted_streams_never_panic(
        limits in limits(),
        frames in vec(frame(), 1..6),
        flips in vec((any::<Index>(), any::<u8>()), 0..6),
        keep in any::<Index>(),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut codec = FrameCodec::new(limits);
        let mut wire = encode_all(&mut FrameCodec::default(), &frames);
        for (at, byte) in &flips {
            let at = at.index(wire.len());
            wire[at] = *byte;
        }
        wire.truncate(keep.index(wire.len() + 1));
        // `feed` checks the invariants that must hold for any input.
        feed(&mut codec, &split(&wire, &cuts))?;
    }

    /// Without corruption, a truncated stream yields exactly the frames wholly inside it.
    #[test]
    fn truncated_streams_yield_the_whole_frames(
        frames in vec(frame(), 1..6),
        keep in any::<Index>(),
        cuts in vec(any::<Index>(), 0..8),
    ) {
        let mut codec = FrameCodec::default();
        let wire = encode_all(&mut codec, &frames);
        let keep = keep.index(wire.len() + 1);
        let fed = feed(&mut codec, &split(&wire[..keep], &cuts))?;
        prop_assert!(!fed.error);
        let mut whole = 0;
        let mut end = 0;
        for frame in &frames {
            if end + frame.wire_len() > keep {
                break;
            }
            end += frame.wire_len();
            whole += 1;
        }
        prop_assert_eq!(&fed.frames[..], &frames[..whole]);
        prop_assert_eq!(fed.leftover, keep - end);
    }
}
