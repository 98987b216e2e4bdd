//! The outbox relay: publishes the events that changes wrote to `outbox_events` (in their own
//! transactions) to the events stream, in order, and marks them sent. One relay publishes at a
//! time (a session advisory lock, held on one connection — not a transaction — for the pass),
//! oldest first: it reads a batch, publishes it to Redis, then marks what was published in one
//! short transaction, so no PostgreSQL transaction stays open across Redis calls. Delivery is
//! therefore **at least once**: a crash between publishing and marking publishes those events
//! again with the same `id`, which consumers use to drop repeats. If Redis is down nothing is
//! marked and everything is published when it returns; a rolled-back change never wrote its
//! event.
//!
//! For each event it also drops the tenant's cached context everywhere (so caches follow every
//! committed change even if the API's own invalidation failed), and, when the audit or
//! notification service URLs are set, enqueues a `deliver_event` job per service.

use tenant_domain::context::ContextStore;
use tenant_domain::jobs::{self, NewJob};
use tenant_domain::{JobId, TenantId};
use tenant_jobs::deliver::{DeliverPayload, Target, event_json};
use tenant_jobs::{JobContext, JobKind, Queue};
use uuid::Uuid;

const LOCK_KEY: i64 = 0x7465_6e61_6e74_0002;
const BATCH: i64 = 200;

pub async fn run(ctx: JobContext) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let busy = match relay_once(&ctx).await {
            Ok(n) => n as i64 == BATCH,
            Err(err) => {
                tracing::warn!(error = %err, "outbox relay pass failed; will retry");
                false
            }
        };
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(ctx.config.outbound.outbox_poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

type Row = (Uuid, Option<Uuid>, String, serde_json::Value, chrono::DateTime<chrono::Utc>);

/// One pass; returns how many events were published.
pub async fn relay_once(ctx: &JobContext) -> anyhow::Result<usize> {
    let mut lock = ctx.db.acquire().await?;
    let locked: bool =
        sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *lock).await?;
    if !locked {
        return Ok(0);
    }
    let result = publish_batch(ctx).await;
    let unlocked =
        sqlx::query_scalar::<_, bool>("select pg_advisory_unlock($1)").bind(LOCK_KEY).fetch_one(&mut *lock).await;
    if !matches!(unlocked, Ok(true)) {
        // Never hand a connection that may still hold the lock back to the pool: closing it
        // ends the session, and the lock with it.
        let _ = sqlx::Connection::close(lock.detach()).await;
    }
    result
}

async fn publish_batch(ctx: &JobContext) -> anyhow::Result<usize> {
    let rows: Vec<Row> = sqlx::query_as(
        "select id, tenant_id, event_type, payload, occurred_at from outbox_events \
         where published_at is null order by occurred_at, id limit $1",
    )
    .bind(BATCH)
    .fetch_all(&ctx.db)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let store = ContextStore::new(&ctx.config, ctx.redis.clone());
    let mut conn = ctx.redis.clone();
    let mut published = Vec::with_capacity(rows.len());
    let mut failure = None;
    for (id, tenant, event_type, payload, occurred_at) in &rows {
        let event = event_json(*id, *tenant, event_type, *occurred_at, payload);
        let added: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&ctx.config.events_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(ctx.config.events_stream_maxlen)
            .arg("*")
            .arg("id")
            .arg(id.to_string())
            .arg("type")
            .arg(event_type)
            .arg("tenantId")
            .arg(tenant.map(|t| t.to_string()).unwrap_or_default())
            .arg("occurredAt")
            .arg(event["occurredAt"].as_str().unwrap_or_default())
            .arg("data")
            .arg(event["data"].to_string())
            .query_async(&mut conn)
            .await;
        let invalidated = match (added, tenant) {
            (Ok(_), Some(t)) => store.invalidate(TenantId(*t)).await,
            (Ok(_), None) => Ok(()),
            (Err(e), _) => Err(e),
        };
        if let Err(err) = invalidated {
            failure = Some(err);
            break;
        }
        published.push(*id);
    }
    let mut tx = ctx.db.begin().await?;
    sqlx::query("update outbox_events set published_at = now() where id = any($1)")
        .bind(&published)
        .execute(&mut *tx)
        .await?;
    let mut deliveries = Vec::new();
    for id in &published {
        for (target, url) in [
            (Target::Audit, &ctx.config.outbound.audit_url),
            (Target::Notification, &ctx.config.outbound.notification_url),
        ] {
            if url.is_none() {
                continue;
            }
            let delivery = Queue::new_delivery_id();
            let job = jobs::insert(
                &mut *tx,
                NewJob {
                    id: JobId::new_v7(),
                    kind: JobKind::DeliverEvent.name(),
                    tenant: None,
                    payload: serde_json::to_value(DeliverPayload { event_id: *id, target })?,
                    steps: tenant_jobs::steps(JobKind::DeliverEvent),
                    max_attempts: ctx.config.jobs.max_attempts,
                    delivery_id: delivery.clone(),
                },
            )
            .await?;
            deliveries.push((job.id, delivery));
        }
    }
    tx.commit().await?;
    for (job, delivery) in deliveries {
        if let Err(err) = ctx.queue.push(JobKind::DeliverEvent, job, &delivery).await {
            tracing::warn!(%job, error = %err, "delivery job push failed; left to the reconciler");
        }
    }
    if let Some(err) = failure {
        anyhow::bail!("published {} of {} events, then: {err}", published.len(), rows.len());
    }
    Ok(published.len())
}
