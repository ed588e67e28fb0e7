//! The health endpoints of a real `ferryd` process, over real HTTP on its metrics listener:
//! `/livez` while it serves, `/readyz` ready once started and 503 from the moment SIGTERM
//! starts the drain, while a call in flight keeps the process alive.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use ferry_actors::{Client, ClientConfig};
use ferry_node::proto::volume::{ListRequest, UploadRequest};
use ferry_node::volume::VolumeClient;

/// Long enough that only the held call, never the drain's end, can let the node exit within
/// [`EXIT_WITHIN`].
const DRAIN_SECS: u64 = 120;
const EXIT_WITHIN: Duration = Duration::from_secs(30);
const NOT_READY_WITHIN: Duration = Duration::from_secs(10);

#[test]
fn livez_and_readyz_answer_and_readyz_fails_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferryd.toml");
    std::fs::write(
        &config,
        format!("[limits]\nshutdown_drain_secs = {DRAIN_SECS}\n"),
    )
    .unwrap();
    let mut daemon = Daemon::start(&dir.path().join("data"), Some(&config));

    assert_eq!(daemon.http_get("/livez"), (200, "ok\n".into()));
    assert_eq!(daemon.http_get("/readyz"), (200, "ready\n".into()));
    assert_eq!(daemon.http_get("/metrics").0, 200);
    assert_eq!(daemon.http_get("/healthz").0, 404);

    let started = Instant::now();
    actix_rt::System::new().block_on(async {
        let client = Client::connect_unix(&daemon.unix, ClientConfig::default())
            .await
            .unwrap();
        let request = UploadRequest {
            name: "held".into(),
            ..UploadRequest::default()
        };
        // An upload left open: the drain waits for it. The LIST after it on the same
        // connection proves the node has read the upload's CALL before the signal.
        let volumes = VolumeClient::new(client);
        let upload = volumes.upload(&request).await.unwrap();
        volumes.list(&ListRequest {}).await.unwrap();

        daemon.signal(libc::SIGTERM);
        let metrics = daemon.metrics.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + NOT_READY_WITHIN;
            loop {
                let (status, body) = common::http_get(&metrics, "/readyz");
                if status != 200 || Instant::now() > deadline {
                    return (status, body);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (503, "not ready: draining: shutting down\n")
        );
        // Still live, and still there: the held call keeps the drain going.
        assert_eq!(daemon.http_get("/livez"), (200, "ok\n".into()));
        // Ending the call (an abort) ends the drain.
        drop(upload);
    });
    assert_eq!(daemon.wait_exit(EXIT_WITHIN), Some(0));
    assert!(started.elapsed() < Duration::from_secs(DRAIN_SECS));
}
