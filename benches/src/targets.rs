//! The project's targets for Ferry, checked against a run's records.

use serde::Serialize;

use crate::report::{Record, fmt_value, render};

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub kind: &'static str,
    pub target: String,
    pub workload: String,
    pub case: String,
    pub value: f64,
    pub threshold: f64,
    /// `>=` or `<=`.
    pub op: &'static str,
    pub pass: bool,
}

fn find<'a>(records: &'a [Record], workload: &str, case: &str, peer: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.workload == workload && r.case == case && r.peer == peer)
}

/// Ferry's median of `metric`, or Ferry over `peer` when a peer is named.
fn value(
    records: &[Record],
    workload: &str,
    case: &str,
    metric: &str,
    peer: Option<&str>,
) -> Option<f64> {
    match peer {
        None => find(records, workload, case, "ferry")?
            .metrics
            .get(metric)
            .map(|m| m.median),
        Some(peer) => {
            find(records, workload, case, peer)?
                .metrics
                .get(metric)?
                .ferry_over_peer
        }
    }
}

pub fn evaluate(records: &[Record]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut check = |target: String,
                     workload: &str,
                     case: &str,
                     metric: &str,
                     peer: Option<&str>,
                     op: &'static str,
                     threshold: f64| {
        if let Some(value) = value(records, workload, case, metric, peer) {
            let pass = match op {
                ">=" => value >= threshold,
                _ => value <= threshold,
            };
            verdicts.push(Verdict {
                kind: "target",
                target,
                workload: workload.to_owned(),
                case: case.to_owned(),
                value,
                threshold,
                op,
                pass,
            });
        }
    };
    for workload in ["stream-upload", "stream-download"] {
        for case in ["tcp-256KiB", "unix-256KiB"] {
            for (peer, threshold) in [("raw", 0.9), ("tonic-default", 2.0), ("tonic-tuned", 1.3)] {
                check(
                    format!("throughput ferry/{peer}"),
                    workload,
                    case,
                    "throughput",
                    Some(peer),
                    ">=",
                    threshold,
                );
            }
            check(
                "CPU per GB ferry/raw".into(),
                workload,
                case,
                "CPU per GB",
                Some("raw"),
                "<=",
                1.15,
            );
        }
    }
    // Over TLS, against the same transfer over a bare tokio-openssl stream (the OpenSSL pipe).
    for direction in ["upload", "download"] {
        for chunk in ["64KiB", "256KiB", "1MiB"] {
            check(
                "throughput ferry/raw (OpenSSL pipe)".into(),
                "stream-tls",
                &format!("{direction}-{chunk}"),
                "throughput",
                Some("raw"),
                ">=",
                0.95,
            );
        }
    }
    // Whole processes against real daemons; virsh's figure includes the fsync Ferry does.
    for case in ["upload", "download"] {
        check(
            "throughput ferry/virsh".into(),
            "volumes",
            case,
            "throughput",
            Some("virsh"),
            ">=",
            2.0,
        );
        // A local `cp --sparse=always` plus fdatasync: the practical limit on one disk.
        check(
            "throughput ferry/cp".into(),
            "volumes",
            case,
            "throughput",
            Some("cp"),
            ">=",
            0.6,
        );
    }
    for case in ["delta upload", "delta download", "delta copy"] {
        check(
            "throughput ferry/rsync".into(),
            "volumes",
            case,
            "throughput",
            Some("rsync"),
            ">=",
            3.0,
        );
        check(
            "bytes on the wire, % of the image".into(),
            "volumes",
            case,
            "bytes on the wire",
            None,
            "<=",
            2.0,
        );
    }
    for peer in ["tonic-default", "tonic-tuned"] {
        check(
            format!("calls/s ferry/{peer}"),
            "unary",
            "tcp-64-in-flight",
            "calls/s",
            Some(peer),
            ">=",
            3.0,
        );
        check(
            format!("p99 ferry/{peer}"),
            "unary",
            "tcp-64-in-flight",
            "p99",
            Some(peer),
            "<=",
            0.5,
        );
    }
    for case in ["tcp-4-uploads", "tcp-4-downloads"] {
        check(
            "loaded p99 / idle p99".into(),
            "head-of-line",
            case,
            "loaded/idle p99",
            None,
            "<=",
            3.0,
        );
    }
    // One window of credit (1 MiB, headers included) plus the abort frame itself.
    let window = f64::from(crate::ferry::Settings::default().window) + 1024.0;
    for case in ["client-cancel", "server-abort"] {
        check(
            "bytes after the cancel <= one window".into(),
            "cancel",
            case,
            "bytes after",
            None,
            "<=",
            window,
        );
    }
    for (case, limit) in [("idle-streams", 2048.0), ("idle-connections", 20480.0)] {
        for metric in ["server rss", "client rss"] {
            check(
                format!("{metric} per item"),
                "memory",
                case,
                metric,
                None,
                "<=",
                limit,
            );
        }
    }
    // Receiving allocates the socket read blocks (1.0, plus block ends left unused, up to
    // 1/8); any copy after the read would add another 1.0. Sending from static buffers
    // allocates nothing per byte.
    for (case, metric, limit) in [
        ("tcp-256KiB-upload", "send path (client)", 0.05),
        ("tcp-256KiB-upload", "receive path (server)", 1.25),
        ("tcp-256KiB-download", "send path (server)", 0.05),
        ("tcp-256KiB-download", "receive path (client)", 1.25),
    ] {
        check(
            format!("{metric} allocated B per payload B"),
            "copies",
            case,
            metric,
            None,
            "<=",
            limit,
        );
    }
    verdicts
}

pub fn emit_json(verdicts: &[Verdict]) {
    for verdict in verdicts {
        println!("{}", serde_json::to_string(verdict).expect("serialise"));
    }
}

pub fn table(verdicts: &[Verdict]) -> String {
    let mut rows = vec![[
        "target".to_owned(),
        "workload".into(),
        "case".into(),
        "ferry".into(),
        "needed".into(),
        "".into(),
    ]];
    for v in verdicts {
        rows.push([
            v.target.clone(),
            v.workload.clone(),
            v.case.clone(),
            fmt_value(v.value),
            format!("{} {}", v.op, fmt_value(v.threshold)),
            if v.pass { "ok" } else { "MISSED" }.into(),
        ]);
    }
    render(&rows)
}
