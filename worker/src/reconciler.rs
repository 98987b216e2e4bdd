//! The reconciler: PostgreSQL says which jobs exist, Redis only which deliveries are pending, and
//! the two drift apart when Redis loses data (a restart without persistence, `FLUSHALL`), when a
//! push fails after the job's transaction committed, or when a worker dies holding a lease. Every
//! `RECONCILE_INTERVAL_MS` one worker (a PostgreSQL advisory lock picks it):
//! - turns jobs stuck `running` past their lease back to `retrying`, due after the job's backoff
//!   (their worker died: a step that kills its worker is not re-run in a tight loop); the
//!   dispatcher delivers them when due;
//! - re-delivers due `queued`/`retrying` jobs whose latest delivery Redis no longer holds.
//!
//! A re-delivery of a job that is in fact still queued is harmless: the lease makes it a no-op.

use tenant_domain::jobs;
use tenant_jobs::{JobContext, JobKind, Queue};

const LOCK_KEY: i64 = 0x7465_6e61_6e74_0001; // "tenant" + 1

pub async fn run(ctx: JobContext) {
    let mut shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(ctx.config.jobs.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match reconcile_once(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(redelivered = n, "reconciler re-delivered jobs"),
            Err(err) => tracing::warn!(error = %err, "reconciler pass failed"),
        }
    }
}

/// One pass; returns how many jobs were re-delivered.
pub async fn reconcile_once(ctx: &JobContext) -> anyhow::Result<usize> {
    let mut tx = ctx.db.begin().await?;
    let locked: bool =
        sqlx::query_scalar("select pg_try_advisory_xact_lock($1)").bind(LOCK_KEY).fetch_one(&mut *tx).await?;
    if !locked {
        return Ok(0);
    }
    let (base, max) = (ctx.config.jobs.backoff_base, ctx.config.jobs.backoff_max);
    // Due again after their backoff: the dispatcher delivers them then.
    let expired = jobs::expire_leases(&mut *tx, base, max).await?;
    for job in &expired {
        tracing::warn!(job = %job.id, kind = job.kind, "lease expired; its worker is gone");
    }
    let stale = jobs::due_and_stale(&mut *tx, ctx.config.jobs.reconcile_stale_after, 1000).await?;
    tx.commit().await?;
    for job in &expired {
        ctx.progress.announce(job.id).await; // running → retrying
    }
    let mut candidates = Vec::new();
    for job in stale {
        let Some(kind) = JobKind::from_name(&job.kind) else { continue };
        let held = match &job.delivery_id {
            Some(delivery) => ctx.queue.holds(kind, delivery).await?,
            None => false,
        };
        if !held {
            tracing::warn!(job = %job.id, kind = job.kind, "delivery missing from Redis");
            candidates.push(job);
        }
    }
    let mut redelivered = 0;
    for job in candidates {
        let Some(kind) = JobKind::from_name(&job.kind) else { continue };
        let delivery = Queue::new_delivery_id();
        jobs::record_dispatch(&ctx.db, job.id, &delivery).await?;
        ctx.queue.push(kind, job.id, &delivery).await?;
        redelivered += 1;
    }
    Ok(redelivered)
}
