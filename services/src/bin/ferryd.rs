//! `ferryd`: the Ferry node. See `ferryd --help`.

use anyhow::Context;
use clap::Parser;
use ferry_services::config::{Args, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.load()?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let filter = EnvFilter::try_from_env("FERRYD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    actix_rt::System::new().block_on(async move {
        let node = ferry_services::node::start(&config)
            .await
            .context("starting ferryd")?;
        // The handlers first: a SIGTERM sent as soon as the ready line is read shuts down
        // gracefully, never kills.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        // One line on stdout that scripts and tests can wait for.
        println!("ferryd ready: {}", node.ready());
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        node.shutdown().await;
        Ok(())
    })
}
