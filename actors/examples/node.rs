//! A Ferry node serving the test program on a unix socket and on 127.0.0.1, until Ctrl-C.
//!
//! `cargo run -p ferry-actors --example node` — then drive it with the `client` example.

use std::time::Duration;

use ferry_actors::test_program::{TestProgram, TestService};
use ferry_actors::{Server, ServerConfig};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let socket = std::env::temp_dir().join("ferry-example.sock");
    let server = Server::new(ServerConfig::default())
        .program(TestProgram::serve(TestService::default()))
        .listen_tcp("127.0.0.1:7300")
        .listen_unix(&socket)
        .start()
        .await?;
    println!(
        "serving the test program on tcp {} and unix {}",
        server.tcp_addrs()[0],
        socket.display()
    );
    tokio::signal::ctrl_c().await?;
    server.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
