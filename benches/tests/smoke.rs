//! Runs `ferry-bench --smoke` (every workload, tiny sizes, one round) so the benchmark cannot
//! rot: `cargo test --workspace` in CI builds and runs it.

use std::path::Path;
use std::process::Command;

/// The `volumes` workload runs the real `ferryd` and `ferry`, which are another package's
/// binaries: `cargo test --workspace` builds them beside ferry-bench, `cargo test -p
/// ferry-bench` alone does not, so build them here (a no-op when they are fresh).
fn build_ferry_binaries(bench: &Path) {
    let profile_dir = bench.parent().expect("target/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory in {}", bench.display()),
    };
    let output = Command::new(env!("CARGO"))
        .args(["build", "--profile", profile, "-p", "ferry", "--bins"])
        .env("CARGO_TARGET_DIR", profile_dir.parent().expect("target/"))
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "building ferryd and ferry failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_workload_runs_and_reports_json_lines() {
    let bench = Path::new(env!("CARGO_BIN_EXE_ferry-bench"));
    build_ferry_binaries(bench);
    let output = Command::new(bench)
        .arg("--smoke")
        .output()
        .expect("run ferry-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ferry-bench --smoke failed:\n{stderr}"
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(lines[0]["kind"], "machine");
    for workload in [
        "stream-upload",
        "stream-download",
        "stream-tls",
        "streams-8",
        "unary",
        "head-of-line",
        "cancel",
        "memory",
        "copies",
        "volumes",
    ] {
        let ferry = lines
            .iter()
            .find(|l| l["workload"] == workload && l["peer"] == "ferry")
            .unwrap_or_else(|| panic!("no ferry record for {workload}"));
        let metrics = ferry["metrics"].as_object().expect("metrics");
        assert!(!metrics.is_empty(), "{workload} reported no metric");
        for (name, metric) in metrics {
            assert!(
                metric["median"].as_f64().is_some_and(f64::is_finite),
                "{workload} {name} has no finite median"
            );
        }
    }
    assert!(
        lines.iter().any(|l| l["kind"] == "target"),
        "the targets were not evaluated"
    );
}
