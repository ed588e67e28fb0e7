//! Payload bytes are not copied on their way through Ferry: a counting allocator shows the
//! bytes allocated per payload byte moved. Sending from a static buffer allocates nothing per
//! chunk; receiving allocates the socket read buffer once (the kernel writes into it) and
//! hands its slices to the consumer. A single extra copy anywhere would add a whole payload's
//! worth of allocation, which these bounds would catch.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use common::{quick_server_config, start};
use ferry_actors::test_program::pattern;
use ferry_actors::test_program::proto::{SinkRequest, SourceRequest};

struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size.saturating_sub(layout.size()) as u64,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHUNK: usize = 256 * 1024;
const TOTAL: u64 = 128 * 1024 * 1024;

/// Bytes allocated per payload byte while `transfer` runs.
async fn allocated_per_byte(transfer: impl Future<Output = u64>) -> f64 {
    let before = ALLOCATED.load(Ordering::Relaxed);
    let moved = transfer.await;
    (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / moved as f64
}

// One test, so no other test's allocations run at the same time in this process.
#[actix_rt::test]
async fn streams_allocate_about_one_read_buffer_per_payload_byte_and_copy_nothing() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Tcp).await;
    // Warm up: connection buffers, actor mailboxes, the first stream.
    let mut warm = client.sink(&SinkRequest::default()).await.unwrap();
    warm.send(pattern(0, CHUNK)).await.unwrap();
    warm.finish().await.unwrap();

    let upload = allocated_per_byte(async {
        let mut stream = client.sink(&SinkRequest::default()).await.unwrap();
        let mut offset = 0;
        while offset < TOTAL {
            stream.send(pattern(offset, CHUNK)).await.unwrap();
            offset += CHUNK as u64;
        }
        stream.finish().await.unwrap().bytes
    })
    .await;
    let download = allocated_per_byte(async {
        let mut stream = client
            .source(&SourceRequest {
                length: TOTAL,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut received = 0;
        while let Some(chunk) = stream.recv().await.unwrap() {
            received += chunk.len();
        }
        stream.finish().await.unwrap();
        received
    })
    .await;
    println!("bytes allocated per payload byte: upload {upload:.3}, download {download:.3}");
    // The read blocks account for 1.0; block ends left unused for up to 1/8.
    assert!(
        upload < 1.3,
        "upload allocated {upload:.3} bytes per payload byte: a copy crept in"
    );
    assert!(
        download < 1.3,
        "download allocated {download:.3} bytes per payload byte: a copy crept in"
    );
}
