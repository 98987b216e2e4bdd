//! Rollups: copy the Redis counters into PostgreSQL — `tenant_quotas.used_value` (with the
//! window it belongs to in `last_reset_at`) and an hourly snapshot in `usage_history` — so
//! billing reads PostgreSQL and a Redis loss costs at most one rollup interval of counts.
//!
//! Idempotent: a rollup *sets* values read from Redis (it never adds), keyed by tenant, resource
//! and hour, so running it twice for the same moment changes nothing. It also puts back the
//! mirrored state of any tenant Redis lost, and relays threshold events whose relay to the events
//! stream failed (counters not on `REDIS_URL`: see `quota::events`). Each tenant's counters are
//! read in one pipeline (one slot on a Redis Cluster).

use super::engine::{QuotaEngine, QuotaError, load_state};
use super::{Period, window};
use crate::TenantId;
use chrono::{DateTime, Timelike, Utc};
use sqlx::PgPool;

/// One counter to copy: the window of `period` containing `at`, filed under hour `bucket`;
/// `current` for the window in force (which also sets `tenant_quotas.used_value`).
struct Snapshot {
    resource: String,
    period: Period,
    at: DateTime<Utc>,
    bucket: DateTime<Utc>,
    current: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollupReport {
    pub tenants: usize,
    pub rows: usize,
    pub states_restored: usize,
    pub events_relayed: usize,
}

pub async fn run(db: &PgPool, engine: &QuotaEngine, now: DateTime<Utc>) -> Result<RollupReport, QuotaError> {
    let grace = chrono::Duration::from_std(engine.window_grace()).unwrap_or_else(|_| chrono::Duration::hours(2));
    let tenants: Vec<TenantId> =
        sqlx::query_scalar("select id from tenants where status in ('active', 'suspended') order by id")
            .fetch_all(db)
            .await
            .map_err(crate::Error::from)?;
    let bucket = now.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap_or(now);
    let mut report = RollupReport { tenants: tenants.len(), ..Default::default() };
    for tenant in tenants {
        if !engine.has_state(tenant).await? {
            engine.load_into_redis(db, tenant).await?;
            report.states_restored += 1;
        }
        report.events_relayed += engine.relay_pending(tenant).await?;
        let Some(state) = load_state(db, tenant).await? else { continue };
        // Each resource's current window; and, for a window that began less than the grace
        // period ago, the final count of the one before (its keys outlive it by that much).
        let mut snapshots: Vec<Snapshot> = Vec::new();
        for m in &state.limits {
            snapshots.push(Snapshot { resource: m.resource.clone(), period: m.period, at: now, bucket, current: true });
            if let Some(w) = window(m.period, now)
                && now - w.start < grace
            {
                snapshots.push(Snapshot {
                    resource: m.resource.clone(),
                    period: m.period,
                    at: w.start - chrono::Duration::seconds(1),
                    bucket: w.start - chrono::Duration::hours(1),
                    current: false,
                });
            }
        }
        let which: Vec<_> = snapshots.iter().map(|s| (s.resource.clone(), s.period, s.at)).collect();
        let used = engine.usage(tenant, &which).await?;
        // Each tenant's rows are written as that tenant.
        let mut tx = crate::db::begin_tenant(db, tenant).await?;
        for (Snapshot { resource, period, at, bucket, current }, used) in snapshots.iter().zip(used) {
            let window_start = window(*period, *at).map(|w| w.start);
            if *current {
                sqlx::query(
                    "update tenant_quotas set used_value = $3, last_reset_at = $4, updated_at = now() \
                     where tenant_id = $1 and resource_type = $2 \
                       and (used_value, last_reset_at) is distinct from ($3, $4)",
                )
                .bind(tenant)
                .bind(resource)
                .bind(used)
                .bind(window_start)
                .execute(&mut *tx)
                .await
                .map_err(crate::Error::from)?;
            }
            sqlx::query(
                "insert into usage_history (tenant_id, resource_type, bucket_start, window_start, used) \
                 values ($1, $2, $3, $4, $5) \
                 on conflict (tenant_id, resource_type, bucket_start) do update \
                 set window_start = excluded.window_start, used = excluded.used, recorded_at = now() \
                 where (usage_history.window_start, usage_history.used) \
                       is distinct from (excluded.window_start, excluded.used)",
            )
            .bind(tenant)
            .bind(resource)
            .bind(bucket)
            .bind(window_start)
            .bind(used)
            .execute(&mut *tx)
            .await
            .map_err(crate::Error::from)?;
            report.rows += 1;
        }
        tx.commit().await?;
    }
    Ok(report)
}
