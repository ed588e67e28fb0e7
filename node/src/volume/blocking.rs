//! Disk work on tokio's blocking pool, and store errors as the call errors a client gets.

use ferry_actors::{CallError, ErrorCode};
use ferry_store::StoreError;

pub(super) fn store_error(error: StoreError) -> CallError {
    CallError::application(error.code(), error.to_string())
}

/// Runs disk work on the blocking pool.
pub(super) async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CallError> {
    tokio::task::spawn_blocking(work).await.map_err(task_failed)
}

pub(super) fn task_failed(error: tokio::task::JoinError) -> CallError {
    CallError::application(ErrorCode::Internal, format!("store task failed: {error}"))
}

/// Runs a store operation on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, CallError> {
    run(work).await?.map_err(store_error)
}
