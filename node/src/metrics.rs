//! Prometheus metrics: an HTTP `/metrics` endpoint (prometheus-client's registry), in
//! OpenMetrics or the text format 0.0.4 as the scraper's `Accept` asks ([`format`]). Runtime
//! counters, store, process and build figures are read at scrape time; calls and aborts are
//! labelled with program and procedure names through the runtime's `Observer` hook.
//! docs/METRICS.md lists the names.

mod format;
mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_actors::codec::Route;
use ferry_actors::metrics::{Counters, Observer};
use ferry_actors::program::RouteNames;
use ferry_actors::{ErrorCode, Side};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::events::EventHub;
use crate::health::Health;
use ferry_store::VolumeStore;

pub use format::Format;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    program: String,
    procedure: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    program: String,
    procedure: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabels {
    program: String,
    side: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    profile: String,
}

fn code_name(code: ErrorCode) -> String {
    code.as_str_name().to_lowercase()
}

/// Call durations from 100 µs (a ping on loopback) to about 1.9 hours (a multi-terabyte
/// transfer is one call): each bucket 4 times the one below, 14 of them. Uploads of a few GiB
/// land in the 7 min and 28 min buckets instead of all in +Inf.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 14))
}

/// Labelled call and abort metrics, fed by the runtime.
#[derive(Debug)]
pub struct CallMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    aborts: Family<AbortLabels, Counter>,
}

impl Default for CallMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            aborts: Family::default(),
        }
    }
}

impl Observer for CallMetrics {
    fn call_finished(
        &self,
        _: Route,
        names: &RouteNames<'_>,
        outcome: Option<ErrorCode>,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                program: names.program.to_string(),
                procedure: names.procedure.to_string(),
                outcome: outcome.map_or_else(|| "ok".into(), code_name),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                program: names.program.to_string(),
                procedure: names.procedure.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn stream_aborted(&self, _: Route, names: &RouteNames<'_>, by: Side, code: ErrorCode) {
        let side = match by {
            Side::Client => "client",
            Side::Server => "server",
            Side::Unspecified => "unknown",
        };
        self.aborts
            .get_or_create(&AbortLabels {
                program: names.program.to_string(),
                side: side.into(),
                reason: code_name(code),
            })
            .inc();
    }
}

/// Figures read at scrape time.
#[derive(Debug)]
struct NodeCollector {
    counters: Arc<Counters>,
    store: Arc<VolumeStore>,
    events: Arc<EventHub>,
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// The standard process metrics (same names as every Prometheus client library's).
fn process_metrics(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Some(p) = process::read() else {
        return Ok(());
    };
    counter(
        e,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    )?;
    gauge(
        e,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes,
    )?;
    gauge(
        e,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    )?;
    gauge(e, "process_threads", "Number of OS threads.", p.threads)?;
    gauge(
        e,
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds,
    )?;
    gauge(
        e,
        "process_max_fds",
        "Maximum number of open file descriptors.",
        p.max_fds,
    )?;
    gauge(
        e,
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds,
    )
}

/// `ferry_build_info`: 1, with the version and build profile as labels (join on it to tell
/// which nodes run which build).
fn build_info(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(1);
    let mut family = e.encode_descriptor(
        "ferry_build_info",
        "Always 1; the labels say which build of ferryd this is.",
        None,
        metric.metric_type(),
    )?;
    let labels = BuildLabels {
        version: env!("CARGO_PKG_VERSION").into(),
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
    };
    metric.encode(family.encode_family(&labels)?)
}

/// The size and free space of the filesystem holding the store (what `df` shows for the data
/// directory; free counts what a non-root user may still use).
fn store_space(e: &mut DescriptorEncoder, store: &VolumeStore) -> Result<(), std::fmt::Error> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(store.root().as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: an all-zero statvfs is a valid value; statvfs fills it and reads `path`, a
    // valid NUL-terminated string, only during the call.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut fs) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "metrics: statvfs of the store failed");
        return Ok(());
    }
    let block = fs.f_frsize as u64;
    gauge(
        e,
        "ferry_store_capacity_bytes",
        "Size of the filesystem that holds the volume store.",
        fs.f_blocks as u64 * block,
    )?;
    gauge(
        e,
        "ferry_store_free_bytes",
        "Bytes still available to ferryd on the store's filesystem.",
        fs.f_bavail as u64 * block,
    )
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        gauge(
            &mut e,
            "ferry_connections_open",
            "Connections open now.",
            c.connections_open.get() as i64,
        )?;
        counter(
            &mut e,
            "ferry_connections",
            "Connections accepted.",
            c.connections_total.get(),
        )?;
        gauge(
            &mut e,
            "ferry_calls_in_flight",
            "Calls open now.",
            c.calls_in_flight.get() as i64,
        )?;
        gauge(
            &mut e,
            "ferry_streams_open",
            "Streams open now.",
            c.streams_open.get() as i64,
        )?;
        gauge(
            &mut e,
            "ferry_stream_buffered_bytes",
            "Stream bytes received and not yet consumed.",
            c.stream_buffered_bytes.get() as i64,
        )?;
        counter(
            &mut e,
            "ferry_stream_received_bytes",
            "Stream data bytes received (holes not counted).",
            c.stream_bytes_in.get(),
        )?;
        counter(
            &mut e,
            "ferry_stream_sent_bytes",
            "Stream data bytes sent (holes not counted).",
            c.stream_bytes_out.get(),
        )?;
        counter(
            &mut e,
            "ferry_credit_stalls",
            "Times a stream sender waited for credit.",
            c.credit_stalls.get(),
        )?;
        gauge(
            &mut e,
            "ferry_send_queued_bytes",
            "Stream bytes queued for sockets and not yet written.",
            c.send_queued_bytes.get() as i64,
        )?;
        counter(
            &mut e,
            "ferry_send_queue_stalls",
            "Times a stream sender waited for room in its connection's send queue.",
            c.send_queue_stalls.get(),
        )?;
        gauge(
            &mut e,
            "ferry_memory_held_bytes",
            "Bytes held against connections' memory budgets: read blocks and download read-ahead.",
            c.held_bytes.get() as i64,
        )?;
        counter(
            &mut e,
            "ferry_memory_full",
            "Times a connection's reader found its memory budget full.",
            c.memory_full.get(),
        )?;
        counter(
            &mut e,
            "ferry_limit_rejections",
            "Calls or connections refused by a configured limit.",
            c.limit_rejections.get(),
        )?;
        counter(
            &mut e,
            "ferry_protocol_violations",
            "Frames that broke the protocol.",
            c.protocol_violations.get(),
        )?;
        counter(
            &mut e,
            "ferry_keepalive_timeouts",
            "Connections closed because the peer went silent.",
            c.keepalive_timeouts.get(),
        )?;
        counter(
            &mut e,
            "ferry_received_bytes",
            "Bytes received on all connections.",
            c.bytes_in.get(),
        )?;
        counter(
            &mut e,
            "ferry_sent_bytes",
            "Bytes sent on all connections.",
            c.bytes_out.get(),
        )?;
        counter(
            &mut e,
            "ferry_events_dropped",
            "Events dropped for slow subscribers.",
            self.events.dropped_total(),
        )?;
        gauge(
            &mut e,
            "ferry_event_subscribers",
            "Event subscribers now.",
            self.events.subscribers() as i64,
        )?;
        match self.store.list() {
            Ok(volumes) => {
                gauge(
                    &mut e,
                    "ferry_volumes",
                    "Volumes stored.",
                    volumes.len() as i64,
                )?;
                let size: u64 = volumes.iter().map(|v| v.size).sum();
                let allocated: u64 = volumes.iter().map(|v| v.allocated).sum();
                gauge(
                    &mut e,
                    "ferry_volume_bytes",
                    "Logical bytes of all volumes.",
                    size as i64,
                )?;
                gauge(
                    &mut e,
                    "ferry_volume_allocated_bytes",
                    "Bytes allocated on disk by all volumes.",
                    allocated as i64,
                )?;
            }
            Err(error) => warn!(%error, "metrics: listing volumes failed"),
        }
        store_space(&mut e, &self.store)?;
        build_info(&mut e)?;
        process_metrics(&mut e)
    }
}

