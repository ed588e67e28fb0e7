//! Running one `ferry` command: connecting to the node, then the volume, event and admin
//! commands, each printing through [`Output`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use ferry_actors::{CallError, CallOptions, Client, ClientConfig, ErrorCode, Layer, Side};
use ferry_node::admin::AdminClient;
use ferry_node::events::{EVENT, EventsProgram};
use ferry_node::proto::admin::{
    ClientsRequest, DisconnectRequest, InfoRequest as AdminInfoRequest,
};
use ferry_node::proto::volume::{
    CreateRequest, DeleteRequest, InfoRequest, ListClusterRequest, ListRequest,
};
use ferry_node::uri::NodeUri;
use ferry_node::volume::VolumeClient;

use crate::args::{Admin, Args, Command, Vol};
use crate::exit::{CliError, Exit};
use crate::output::{self, Output};
use crate::transfer;

/// Runs `ferry` with the process's arguments; the binary's whole `main`.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => return usage_error(error),
    };
    if args.verbose > 0 {
        let level = if args.verbose == 1 { "info" } else { "debug" };
        let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let output = Output::new(
        args.json,
        args.quiet,
        std::io::stderr().is_terminal() && !args.json && !args.quiet,
    );
    let outcome = actix_rt::System::new().block_on(run(args, &output));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // `ferry vol download NAME - | head -c1`: as for any other output, quietly 141.
        Err(error) if error.is_closed_pipe() => ExitCode::from(output::CLOSED_STDOUT),
        Err(error) => {
            output.error(&error);
            ExitCode::from(error.exit() as u8)
        }
    }
}

/// Reports a command line clap refused: as clap prints it, or with `--json` as the same JSON
/// document as every other failure (help and version requests still print as text).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    if informational || !std::env::args_os().any(|arg| arg == "--json") {
        error.exit();
    }
    // clap's first paragraph says what is wrong; the rest points at --help.
    let rendered = error.render().to_string();
    let message = rendered.split("\n\n").next().unwrap_or_default();
    let message = message.trim().trim_start_matches("error: ");
    output::errln!(
        "{}",
        serde_json::json!({"error": message, "exit": Exit::Usage as u8})
    );
    ExitCode::from(Exit::Usage as u8)
}

/// What can be found wrong without the node, found before connecting: a command that cannot
/// work fails the same way whether or not a node answers.
fn preflight(command: &Online) -> Result<(), CliError> {
    if let Online::Vol(Vol::Upload {
        file,
        resume,
        replicas,
        ..
    }) = command
    {
        if *replicas > 1 && *resume {
            return Err(CliError::Usage(
                "a replicated upload cannot be resumed: upload again without --resume".into(),
            ));
        }
        transfer::open_source(file)?;
    }
    Ok(())
}

/// The password for `user`: the first line of `--password-file`, else FERRY_PASSWORD, else a
/// prompt on the terminal. The file wins because it was named on this command line (or in
/// FERRY_PASSWORD_FILE) for this command; a password in the environment is easy to leave set.
fn password(user: &str, file: Option<&std::path::Path>) -> Result<String, CliError> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(CliError::local(format!(
            "reading the password file {}",
            file.display()
        )))?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    if let Ok(password) = std::env::var("FERRY_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password(format!("password for {user}: ")).map_err(CliError::local(
        "reading the password (use --password-file or FERRY_PASSWORD when not on a terminal)",
    ))
}

fn hash_password(
    name: &str,
    role: ferry_node::security::RoleName,
    file: Option<&std::path::Path>,
    output: &Output,
) -> Result<(), CliError> {
    if name.trim().is_empty() {
        return Err(CliError::Usage("a user name cannot be empty".into()));
    }
    let password = password(name, file)?;
    if password.is_empty() {
        return Err(CliError::Usage(
            "the password is empty: use --password-file, set FERRY_PASSWORD or type one at the prompt"
                .into(),
        ));
    }
    let entry = ferry_node::security::user_entry(name, &password, role)
        .map_err(CliError::local("salting the password"))?;
    output.user_entry(&entry);
    Ok(())
}

