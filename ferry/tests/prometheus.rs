//! ferryd's `/metrics` as a real Prometheus server sees it.
//!
//! Starts the `ferryd` binary and a Prometheus server (Debian's `prometheus` package,
//! `/usr/bin/prometheus`) scraping it every second, moves a volume up and down through the
//! library, then asks Prometheus's HTTP API for the figures and checks them byte for byte.
//!
//! Prometheus is required: without it this test fails (it does not skip) and says how to
//! install it. `FERRY_TEST_PROMETHEUS` may point at another Prometheus 2.x binary.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_actors::stream::Chunk;
use ferry_actors::stream::ContentHash;
use ferry_actors::test_program::pattern;
use ferry_actors::{Client, ClientConfig};
use ferry_node::proto::volume::{DownloadRequest, InfoRequest, UploadRequest};
use ferry_node::volume::VolumeClient;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const INSTALL_HINT: &str = "install it with \
    `sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus` \
    (Debian/Ubuntu; CI does this), or set FERRY_TEST_PROMETHEUS to a Prometheus 2.x binary";

/// Bytes uploaded and downloaded: not a multiple of any chunk size.
const VOLUME_BYTES: u64 = 8 * 1024 * 1024 + 123;
/// Upload sends are this big (the pattern yields at most 1 MiB at a time).
const SEND_BYTES: u64 = 1024 * 1024;
const VOLUME_NAME: &str = "prometheus-test";
const JOB: &str = "ferryd";

/// How long a process gets to come up, and how long Prometheus gets to scrape what the
/// transfers did.
const STARTUP: Duration = Duration::from_secs(30);
const SCRAPE_WAIT: Duration = Duration::from_secs(30);

/// A child process killed (and reaped) when dropped, so a failing test leaks nothing.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `command` with stderr (and stdout unless piped by the caller) going to `log`.
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("creating a log file");
        command.stderr(file.try_clone().expect("cloning a log file handle"));
        command.stdin(Stdio::null());
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {name} ({command:?}): {error}"));
        Self { name, child, log }
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("polling a child process")
    }

    /// The end of the process's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- last lines of {} log ---\n{tail}\n---", self.name)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses of a started ferryd, from its `ferryd ready:` line.
struct Ferryd {
    process: Process,
    /// The transfers go through the unix socket: there the node knows the test by its uid, so
    /// no authentication exchange adds stream bytes to the counters under test.
    unix: PathBuf,
    metrics: SocketAddr,
}

fn parse_ready(line: &str) -> (SocketAddr, String, SocketAddr) {
    let fields = line
        .strip_prefix("ferryd ready: ")
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let mut tcp = None;
    let mut unix = None;
    let mut metrics = None;
    for field in fields.split_whitespace() {
        match field.split_once('=') {
            Some(("tcp", value)) => tcp = value.parse().ok(),
            Some(("unix", value)) => unix = Some(value.to_owned()),
            Some(("metrics", value)) => metrics = value.parse().ok(),
            Some(("tls", _)) => {}
            _ => panic!("unexpected field {field:?} in {line:?}"),
        }
    }
    match (tcp, unix, metrics) {
        (Some(tcp), Some(unix), Some(metrics)) => (tcp, unix, metrics),
        _ => panic!("ready line lacks tcp, unix or metrics addresses: {line:?}"),
    }
}

fn start_ferryd(dir: &Path) -> Ferryd {
    let data_dir = dir.join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferryd"));
    command
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .env("FERRYD_LOG", "info");
    // Nothing from the environment the test runs in may change the node's configuration.
    for var in [
        "FERRYD_CONFIG",
        "FERRYD_UNIX_SOCKET",
        "FERRYD_LOG_FORMAT",
        "FERRYD_NO_TEST_PROGRAM",
    ] {
        command.env_remove(var);
    }
    let mut process = Process::spawn("ferryd", command, dir.join("ferryd.log"));

    // Read stdout on a thread (so waiting can time out), and keep draining it afterwards so
    // the node never writes into a closed pipe. The thread ends when the child does.
    let stdout = process.child.stdout.take().expect("stdout is piped");
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("ferryd ready:")
                && let Some(tx) = ready_tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    let line = match ready_rx.recv_timeout(STARTUP) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
            "ferryd exited ({:?}) before printing its ready line\n{}",
            process.exited(),
            process.log_tail()
        ),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "ferryd printed no ready line within {STARTUP:?}\n{}",
            process.log_tail()
        ),
    };
    let (tcp, unix, metrics) = parse_ready(&line);
    assert!(tcp.ip().is_loopback() && tcp.port() != 0, "{line}");
    assert!(metrics.ip().is_loopback() && metrics.port() != 0, "{line}");
    assert_eq!(
        Path::new(&unix),
        data_dir.join("ferryd.sock"),
        "the unix socket defaults to the data directory: {line}"
    );
    Ferryd {
        process,
        unix: PathBuf::from(unix),
        metrics,
    }
}

