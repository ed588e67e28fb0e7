//! A frame that has only partly arrived is not an error: the decoder must answer `Ok(None)`
//! and leave every byte where it was, so the next read can complete the frame.

use bytes::{Bytes, BytesMut};
use ferry_codec::{Credit, Frame, FrameCodec, Hole, Route};
use tokio_util::codec::{Decoder, Encoder};

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);

fn encode(frame: &Frame) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode(frame.clone(), &mut buf)
        .expect("encode");
    buf.to_vec()
}

fn samples() -> Vec<Frame> {
    vec![
        Frame::call(
            ROUTE,
            1,
            Bytes::from_static(b"a call payload of some length"),
        ),
        Frame::stream_data(ROUTE, 7, Bytes::from((0..=255u8).collect::<Vec<_>>())),
        Frame::hole(ROUTE, 7, Hole::new(1 << 30)),
        Frame::credit(ROUTE, 7, Credit(4096)),
        Frame::cancel(ROUTE, 3),
    ]
}

#[test]
fn every_cut_point_returns_none_and_leaves_the_buffer_intact() {
    for frame in samples() {
        let wire = encode(&frame);
        for cut in 0..wire.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            let got = codec.decode(&mut buf).expect("a prefix is not an error");
            assert_eq!(got, None, "cut at {cut} of {}", wire.len());
            assert_eq!(&buf[..], &wire[..cut], "cut at {cut} changed the buffer");
        }
    }
}

/// After `Ok(None)` the same buffer, once topped up, must yield the frame: the decoder keeps
/// no state of its own that a partial frame could corrupt.
#[test]
fn completing_a_cut_frame_yields_it() {
    for frame in samples() {
        let wire = encode(&frame);
        for cut in 0..wire.len() {
            let mut codec = FrameCodec::default();
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(codec.decode(&mut buf).expect("prefix"), None);
            buf.extend_from_slice(&wire[cut..]);
            let decoded = codec
                .decode(&mut buf)
                .expect("decode")
                .expect("whole frame");
            assert_eq!(decoded, frame, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }
}

/// A whole frame followed by the start of the next one: the first comes out, the fragment
/// stays put, byte for byte.
#[test]
fn a_trailing_fragment_is_kept_after_a_whole_frame() {
    let first = encode(&Frame::cancel(ROUTE, 1));
    let second = encode(&Frame::call(ROUTE, 2, Bytes::from_static(b"payload")));
    for cut in 0..second.len() {
        let mut buf = BytesMut::from(&first[..]);
        buf.extend_from_slice(&second[..cut]);
        let mut codec = FrameCodec::default();
        assert_eq!(
            codec.decode(&mut buf).expect("decode"),
            Some(Frame::cancel(ROUTE, 1))
        );
        assert_eq!(codec.decode(&mut buf).expect("fragment"), None);
        assert_eq!(&buf[..], &second[..cut]);
    }
}
