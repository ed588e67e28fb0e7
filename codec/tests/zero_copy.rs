//! Decoding splits payloads off the read buffer instead of copying them: a decoded STREAM
//! payload points into the very allocation the bytes were read into. (The allocation count is
//! checked separately in `allocations.rs`.)

use bytes::{Bytes, BytesMut};
use ferry_codec::{Frame, FrameCodec, MIN_FRAME_LEN, Route};
use tokio_util::codec::{Decoder, Encoder};

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);
const CHUNK: usize = 256 * 1024;

fn chunk(fill: u8) -> Frame {
    Frame::stream_data(ROUTE, 7, Bytes::from(vec![fill; CHUNK]))
}

#[test]
fn stream_payloads_point_into_the_read_buffer() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(4 * (MIN_FRAME_LEN + CHUNK));
    for fill in 0..4u8 {
        codec.encode(chunk(fill), &mut buf).expect("encode");
    }
    let base = buf.as_ptr() as usize;
    let end = base + buf.capacity();

    for fill in 0..4u8 {
        let frame = codec.decode(&mut buf).expect("decode").expect("frame");
        let start = frame.payload.as_ptr() as usize;
        let expected = base + usize::from(fill) * (MIN_FRAME_LEN + CHUNK) + MIN_FRAME_LEN;
        assert_eq!(start, expected, "payload {fill} is not where it was read");
        assert!(start + frame.payload.len() <= end);
        assert!(frame.payload.iter().all(|&b| b == fill));
    }
}

/// The flip side of sharing the allocation: bytes read into the buffer after a frame was
/// split off must not show through the payload already handed out.
#[test]
fn reusing_the_read_buffer_does_not_change_a_decoded_payload() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec.encode(chunk(0x11), &mut buf).expect("encode");
    let frame = codec.decode(&mut buf).expect("decode").expect("frame");

    codec.encode(chunk(0x22), &mut buf).expect("encode");
    buf.extend_from_slice(&[0x33; 1000]);
    assert!(frame.payload.iter().all(|&b| b == 0x11));

    let second = codec.decode(&mut buf).expect("decode").expect("frame");
    assert!(second.payload.iter().all(|&b| b == 0x22));
    assert!(frame.payload.iter().all(|&b| b == 0x11));
}

/// `wire_parts` hands out the frame's own payload buffer, not a copy of it.
#[test]
fn wire_parts_returns_the_payload_itself() {
    let frame = chunk(0x44);
    let (head, payload) = frame.wire_parts();
    assert_eq!(payload.as_ptr(), frame.payload.as_ptr());
    assert_eq!(
        u32::from_be_bytes(head[..4].try_into().unwrap()) as usize,
        frame.wire_len()
    );
}
