//! A thread with its own single-threaded runtime (an actix `System`, which is a tokio
//! current-thread runtime with a `LocalSet`): the server of a measurement runs on one, the client
//! on another, so each side has a core. Jobs are closures sent from the orchestrating thread;
//! their futures run on the runner thread and need not be `Send`.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub struct Runner {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Runner {
    pub fn new(name: &str) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    while let Some(job) = rx.recv().await {
                        actix_rt::spawn(job());
                    }
                });
            })
            .expect("spawn a runner thread");
        Self {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Runs `job` on the runner and waits for its result.
    pub fn run<T, F, Fut>(&self, job: F) -> T
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.start(job).wait()
    }

    /// Starts `job` on the runner; its result comes with [`Pending::wait`].
    pub fn start<T, F, Fut>(&self, job: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(job().await);
            })
        });
        self.jobs
            .as_ref()
            .expect("runner is running")
            .send(job)
            .expect("runner thread is alive");
        Pending(rx)
    }
}

/// The result of a started job.
pub struct Pending<T>(std_mpsc::Receiver<T>);

impl<T> Pending<T> {
    pub fn wait(self) -> T {
        self.0.recv().expect("the job panicked")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
