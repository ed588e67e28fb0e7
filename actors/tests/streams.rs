//! Streams over real sockets: round trips with checksums, many streams at once, sparse data.

mod common;

use bytes::Bytes;
use common::{BOTH, PROMPTLY, quick_server_config, start};
use ferry_actors::stream::Chunk;
use ferry_actors::stream::ContentHash;
use ferry_actors::test_program::pattern;
use ferry_actors::test_program::proto::{
    EchoRequest, EchoStreamRequest, SinkRequest, SourceRequest,
};
use futures::stream::{self, StreamExt};

/// Uploads `len` bytes of the pattern in `chunk`-sized sends and checks the server's checksum.
async fn upload(client: &ferry_actors::test_program::TestClient, len: u64, chunk: usize) {
    let mut stream = client.sink(&SinkRequest::default()).await.unwrap();
    let mut hash = ContentHash::default();
    let mut offset = 0;
    while offset < len {
        let n = (chunk as u64).min(len - offset) as usize;
        let data = pattern(offset, n);
        hash.update(&Chunk::Data(data.clone()));
        stream.send(data).await.unwrap();
        offset += n as u64;
    }
    let reply = stream.finish().await.unwrap();
    assert_eq!(reply.bytes, len);
    assert_eq!(
        reply.checksum,
        hash.finish(),
        "upload of {len} bytes arrived changed"
    );
}

/// Downloads from Source and checks content against the server's checksum and the pattern.
async fn download(
    client: &ferry_actors::test_program::TestClient,
    request: SourceRequest,
) -> (u64, u64) {
    let mut stream = client.source(&request).await.unwrap();
    let mut hash = ContentHash::default();
    let mut offset = 0;
    while let Some(chunk) = stream.recv().await.unwrap() {
        if let Chunk::Data(bytes) = &chunk {
            assert_eq!(
                bytes,
                &pattern(offset, bytes.len()),
                "wrong bytes at {offset}"
            );
        }
        hash.update(&chunk);
        offset += chunk.len();
    }
    let reply = stream.finish().await.unwrap();
    assert_eq!((reply.bytes, offset), (request.length, request.length));
    assert_eq!(reply.checksum, hash.finish());
    (hash.bytes(), hash.hole_bytes())
}

#[actix_rt::test]
async fn upload_and_download_round_trip_with_checksums_over_tcp_and_unix() {
    let server = start(quick_server_config()).await;
    for via in BOTH {
        let client = server.test_client(via).await;
        upload(&client, 8 * 1024 * 1024 + 17, 300 * 1024).await;
        download(
            &client,
            SourceRequest {
                length: 8 * 1024 * 1024 + 5,
                ..Default::default()
            },
        )
        .await;
    }
    common::reach(&server.handle.counters().streams_open, 0).await;
    assert_eq!(server.handle.counters().stream_buffered_bytes.get(), 0);
}

#[actix_rt::test]
async fn echo_stream_sends_every_chunk_back_while_both_directions_run() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Unix).await;
    let mut stream = client.echo_stream(&EchoStreamRequest {}).await.unwrap();
    let total = 4 * 1024 * 1024u64;
    let (outgoing, incoming) = stream.ends();
    let (outgoing, incoming) = (outgoing.unwrap(), incoming.unwrap());
    let send = async {
        let mut offset = 0;
        while offset < total {
            outgoing.send(pattern(offset, 64 * 1024)).await.unwrap();
            offset += 64 * 1024;
            outgoing.send_hole(1000).await.unwrap();
            offset += 1000;
        }
        outgoing.finish().await.unwrap();
        offset
    };
    let receive = async {
        let mut hash = ContentHash::default();
        while let Some(chunk) = incoming.recv().await.unwrap() {
            hash.update(&chunk);
        }
        hash
    };
    let (sent, received) = tokio::time::timeout(PROMPTLY, async { tokio::join!(send, receive) })
        .await
        .unwrap();
    assert_eq!(received.bytes(), sent);
    assert!(received.hole_bytes() > 0, "holes came back as data");
    assert_eq!(stream.finish().await.unwrap().bytes, sent);
}

