//! Uploads and downloads between local files and a node, sparse-aware on both ends; and
//! migrations and copies from a node to its peers.
//!
//! Disk I/O runs on a blocking thread that talks to the transfer through a short channel, so
//! reading or writing the file overlaps with the network and never stalls the connection.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_actors::Client;
use ferry_actors::codec::encode_message;
use ferry_actors::stream::Chunk;
use indicatif::HumanBytes;
use tokio::sync::mpsc;

use ferry_node::proto::events::{Event, event};
use ferry_node::proto::volume::{
    DownloadRequest, InfoRequest, PeerTransferRequest, UploadFinish, UploadRequest,
    UploadStatusRequest,
};
use ferry_node::volume::delta::{BaseHashes, SendError, read_blocks, send_blocks};
use ferry_node::volume::{PROGRESS, VolumeClient, VolumeProgram, checksum_bytes};
use ferry_store::blockhash::{BLOCK_SIZE, TreeHash};
use ferry_store::hash_behind::HashBehind;
use ferry_store::sparse::SparseWriter;

use crate::exit::CliError;
use crate::output::Output;
use crate::patch;
pub use crate::report::{DownloadReport, PeerReport, UploadReport};
pub use crate::source::open_source;

/// Chunks in flight between the disk thread and the network.
const AHEAD: usize = 8;

pub struct UploadPlan {
    pub file: PathBuf,
    pub name: String,
    pub overwrite: bool,
    pub resume: bool,
    pub verify: bool,
    /// Copies in all (1: the node's only).
    pub replicas: u32,
    /// Send only the blocks that differ when the node holds a version (with `overwrite`).
    pub delta: bool,
}

pub struct DownloadPlan {
    pub name: String,
    pub file: PathBuf,
    pub force: bool,
    pub offset: u64,
    pub length: Option<u64>,
    /// Onto an existing file (`force`), fetch only the blocks that differ.
    pub delta: bool,
}

/// The hash state over the first `len` bytes of a file (holes as zeros): what a resumed upload
/// already sent, so the checksum it vouches for covers the whole file.
async fn hash_prefix(
    path: &Path,
    len: u64,
    block_size: u64,
    output: &Output,
) -> Result<TreeHash, CliError> {
    let file = File::open(path).map_err(CliError::local(format!("opening {}", path.display())))?;
    let bar = output.bar(len, "hashing what the node has");
    let hash = TreeHash::new(block_size, io::sink()).parallel();
    let (mut blocks, digest) = read_blocks(file, block_size, Some(hash), 0, len, None);
    while let Some(block) = blocks.recv().await {
        let block = block.map_err(CliError::local(format!("reading {}", path.display())))?;
        bar.inc(block.len);
    }
    bar.finish_and_clear();
    digest.await.ok().flatten().ok_or_else(|| CliError::Local {
        context: format!("hashing {}", path.display()),
        source: io::Error::other("the reader stopped"),
    })
}

/// The process's umask, read from /proc (reading it with umask(2) means changing it, for
/// every thread); the usual 022 if /proc does not say.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Umask:"))?;
            u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
        })
        .unwrap_or(0o022)
}

