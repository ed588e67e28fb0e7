//! `ferryd`: the Ferry node. See `ferryd --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ferry_services::config::{Args, LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferryd: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: many of ferryd's errors already
/// include their source's message, which anyhow's own report would then print again (with a
/// backtrace under RUST_BACKTRACE, which is for bugs, not for a bad config).
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text += ": ";
            }
            text += &cause;
        }
    }
    text
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = args.load()?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    let filter = EnvFilter::try_from_env("FERRYD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or a journal gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
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