#[actix_rt::test]
async fn a_thousand_concurrent_streams_on_one_connection_while_calls_are_answered() {
    let server = start(ferry_actors::ServerConfig {
        // 1,000 streams on one connection: above the per-connection defaults on purpose.
        max_streams_per_connection: 1000,
        max_buffered_per_connection: 1000 * 64 * 1024,
        stream_window: 64 * 1024,
        ..quick_server_config()
    })
    .await;
    let client = server.test_client(common::Via::Tcp).await;
    let streams = stream::iter(0..1000u64)
        .map(|i| {
            let client = client.clone();
            async move {
                let len = 1 + (i * 7919) % (96 * 1024);
                if i % 2 == 0 {
                    upload(&client, len, 16 * 1024).await;
                } else {
                    let hole_run = if i % 3 == 0 { 4096 } else { 0 };
                    download(
                        &client,
                        SourceRequest {
                            length: len,
                            data_run: 8192,
                            hole_run,
                            chunk: 16 * 1024,
                            ..Default::default()
                        },
                    )
                    .await;
                }
            }
        })
        .buffer_unordered(1000)
        .count();
    let calls = async {
        let mut answered = 0;
        for i in 0..200u32 {
            let payload = Bytes::from(i.to_be_bytes().to_vec());
            assert_eq!(
                client
                    .echo(&EchoRequest {
                        payload: payload.clone()
                    })
                    .await
                    .unwrap()
                    .payload,
                payload
            );
            answered += 1;
        }
        answered
    };
    let (streamed, answered) =
        tokio::time::timeout(PROMPTLY * 6, async { tokio::join!(streams, calls) })
            .await
            .unwrap();
    assert_eq!((streamed, answered), (1000, 200));
    common::reach(&server.handle.counters().calls_in_flight, 0).await;
}

#[actix_rt::test]
async fn a_sparse_download_moves_its_holes_without_their_zeros() {
    let server = start(quick_server_config()).await;
    let client = server.client(common::Via::Tcp, Default::default()).await;
    let test = ferry_actors::test_program::TestClient::new(client.clone());
    let length = 256 * 1024 * 1024;
    // 64 KiB of data every 16 MiB: about 0.4% data.
    let request = SourceRequest {
        length,
        data_run: 64 * 1024,
        hole_run: 16 * 1024 * 1024 - 64 * 1024,
        ..Default::default()
    };
    let before = client.counters().bytes_in.get();
    let (bytes, hole_bytes) = download(&test, request).await;
    let on_wire = client.counters().bytes_in.get() - before;
    assert_eq!(bytes, length);
    let data = length - hole_bytes;
    assert_eq!(data, 16 * 64 * 1024);
    assert!(
        on_wire < data + 64 * 1024,
        "{on_wire} bytes on the wire for {data} bytes of data"
    );
}

#[actix_rt::test]
async fn a_sparse_file_arrives_identical_with_its_holes_preserved() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Unix).await;
    let length = 64 * 1024 * 1024u64;
    let request = SourceRequest {
        length,
        data_run: 128 * 1024,
        hole_run: 8 * 1024 * 1024,
        ..Default::default()
    };
    let mut stream = client.source(&request).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let mut file = std::fs::File::create(&path).unwrap();
    while let Some(chunk) = stream.recv().await.unwrap() {
        match chunk {
            Chunk::Data(bytes) => file.write_all(&bytes).unwrap(),
            Chunk::Hole(len) => {
                file.seek(SeekFrom::Current(len as i64)).unwrap();
            }
            Chunk::Keep(_) => panic!("SOURCE never sends KEEP"),
        }
    }
    file.set_len(length).unwrap();
    file.sync_all().unwrap();
    let reply = stream.finish().await.unwrap();

    let mut content = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut content)
        .unwrap();
    assert_eq!(content.len() as u64, length);
    assert_eq!(
        blake3::hash(&content).as_bytes()[..],
        reply.checksum[..],
        "file content differs"
    );
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated < length / 4,
        "holes were written out: {allocated} bytes allocated"
    );
}