pub async fn upload(
    client: &Client,
    plan: UploadPlan,
    output: &Output,
) -> Result<UploadReport, CliError> {
    let started = Instant::now();
    let path = &plan.file;
    let (file, size) = open_source(path)?;
    let volumes = VolumeClient::new(client.clone());
    let name = plan.name.clone();
    let mut start = 0;
    if plan.resume {
        let status = volumes
            .upload_status(&UploadStatusRequest { name: name.clone() })
            .await
            .map_err(CliError::call(format!(
                "asking where the upload of {name:?} stands"
            )))?;
        if !status.exists {
            return Err(CliError::Mismatch(format!(
                "the node has no partial upload of {name:?} to resume (it finished, was aborted or expired); upload again without --resume"
            )));
        }
        if status.offset > size {
            return Err(CliError::Mismatch(format!(
                "the partial upload of {name:?} has {} bytes but {} has only {size}: it is another file",
                status.offset,
                path.display()
            )));
        }
        start = status.offset;
    }
    if !plan.overwrite && !plan.resume {
        // Refuse before sending a large file for nothing; the node checks again at commit.
        match volumes.info(&InfoRequest { name: name.clone() }).await {
            Ok(_) => {
                return Err(CliError::Call {
                    context: format!("uploading {} to volume {name:?}", path.display()),
                    error: ferry_actors::CallError::application(
                        ferry_actors::ErrorCode::AlreadyExists,
                        format!("volume {name:?} already exists; use --overwrite to replace it"),
                    ),
                });
            }
            Err(error) if error.code == ferry_actors::ErrorCode::NotFound => {}
            Err(error) => return Err(CliError::call(format!("volume {name:?}"))(error)),
        }
    }
    // A delta when the node holds a version the file may replace (unless --full): the node's
    // block hashes first, then only the blocks that differ cross.
    // With nothing to build on (no such volume, no block hashes) the upload is a full one.
    let mut base = None;
    // A resumed upload sends the rest in full: the partial upload may have been begun
    // against another version, or none.
    if plan.overwrite && plan.delta && plan.replicas <= 1 && !plan.resume {
        base = BaseHashes::fetch(volumes.clone(), &name)
            .await
            .map_err(CliError::call(format!(
                "asking for the block hashes of {name:?}"
            )))?
            .ok();
    }
    let attempt = send_file(&volumes, &plan, file, size, start, base.as_mut(), output).await;
    let report = match attempt {
        // The base changed under the delta, or the node's stored block hashes did not match
        // its bytes (the whole-content check caught it): nothing was committed, so the file
        // goes again in full. A resumed upload is not retried: its partial data was kept.
        Err(CliError::Call { error, .. })
            if base.is_some()
                && !plan.resume
                && error.code == ferry_actors::ErrorCode::FailedPrecondition =>
        {
            output.done(&format!(
                "the delta upload failed ({}); sending {} in full",
                error.message,
                path.display()
            ));
            let (file, size) = open_source(path)?;
            base = None;
            send_file(&volumes, &plan, file, size, 0, None, output).await?
        }
        other => other?,
    };
    Ok(UploadReport {
        hash_bytes: base.as_ref().map_or(0, BaseHashes::hash_bytes),
        took: started.elapsed(),
        ..report
    })
}

/// One UPLOAD of `[start, size)` of the file, a delta against `base` if given: the file is
/// read, hashed and sent in one pass, and the checksum vouched for in the finish.
async fn send_file(
    volumes: &VolumeClient,
    plan: &UploadPlan,
    file: File,
    size: u64,
    start: u64,
    base: Option<&mut BaseHashes>,
    output: &Output,
) -> Result<UploadReport, CliError> {
    let path = &plan.file;
    let name = &plan.name;
    let block_size = base.as_ref().map_or(BLOCK_SIZE, |b| b.block_size());
    // A resumed upload first hashes what the node already has.
    let hash = match start {
        // A delta leaves the node little to do, so both cores may hash; a full upload's node
        // hashes and writes everything, and the client keeps to one core (on one machine,
        // rayon's idle workers spinning for the next block cost the node more than they gave).
        0 if base.is_some() => TreeHash::new(block_size, io::sink()).parallel(),
        0 => TreeHash::new(block_size, io::sink()),
        _ => hash_prefix(path, start, block_size, output).await?,
    };
    let context = format!("uploading {} to volume {name:?}", path.display());
    let mut stream = volumes
        .upload(&UploadRequest {
            name: name.clone(),
            expected_size: Some(size),
            expected_checksum: Default::default(),
            overwrite: plan.overwrite,
            resume: plan.resume,
            replicas: plan.replicas,
            replica: false,
            base_checksum: checksum_bytes(base.as_ref().map(|b| b.checksum())),
            resume_prefix_checksum: checksum_bytes((start > 0).then(|| hash.root())),
        })
        .await
        .map_err(CliError::call(context.clone()))?;
    let bar = output.bar(size, "upload");
    bar.set_position(start);
    let (mut blocks, digest) = read_blocks(file, block_size, Some(hash), start, size, None);
    let mut skipped = 0;
    let progress = async |len: u64, kept: bool| {
        bar.inc(len);
        if kept {
            skipped += len;
            bar.set_message(format!(
                "upload ({} unchanged, skipped)",
                HumanBytes(skipped)
            ));
        }
    };
    let sent = send_blocks(&mut stream, &mut blocks, base, progress)
        .await
        .map_err(|error| match error {
            SendError::Read(error) => CliError::Local {
                context: format!("reading {}", path.display()),
                source: error,
            },
            SendError::Call(error) => CliError::call(context.clone())(error),
        })?;
    bar.set_message("committing");
    let checksum = match digest.await {
        Ok(Some(hash)) if plan.verify => Some(hash.root()),
        _ => None,
    };
    let trailer = UploadFinish {
        checksum: checksum_bytes(checksum),
    };
    let reply = stream
        .finish_with(encode_message(&trailer))
        .await
        .map_err(CliError::call(context.clone()))?;
    bar.finish_and_clear();
    let volume = reply.volume;
    if let (Some(expected), Some(volume)) = (checksum, &volume)
        && volume.checksum[..] != expected[..]
    {
        return Err(CliError::Mismatch(format!(
            "{context}: the node stored BLAKE3 {} but the file has {}",
            hex::encode(&volume.checksum),
            hex::encode(expected)
        )));
    }
    Ok(UploadReport {
        volume,
        replicas: reply.replicas,
        bytes_sent: sent.data_bytes,
        hole_bytes: sent.hole_bytes,
        kept_bytes: sent.kept_bytes,
        hash_bytes: 0,
        resumed_from: reply.resumed_from,
        took: Duration::ZERO,
    })
}

