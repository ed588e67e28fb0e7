//! The sender enforces the same frame limit as the receiver, so an oversized frame fails
//! locally with `EncodeError::FrameTooLarge` instead of killing the connection at the peer.

use bytes::{Bytes, BytesMut};
use ferry_codec::{EncodeError, Frame, FrameCodec, Limits, MIN_FRAME_LEN, Route};
use tokio_util::codec::{Decoder, Encoder};

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);
const MAX_FRAME: u32 = 4096;

fn codec() -> FrameCodec {
    FrameCodec::new(Limits {
        max_frame: MAX_FRAME,
        ..Limits::default()
    })
}

fn data(len: usize) -> Frame {
    Frame::stream_data(ROUTE, 7, Bytes::from(vec![7u8; len]))
}

#[test]
fn a_frame_over_max_frame_is_rejected_and_nothing_is_written() {
    let frame = data(MAX_FRAME as usize - MIN_FRAME_LEN + 1);
    let mut dst = BytesMut::from(&b"earlier"[..]);
    match codec().encode(frame.clone(), &mut dst) {
        Err(EncodeError::FrameTooLarge { length, max }) => {
            assert_eq!(length, MAX_FRAME as usize + 1);
            assert_eq!(max, MAX_FRAME);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(
        &dst[..],
        b"earlier",
        "a rejected frame must not leave bytes behind"
    );
    assert!(matches!(
        codec().check_outgoing(&frame),
        Err(EncodeError::FrameTooLarge { .. })
    ));
}

/// The limit is inclusive on both sides: what the encoder sends, the decoder takes.
#[test]
fn a_frame_of_exactly_max_frame_is_sent_and_received() {
    let frame = data(MAX_FRAME as usize - MIN_FRAME_LEN);
    assert_eq!(frame.wire_len(), MAX_FRAME as usize);
    codec().check_outgoing(&frame).expect("fits");
    let mut buf = BytesMut::new();
    codec().encode(frame.clone(), &mut buf).expect("encode");
    assert_eq!(codec().decode(&mut buf).expect("decode"), Some(frame));
}

#[test]
fn the_default_limit_is_16_mib() {
    let limits = FrameCodec::default().limits();
    assert_eq!(limits.max_frame, 16 * 1024 * 1024);
    assert_eq!(limits.max_chunk, 256 * 1024);
    assert_eq!(limits, Limits::default());
    let over = data(16 * 1024 * 1024 - MIN_FRAME_LEN + 1);
    assert!(matches!(
        FrameCodec::default().check_outgoing(&over),
        Err(EncodeError::FrameTooLarge { .. })
    ));
}
