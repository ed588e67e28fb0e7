//! `ferry-bench`: Ferry against its peers on loopback. See benches/README.md.
//!
//! Prints one JSON object per workload × case × peer on stdout (median/min/max over the rounds
//! and the Ferry/peer ratio of medians) and a table on stderr when stderr is a terminal or
//! `--table` is given.

mod alloc;
mod child;
mod common;
mod ferry;
mod grpc;
mod opts;
mod raw;
mod report;
mod runner;
mod targets;
mod tls;
mod workloads;

use std::io::IsTerminal;
use std::time::Instant;

use clap::Parser;

use crate::opts::{Cli, Opts, WORKLOADS};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

fn main() {
    let cli = Cli::parse();
    if let Some(peer) = &cli.serve {
        child::serve(peer);
        return;
    }
    alloc::raise_nofile();
    if let Some(window) = cli.ferry_window {
        ferry::set_window(window as u32);
    }
    let opts = Opts::from(&cli);
    let selected: Vec<&str> = if cli.workload == "all" {
        WORKLOADS.to_vec()
    } else {
        let mut list = Vec::new();
        for name in cli.workload.split(',').map(str::trim) {
            match WORKLOADS.iter().find(|w| **w == name) {
                Some(w) => list.push(*w),
                None => {
                    eprintln!(
                        "unknown workload {name:?}; choose from {} or all",
                        WORKLOADS.join(", ")
                    );
                    std::process::exit(2);
                }
            }
        }
        list
    };
    if selected.contains(&"volumes") {
        for binary in ["ferryd", "ferry"] {
            let path = opts.bin_dir.join(binary);
            if !path.is_file() {
                eprintln!(
                    "volumes needs {}: build it first (cargo build --release -p ferry), \
                     or point --bin-dir at ferryd and ferry",
                    path.display()
                );
                std::process::exit(2);
            }
        }
    }
    let show_table = cli.table || std::io::stderr().is_terminal();
    let machine = workloads::machine();
    report::emit_machine(&machine, &cli, &opts);
    if show_table {
        eprintln!("{}", machine.describe());
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for workload in selected {
        let began = Instant::now();
        eprintln!("== {workload}");
        let records = workloads::run(workload, &opts);
        report::emit_json(&records);
        if show_table {
            eprintln!("{}", report::table(&records));
        }
        eprintln!(
            "   ({workload} took {:.1} s)",
            began.elapsed().as_secs_f64()
        );
        all.extend(records);
    }
    let verdicts = targets::evaluate(&all);
    if !verdicts.is_empty() {
        targets::emit_json(&verdicts);
        if show_table {
            eprintln!("{}", targets::table(&verdicts));
        }
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