pub struct PeerPlan {
    pub name: String,
    pub peer: String,
    pub overwrite: bool,
    /// Migrate (delete on the node once the peer has it) rather than copy.
    pub migrate: bool,
    /// Let the node send only the blocks that differ when the peer holds a version.
    pub delta: bool,
}

/// Asks the node to migrate or copy a volume to one of its peers, showing the progress the
/// node reports on the call. Dropping the future cancels the call, which aborts the transfer.
pub async fn to_peer(
    client: &Client,
    plan: PeerPlan,
    output: &Output,
) -> Result<PeerReport, CliError> {
    let started = Instant::now();
    let name = plan.name.clone();
    let (what, verb) = match plan.migrate {
        true => ("migrate", "migrating"),
        false => ("copy", "copying"),
    };
    let context = format!("{verb} volume {name:?} to {}", plan.peer);
    let volumes = VolumeClient::new(client.clone());
    let info = volumes
        .info(&InfoRequest { name: name.clone() })
        .await
        .map_err(CliError::call(context.clone()))?;
    let mut progress = client
        .subscribe(VolumeProgram::NUMBER, PROGRESS)
        .await
        .map_err(CliError::call(context.clone()))?;
    let request = PeerTransferRequest {
        name,
        to_peer: plan.peer,
        overwrite: plan.overwrite,
        full: !plan.delta,
    };
    // No deadline: the call lasts as long as the data moves.
    let volumes = volumes.with_options(ferry_actors::CallOptions { deadline: None });
    let call = async {
        match plan.migrate {
            true => volumes.migrate(&request).await,
            false => volumes.copy(&request).await,
        }
    };
    tokio::pin!(call);
    let bar = output.bar(info.size, what);
    let reply = loop {
        tokio::select! {
            reply = &mut call => break reply.map_err(CliError::call(context.clone()))?,
            Some(frame) = progress.recv() => {
                let event = ferry_actors::codec::decode_message::<Event>(&frame.payload);
                if let Ok(Event { kind: Some(event::Kind::Progress(p)), .. }) = event {
                    bar.set_position(p.bytes);
                }
            }
        }
    };
    bar.finish_and_clear();
    Ok(PeerReport {
        migrate: plan.migrate,
        reply,
        took: started.elapsed(),
    })
}

/// Where downloaded chunks go: a file that appears only when complete, or stdout.
enum Sink {
    File {
        temp: tempfile::NamedTempFile,
        dest: PathBuf,
        force: bool,
    },
    Stdout,
}

