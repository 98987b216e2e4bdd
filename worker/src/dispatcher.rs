//! The dispatcher: delivers jobs that became due — retries after their backoff, jobs whose
//! worker died (due again after theirs) — by pushing them to Redis when they are due, never ahead
//! of time. apalis-redis would keep delayed deliveries in a scheduled set and promote every due
//! one in a single Lua call, which fails for every worker once ~8,000 are due at once (after an
//! outage, say); here at most [`BATCH`] rows are taken per pass, each pass one short transaction
//! (`jobs::dispatch_due`, rows another worker's dispatcher holds are skipped), and passes repeat
//! at once while there is more. Every worker runs one; it polls every `QUEUE_POLL_MS`.

use tenant_domain::jobs;
use tenant_jobs::{JobContext, JobKind};

const BATCH: i64 = 500;

pub async fn run(ctx: JobContext) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let busy = match dispatch_once(&ctx).await {
            Ok(n) => n as i64 == BATCH,
            Err(err) => {
                tracing::warn!(error = %err, "dispatcher pass failed; will retry");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(ctx.config.jobs.poll_interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One pass; returns how many deliveries it pushed. A push that fails leaves the job to the
/// reconciler, which re-delivers due jobs whose delivery Redis does not hold.
pub async fn dispatch_once(ctx: &JobContext) -> anyhow::Result<usize> {
    let due = jobs::dispatch_due(&ctx.db, BATCH).await?;
    for job in &due {
        let (Some(kind), Some(delivery)) = (JobKind::from_name(&job.kind), job.delivery_id.as_deref()) else {
            continue;
        };
        if let Err(err) = ctx.queue.push(kind, job.id, delivery).await {
            tracing::warn!(job = %job.id, error = %err, "could not deliver a due job; left to the reconciler");
        }
    }
    Ok(due.len())
}
