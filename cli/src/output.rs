//! What `ferry` prints: tables and sentences for people, JSON for programs. Results go to
//! stdout; progress, notes and errors go to stderr.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use ferry_node::proto::admin::{Client, ServerInfo};
use ferry_node::proto::events::{Event, event};
use ferry_node::proto::volume::{NodeVolumes, Volume};
use ferry_node::uri::NodeUri;

use crate::exit::{CliError, Exit};
use crate::report::{DownloadReport, PeerReport, UploadReport};

/// The exit code when the reader of stdout went away: 128 + SIGPIPE, what a shell reports
/// for a tool that SIGPIPE ended.
pub(super) const CLOSED_STDOUT: u8 = 141;

/// Writes one line to stdout or stderr, like `println!`, without its panic when the reader is
/// gone (`ferry vol list | head -1`): ferry then stops quietly with 141, as tools killed by
/// SIGPIPE do. (Rust ignores SIGPIPE so that a closed socket is an error, not a death; so the
/// terminal's pipe is handled here.) Any other failure to write is reported and exits 1.
pub(super) fn write_line(mut to: impl Write, line: fmt::Arguments) {
    if let Err(error) = to.write_fmt(line).and_then(|()| to.write_all(b"\n")) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_STDOUT.into());
        }
        let _ = writeln!(io::stderr(), "ferry: writing the output: {error}");
        std::process::exit(Exit::Failure as i32);
    }
}

/// Writes bytes (a completion script, a man page) to stdout as [`write_line`] writes lines.
pub(super) fn write_bytes(bytes: &[u8]) {
    let mut stdout = io::stdout().lock();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        if error.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_STDOUT.into());
        }
        let _ = writeln!(io::stderr(), "ferry: writing the output: {error}");
        std::process::exit(Exit::Failure as i32);
    }
}

/// `println!` through [`write_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(std::io::stdout().lock(), format_args!($($arg)*))
    };
}

/// `eprintln!` through [`write_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_line(std::io::stderr().lock(), format_args!($($arg)*))
    };
}

pub(super) use errln;

/// Where results go and how. With `--json` the units are the same everywhere (docs/CLI.md):
/// sizes and byte counts in bytes, durations in seconds (a float, fields ending `_seconds`),
/// points in time as RFC 3339 UTC strings with milliseconds (fields ending `_at`, and an
/// event's `at`), checksums as lowercase hex BLAKE3 or null.
pub struct Output {
    json: bool,
    quiet: bool,
    progress: bool,
}