/// Writes received chunks on a blocking thread, hashing them on another beside the writes;
/// returns the content hash once all is written and synced (for a file).
fn write_chunks(
    sink: Sink,
) -> (
    mpsc::Sender<Chunk>,
    tokio::task::JoinHandle<io::Result<(Sink, TreeHash)>>,
) {
    let (tx, mut rx) = mpsc::channel::<Chunk>(AHEAD);
    let task = tokio::task::spawn_blocking(move || {
        let mut hash = HashBehind::start(TreeHash::default());
        match &sink {
            Sink::File { temp, .. } => {
                let mut writer = SparseWriter::new(temp.as_file());
                while let Some(chunk) = rx.blocking_recv() {
                    absorb(&mut hash, &chunk)?;
                    writer.write(&chunk)?;
                }
                writer.finish()?;
            }
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                while let Some(chunk) = rx.blocking_recv() {
                    absorb(&mut hash, &chunk)?;
                    match &chunk {
                        Chunk::Data(bytes) => out.write_all(bytes)?,
                        Chunk::Hole(length) => {
                            io::copy(&mut io::Read::take(io::repeat(0), *length), &mut out)?;
                        }
                        Chunk::Keep(_) => unreachable!("absorb refuses a KEEP"),
                    }
                }
                out.flush()?;
            }
        }
        Ok((sink, hash.into_tree()?))
    });
    (tx, task)
}

/// Hashes a downloaded chunk: data on the hashing thread, while the caller writes it.
fn absorb(hash: &mut HashBehind<io::Sink>, chunk: &Chunk) -> io::Result<()> {
    match chunk {
        Chunk::Data(bytes) => hash.data(bytes.clone()),
        Chunk::Hole(length) => hash.tree()?.zeros_while(*length, || true).map(drop),
        Chunk::Keep(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the node sent a KEEP range in a download",
        )),
    }
}

pub async fn download(
    client: &Client,
    plan: DownloadPlan,
    output: &Output,
) -> Result<DownloadReport, CliError> {
    let started = Instant::now();
    let name = plan.name.clone();
    let to_stdout = plan.file.as_os_str() == "-";
    let sink = if to_stdout {
        Sink::Stdout
    } else {
        if plan.file.exists() && !plan.force {
            return Err(CliError::Exists(format!(
                "{} exists; use --force to replace it",
                plan.file.display()
            )));
        }
        let temp = temp_beside(&plan.file)?;
        Sink::File {
            temp,
            dest: plan.file.clone(),
            force: plan.force,
        }
    };
    let volumes = VolumeClient::new(client.clone());
    // Onto an existing file (with --force) of the whole volume: only the blocks that differ.
    let whole = plan.offset == 0 && plan.length.is_none();
    if plan.delta
        && plan.force
        && whole
        && !to_stdout
        && std::fs::metadata(&plan.file).is_ok_and(|m| m.is_file())
        && let Some(report) = download_delta(&volumes, &plan, output).await?
    {
        return Ok(report);
    }
    let context = format!("downloading volume {name:?}");
    let info = volumes
        .info(&InfoRequest { name: name.clone() })
        .await
        .map_err(CliError::call(context.clone()))?;
    let length = plan.length.unwrap_or(info.size.saturating_sub(plan.offset));
    // A whole volume is pinned to the version `info` described, and must hash to its checksum
    // before it is kept: the node hashes what it reads, so bytes damaged on its disk would
    // otherwise arrive "verified".
    let recorded = <[u8; 32]>::try_from(&info.checksum[..])
        .ok()
        .filter(|_| whole);
    let mut stream = volumes
        .download(&DownloadRequest {
            expected_checksum: recorded.map(|sum| sum.to_vec().into()).unwrap_or_default(),
            name: name.clone(),
            offset: plan.offset,
            length: plan.length.unwrap_or(0),
        })
        .await
        .map_err(CliError::call(context.clone()))?;
    let bar = output.bar(length, "download");
    let (tx, writer) = write_chunks(sink);
    while let Some(chunk) = stream
        .recv()
        .await
        .map_err(CliError::call(context.clone()))?
    {
        bar.inc(chunk.len());
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    let local = CliError::local(format!("writing {}", plan.file.display()));
    let (sink, hash) = writer
        .await
        .map_err(|e| CliError::Local {
            context: context.clone(),
            source: io::Error::other(e),
        })?
        .map_err(local)?;
    if let Some(recorded) = recorded
        && hash.root() != recorded
    {
        // A file is not kept; standard output already carried the bytes.
        let kept = if to_stdout {
            "what went to standard output is not the volume"
        } else {
            "nothing was written"
        };
        return Err(CliError::Mismatch(format!(
            "{context}: the node's copy is damaged: its bytes hash to {} but the volume was stored with {}; {kept} (upload it again, or copy it from another node)",
            hex::encode(hash.root()),
            hex::encode(recorded)
        )));
    }
    // Commit locally first: the node hears "confirmed" only once the data is safe here.
    if let Sink::File { temp, dest, force } = sink {
        persist(temp, &dest, force)?;
    }
    let reply = stream
        .finish()
        .await
        .map_err(CliError::call(context.clone()))?;
    bar.finish_and_clear();
    let checksum = hash.root();
    if reply.checksum[..] != checksum[..] {
        if !to_stdout {
            let _ = std::fs::remove_file(&plan.file);
        }
        return Err(CliError::Mismatch(format!(
            "{context}: the node sent BLAKE3 {} but {} arrived; the file was removed",
            hex::encode(&reply.checksum),
            hex::encode(checksum)
        )));
    }
    Ok(DownloadReport {
        file: plan.file,
        bytes: hash.bytes(),
        hole_bytes: hash.hole_bytes(),
        kept_bytes: 0,
        hash_bytes: 0,
        checksum: checksum.to_vec(),
        took: started.elapsed(),
    })
}

/// Gives a finished (synced) download its place: the mode a new file gets under the umask
/// (the temporary file is private, 0600), then a rename onto `dest`, which replaces a file
/// there only with `force`.
fn persist(temp: tempfile::NamedTempFile, dest: &Path, force: bool) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        temp.path(),
        std::fs::Permissions::from_mode(0o666 & !umask()),
    )
    .map_err(CliError::local(format!(
        "setting the mode of {}",
        dest.display()
    )))?;
    let persisted = if force {
        temp.persist(dest)
    } else {
        temp.persist_noclobber(dest)
    };
    persisted.map(drop).map_err(|e| CliError::Local {
        context: format!("saving {}", dest.display()),
        source: e.error,
    })
}

