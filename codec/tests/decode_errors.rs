//! Bad headers are rejected, and rejected early: as soon as the length word (for length
//! errors) or the 28 header bytes (for type and status errors) are in, without waiting for a
//! payload that a hostile or broken peer may never send, and without allocating for it.

use bytes::{BufMut, BytesMut};
use ferry_codec::{DecodeError, FrameCodec, Limits, MIN_FRAME_LEN};
use tokio_util::codec::Decoder;

/// The length word and header with arbitrary raw `type` and `status` words.
fn raw_head(length: u32, kind: u32, status: u32) -> BytesMut {
    let mut buf = BytesMut::new();
    for word in [length, 0x7465_7374, 1, 1, kind, 5, status] {
        buf.put_u32(word);
    }
    buf
}

fn limits(max_frame: u32) -> Limits {
    Limits {
        max_frame,
        ..Limits::default()
    }
}

#[test]
fn length_below_28_is_rejected_with_only_the_length_word_in() {
    for length in [0u32, 1, 4, 27] {
        let mut buf = BytesMut::from(&length.to_be_bytes()[..]);
        match FrameCodec::default().decode(&mut buf) {
            Err(DecodeError::LengthTooSmall(got)) => assert_eq!(got, length),
            other => panic!("length {length}: expected LengthTooSmall, got {other:?}"),
        }
    }
}

#[test]
fn length_of_exactly_28_is_an_empty_frame() {
    let mut buf = raw_head(28, 8, 0);
    let frame = FrameCodec::default()
        .decode(&mut buf)
        .expect("decode")
        .expect("frame");
    assert!(frame.payload.is_empty());
    assert!(buf.is_empty());
}

