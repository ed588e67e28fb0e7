//! Health endpoints on the metrics listener, for orchestrators' probes (docs/METRICS.md):
//!
//! - `GET /livez`: 200 while the process serves HTTP at all. A liveness probe that fails gets
//!   the process restarted, so it checks nothing that a restart would not fix.
//! - `GET /readyz`: 200 once the store is open and every listener is bound, and while the data
//!   directory is still there; 503 before that, and from the moment a SIGTERM starts the
//!   drain. A readiness probe that fails takes the pod out of its Services (and out of the
//!   headless Service's SRV records, so peers stop picking it for new operations) while the
//!   calls in flight finish.
//!
//! Both answer `text/plain` with one line saying why, whatever the method (probes use GET).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// The liveness path.
pub const LIVEZ: &str = "/livez";
/// The readiness path.
pub const READYZ: &str = "/readyz";

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

/// Where the node is in its life, as the readiness endpoint reports it.
#[derive(Debug)]
pub struct Health {
    state: AtomicU8,
    data_dir: PathBuf,
}

impl Health {
    /// Starting: not ready until [`Health::serving`].
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            state: AtomicU8::new(STARTING),
            data_dir,
        }
    }

    /// The store is open and the listeners are bound.
    pub fn serving(&self) {
        // Never back from draining.
        let _ = self
            .state
            .compare_exchange(STARTING, SERVING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Shutdown began: not ready any more.
    pub fn draining(&self) {
        self.state.store(DRAINING, Ordering::SeqCst);
    }

    /// Ready, or why not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.state.load(Ordering::SeqCst) {
            STARTING => Err("starting".into()),
            DRAINING => Err("draining: shutting down".into()),
            _ => match std::fs::metadata(&self.data_dir) {
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(format!("{} is not a directory", self.data_dir.display())),
                Err(error) => Err(format!(
                    "data directory {}: {error}",
                    self.data_dir.display()
                )),
            },
        }
    }

    /// The response for `path` if it is a health endpoint.
    pub fn respond(&self, path: &str) -> Option<Response<Full<Bytes>>> {
        let (status, body) = match path {
            LIVEZ => (StatusCode::OK, "ok".to_owned()),
            READYZ => match self.readiness() {
                Ok(()) => (StatusCode::OK, "ready".to_owned()),
                Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
            },
            _ => return None,
        };
        Some(
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .header("cache-control", "no-store")
                .body(Full::new(Bytes::from(body + "\n")))
                .expect("static response parts are valid"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_serving() {
        let dir = tempfile::tempdir().unwrap();
        let health = Health::new(dir.path().to_owned());
        assert_eq!(health.readiness(), Err("starting".into()));
        health.serving();
        assert_eq!(health.readiness(), Ok(()));
        health.draining();
        health.serving();
        assert!(health.readiness().unwrap_err().starts_with("draining"));
        let gone = Health::new(dir.path().join("missing"));
        gone.serving();
        assert!(gone.readiness().unwrap_err().contains("missing"));
        assert!(health.respond("/metrics").is_none());
        assert_eq!(health.respond(LIVEZ).unwrap().status(), StatusCode::OK);
    }
}
