//! Periodic jobs. Every worker runs this ticker; a tick inserts its job row under a unique
//! schedule key (`quota_rollup:<tick>`), so exactly one job exists per tick however many workers
//! run, and only the worker whose insert won pushes it. (apalis-cron would fire on every replica,
//! apalis#281.)

use chrono::Utc;
use serde_json::json;
use std::time::Duration;
use tenant_domain::JobId;
use tenant_domain::jobs::{self, NewJob};
use tenant_jobs::{JobContext, JobKind, Queue};

pub async fn run(ctx: JobContext) {
    let interval = ctx.config.quota.rollup_interval;
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let secs = interval.as_secs().max(1) as i64;
        let now = Utc::now().timestamp();
        let next = (now.div_euclid(secs) + 1) * secs;
        let wait = Duration::from_secs(u64::try_from(next - now).unwrap_or(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(err) = enqueue_rollup(&ctx, next).await {
            tracing::warn!(error = %err, "could not schedule the quota rollup");
        }
    }
}

/// Enqueues the rollup of tick `tick` (unix seconds) unless it exists; true if this call did.
pub async fn enqueue_rollup(ctx: &JobContext, tick: i64) -> anyhow::Result<bool> {
    let at = chrono::DateTime::from_timestamp(tick, 0).unwrap_or_else(Utc::now);
    let delivery = Queue::new_delivery_id();
    let job = jobs::insert_scheduled(
        &ctx.db,
        NewJob {
            id: JobId::new_v7(),
            kind: JobKind::QuotaRollup.name(),
            tenant: None,
            payload: json!({ "at": at }),
            steps: JobKind::QuotaRollup.steps(),
            max_attempts: ctx.config.jobs.max_attempts,
            delivery_id: delivery.clone(),
        },
        &format!("quota_rollup:{tick}"),
    )
    .await?;
    let Some(job) = job else { return Ok(false) };
    ctx.queue.push(JobKind::QuotaRollup, job.id, &delivery, Duration::ZERO).await?;
    Ok(true)
}