fn at(millis: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

/// A point in time for people: to the second.
fn time(millis: i64) -> String {
    humantime::format_rfc3339_seconds(at(millis)).to_string()
}

/// A point in time in JSON: to the millisecond, as the node keeps it.
fn time_json(millis: i64) -> String {
    humantime::format_rfc3339_millis(at(millis)).to_string()
}

fn volume_json(v: &Volume) -> Value {
    json!({
        "name": v.name,
        "size": v.size,
        "allocated": v.allocated,
        "checksum": (!v.checksum.is_empty()).then(|| hex::encode(&v.checksum)),
        "created_at": time_json(v.created_millis),
        "modified_at": time_json(v.modified_millis),
    })
}

/// What a delta did not send, for a transfer's summary line.
fn skipped(kept: u64, hash_bytes: u64) -> String {
    if kept == 0 {
        return String::new();
    }
    format!(
        ", {} unchanged not sent (delta: {} of block hashes)",
        HumanBytes(kept),
        HumanBytes(hash_bytes)
    )
}

impl Output {
    /// `quiet` drops the notes on stderr (progress bars follow `progress`).
    pub fn new(json: bool, quiet: bool, progress: bool) -> Self {
        Self {
            json,
            quiet,
            progress,
        }
    }

    fn print(&self, value: Value) {
        outln!("{value}");
    }

    /// A progress bar on a terminal; hidden otherwise (and with `--json`).
    pub fn bar(&self, total: u64, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        bar
    }

    /// A note for people on stderr: not with `--json` or `--quiet`.
    pub fn done(&self, note: &str) {
        if !self.json && !self.quiet {
            errln!("{note}");
        }
    }

    /// A `[[security.users]]` entry: TOML to append to ferryd's config, or the same fields
    /// as a JSON object.
    pub fn user_entry(&self, entry: &ferry_node::security::UserEntry) {
        if self.json {
            return self.print(serde_json::to_value(entry).expect("a user entry is JSON"));
        }
        let toml = toml::to_string(entry).expect("a user entry is valid TOML");
        outln!("[[security.users]]\n{toml}");
    }

    /// The outcome of a command that returns nothing else: a sentence, or a JSON object.
    pub fn outcome(&self, value: Value, sentence: &str) {
        if self.json {
            self.print(value);
        } else {
            outln!("{sentence}");
        }
    }

    pub fn error(&self, error: &CliError) {
        if self.json {
            errln!(
                "{}",
                json!({"error": error.to_string(), "exit": error.exit() as u8})
            );
        } else {
            errln!("ferry: {error}");
        }
    }

    pub fn ping(&self, uri: &NodeUri, took: Duration) {
        if self.json {
            self.print(json!({"node": uri.to_string(), "round_trip_seconds": took.as_secs_f64()}));
        } else {
            outln!(
                "{uri}: ferryd answered in {:.2} ms",
                took.as_secs_f64() * 1000.0
            );
        }
    }

    pub fn volumes(&self, volumes: &[Volume]) {
        if self.json {
            return self.print(Value::Array(volumes.iter().map(volume_json).collect()));
        }
        if volumes.is_empty() {
            return self.done("no volumes");
        }
        outln!(
            "{:<32} {:>12} {:>12}  {:<20}  CHECKSUM",
            "NAME",
            "SIZE",
            "ALLOCATED",
            "MODIFIED"
        );
        for v in volumes {
            let checksum = if v.checksum.is_empty() {
                "-".into()
            } else {
                hex::encode(&v.checksum[..8])
            };
            outln!(
                "{:<32} {:>12} {:>12}  {:<20}  {checksum}",
                v.name,
                HumanBytes(v.size).to_string(),
                HumanBytes(v.allocated).to_string(),
                time(v.modified_millis)
            );
        }
    }

    pub fn volume(&self, v: &Volume) {
        if self.json {
            return self.print(volume_json(v));
        }
        outln!("name:      {}", v.name);
        outln!("size:      {} ({} bytes)", HumanBytes(v.size), v.size);
        outln!(
            "allocated: {} ({} bytes)",
            HumanBytes(v.allocated),
            v.allocated
        );
        let checksum = if v.checksum.is_empty() {
            "unknown".into()
        } else {
            hex::encode(&v.checksum)
        };
        outln!("blake3:    {checksum}");
        outln!("created:   {}", time(v.created_millis));
        outln!("modified:  {}", time(v.modified_millis));
    }

    pub fn uploaded(&self, r: &UploadReport) {
        if self.json {
            return self.print(json!({
                "volume": r.volume.as_ref().map(volume_json),
                "replicas": r.replicas.iter().map(|replica| json!({
                    "peer": replica.peer,
                    "volume": replica.volume.as_ref().map(volume_json),
                })).collect::<Vec<_>>(),
                "bytes_sent": r.bytes_sent,
                "hole_bytes": r.hole_bytes,
                "kept_bytes": r.kept_bytes,
                "hash_bytes": r.hash_bytes,
                "resumed_from": r.resumed_from,
                "elapsed_seconds": r.took.as_secs_f64(),
            }));
        }
        let name = r.volume.as_ref().map_or("?", |v| v.name.as_str());
        let rate = r.bytes_sent as f64 / r.took.as_secs_f64().max(1e-9);
        outln!(
            "uploaded {name}: {} in {:.1} s ({}/s){}{}{}",
            HumanBytes(r.bytes_sent),
            r.took.as_secs_f64(),
            HumanBytes(rate as u64),
            if r.hole_bytes > 0 {
                format!(", {} of holes not sent", HumanBytes(r.hole_bytes))
            } else {
                String::new()
            },
            skipped(r.kept_bytes, r.hash_bytes),
            if r.resumed_from > 0 {
                format!(", resumed at byte {}", r.resumed_from)
            } else {
                String::new()
            },
        );
        if !r.replicas.is_empty() {
            let peers: Vec<&str> = r.replicas.iter().map(|r| r.peer.as_str()).collect();
            outln!("  replicated to {} (same checksum)", peers.join(", "));
        }
    }

    /// The outcome of a migration or copy to a peer.
    pub fn sent(&self, r: &PeerReport) {
        let reply = &r.reply;
        if self.json {
            return self.print(json!({
                "volume": reply.volume.as_ref().map(volume_json),
                "peer": reply.peer,
                "migrated": r.migrate,
                "bytes_sent": reply.bytes_sent,
                "hole_bytes": reply.hole_bytes,
                "kept_bytes": reply.kept_bytes,
                "hash_bytes": reply.hash_bytes,
                "elapsed_seconds": r.took.as_secs_f64(),
            }));
        }
        let name = reply.volume.as_ref().map_or("?", |v| v.name.as_str());
        let checksum = reply
            .volume
            .as_ref()
            .filter(|v| !v.checksum.is_empty())
            .map_or_else(|| "unknown".into(), |v| hex::encode(&v.checksum));
        let rate = reply.bytes_sent as f64 / r.took.as_secs_f64().max(1e-9);
        outln!(
            "{} {name} to {}: {} in {:.1} s ({}/s){}{}, blake3 {checksum}",
            if r.migrate { "migrated" } else { "copied" },
            reply.peer,
            HumanBytes(reply.bytes_sent),
            r.took.as_secs_f64(),
            HumanBytes(rate as u64),
            if reply.hole_bytes > 0 {
                format!(", {} of holes not sent", HumanBytes(reply.hole_bytes))
            } else {
                String::new()
            },
            skipped(reply.kept_bytes, reply.hash_bytes),
        );
    }

    /// Which nodes hold what: one row per volume (name, size and checksum), with the nodes
    /// that hold it; then the nodes that could not be asked. An unreachable node's volumes
    /// are those it listed last, marked `NODE?` (stale), so they do not vanish from the view.
    pub fn cluster(&self, nodes: &[NodeVolumes]) {
        if self.json {
            return self.print(Value::Array(
                nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node": n.node,
                            "address": n.address,
                            "local": n.local,
                            "reachable": n.reachable,
                            "error": (!n.reachable).then_some(&n.error),
                            "listed_at": (n.listed_at_millis > 0).then(|| time_json(n.listed_at_millis)),
                            "volumes": n.volumes.iter().map(volume_json).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            ));
        }
        // Same name, size and checksum: the same volume.
        let mut rows: std::collections::BTreeMap<(&str, u64, &[u8]), Vec<String>> =
            std::collections::BTreeMap::new();
        for node in nodes {
            let holder = if node.reachable {
                node.node.clone()
            } else {
                format!("{}?", node.node)
            };
            for v in &node.volumes {
                rows.entry((v.name.as_str(), v.size, &v.checksum[..]))
                    .or_default()
                    .push(holder.clone());
            }
        }
        if rows.is_empty() {
            self.done("no volumes");
        } else {
            outln!("{:<32} {:>12}  {:<16}  NODES", "NAME", "SIZE", "CHECKSUM");
            for ((name, size, checksum), holders) in &rows {
                let checksum = if checksum.is_empty() {
                    "-".into()
                } else {
                    hex::encode(&checksum[..8])
                };
                outln!(
                    "{name:<32} {:>12}  {checksum:<16}  {}",
                    HumanBytes(*size).to_string(),
                    holders.join(", ")
                );
            }
        }
        for node in nodes.iter().filter(|n| !n.reachable) {
            let known = if node.listed_at_millis > 0 {
                format!(
                    "{}? marks what it held when it last answered, at {}",
                    node.node,
                    time(node.listed_at_millis)
                )
            } else {
                "what it holds is unknown (it has not answered since the node started)".into()
            };
            outln!(
                "{} ({}) is unreachable: {}; {known}",
                node.node,
                node.address,
                node.error
            );
        }
    }

    pub fn downloaded(&self, r: &DownloadReport) {
        // Data went to stdout with `-`: the report must not follow it there.
        let to_stdout = r.file.as_os_str() == "-";
        if self.json {
            let report = json!({
                "file": r.file.display().to_string(),
                "bytes": r.bytes,
                "hole_bytes": r.hole_bytes,
                "kept_bytes": r.kept_bytes,
                "hash_bytes": r.hash_bytes,
                "checksum": hex::encode(&r.checksum),
                "elapsed_seconds": r.took.as_secs_f64(),
            });
            if to_stdout {
                errln!("{report}");
            } else {
                self.print(report);
            }
            return;
        }
        let rate = r.bytes as f64 / r.took.as_secs_f64().max(1e-9);
        let line = format!(
            "downloaded {}: {} in {:.1} s ({}/s){}, blake3 {}",
            r.file.display(),
            HumanBytes(r.bytes),
            r.took.as_secs_f64(),
            HumanBytes(rate as u64),
            skipped(r.kept_bytes, r.hash_bytes),
            hex::encode(&r.checksum)
        );
        if to_stdout {
            errln!("{line}");
        } else {
            outln!("{line}");
        }
    }

    pub fn event(&self, e: &Event) {
        let (kind, detail) = match &e.kind {
            Some(event::Kind::Created(c)) => ("created", json!({"name": c.name, "size": c.size})),
            Some(event::Kind::Deleted(d)) => ("deleted", json!({"name": d.name})),
            Some(event::Kind::Uploaded(u)) => (
                "uploaded",
                json!({"name": u.name, "size": u.size, "checksum": hex::encode(&u.checksum)}),
            ),
            Some(event::Kind::Progress(p)) => (
                "progress",
                json!({"name": p.name, "direction": p.direction().as_str_name().to_lowercase(), "bytes": p.bytes, "total": p.total, "peer": p.peer}),
            ),
            Some(event::Kind::Finished(f)) => (
                "finished",
                json!({"name": f.name, "direction": f.direction().as_str_name().to_lowercase(), "bytes": f.bytes, "peer": f.peer}),
            ),
            Some(event::Kind::Failed(f)) => (
                "failed",
                json!({"name": f.name, "direction": f.direction().as_str_name().to_lowercase(), "bytes": f.bytes, "reason": f.reason, "peer": f.peer}),
            ),
            Some(event::Kind::Subscribed(_)) => ("subscribed", json!({})),
            None => ("unknown", json!({})),
        };
        if self.json {
            return self.print(json!({"at": time_json(e.at_millis), "event": kind, "dropped_before": e.dropped_before, "detail": detail}));
        }
        if kind == "subscribed" {
            return self.done("watching events; Ctrl-C to stop");
        }
        if e.dropped_before > 0 {
            outln!(
                "({} events dropped: this terminal was too slow)",
                e.dropped_before
            );
        }
        outln!("{} {kind:<9} {detail}", time(e.at_millis));
    }

    pub fn server_info(&self, i: &ServerInfo) {
        if self.json {
            return self.print(json!({
                "version": i.version, "uptime_seconds": i.uptime_millis as f64 / 1000.0, "data_dir": i.data_dir,
                "connections_open": i.connections_open, "max_connections": i.max_connections,
                "max_in_flight_calls": i.max_in_flight_calls, "max_frame": i.max_frame,
                "max_chunk": i.max_chunk, "stream_window": i.stream_window,
            }));
        }
        outln!("version:             {}", i.version);
        outln!(
            "uptime:              {:.0} s",
            i.uptime_millis as f64 / 1000.0
        );
        outln!("data directory:      {}", i.data_dir);
        outln!(
            "connections:         {} open, at most {}",
            i.connections_open,
            i.max_connections
        );
        outln!(
            "calls per connection: at most {} in flight",
            i.max_in_flight_calls
        );
        outln!(
            "max frame / chunk:   {} / {}",
            HumanBytes(i.max_frame),
            HumanBytes(i.max_chunk)
        );
        outln!("stream window:       {}", HumanBytes(i.stream_window));
    }

    pub fn clients(&self, clients: &[Client]) {
        if self.json {
            return self.print(Value::Array(
                clients
                    .iter()
                    .map(|c| json!({"id": c.id, "peer": c.peer, "connected_at": time_json(c.since_millis), "calls_in_flight": c.calls_in_flight, "streams_open": c.streams_open, "bytes_in": c.bytes_in, "bytes_out": c.bytes_out}))
                    .collect(),
            ));
        }
        outln!(
            "{:>6}  {:<28} {:<20}  {:>5} {:>7} {:>10} {:>10}",
            "ID",
            "PEER",
            "SINCE",
            "CALLS",
            "STREAMS",
            "IN",
            "OUT"
        );
        for c in clients {
            outln!(
                "{:>6}  {:<28} {:<20}  {:>5} {:>7} {:>10} {:>10}",
                c.id,
                c.peer,
                time(c.since_millis),
                c.calls_in_flight,
                c.streams_open,
                HumanBytes(c.bytes_in).to_string(),
                HumanBytes(c.bytes_out).to_string()
            );
        }
    }
}