/// The node's metrics registry.
pub struct Metrics {
    registry: Registry,
    pub calls: Arc<CallMetrics>,
}

impl Metrics {
    pub fn new(
        calls: Arc<CallMetrics>,
        counters: Arc<Counters>,
        store: Arc<VolumeStore>,
        events: Arc<EventHub>,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "ferry_calls",
            "Calls finished, by program, procedure and outcome.",
            calls.calls.clone(),
        );
        registry.register(
            "ferry_call_duration_seconds",
            "Call latency, CALL to REPLY.",
            calls.latency.clone(),
        );
        registry.register(
            "ferry_stream_aborts",
            "Stream aborts, by the side that started them and the reason.",
            calls.aborts.clone(),
        );
        registry.register_collector(Box::new(NodeCollector {
            counters,
            store,
            events,
        }));
        Self { registry, calls }
    }

    /// The metrics in `format`.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Text004 => format::to_text_004(&out),
        }
    }
}

/// Serves `GET /metrics`, and the health endpoints of [`Health`], until the future is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                let health = health.clone();
                async move {
                    if let Some(response) = health.respond(request.uri().path()) {
                        return Ok(response);
                    }
                    let response = if request.uri().path() == "/metrics" {
                        let accept = request
                            .headers()
                            .get(hyper::header::ACCEPT)
                            .and_then(|value| value.to_str().ok());
                        let format = Format::negotiate(accept);
                        Response::builder()
                            .header("content-type", format.content_type())
                            .body(Full::new(Bytes::from(metrics.render(format))))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                    };
                    Ok::<_, hyper::http::Error>(response.expect("static response parts are valid"))
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "metrics connection failed");
            }
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(address: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
