//! `ferryd`'s process: its command line and configuration, logs, signals and exit codes, around
//! [`crate::node::start`]. The `ferryd` binary is [`main`]. See `ferryd --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use crate::config::{Args, LogFormat};
use crate::plan::NodePlan;

/// Exit codes: 0 after a clean shutdown (or a good `--check-config`); 2 for a command line
/// clap refuses; 78 (EX_CONFIG of sysexits.h) for a configuration ferryd refuses, which a
/// restart cannot fix (the systemd unit does not restart on it); 1 for anything else (a port
/// in use, the store locked by another node, …).
const EXIT_CONFIG: u8 = 78;

/// Why ferryd stopped: the configuration, or something a restart may fix.
enum Failure {
    Config(anyhow::Error),
    Other(anyhow::Error),
}

fn config_error(error: impl Into<anyhow::Error>) -> Failure {
    Failure::Config(error.into())
}

fn other(error: impl Into<anyhow::Error>) -> Failure {
    Failure::Other(error.into())
}

/// Runs ferryd: the whole of the `ferryd` binary.
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(error)) => {
            eprintln!("ferryd: {}", report(&error));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(error)) => {
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

fn run() -> Result<(), Failure> {
    let args = Args::parse();
    let config = args.load().map_err(config_error)?;
    if args.print_config {
        print!("{}", toml::to_string_pretty(&config).map_err(other)?);
        return Ok(());
    }
    let plan = NodePlan::new(&config).map_err(config_error)?;
    if args.check_config {
        for warning in &plan.warnings {
            eprintln!("ferryd: warning: {warning}");
        }
        println!("{}", plan.summary());
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
        let node = crate::node::start(plan)
            .await
            .context("starting ferryd")
            .map_err(other)?;
        // The handlers first: a SIGTERM sent as soon as the ready line is read shuts down
        // gracefully, never kills.
        let mut terminate = signal(SignalKind::terminate()).map_err(other)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(other)?;
        // One line on stdout that scripts and tests can wait for.
        println!("ferryd ready: {}", node.ready());
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        node.shutdown().await;
        Ok::<_, Failure>(())
    })
}