/// A plain-HTTP client for loopback: no proxy, bounded waits, HTTP errors returned as
/// responses so their bodies can be shown.
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET `url`: the status and body, or the transport error as text.
fn get(agent: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> Result<(u16, String), String> {
    let mut request = agent.get(url);
    for (key, value) in query {
        request = request.query(*key, *value);
    }
    let mut response = request.call().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, body))
}

struct Prometheus {
    process: Process,
    base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("FERRY_TEST_PROMETHEUS")
        .map_or_else(|| PathBuf::from(PROMETHEUS), PathBuf::from);
    assert!(
        path.is_file(),
        "Prometheus is needed by this test and {} does not exist: {INSTALL_HINT}",
        path.display()
    );
    path
}

/// Starts Prometheus scraping `target` every second, on a free loopback port (trying again
/// if another process takes the port between our probe and Prometheus's bind).
fn start_prometheus(binary: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    scrape_interval: 1s\n    \
             scrape_timeout: 1s\n    metrics_path: /metrics\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .expect("writing the Prometheus config");
    let agent = http_agent();
    let mut failures = Vec::new();
    for attempt in 0..3 {
        let listen = format!("127.0.0.1:{}", free_port());
        let storage = dir.join(format!("tsdb-{attempt}"));
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=info");
        let log = dir.join(format!("prometheus-{attempt}.log"));
        command.stdout(std::fs::File::create(&log).expect("creating a log file"));
        let mut process = Process::spawn("prometheus", command, log);
        let base = format!("http://{listen}");
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = process.exited() {
                failures.push(format!("exited with {status}\n{}", process.log_tail()));
                break;
            }
            if let Ok((200, _)) = get(&agent, &format!("{base}/-/ready"), &[]) {
                return Prometheus { process, base };
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus was not ready within {STARTUP:?}\n{}",
                process.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!(
        "Prometheus did not start (3 attempts):\n{}",
        failures.join("\n")
    );
}

/// One sample of an instant vector.
#[derive(Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Prometheus {
    /// Evaluates `promql` at `time` (Unix seconds; `None`: now) and returns the vector.
    fn query(&self, promql: &str, time: Option<f64>) -> Vec<Sample> {
        let time = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", promql)];
        if let Some(time) = &time {
            params.push(("time", time));
        }
        let url = format!("{}/api/v1/query", self.base);
        let (status, body) = get(&http_agent(), &url, &params)
            .unwrap_or_else(|error| panic!("querying Prometheus for {promql}: {error}"));
        assert_eq!(status, 200, "query {promql} failed: {body}");
        let reply: Value = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("Prometheus's answer is not JSON ({error}): {body}"));
        assert_eq!(reply["status"], "success", "query {promql}: {body}");
        assert_eq!(
            reply["data"]["resultType"], "vector",
            "query {promql}: {body}"
        );
        reply["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("no result array for {promql}: {body}"))
            .iter()
            .map(|sample| Sample {
                labels: serde_json::from_value(sample["metric"].clone())
                    .unwrap_or_else(|e| panic!("labels of {sample} ({e})")),
                value: sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("value of {sample}")),
            })
            .collect()
    }

    /// The value of a query that must yield exactly one sample.
    fn one(&self, promql: &str, time: f64) -> f64 {
        let samples = self.query(promql, Some(time));
        assert_eq!(
            samples.len(),
            1,
            "{promql} should yield one sample at {time}, got {samples:?}"
        );
        samples[0].value
    }

    /// The scrape target as Prometheus reports it, for failure messages.
    fn targets(&self) -> String {
        get(&http_agent(), &format!("{}/api/v1/targets", self.base), &[])
            .map_or_else(|error| error, |(_, body)| body)
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Uploads the volume, reads its info and downloads it back, checking the content both ways.
/// Returns the bytes downloaded.
fn transfer(unix: &Path) -> u64 {
    actix_rt::System::new().block_on(async move {
        let client = Client::connect_unix(unix, ClientConfig::default())
            .await
            .expect("connecting to ferryd");
        let volumes = VolumeClient::new(client);

        let mut expected = ContentHash::default();
        let mut offset = 0;
        while offset < VOLUME_BYTES {
            let n = SEND_BYTES.min(VOLUME_BYTES - offset);
            expected.update(&Chunk::Data(pattern(offset, n as usize)));
            offset += n;
        }
        let mut upload = volumes
            .upload(&UploadRequest {
                name: VOLUME_NAME.into(),
                expected_size: Some(VOLUME_BYTES),
                expected_checksum: expected.finish().to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("opening the upload");
        let mut offset = 0;
        while offset < VOLUME_BYTES {
            let n = SEND_BYTES.min(VOLUME_BYTES - offset);
            upload
                .send(pattern(offset, n as usize))
                .await
                .expect("sending upload data");
            offset += n;
        }
        let uploaded = upload.finish().await.expect("finishing the upload");
        let volume = uploaded.volume.expect("the upload reply names the volume");
        assert_eq!(volume.size, VOLUME_BYTES);
        assert_eq!(uploaded.hole_bytes, 0);

        let info = volumes
            .info(&InfoRequest {
                name: VOLUME_NAME.into(),
            })
            .await
            .expect("volume info");
        assert_eq!(info.size, VOLUME_BYTES);

        let mut download = volumes
            .download(&DownloadRequest {
                name: VOLUME_NAME.into(),
                ..Default::default()
            })
            .await
            .expect("opening the download");
        let mut received = ContentHash::default();
        let mut offset = 0u64;
        while let Some(chunk) = download.recv().await.expect("receiving download data") {
            if let Chunk::Data(bytes) = &chunk {
                // Compare in pattern-sized pieces (the pattern yields at most 1 MiB).
                for (i, piece) in bytes.chunks(SEND_BYTES as usize).enumerate() {
                    let at = offset + i as u64 * SEND_BYTES;
                    assert!(
                        piece == pattern(at, piece.len()),
                        "downloaded bytes differ near offset {at}"
                    );
                }
            }
            received.update(&chunk);
            offset += chunk.len();
        }
        let reply = download.finish().await.expect("finishing the download");
        assert_eq!(
            (reply.bytes, received.bytes()),
            (VOLUME_BYTES, VOLUME_BYTES)
        );
        assert_eq!(reply.hole_bytes, 0, "the volume has no holes");
        assert_eq!(reply.checksum, received.finish());
        assert_eq!(received.finish(), expected.finish());
        received.bytes()
    })
}

/// A call that fails (info on a missing volume) and an upload the client aborts, so the
/// dashboard's failure and abort panels have series. A last call's reply proves the node
/// took the abort (a connection's frames are handled in order).
fn fail_and_abort(unix: &Path) {
    actix_rt::System::new().block_on(async move {
        let client = Client::connect_unix(unix, ClientConfig::default())
            .await
            .expect("connecting to ferryd");
        let volumes = VolumeClient::new(client);
        let missing = volumes
            .info(&InfoRequest {
                name: "no-such-volume".into(),
            })
            .await;
        assert!(missing.is_err(), "{missing:?}");
        let mut upload = volumes
            .upload(&UploadRequest {
                name: "aborted".into(),
                ..Default::default()
            })
            .await
            .expect("opening the upload");
        upload
            .send(pattern(0, 4096))
            .await
            .expect("sending upload data");
        drop(upload);
        volumes
            .info(&InfoRequest {
                name: VOLUME_NAME.into(),
            })
            .await
            .expect("volume info after the abort");
    });
}

/// GET /metrics with `accept` (if any): the content type and the body.
fn scrape(metrics: SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut request = http_agent().get(format!("http://{metrics}/metrics"));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let mut response = request.call().expect("fetching /metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .body_mut()
        .read_to_string()
        .expect("reading /metrics");
    (content_type, body)
}

const PROMTOOL: &str = "/usr/bin/promtool";

/// The endpoint answers in the format asked for: OpenMetrics when the `Accept` header names
/// it (as Prometheus's does), else the text format 0.0.4, which `promtool check metrics`
/// accepts without a single complaint (help on every metric, counter names, units).
fn check_exposition(metrics: SocketAddr) {
    let (content_type, body) = scrape(
        metrics,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "content-type {content_type:?}"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {body}"
    );
    assert!(
        body.contains("\nferry_stream_received_bytes_total 0\n"),
        "{body}"
    );

    for accept in [None, Some("text/plain; version=0.0.4"), Some("*/*")] {
        let (content_type, body) = scrape(metrics, accept);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "Accept {accept:?}"
        );
        assert!(!body.contains("# EOF"), "{body}");
        for family in [
            "ferry_connections_total counter",
            "ferry_build_info gauge",
            "ferry_store_free_bytes gauge",
            "ferry_store_capacity_bytes gauge",
            "process_cpu_seconds_total counter",
            "process_resident_memory_bytes gauge",
            "process_open_fds gauge",
            "process_start_time_seconds gauge",
        ] {
            assert!(
                body.contains(&format!("\n# TYPE {family}\n")),
                "no {family}: {body}"
            );
        }
        // Every family has its help, under the name its samples carry.
        let helped = body.lines().filter(|l| l.starts_with("# HELP ")).count();
        let typed = body.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helped, typed, "{body}");

        assert!(
            Path::new(PROMTOOL).is_file(),
            "{PROMTOOL} is needed by this test: {INSTALL_HINT}"
        );
        let mut promtool = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting promtool");
        use std::io::Write;
        promtool
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(body.as_bytes())
            .expect("writing to promtool");
        let checked = promtool.wait_with_output().expect("running promtool");
        assert!(
            checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
            "promtool check metrics ({}):\n{}{}\n--- the metrics ---\n{body}",
            checked.status,
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

/// Every query of deploy/grafana-dashboard.json (panels and template variables) runs on the
/// real Prometheus and yields at least one series, with Grafana's variables set as the
/// dashboard's defaults would set them: a renamed metric or label breaks this test.
fn check_dashboard(prometheus: &Prometheus, since: f64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("reading deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let substitute = |query: &str| {
        query
            .replace("$__rate_interval", "1m")
            .replace("$job", JOB)
            .replace("$instance", ".+")
    };
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            queries.push((panel["title"].to_string(), substitute(expr)));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        // Grafana's label_values(SELECTOR, LABEL): the series' values of LABEL.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query} is not label_values()"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        queries.push((
            format!("variable {}", variable["name"]),
            format!("group by ({}) ({})", label.trim(), substitute(selector)),
        ));
    }
    assert!(queries.len() >= 20, "the dashboard has its queries");
    // rate() needs two samples of a series, and the failure counters appeared at `since`:
    // wait until two scrapes followed.
    let deadline = Instant::now() + SCRAPE_WAIT;
    let later = loop {
        let stamp = prometheus.query(&format!("timestamp(up{{job=\"{JOB}\"}})"), None);
        if let Some(later) = stamp.first().map(|s| s.value).filter(|&t| t > since + 1.5) {
            break later;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus scraped no more after {since}: {}",
            prometheus.targets()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (panel, query) in queries {
        let samples = prometheus.query(&query, Some(later));
        assert!(
            !samples.is_empty(),
            "dashboard {panel}: `{query}` yields nothing from a scraped ferryd"
        );
    }
}

#[test]
fn prometheus_scrapes_what_ferryd_moved() {
    let started = Instant::now();
    // Fail first, and clearly, when Prometheus is missing.
    let binary = prometheus_binary();
    // Dropped last: the processes below are killed before their directories go.
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let mut ferryd = start_ferryd(dir.path());
    check_exposition(ferryd.metrics);
    let prometheus = start_prometheus(&binary, dir.path(), ferryd.metrics);

    let downloaded = transfer(&ferryd.unix);
    // Counters are updated before the REPLY that ends each call is written, so a scrape
    // that starts after this moment sees the final figures. The margin covers Prometheus
    // aligning scrape timestamps to its schedule (a few milliseconds).
    let done = unix_now() + 0.05;

    // Wait for a scrape that began after the transfers: each round asks when the newest
    // scrape of ferryd happened, until one is newer than `done`.
    let received = format!("ferry_stream_received_bytes_total{{job=\"{JOB}\"}}");
    let deadline = Instant::now() + SCRAPE_WAIT;
    let mut seen = Vec::new();
    let scraped_at = loop {
        if let Some(status) = ferryd.process.exited() {
            panic!("ferryd exited ({status})\n{}", ferryd.process.log_tail());
        }
        let up = prometheus.query(&format!("up{{job=\"{JOB}\"}}"), None);
        let stamp = prometheus.query(&format!("timestamp({received})"), None);
        let value = prometheus.query(&received, None);
        seen.push(format!(
            "up={:?} received={:?} at={:?}",
            up.first().map(|s| s.value),
            value.first().map(|s| s.value),
            stamp.first().map(|s| s.value)
        ));
        if let Some(at) = stamp.first().map(|s| s.value).filter(|&at| at > done) {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape ferryd after the transfers within {SCRAPE_WAIT:?}\n\
             polls: {seen:#?}\ntargets: {}\n{}\n{}",
            prometheus.targets(),
            prometheus.process.log_tail(),
            ferryd.process.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // Every figure below comes from that one scrape (queries evaluated at its timestamp).
    let at = scraped_at;
    let context = || format!("polls: {seen:#?}\ntargets: {}", prometheus.targets());
    assert_eq!(
        prometheus.one(&format!("up{{job=\"{JOB}\"}}"), at),
        1.0,
        "{}",
        context()
    );
    assert_eq!(
        prometheus.one(&received, at),
        VOLUME_BYTES as f64,
        "stream bytes received should be exactly the upload; {}",
        context()
    );
    assert_eq!(
        prometheus.one(
            &format!("ferry_stream_sent_bytes_total{{job=\"{JOB}\"}}"),
            at
        ),
        downloaded as f64,
        "stream bytes sent should be exactly the download; {}",
        context()
    );
    assert_eq!(
        prometheus.one(&format!("ferry_volumes{{job=\"{JOB}\"}}"), at),
        1.0
    );
    assert_eq!(
        prometheus.one(&format!("ferry_volume_bytes{{job=\"{JOB}\"}}"), at),
        VOLUME_BYTES as f64
    );

    // Upload, info and download, one call each, all OK.
    // Procedures carry their names from the program's declaration.
    let calls: BTreeMap<String, f64> = prometheus
        .query(
            &format!("ferry_calls_total{{job=\"{JOB}\",program=\"volume\",outcome=\"ok\"}}"),
            Some(at),
        )
        .into_iter()
        .map(|s| (s.labels["procedure"].clone(), s.value))
        .collect();
    assert_eq!(
        calls,
        BTreeMap::from([
            ("download".into(), 1.0),
            ("info".into(), 1.0),
            ("upload".into(), 1.0)
        ]),
        "volume calls by procedure"
    );
    assert_eq!(
        prometheus.one(
            &format!("sum(ferry_calls_total{{job=\"{JOB}\",program=\"volume\",outcome=\"ok\"}})"),
            at
        ),
        3.0
    );
    let failed = prometheus.query(
        &format!("ferry_calls_total{{job=\"{JOB}\",outcome!=\"ok\"}}"),
        Some(at),
    );
    assert!(failed.is_empty(), "no call failed: {failed:?}");
    // The latency histogram saw the same three calls.
    assert_eq!(
        prometheus.one(
            &format!("sum(ferry_call_duration_seconds_count{{job=\"{JOB}\",program=\"volume\"}})"),
            at
        ),
        3.0
    );
    let aborts = prometheus.query(
        &format!("ferry_stream_aborts_total{{job=\"{JOB}\"}}"),
        Some(at),
    );
    assert!(aborts.is_empty(), "no stream was aborted: {aborts:?}");
    assert_eq!(
        prometheus.one(&format!("ferry_streams_open{{job=\"{JOB}\"}}"), at),
        0.0
    );

    fail_and_abort(&ferryd.unix);
    check_dashboard(&prometheus, unix_now() + 0.05);

    eprintln!(
        "prometheus test: {} bytes each way, scraped {:.2}s after the transfers, {:.1}s in all",
        VOLUME_BYTES,
        scraped_at - (done - 0.05),
        started.elapsed().as_secs_f64()
    );
    // Kill Prometheus, then ferryd, before the directory goes.
    drop(prometheus);
    drop(ferryd);
}
