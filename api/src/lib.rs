#![forbid(unsafe_code)]
//! `tenant-api`: the HTTP face of the tenant management service. It answers reads and quota
//! checks itself and hands every slow or multi-step change to the workers as a job. This crate
//! holds only HTTP; the domain lives in `tenant-domain`.

pub mod cache;
pub mod cli;
pub mod http;
pub mod job_watch;
pub mod state;

pub use state::AppState;

use axum::serve::ListenerExt;
use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish.
/// Tests and benchmarks call this with a listener on port 0.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Every replica listens for cache invalidations while it serves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener_task =
        tokio::spawn(cache::listen(state.contexts.clone(), state.quota.clone(), state.config.clone(), stop_rx));
    // Streams end when shutdown begins; axum's graceful shutdown waits for open responses.
    let stopping = state.stopping.clone();
    let shutdown = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    let quota = state.quota.clone();
    let app = http::router(state);
    // Without TCP_NODELAY a response written in two segments waits for the client's delayed ACK
    // (tens of milliseconds): it showed as the tail of the larger context answers.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    let _ = stop_tx.send(true);
    listener_task.abort();
    // Budget this replica leased and did not serve goes back to the counters, so stopping a
    // replica costs its tenants nothing.
    quota.release_all_leases().await;
    result
}
