//! Prometheus metrics: an HTTP `/metrics` endpoint in the text exposition format
//! (prometheus-client). Runtime counters and store figures are read at scrape time; calls and
//! aborts are labelled through the runtime's `Observer` hook. docs/METRICS.md lists the names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_actors::codec::Route;
use ferry_actors::metrics::{Counters, Observer};
use ferry_actors::{ErrorCode, Side};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::events::EventHub;
use crate::health::Health;
use crate::store::VolumeStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    program: String,
    procedure: u32,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    program: String,
    procedure: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AbortLabels {
    side: String,
    reason: String,
}

/// Program numbers as names in labels; unknown programs appear as hex.
fn program_name(number: u32) -> String {
    match number {
        0x766f_6c75 => "volume".into(),
        0x6576_6e74 => "events".into(),
        0x6164_6d6e => "admin".into(),
        0x7465_7374 => "test".into(),
        other => format!("{other:#010x}"),
    }
}

fn code_name(code: ErrorCode) -> String {
    code.as_str_name().to_lowercase()
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
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
    fn call_finished(&self, route: Route, outcome: Option<ErrorCode>, elapsed: Duration) {
        let program = program_name(route.program);
        self.calls
            .get_or_create(&CallLabels {
                program: program.clone(),
                procedure: route.procedure,
                outcome: outcome.map_or_else(|| "ok".into(), code_name),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                program,
                procedure: route.procedure,
            })
            .observe(elapsed.as_secs_f64());
    }

    fn stream_aborted(&self, _: Route, by: Side, code: ErrorCode) {
        let side = match by {
            Side::Client => "client",
            Side::Server => "server",
            Side::Unspecified => "unknown",
        };
        self.aborts
            .get_or_create(&AbortLabels {
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
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
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
        Ok(())
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

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
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
                        Response::builder()
                            .header(
                                "content-type",
                                // What prometheus-client writes: OpenMetrics 1.0 text.
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(metrics.render())))
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