/// `ferry completions SHELL`: the script for that shell, from the same clap definitions that
/// parse the command line.
fn completions(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "ferry", &mut script);
    output::write_bytes(&script);
}

/// `ferry man`: ferry(1) on stdout; with a directory, ferry.1, a page per command
/// (ferry-vol-upload.1, …) and ferryd.1 there.
fn man(out_dir: Option<&std::path::Path>, output: &Output) -> Result<(), CliError> {
    let Some(dir) = out_dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(Args::command())
            .render(&mut page)
            .map_err(CliError::local("rendering the man page"))?;
        output::write_bytes(&page);
        return Ok(());
    };
    let context = format!("writing man pages into {}", dir.display());
    std::fs::create_dir_all(dir).map_err(CliError::local(context.clone()))?;
    clap_mangen::generate_to(Args::command(), dir).map_err(CliError::local(context.clone()))?;
    clap_mangen::generate_to(ferry_node::config::Args::command(), dir)
        .map_err(CliError::local(context))?;
    output.done(&format!("man pages written to {}", dir.display()));
    Ok(())
}

/// The commands that talk to a node (the others need none).
enum Online {
    Ping,
    Vol(Vol),
    Events,
    Admin(Admin),
}

async fn run(args: Args, output: &Output) -> Result<(), CliError> {
    let command = match args.command {
        Command::HashPassword { name, role } => {
            return hash_password(&name, role, args.password_file.as_deref(), output);
        }
        Command::Completions { shell } => {
            completions(shell);
            return Ok(());
        }
        Command::Man { out_dir } => return man(out_dir.as_deref(), output),
        Command::Ping => Online::Ping,
        Command::Vol(command) => Online::Vol(command),
        Command::Events => Online::Events,
        Command::Admin(command) => Online::Admin(command),
    };
    preflight(&command)?;
    let access = ferry_node::uri::Access {
        ca: args.ca.clone(),
        credentials: match &args.user {
            Some(user) => Some((user.clone(), password(user, args.password_file.as_deref())?)),
            None => None,
        },
    };
    let uri = match &args.connect {
        Some(uri) => NodeUri::parse(uri).map_err(|e| CliError::Usage(e.to_string()))?,
        None => NodeUri::local_default(),
    };
    // Unary calls get a deadline; the events subscription stays open as long as it is
    // watched, and a migration or copy as long as its data moves (Ctrl-C cancels it).
    let deadline = match command {
        Online::Events | Online::Vol(Vol::Migrate { .. } | Vol::Copy { .. }) => None,
        _ => Some(Duration::from_secs(args.timeout)),
    };
    let config = ClientConfig {
        default_deadline: deadline,
        ..ClientConfig::default()
    };
    tracing::info!(%uri, user = args.user.as_deref().unwrap_or("-"), "connecting");
    let started = std::time::Instant::now();
    let client = uri
        .connect_with(config, &access)
        .await
        .map_err(|source| CliError::Connect {
            uri: uri.to_string(),
            source,
        })?;
    tracing::info!(
        %uri,
        millis = started.elapsed().as_millis() as u64,
        "connected{}",
        if access.credentials.is_some() { " and authenticated" } else { "" }
    );
    match command {
        Online::Ping => ping(&client, &uri, Duration::from_secs(args.timeout), output).await,
        Online::Vol(command) => vol(&client, command, output).await,
        Online::Events => events(&client, output).await,
        Online::Admin(command) => admin(&client, command, output).await,
    }
}

/// A keepalive PING's round trip: open to every role, so any user can check a node.
async fn ping(
    client: &Client,
    uri: &NodeUri,
    timeout: Duration,
    output: &Output,
) -> Result<(), CliError> {
    let took = tokio::time::timeout(timeout, client.ping())
        .await
        .unwrap_or_else(|_| {
            Err(CallError::new(
                ErrorCode::DeadlineExceeded,
                Side::Client,
                Layer::Connection,
                format!("no answer within {} s", timeout.as_secs()),
            ))
        })
        .map_err(CliError::call("ping"))?;
    output.ping(uri, took);
    Ok(())
}

