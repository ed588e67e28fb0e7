//! `ferry`, the command-line client of a Ferry node: volumes, events and administration.
//!
//! Output is for people on a terminal (tables, progress bars on stderr) and for programs with
//! `--json` (one JSON document per result, one JSON line per event). Errors say what failed and
//! what to do, and exit with a code per class of error (see [`exit::Exit`]).

mod exit;
mod output;
mod patch;
mod transfer;
mod uri;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_actors::{CallError, CallOptions, Client, ClientConfig, ErrorCode, Layer, Side};

pub use exit::{CliError, Exit};
pub use uri::{Access, AccessError, NodeUri, UriError};

use crate::admin::AdminClient;
use crate::events::{EVENT, EventsProgram};
use crate::proto::admin::{ClientsRequest, DisconnectRequest, InfoRequest as AdminInfoRequest};
use crate::proto::volume::{
    CreateRequest, DeleteRequest, InfoRequest, ListClusterRequest, ListRequest,
};
use crate::volume::VolumeClient;
use output::Output;

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Talk to a Ferry node: move volumes in and out, watch events, administer"
)]
pub struct Args {
    /// The node: unix:///path/to/ferryd.sock, tcp://host:port or tls://host:port [default: the
    /// local node's socket in ferryd's default data directory].
    #[arg(short = 'c', long = "connect", env = "FERRY_URI", global = true)]
    pub connect: Option<String>,
    /// The cluster CA certificate (PEM) that tls:// nodes must present a certificate from.
    #[arg(long, env = "FERRY_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Authenticate as this user (SCRAM-SHA-256); the password comes from FERRY_PASSWORD or a
    /// prompt. Without it, a unix-socket connection is known by your uid.
    #[arg(long, env = "FERRY_USER", global = true)]
    pub user: Option<String>,
    /// Machine-readable output: JSON documents on stdout, no progress bars.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for a unary call's reply.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check that the node answers, and how fast.
    Ping,
    /// Volumes: list, info, create, delete, upload, download.
    #[command(subcommand, alias = "volume")]
    Vol(Vol),
    /// Print node events as they happen (volumes created, uploaded, transfers…) until Ctrl-C.
    Events,
    /// Node administration.
    #[command(subcommand)]
    Admin(Admin),
    /// Print a `[[security.users]]` entry for ferryd's config: the password (from
    /// FERRY_PASSWORD or a prompt) salted and hashed; the password itself is not stored.
    HashPassword {
        name: String,
        /// read-only, read-write or admin.
        #[arg(long, default_value = "read-only")]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Vol {
    /// List volumes.
    #[command(alias = "ls")]
    List {
        /// Also ask every peer of the node: which nodes hold what (unreachable peers are
        /// marked as such).
        #[arg(long)]
        cluster: bool,
    },
    /// Show one volume.
    Info { name: String },
    /// Create an empty (sparse) volume, e.g. `ferry vol create disk1 10GiB`.
    Create {
        name: String,
        /// Size: bytes, or with a unit (KiB, MiB, GiB, TiB, KB, MB, GB…).
        #[arg(value_parser = parse_size_arg)]
        size: u64,
    },
    /// Delete a volume.
    #[command(alias = "rm")]
    Delete { name: String },
    /// Upload a file into a volume (holes stay holes). The volume appears only once all of it
    /// arrived, was synced and its checksum verified.
    Upload {
        file: PathBuf,
        /// Volume name [default: the file's name].
        name: Option<String>,
        /// Replace an existing volume of that name.
        #[arg(long)]
        overwrite: bool,
        /// Continue an upload that was interrupted by a lost connection, from where the node has
        /// it.
        #[arg(long)]
        resume: bool,
        /// Do not hash the file first (the node then cannot refuse corrupted data, only report
        /// the checksum of what it got).
        #[arg(long)]
        no_verify: bool,
        /// Keep this many copies in all: the node forwards the data to the first N-1 peers of
        /// its configuration and confirms only once every copy is committed; if one fails,
        /// none is kept.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        replicas: u32,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the node holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Move a volume to a peer of the node: the peer verifies and commits it, then the node
    /// deletes its copy. Ctrl-C aborts it (the peer discards what it got, nothing changes
    /// here).
    Migrate {
        name: String,
        /// The peer's name in the node's configuration.
        #[arg(long)]
        to: String,
        /// Replace a volume of that name on the peer.
        #[arg(long)]
        overwrite: bool,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the peer holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Copy a volume to a peer of the node, keeping it here.
    Copy {
        name: String,
        /// The peer's name in the node's configuration.
        #[arg(long)]
        to: String,
        /// Replace a volume of that name on the peer.
        #[arg(long)]
        overwrite: bool,
        /// With --overwrite, send every block: by default only the blocks that differ from
        /// the version the peer holds cross (a delta).
        #[arg(long)]
        full: bool,
    },
    /// Download a volume into a file (holes stay holes), or to stdout with `-`. The file
    /// appears only once complete and synced.
    Download {
        name: String,
        /// Destination file [default: the volume's name in the current directory].
        file: Option<PathBuf>,
        /// Replace the destination file if it exists (by default fetching only the blocks
        /// that differ from it, assembled beside it and renamed over it once verified).
        #[arg(long)]
        force: bool,
        /// With --force, download every block instead of only those that differ.
        #[arg(long)]
        full: bool,
        /// First byte to download.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Bytes to download [default: to the end].
        #[arg(long)]
        length: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum Admin {
    /// Version, uptime, limits.
    Info,
    /// Connected clients and their figures.
    Clients,
    /// Close one client's connection (ids from `ferry admin clients`).
    Disconnect { id: u64 },
}

/// Runs `ferry` with the process's arguments; the binary's whole `main`.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => return usage_error(error),
    };
    let output = Output::new(args.json, std::io::stderr().is_terminal() && !args.json);
    let outcome = actix_rt::System::new().block_on(run(args, &output));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
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

/// A size on the command line: bytes, or with a unit.
fn parse_size_arg(size: &str) -> Result<u64, String> {
    // As numfmt reads them: KB, MB, GB are powers of 1000, KiB, MiB, GiB powers of 1024.
    parse_size::Config::new()
        .parse_size(size)
        .map_err(|e| format!("{e} (try 10GiB or 4096)"))
}

/// What can be found wrong without the node, found before connecting: a command that cannot
/// work fails the same way whether or not a node answers.
fn preflight(command: &Command) -> Result<(), CliError> {
    if let Command::Vol(Vol::Upload {
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

/// The password for `user`: FERRY_PASSWORD, or a prompt on the terminal.
fn password(user: &str) -> Result<String, CliError> {
    if let Ok(password) = std::env::var("FERRY_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password(format!("password for {user}: ")).map_err(CliError::local(
        "reading the password (set FERRY_PASSWORD when not on a terminal)",
    ))
}

fn hash_password(name: &str, role: &str) -> Result<(), CliError> {
    let role = match role {
        "read-only" => crate::security::RoleName::ReadOnly,
        "read-write" => crate::security::RoleName::ReadWrite,
        "admin" => crate::security::RoleName::Admin,
        other => {
            return Err(CliError::Usage(format!(
                "unknown role {other:?}: read-only, read-write or admin"
            )));
        }
    };
    if name.trim().is_empty() {
        return Err(CliError::Usage("a user name cannot be empty".into()));
    }
    let password = password(name)?;
    if password.is_empty() {
        return Err(CliError::Usage(
            "the password is empty: set FERRY_PASSWORD or type one at the prompt".into(),
        ));
    }
    let entry = crate::security::user_entry(name, &password, role)
        .map_err(CliError::local("salting the password"))?;
    let toml = toml::to_string(&entry).expect("a user entry is valid TOML");
    output::outln!("[[security.users]]\n{toml}");
    Ok(())
}

async fn run(args: Args, output: &Output) -> Result<(), CliError> {
    if let Command::HashPassword { name, role } = &args.command {
        return hash_password(name, role);
    }
    preflight(&args.command)?;
    let access = uri::Access {
        ca: args.ca.clone(),
        credentials: match &args.user {
            Some(user) => Some((user.clone(), password(user)?)),
            None => None,
        },
    };
    let uri = match &args.connect {
        Some(uri) => NodeUri::parse(uri).map_err(|e| CliError::Usage(e.to_string()))?,
        None => NodeUri::local_default(),
    };
    // Unary calls get a deadline; the events subscription stays open as long as it is
    // watched, and a migration or copy as long as its data moves (Ctrl-C cancels it).
    let deadline = match args.command {
        Command::Events | Command::Vol(Vol::Migrate { .. } | Vol::Copy { .. }) => None,
        _ => Some(Duration::from_secs(args.timeout)),
    };
    let config = ClientConfig {
        default_deadline: deadline,
        ..ClientConfig::default()
    };
    let client = uri
        .connect_with(config, &access)
        .await
        .map_err(|source| CliError::Connect {
            uri: uri.to_string(),
            source,
        })?;
    match args.command {
        Command::HashPassword { .. } => unreachable!("handled before connecting"),
        Command::Ping => ping(&client, &uri, Duration::from_secs(args.timeout), output).await,
        Command::Vol(command) => vol(&client, command, output).await,
        Command::Events => events(&client, output).await,
        Command::Admin(command) => admin(&client, command, output).await,
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
        } => {
            let plan = transfer::PeerPlan {
                name,
                peer: to,
                overwrite,
                migrate: true,
                delta: !full,
            };
            let report = interruptible(
                client,
                transfer::to_peer(client, plan, output),
                PEER_STOPPED,
            )
            .await??;
            output.sent(&report);
        }
        Vol::Copy {
            name,
            to,
            overwrite,
            full,
        } => {
            let plan = transfer::PeerPlan {
                name,
                peer: to,
                overwrite,
                migrate: false,
                delta: !full,
            };
            let report = interruptible(
                client,
                transfer::to_peer(client, plan, output),
                PEER_STOPPED,
            )
            .await??;
            output.sent(&report);
        }
    }
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
    let subscription = client.call::<_, crate::proto::events::SubscribeReply>(
        route,
        &crate::proto::events::SubscribeRequest {},
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
                match ferry_actors::codec::decode_message::<crate::proto::events::Event>(&frame.payload) {
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
