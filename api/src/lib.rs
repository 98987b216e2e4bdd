#![forbid(unsafe_code)]
//! `tenant-api`: the HTTP face of the tenant management service. It answers reads and quota
//! checks itself and hands every slow or multi-step change to the workers as a job. This crate
//! holds only HTTP; the domain lives in `tenant-domain`.

pub mod cache;
pub mod cli;
pub mod http;
pub mod state;

pub use state::AppState;

use std::future::Future;
use tokio::net::TcpListener;

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish.
/// Tests and benchmarks call this with a listener on port 0.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = http::router(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