async fn vol(client: &Client, command: Vol, output: &Output) -> Result<(), CliError> {
    let volumes = VolumeClient::new(client.clone());
    match command {
        Vol::List { cluster: false } => {
            let list = volumes
                .list(&ListRequest {})
                .await
                .map_err(CliError::call("listing volumes"))?;
            output.volumes(&list.volumes);
        }
        Vol::List { cluster: true } => {
            let list = volumes
                .list_cluster(&ListClusterRequest {})
                .await
                .map_err(CliError::call("listing the cluster's volumes"))?;
            output.cluster(&list.nodes);
            let down: Vec<&str> = list
                .nodes
                .iter()
                .filter(|n| !n.reachable)
                .map(|n| n.node.as_str())
                .collect();
            if !down.is_empty() {
                return Err(CliError::Partial(format!(
                    "the cluster view is incomplete: {} of {} nodes did not answer ({})",
                    down.len(),
                    list.nodes.len(),
                    down.join(", ")
                )));
            }
        }
        Vol::Info { name } => {
            let volume = volumes
                .info(&InfoRequest { name: name.clone() })
                .await
                .map_err(CliError::call(format!("volume {name:?}")))?;
            output.volume(&volume);
        }
        Vol::Create { name, size } => {
            let volume = volumes
                .create(&CreateRequest {
                    name: name.clone(),
                    size,
                })
                .await
                .map_err(CliError::call(format!("creating volume {name:?}")))?;
            output.volume(&volume);
        }
        Vol::Delete { name } => {
            volumes
                .delete(&DeleteRequest { name: name.clone() })
                .await
                .map_err(CliError::call(format!("deleting volume {name:?}")))?;
            output.outcome(
                serde_json::json!({"deleted": name}),
                &format!("deleted {name}"),
            );
        }
        Vol::Upload {
            file,
            name,
            overwrite,
            resume,
            no_verify,
            replicas,
            full,
        } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        CliError::Usage(format!(
                            "cannot name a volume after {}; give a name",
                            file.display()
                        ))
                    })?,
            };
            let plan = transfer::UploadPlan {
                file,
                name,
                overwrite,
                resume,
                verify: !no_verify,
                replicas,
                delta: !full,
            };
            let report = interruptible(
                client,
                transfer::upload(client, plan, output),
                UPLOAD_STOPPED,
            )
            .await??;
            output.uploaded(&report);
        }
        Vol::Download {
            name,
            file,
            force,
            full,
            offset,
            length,
        } => {
            // Like cp: into a directory, the file takes the volume's name.
            let file = match file {
                Some(dir) if dir.is_dir() => dir.join(&name),
                Some(file) => file,
                None => PathBuf::from(&name),
            };
            let plan = transfer::DownloadPlan {
                name,
                file,
                force,
                offset,
                length,
                delta: !full,
            };
            let report = interruptible(
                client,
                transfer::download(client, plan, output),
                DOWNLOAD_STOPPED,
            )
            .await??;
            output.downloaded(&report);
        }
        Vol::Migrate {
            name,
            to,
            overwrite,
            full,
        } => to_peer(client, name, to, overwrite, full, true, output).await?,
        Vol::Copy {
            name,
            to,
            overwrite,
            full,
        } => to_peer(client, name, to, overwrite, full, false, output).await?,
    }
    Ok(())
}

/// `vol migrate` (`migrate`: the source is deleted once the peer has the volume) and
/// `vol copy`: one transfer to a peer, until it ends or Ctrl-C.
async fn to_peer(
    client: &Client,
    name: String,
    peer: String,
    overwrite: bool,
    full: bool,
    migrate: bool,
    output: &Output,
) -> Result<(), CliError> {
    let plan = transfer::PeerPlan {
        name,
        peer,
        overwrite,
        migrate,
        delta: !full,
    };
    let report = interruptible(
        client,
        transfer::to_peer(client, plan, output),
        PEER_STOPPED,
    )
    .await??;
    output.sent(&report);
    Ok(())
}

