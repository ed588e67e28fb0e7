//! Results: samples per (workload, case, peer, metric), summarised as median/min/max with the
//! Ferry/peer ratio of medians; printed as JSON lines on stdout and as a table on stderr.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

/// Whether a bigger value of a metric is better (throughput) or worse (latency, memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// The samples of one metric of one peer in one case, one per round.
#[derive(Debug, Clone)]
struct Series {
    unit: &'static str,
    better: Better,
    samples: Vec<f64>,
}

/// One (case, peer) of a workload with its metrics, in the order they were first reported.
#[derive(Debug, Clone)]
struct Entry {
    case: String,
    peer: String,
    params: BTreeMap<String, serde_json::Value>,
    metrics: Vec<(String, Series)>,
}

/// Collects the rounds of one workload.
pub struct Collector {
    workload: &'static str,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    pub unit: &'static str,
    pub better: Better,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
    /// Ferry's median divided by this peer's median (absent on Ferry's own record).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ferry_over_peer: Option<f64>,
}

/// One JSON line: a workload × case × peer summary over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub workload: &'static str,
    pub case: String,
    pub peer: String,
    pub rounds: usize,
    #[serde(flatten)]
    pub params: BTreeMap<String, serde_json::Value>,
    pub metrics: BTreeMap<String, MetricSummary>,
    /// Metric names in reporting order (for the table).
    #[serde(skip)]
    pub order: Vec<String>,
}

impl Collector {
    pub fn new(workload: &'static str) -> Self {
        Self {
            workload,
            entries: Vec::new(),
        }
    }

    fn entry(&mut self, case: &str, peer: &str) -> &mut Entry {
        let index = match self
            .entries
            .iter()
            .position(|e| e.case == case && e.peer == peer)
        {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    case: case.to_owned(),
                    peer: peer.to_owned(),
                    params: BTreeMap::new(),
                    metrics: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[index]
    }

    /// Attaches a parameter (transport, chunk size, …) to a case's record.
    pub fn param(
        &mut self,
        case: &str,
        peer: &str,
        key: &str,
        value: impl Into<serde_json::Value>,
    ) {
        self.entry(case, peer)
            .params
            .insert(key.to_owned(), value.into());
    }

    /// Adds one round's value of a metric.
    pub fn add(
        &mut self,
        case: &str,
        peer: &str,
        metric: &str,
        unit: &'static str,
        better: Better,
        value: f64,
    ) {
        let entry = self.entry(case, peer);
        match entry.metrics.iter_mut().find(|(name, _)| name == metric) {
            Some((_, series)) => series.samples.push(value),
            None => entry.metrics.push((
                metric.to_owned(),
                Series {
                    unit,
                    better,
                    samples: vec![value],
                },
            )),
        }
    }

    /// Summarises every (case, peer) and computes the Ferry/peer ratios per case.
    pub fn finish(self) -> Vec<Record> {
        let mut records: Vec<Record> = self
            .entries
            .iter()
            .map(|entry| Record {
                workload: self.workload,
                case: entry.case.clone(),
                peer: entry.peer.clone(),
                rounds: entry
                    .metrics
                    .iter()
                    .map(|(_, s)| s.samples.len())
                    .max()
                    .unwrap_or(0),
                params: entry.params.clone(),
                order: entry.metrics.iter().map(|(name, _)| name.clone()).collect(),
                metrics: entry
                    .metrics
                    .iter()
                    .map(|(name, series)| (name.clone(), summarise(series)))
                    .collect(),
            })
            .collect();
        let ferry: Vec<Record> = records
            .iter()
            .filter(|r| r.peer == "ferry")
            .cloned()
            .collect();
        for record in records.iter_mut().filter(|r| r.peer != "ferry") {
            let Some(ours) = ferry.iter().find(|f| f.case == record.case) else {
                continue;
            };
            for (name, summary) in record.metrics.iter_mut() {
                if let Some(mine) = ours.metrics.get(name)
                    && summary.median != 0.0
                {
                    summary.ferry_over_peer = Some(mine.median / summary.median);
                }
            }
        }
        records
    }
}

fn summarise(series: &Series) -> MetricSummary {
    let mut sorted = series.samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    MetricSummary {
        unit: series.unit,
        better: series.better,
        median,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        samples: series.samples.clone(),
        ferry_over_peer: None,
    }
}

/// Writes records as JSON lines on stdout.
pub fn emit_json(records: &[Record]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for record in records {
        let line = serde_json::to_string(record).expect("records serialise");
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// Formats a value with a precision that suits its size.
pub fn fmt_value(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The human table of one workload's records.
pub fn table(records: &[Record]) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "workload".into(),
        "case".into(),
        "peer".into(),
        "metric".into(),
        "median".into(),
        "min".into(),
        "max".into(),
        "ferry/peer".into(),
    ]];
    for record in records {
        for name in &record.order {
            let m = &record.metrics[name];
            rows.push([
                record.workload.into(),
                record.case.clone(),
                record.peer.clone(),
                format!("{name} [{}]", m.unit),
                fmt_value(m.median),
                fmt_value(m.min),
                fmt_value(m.max),
                m.ferry_over_peer
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_default(),
            ]);
        }
    }
    render(&rows)
}

/// Left-aligned text columns, numbers right-aligned.
pub fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let numeric = r > 0 && cell.chars().next().is_some_and(|c| c.is_ascii_digit());
            if numeric {
                line.push_str(&format!("{cell:>width$}  ", width = widths[i]));
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if r == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (N - 1);
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}

/// The machine a run measured, and a single-core BLAKE3 figure for context (every server
/// hashes what it moves).
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub blake3_mb_s: f64,
    /// /proc/loadavg when the run started: other work on the machine skews every number.
    pub loadavg: String,
}

impl Machine {
    pub fn describe(&self) -> String {
        format!(
            "machine: {} cores ({}), kernel {}, BLAKE3 on one core {:.0} MB/s, loadavg {}",
            self.nproc, self.cpu, self.kernel, self.blake3_mb_s, self.loadavg
        )
    }
}

/// The first JSON line: the machine and the options of the run.
pub fn emit_machine(machine: &Machine, cli: &crate::Cli, opts: &crate::Opts) {
    let line = serde_json::json!({
        "kind": "machine",
        "nproc": machine.nproc,
        "kernel": machine.kernel,
        "cpu": machine.cpu,
        "blake3_mb_s": machine.blake3_mb_s,
        "loadavg": machine.loadavg,
        "args": std::env::args().skip(1).collect::<Vec<_>>(),
        "workload": cli.workload,
        "rounds": opts.rounds,
        "size": opts.size,
        "smoke": opts.smoke,
    });
    println!("{line}");
}
