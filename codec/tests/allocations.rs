//! Counts heap allocations to prove that decoding stream data and preparing it for a vectored
//! write copy no payload bytes. This file is its own test binary, so the counting global
//! allocator below affects no other test.
//!
//! Each thread counts its own allocations in const-initialised thread-local cells, and a
//! measurement reads only the measuring thread's cells: allocations made at the same time by
//! the harness's other test threads can never land in it, whatever they do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use ferry_codec::{Frame, FrameCodec, MIN_FRAME_LEN, Route};
use tokio_util::codec::{Decoder, Encoder};

/// Blocks at least this big count as payload-sized.
const LARGE: usize = 4096;

struct Counting;

/// What one thread has allocated since it started; only that thread reads or writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Allocated {
    count: usize,
    bytes: usize,
    large: usize,
}

impl Allocated {
    fn since(self, before: Allocated) -> Allocated {
        Allocated {
            count: self.count - before.count,
            bytes: self.bytes - before.bytes,
            large: self.large - before.large,
        }
    }
}

thread_local! {
    static ALLOCATED: Cell<Allocated> = const {
        Cell::new(Allocated { count: 0, bytes: 0, large: 0 })
    };
}

fn record(size: usize) {
    // `try_with` fails only while the thread is being torn down; nothing is measured then.
    let _ = ALLOCATED.try_with(|cell| {
        let mut now = cell.get();
        now.count += 1;
        now.bytes += size;
        now.large += usize::from(size >= LARGE);
        cell.set(now);
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; `record` only touches a
// const thread-local cell, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what this thread allocated meanwhile.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Allocated) {
    let before = ALLOCATED.with(Cell::get);
    let result = f();
    let allocated = ALLOCATED.with(Cell::get).since(before);
    (result, allocated)
}

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);
const CHUNK: usize = 256 * 1024;
const FRAMES: usize = 32;

/// A read buffer holding `FRAMES` whole 256 KiB STREAM frames, as after a large read.
fn prefilled() -> BytesMut {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(FRAMES * (MIN_FRAME_LEN + CHUNK));
    for i in 0..FRAMES {
        let data = Bytes::from(vec![i as u8; CHUNK]);
        codec
            .encode(Frame::stream_data(ROUTE, 7, data), &mut buf)
            .expect("encode");
    }
    buf
}

/// Guards the guard: a payload copy made inside `measure` is seen, so the zero counts below
/// mean something.
#[test]
fn the_counter_sees_a_payload_copy() {
    let buf = prefilled();
    let (copy, allocated) = measure(|| Bytes::copy_from_slice(&buf[MIN_FRAME_LEN..][..CHUNK]));
    assert_eq!(copy.len(), CHUNK);
    assert!(allocated.large >= 1, "{allocated:?}");
    assert!(allocated.bytes >= CHUNK, "{allocated:?}");

    // The copying Encoder is seen as well.
    let frame = Frame::stream_data(ROUTE, 7, copy);
    let (dst, allocated) = measure(|| {
        let mut dst = BytesMut::new();
        FrameCodec::default()
            .encode(frame, &mut dst)
            .expect("encode");
        dst
    });
    assert_eq!(dst.len(), MIN_FRAME_LEN + CHUNK);
    assert!(allocated.bytes >= CHUNK, "{allocated:?}");
}

#[test]
fn decoding_stream_chunks_allocates_no_payload_sized_blocks() {
    let mut buf = prefilled();
    let mut codec = FrameCodec::default();
    let mut frames = Vec::with_capacity(FRAMES + 1);

    let ((), allocated) = measure(|| {
        while let Some(frame) = codec.decode(&mut buf).expect("decode") {
            frames.push(frame);
        }
    });

    assert_eq!(frames.len(), FRAMES);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.payload.len(), CHUNK);
        assert_eq!(frame.payload[CHUNK - 1], i as u8);
    }
    let payload_bytes = FRAMES * CHUNK;
    assert_eq!(
        allocated.large, 0,
        "payload-sized blocks allocated: {allocated:?}"
    );
    assert!(
        allocated.count <= FRAMES,
        "more than one allocation per frame: {allocated:?}"
    );
    // Sharing the read buffer costs one small reference-count block, not the payload.
    assert!(
        allocated.bytes <= 64 * FRAMES && allocated.bytes * 1000 < payload_bytes,
        "{} bytes allocated to decode {payload_bytes} payload bytes: {allocated:?}",
        allocated.bytes
    );
}

#[test]
fn wire_parts_allocates_nothing() {
    let frames: Vec<Frame> = (0..FRAMES)
        .map(|i| Frame::stream_data(ROUTE, 7, Bytes::from(vec![i as u8; CHUNK])))
        .collect();

    let (total, allocated) = measure(|| {
        let mut total = 0;
        for frame in &frames {
            let (head, payload) = black_box(frame.wire_parts());
            total += head.len() + payload.len();
        }
        total
    });

    assert_eq!(total, FRAMES * (MIN_FRAME_LEN + CHUNK));
    assert_eq!(allocated.count, 0, "{allocated:?}");
    assert_eq!(allocated.bytes, 0, "{allocated:?}");
}