/// What Ctrl-C left, per kind of transfer.
const UPLOAD_STOPPED: &str = "the upload was aborted and the node discarded what it had received";
const DOWNLOAD_STOPPED: &str =
    "the download was aborted; no file was written (the partial one was removed)";
const PEER_STOPPED: &str =
    "the transfer was cancelled: the peer discards what it got, and nothing changed on the node";

/// Runs a transfer until it ends or Ctrl-C. On Ctrl-C the transfer is dropped, which aborts
/// its stream (or cancels its call: a migration or copy); one more round trip then proves the
/// abort reached the node (calls and aborts leave in order) before `ferry` exits, so the node
/// discards the partial data rather than keeping it as if the connection had been lost.
async fn interruptible<T>(
    client: &Client,
    transfer: impl Future<Output = T>,
    outcome: &'static str,
) -> Result<T, CliError> {
    let mut interrupt = interrupts()?;
    tokio::select! {
        outcome = transfer => return Ok(outcome),
        _ = interrupt.recv() => {}
    }
    let admin = AdminClient::new(client.clone());
    let _ = tokio::time::timeout(Duration::from_secs(5), admin.info(&AdminInfoRequest {})).await;
    Err(CliError::Interrupted(outcome))
}

/// SIGINT, caught from now on. (`tokio::signal::ctrl_c` installs its handler only when first
/// polled, so a Ctrl-C right after a select's other branch won would kill ferry instead.)
fn interrupts() -> Result<tokio::signal::unix::Signal, CliError> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(CliError::local("catching Ctrl-C"))
}

async fn events(client: &Client, output: &Output) -> Result<(), CliError> {
    let mut interrupt = interrupts()?;
    let mut events = client
        .subscribe(EventsProgram::NUMBER, EVENT)
        .await
        .map_err(CliError::call("subscribing to events"))?;
    // The subscription call stays open; its events arrive through `events`.
    let route = ferry_actors::codec::Route::new(EventsProgram::NUMBER, EventsProgram::VERSION, 1);
    let subscription = client.call::<_, ferry_node::proto::events::SubscribeReply>(
        route,
        &ferry_node::proto::events::SubscribeRequest {},
        CallOptions::default(),
    );
    tokio::pin!(subscription);
    loop {
        tokio::select! {
            frame = events.recv() => {
                let Some(frame) = frame else {
                    return Err(CliError::Call {
                        context: "watching events".into(),
                        error: ferry_actors::CallError::connection_lost(ferry_actors::Side::Client, "the connection closed"),
                    });
                };
                match ferry_actors::codec::decode_message::<ferry_node::proto::events::Event>(&frame.payload) {
                    Ok(event) => output.event(&event),
                    Err(e) => output.done(&format!("(an event could not be decoded: {e})")),
                }
            }
            ended = &mut subscription => {
                ended.map_err(CliError::call("watching events"))?;
                return Ok(());
            }
            _ = interrupt.recv() => {
                return Err(CliError::Interrupted("stopped watching events"));
            }
        }
    }
}

async fn admin(client: &Client, command: Admin, output: &Output) -> Result<(), CliError> {
    let admin = AdminClient::new(client.clone());
    match command {
        Admin::Info => {
            let info = admin
                .info(&AdminInfoRequest {})
                .await
                .map_err(CliError::call("admin info"))?;
            output.server_info(&info);
        }
        Admin::Clients => {
            let clients = admin
                .clients(&ClientsRequest {})
                .await
                .map_err(CliError::call("listing clients"))?;
            output.clients(&clients.clients);
        }
        Admin::Disconnect { id } => {
            admin
                .disconnect(&DisconnectRequest { id })
                .await
                .map_err(CliError::call(format!("disconnecting client {id}")))?;
            output.outcome(
                serde_json::json!({"disconnected": id}),
                &format!("disconnected client {id}"),
            );
        }
    }
    Ok(())
}
