//! Micro-benchmarks of the frame codec: a small CALL and a 256 KiB STREAM chunk (the default
//! `max_chunk`), each encoded through the copying `Encoder`, prepared for a vectored write
//! with `wire_parts` (no copy), and decoded out of a buffer that already holds the bytes.
//!
//! Run: `cargo bench -p ferry-codec --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_codec::{Frame, FrameCodec, Route};
use tokio_util::codec::{Decoder, Encoder};

const ROUTE: Route = Route::new(0x7465_7374, 1, 4);

/// A read buffer holding `count` copies of one encoded frame, which can be decoded again and
/// again without re-copying the bytes into it, so the decode figures contain no memcpy.
struct Prefilled {
    buf: BytesMut,
    base: *const u8,
    len: usize,
    count: usize,
}

impl Prefilled {
    fn new(frame: &Frame, count: usize) -> Self {
        let len = frame.wire_len() * count;
        let mut buf = BytesMut::with_capacity(len);
        let mut codec = FrameCodec::default();
        for _ in 0..count {
            codec.encode(frame.clone(), &mut buf).expect("encode");
        }
        let base = buf.as_ptr();
        Self {
            buf,
            base,
            len,
            count,
        }
    }

    /// Makes the whole buffer readable again. Every decoded frame must have been dropped, so
    /// the buffer is the sole owner of its allocation and `reserve` moves it back to the start
    /// of that allocation instead of allocating.
    fn rearm(&mut self) {
        assert!(self.buf.is_empty(), "rearm before every frame was decoded");
        self.buf.reserve(self.len);
        assert_eq!(
            self.buf.as_ptr(),
            self.base,
            "reserve did not reclaim the buffer"
        );
        assert!(self.buf.capacity() >= self.len);
        // SAFETY: the buffer is back at the start of its original allocation (checked above),
        // whose first `len` bytes were written by `new` and never written since: decoding only
        // reads them, and no frame split off them is still alive.
        unsafe { self.buf.set_len(self.len) };
    }
}

fn bench_frame(c: &mut Criterion, name: &str, frame: &Frame, prefilled_count: usize) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(frame.wire_len() as u64));

    group.bench_function("encode_copy", |b| {
        let mut codec = FrameCodec::default();
        let mut dst = BytesMut::with_capacity(frame.wire_len());
        b.iter(|| {
            dst.clear();
            codec
                .encode(black_box(frame.clone()), &mut dst)
                .expect("encode");
            black_box(&dst);
        });
    });

    group.bench_function("encode_wire_parts", |b| {
        b.iter(|| {
            let (head, payload) = black_box(frame).wire_parts();
            black_box((head, payload));
        });
    });

    group.bench_function("decode", |b| {
        let mut codec = FrameCodec::default();
        let mut source = Prefilled::new(frame, prefilled_count);
        let mut frames = Vec::with_capacity(source.count);
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(source.count as u64);
                let start = Instant::now();
                for _ in 0..batch {
                    frames.push(
                        codec
                            .decode(&mut source.buf)
                            .expect("decode")
                            .expect("frame"),
                    );
                }
                elapsed += start.elapsed();
                black_box(&frames);
                left -= batch;
                while let Some(rest) = codec.decode(&mut source.buf).expect("decode") {
                    frames.push(rest);
                }
                frames.clear();
                source.rearm();
            }
            elapsed
        });
    });

    group.finish();
}

fn codec(c: &mut Criterion) {
    let call = Frame::call(ROUTE, 1, Bytes::from(vec![0x42; 32]));
    bench_frame(c, "call_32B", &call, 1024);

    let chunk = Frame::stream_data(ROUTE, 7, Bytes::from(vec![0xa5; 256 * 1024]));
    bench_frame(c, "stream_256KiB", &chunk, 64);
}

criterion_group!(benches, codec);
criterion_main!(benches);