#[actix_rt::test]
async fn tokio_io_copy_works_in_both_directions() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Tcp).await;
    let source: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

    let mut upload = client.sink(&SinkRequest::default()).await.unwrap();
    let (outgoing, _) = upload.ends();
    let mut writer = outgoing.unwrap().writer();
    tokio::io::copy(&mut &source[..], &mut writer)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::shutdown(&mut writer)
        .await
        .unwrap();
    drop(writer);
    let reply = upload.finish().await.unwrap();
    assert_eq!(reply.checksum[..], blake3::hash(&source).as_bytes()[..]);

    let mut download = client
        .source(&SourceRequest {
            length: 3_000_000,
            data_run: 100_000,
            hole_run: 50_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, incoming) = download.ends();
    let mut received = Vec::new();
    tokio::io::copy(&mut incoming.unwrap().reader(), &mut received)
        .await
        .unwrap();
    let reply = download.finish().await.unwrap();
    assert_eq!(received.len(), 3_000_000);
    assert_eq!(reply.checksum[..], blake3::hash(&received).as_bytes()[..]);
}

/// Uploads sharing a small `connection_window` all finish intact: the owed credit reaches each
/// of them in turn as the others spend theirs.
#[actix_rt::test]
async fn uploads_sharing_a_small_connection_window_all_finish() {
    let window = 256 * 1024;
    let server = start(ferry_actors::ServerConfig {
        stream_window: window,
        connection_window: u64::from(window),
        ..quick_server_config()
    })
    .await;
    let client = server.test_client(common::Via::Tcp).await;
    let uploads = (0..8).map(|i| upload(&client, (4 << 20) + i * 4097, 64 * 1024 + 7));
    tokio::time::timeout(4 * PROMPTLY, futures::future::join_all(uploads))
        .await
        .expect("every upload finishes");
}

#[actix_rt::test]
async fn downloads_sharing_a_small_client_connection_window_all_finish() {
    let window = 256 * 1024;
    let server = start(quick_server_config()).await;
    let client = ferry_actors::test_program::TestClient::new(
        server
            .client(
                common::Via::Tcp,
                ferry_actors::ClientConfig {
                    stream_window: window,
                    connection_window: u64::from(window),
                    ..ferry_actors::ClientConfig::default()
                },
            )
            .await,
    );
    let downloads = (0..8).map(|i| {
        download(
            &client,
            SourceRequest {
                length: (4 << 20) + i * 4097,
                chunk: 64 * 1024 + 7,
                ..SourceRequest::default()
            },
        )
    });
    tokio::time::timeout(4 * PROMPTLY, futures::future::join_all(downloads))
        .await
        .expect("every download finishes");
}

#[actix_rt::test]
async fn a_keep_range_crosses_as_keep_and_a_receiver_without_a_base_refuses_it() {
    let server = start(quick_server_config()).await;
    let client = server.test_client(common::Via::Unix).await;
    // ECHO_STREAM relays chunks as they came: a KEEP comes back as a KEEP, not as zeros.
    let mut stream = client.echo_stream(&EchoStreamRequest {}).await.unwrap();
    let (outgoing, incoming) = stream.ends();
    let (outgoing, incoming) = (outgoing.unwrap(), incoming.unwrap());
    let sent = [
        Chunk::Data(pattern(0, 1000)),
        Chunk::Keep(5 << 30),
        Chunk::Hole(7),
        Chunk::Keep(1),
    ];
    let send = async {
        for chunk in sent.clone() {
            outgoing.send_chunk(chunk).await.unwrap();
        }
        outgoing.finish().await.unwrap();
    };
    let receive = async {
        let mut got = Vec::new();
        while let Some(chunk) = incoming.recv().await.unwrap() {
            got.push(chunk);
        }
        got
    };
    let ((), got) = tokio::time::timeout(PROMPTLY, async { tokio::join!(send, receive) })
        .await
        .unwrap();
    assert_eq!(got, sent);
    stream.finish().await.unwrap();

    // SINK has no base: the KEEP fails its call with BAD_REQUEST, the connection serves on.
    let mut sink = client.sink(&SinkRequest::default()).await.unwrap();
    sink.send_chunk(Chunk::Keep(4096)).await.unwrap();
    let error = sink.finish().await.unwrap_err();
    assert_eq!(error.code, ferry_actors::ErrorCode::BadRequest, "{error}");
    upload(&client, 1 << 20, 64 * 1024).await;
}