/// A temporary file beside `dest`, where a download is assembled.
fn temp_beside(dest: &Path) -> Result<tempfile::NamedTempFile, CliError> {
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".ferry-download-")
        .tempfile_in(&dir)
        .map_err(CliError::local(format!(
            "creating a temporary file in {}",
            dir.display()
        )))
}

/// A download onto an existing file as a delta: `None` when the node has no block hashes to
/// compare, or when the assembled file did not come out as the volume (then the caller
/// downloads in full; the old file is untouched either way).
async fn download_delta(
    volumes: &VolumeClient,
    plan: &DownloadPlan,
    output: &Output,
) -> Result<Option<DownloadReport>, CliError> {
    let started = Instant::now();
    let name = &plan.name;
    let node = match BaseHashes::fetch(volumes.clone(), name)
        .await
        .map_err(CliError::call(format!(
            "asking for the block hashes of {name:?}"
        )))? {
        Ok(node) => node,
        Err(_) => return Ok(None),
    };
    let temp = temp_beside(&plan.file)?;
    let bar = output.bar(node.volume().size, "download");
    let patched = match patch::patch(volumes, name, node, &plan.file, temp.as_file(), &bar).await {
        Ok(patched) => patched,
        Err(CliError::Mismatch(why)) => {
            bar.finish_and_clear();
            output.done(&format!("{why}; downloading in full"));
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    temp.as_file().sync_all().map_err(CliError::local(format!(
        "syncing the update of {}",
        plan.file.display()
    )))?;
    persist(temp, &plan.file, true)?;
    bar.finish_and_clear();
    Ok(Some(DownloadReport {
        file: plan.file.clone(),
        bytes: patched.size,
        hole_bytes: patched.hole_bytes,
        kept_bytes: patched.kept_bytes,
        hash_bytes: patched.hash_bytes,
        checksum: patched.checksum.to_vec(),
        took: started.elapsed(),
    }))
}