#[test]
fn length_over_max_frame_is_rejected_without_growing_the_buffer() {
    for (max_frame, length) in [
        (Limits::DEFAULT_MAX_FRAME, Limits::DEFAULT_MAX_FRAME + 1),
        (Limits::DEFAULT_MAX_FRAME, u32::MAX),
        (64 * 1024, 64 * 1024 + 1),
    ] {
        let mut buf = BytesMut::with_capacity(8);
        buf.put_u32(length);
        let capacity_before = buf.capacity();
        match FrameCodec::new(limits(max_frame)).decode(&mut buf) {
            Err(DecodeError::FrameTooLarge { length: l, max }) => {
                assert_eq!((l, max), (length, max_frame));
            }
            other => panic!("length {length}: expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            capacity_before,
            "buffer grew for a rejected frame"
        );
        assert_eq!(buf.len(), 4);
    }
}

/// The same holds when the whole header is there too: the length check comes first.
#[test]
fn length_over_max_frame_with_full_header_is_rejected() {
    let mut buf = raw_head(Limits::DEFAULT_MAX_FRAME + 1, 3, 2);
    let capacity_before = buf.capacity();
    assert!(matches!(
        FrameCodec::default().decode(&mut buf),
        Err(DecodeError::FrameTooLarge { .. })
    ));
    assert_eq!(buf.capacity(), capacity_before);
}

#[test]
fn a_frame_of_exactly_max_frame_is_accepted() {
    let max_frame = 1024;
    let mut buf = raw_head(max_frame, 3, 2);
    buf.resize(max_frame as usize, 0x5a);
    let frame = FrameCodec::new(limits(max_frame))
        .decode(&mut buf)
        .expect("decode")
        .expect("frame");
    assert_eq!(frame.wire_len(), max_frame as usize);
}

/// A legal but large announced length must not make the decoder reserve the whole frame up
/// front: it reserves at most 1 MiB ahead of what has arrived.
#[test]
fn a_large_announced_frame_reserves_a_bounded_amount() {
    let mut buf = raw_head(Limits::DEFAULT_MAX_FRAME, 3, 2);
    assert_eq!(
        FrameCodec::default().decode(&mut buf).expect("decode"),
        None
    );
    assert_eq!(buf.len(), MIN_FRAME_LEN);
    let bound = MIN_FRAME_LEN + 1024 * 1024 + 4096;
    assert!(
        buf.capacity() <= bound,
        "capacity {} for a 16 MiB announcement with 28 bytes in",
        buf.capacity()
    );
    assert!(buf.capacity() < Limits::DEFAULT_MAX_FRAME as usize / 4);
}

/// A peer that trickles a large frame gets buffer space in proportion to what it has sent,
/// never the announced 16 MiB up front. `BytesMut` grows by doubling, so the bound is twice
/// (arrived + 1 MiB), not arrived + 1 MiB; the fuzzer found the first byte past the header
/// already doubles the 1 MiB reservation.
#[test]
fn a_trickled_large_frame_grows_the_buffer_with_what_arrived() {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let head = raw_head(Limits::DEFAULT_MAX_FRAME, 3, 2);
    let body = vec![0u8; 3 * 1024 * 1024];
    let bytes = head.iter().chain(&body).copied().collect::<Vec<u8>>();
    let (first, rest) = bytes.split_at(100);
    let pieces = first.chunks(1).chain(rest.chunks(4096));
    for piece in pieces {
        buf.extend_from_slice(piece);
        assert_eq!(codec.decode(&mut buf).expect("a partial frame"), None);
        let bound = 2 * (buf.len() + 1024 * 1024 + MIN_FRAME_LEN);
        assert!(
            buf.capacity() <= bound,
            "capacity {} with {} bytes in",
            buf.capacity(),
            buf.len()
        );
    }
    assert_eq!(buf.len(), bytes.len());
    assert!(buf.capacity() < Limits::DEFAULT_MAX_FRAME as usize / 2);
}

#[test]
fn unknown_types_are_rejected() {
    for kind in [4u32, 5, 9, 0xffff_ffff] {
        let mut buf = raw_head(28, kind, 0);
        match FrameCodec::default().decode(&mut buf) {
            Err(DecodeError::UnknownType(got)) => assert_eq!(got, kind),
            other => panic!("type {kind}: expected UnknownType, got {other:?}"),
        }
    }
}

#[test]
fn unknown_statuses_are_rejected() {
    for status in [3u32, 4, 0x8000_0000, 0xffff_ffff] {
        let mut buf = raw_head(28, 0, status);
        match FrameCodec::default().decode(&mut buf) {
            Err(DecodeError::UnknownStatus(got)) => assert_eq!(got, status),
            other => panic!("status {status}: expected UnknownStatus, got {other:?}"),
        }
    }
}

/// A frame that announces a 1000-byte payload but has a bad type or status is rejected with
/// only the 28 header bytes in; 27 bytes are not yet enough to judge it.
#[test]
fn header_errors_are_reported_before_the_payload_arrives() {
    type IsExpected = fn(&DecodeError) -> bool;
    let cases: [(u32, u32, IsExpected); 2] = [
        (9, 0, |e| matches!(e, DecodeError::UnknownType(9))),
        (3, 7, |e| matches!(e, DecodeError::UnknownStatus(7))),
    ];
    for (kind, status, expected) in cases {
        let head = raw_head(MIN_FRAME_LEN as u32 + 1000, kind, status);

        let mut partial = BytesMut::from(&head[..MIN_FRAME_LEN - 1]);
        assert_eq!(
            FrameCodec::default()
                .decode(&mut partial)
                .expect("27 bytes"),
            None
        );

        let mut buf = head.clone();
        let err = FrameCodec::default()
            .decode(&mut buf)
            .expect_err("bad header with 28 bytes in");
        assert!(expected(&err), "type {kind} status {status}: got {err:?}");
    }
}

/// The error messages name the offending value, which is what ends up in logs.
#[test]
fn error_messages_name_the_value() {
    assert!(DecodeError::UnknownType(9).to_string().contains('9'));
    assert!(DecodeError::LengthTooSmall(27).to_string().contains("27"));
    let too_large = DecodeError::FrameTooLarge {
        length: 70000,
        max: 65536,
    };
    assert!(too_large.to_string().contains("70000"));
    assert!(too_large.to_string().contains("65536"));
}
