//! Periodic jobs (the quota rollup, the billing cycle, retention). Every worker runs these tickers; a tick
//! inserts its job row under a unique schedule key (`quota_rollup:<tick>`, `billing_cycle:<tick>`), so exactly one job exists per tick however many workers
//! run, and only the worker whose insert won pushes it. (apalis-cron would fire on every replica,
//! apalis#281.)
//!
//! Also here: the hourly vacuum of finished deliveries in Redis, run by whichever worker takes
//! the hour's lock.

use chrono::Utc;
use serde_json::json;
use std::time::Duration;
use tenant_domain::JobId;
use tenant_domain::jobs::{self, NewJob};
use tenant_jobs::{JobContext, JobKind, Queue};

/// Finished deliveries are kept this long in Redis (for diagnostics), then removed.
const KEEP_FINISHED: Duration = Duration::from_secs(3600);

pub async fn vacuum(ctx: JobContext) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(KEEP_FINISHED) => {}
            _ = shutdown.changed() => return,
        }
        match vacuum_once(&ctx, KEEP_FINISHED).await {
            Ok(Some(n)) => tracing::info!(removed = n, "finished deliveries vacuumed from Redis"),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "queue vacuum failed"),
        }
    }
}

/// One vacuum, unless another worker holds this period's lock; `Some(removed)` if it ran.
pub async fn vacuum_once(ctx: &JobContext, keep: Duration) -> anyhow::Result<Option<u64>> {
    let mut conn = ctx.redis.clone();
    let lock: Option<String> = redis::cmd("SET")
        .arg(ctx.keys.key("queue-vacuum-lock"))
        .arg(&ctx.worker_id)
        .arg("NX")
        .arg("EX")
        .arg(keep.as_secs().max(1) / 2 + 1)
        .query_async(&mut conn)
        .await?;
    if lock.is_none() {
        return Ok(None);
    }
    Ok(Some(ctx.queue.vacuum(keep).await?))
}

/// Enqueues one quota rollup per `ROLLUP_INTERVAL_SECS` tick.
pub async fn run(ctx: JobContext) {
    tick_every(ctx.clone(), ctx.config.quota.rollup_interval, JobKind::QuotaRollup).await
}

/// Enqueues one billing cycle (period close and dunning) per `BILLING_CLOSE_INTERVAL_SECS` tick.
pub async fn billing(ctx: JobContext) {
    tick_every(ctx.clone(), ctx.config.billing.close_interval, JobKind::BillingCycle).await
}

/// Enqueues one retention run per `RETENTION_INTERVAL_SECS` tick.
pub async fn retention(ctx: JobContext) {
    tick_every(ctx.clone(), ctx.config.retention.interval, JobKind::Retention).await
}

async fn tick_every(ctx: JobContext, interval: Duration, kind: JobKind) {
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
        if let Err(err) = enqueue_tick(&ctx, kind, next).await {
            tracing::warn!(kind = kind.name(), error = %err, "could not schedule a periodic job");
        }
    }
}

/// Enqueues the rollup of tick `tick` (unix seconds) unless it exists; true if this call did.
pub async fn enqueue_rollup(ctx: &JobContext, tick: i64) -> anyhow::Result<bool> {
    enqueue_tick(ctx, JobKind::QuotaRollup, tick).await
}

/// Enqueues the periodic job `kind` of tick `tick` (unix seconds; its payload is `{at}`) unless
/// it exists; true if this call did.
pub async fn enqueue_tick(ctx: &JobContext, kind: JobKind, tick: i64) -> anyhow::Result<bool> {
    let at = chrono::DateTime::from_timestamp(tick, 0).unwrap_or_else(Utc::now);
    let delivery = Queue::new_delivery_id();
    let job = jobs::insert_scheduled(
        &ctx.db,
        NewJob {
            id: JobId::new_v7(),
            kind: kind.name(),
            tenant: None,
            payload: json!({ "at": at }),
            steps: tenant_jobs::steps(kind),
            max_attempts: ctx.config.jobs.max_attempts,
            delivery_id: delivery.clone(),
        },
        &format!("{}:{tick}", kind.name()),
    )
    .await?;
    let Some(job) = job else { return Ok(false) };
    ctx.queue.push(kind, job.id, &delivery).await?;
    Ok(true)
}
