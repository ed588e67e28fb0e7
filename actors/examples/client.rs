//! Calls the `node` example: an Echo, then a 64 MiB upload with its checksum.
//!
//! `cargo run -p ferry-actors --example client`

use bytes::Bytes;
use ferry_actors::test_program::proto::{EchoRequest, SinkRequest};
use ferry_actors::test_program::{TestClient, pattern};
use ferry_actors::{Client, ClientConfig};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client =
        TestClient::new(Client::connect_tcp("127.0.0.1:7300", ClientConfig::default()).await?);
    let reply = client
        .echo(&EchoRequest {
            payload: Bytes::from_static(b"hello, ferry"),
        })
        .await?;
    println!("echo: {}", String::from_utf8_lossy(&reply.payload));

    let mut upload = client.sink(&SinkRequest::default()).await?;
    let chunk = 256 * 1024;
    for i in 0..256u64 {
        upload.send(pattern(i * chunk as u64, chunk)).await?;
    }
    let result = upload.finish().await?;
    println!(
        "uploaded {} bytes, blake3 {}",
        result.bytes,
        hex(&result.checksum)
    );
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
