#![forbid(unsafe_code)]
//! `tenant-worker`: runs the jobs the API enqueues. Several worker processes run side by side.
//!
//! Status: the foundation only connects to PostgreSQL and Redis, checks both, and waits for
//! SIGTERM; the job runners arrive with the lifecycle issue.

use std::future::Future;
use tenant_domain::{Config, db, kv};

/// Runs the worker until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let pool = db::pool(&config)?;
    let mut redis = kv::connect(&config)?;
    sqlx::query("select 1").execute(&pool).await?;
    if !kv::ping(&mut redis, config.redis_response_timeout).await {
        anyhow::bail!("Redis did not answer PING");
    }
    tracing::info!("tenant-worker ready (no job kinds registered yet)");
    shutdown.await;
    tracing::info!("tenant-worker stopping");
    pool.close().await;
    Ok(())
}
