//! Figures for the monitoring endpoints (`GET /api/v1/metrics`, `GET /api/v1/tenants/{id}/metrics`,
//! `GET /internal/tenants/metrics`, `GET /internal/tenants/{id}/health`): aggregates over all
//! tenants read with the service's own role (platform-wide, so not under one tenant's policy), and
//! the per-tenant facts a health check looks at.

use crate::{Result, TenantId, TenantStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// Tenants by status and plan, and the last 30 days' arrivals and departures.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCounts {
    /// Every tenant row, deleted ones included.
    pub total: i64,
    pub by_status: BTreeMap<String, i64>,
    /// Active tenants by plan slug.
    pub active_by_plan: BTreeMap<String, i64>,
    pub created_last_30_days: i64,
    pub deleted_last_30_days: i64,
}

pub async fn tenant_counts(db: &PgPool) -> Result<TenantCounts> {
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("select status::text, count(*) from tenants group by status order by status")
            .fetch_all(db)
            .await?;
    let active_by_plan: Vec<(String, i64)> = sqlx::query_as(
        "select p.slug, count(*) from tenants t join subscription_plans p on p.id = t.plan_id \
         where t.status = 'active' group by p.slug order by p.slug",
    )
    .fetch_all(db)
    .await?;
    let (created, deleted): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where created_at > now() - interval '30 days'), \
                count(*) filter (where deleted_at > now() - interval '30 days') from tenants",
    )
    .fetch_one(db)
    .await?;
    Ok(TenantCounts {
        total: by_status.iter().map(|(_, n)| n).sum(),
        by_status: by_status.into_iter().collect(),
        active_by_plan: active_by_plan.into_iter().collect(),
        created_last_30_days: created,
        deleted_last_30_days: deleted,
    })
}

/// Open jobs by status, and jobs finished in the last 24 hours by outcome.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    pub open: BTreeMap<String, i64>,
    pub finished_last_24_hours: BTreeMap<String, i64>,
}

/// Job counts, over all tenants or over one.
pub async fn job_counts(db: impl sqlx::PgExecutor<'_>, tenant: Option<TenantId>) -> Result<JobCounts> {
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "select status::text, finished_at is null, count(*) from jobs \
         where ($1::uuid is null or tenant_id = $1) \
           and (finished_at is null or finished_at > now() - interval '24 hours') \
         group by 1, 2",
    )
    .bind(tenant)
    .fetch_all(db)
    .await?;
    let mut counts = JobCounts { open: BTreeMap::new(), finished_last_24_hours: BTreeMap::new() };
    for (status, open, n) in rows {
        let into = if open { &mut counts.open } else { &mut counts.finished_last_24_hours };
        *into.entry(status).or_default() += n;
    }
    Ok(counts)
}

/// [`JobCounts`] per job kind (`provision_tenant`, `change_plan`, …), over all tenants and the
/// platform's own jobs.
pub async fn job_counts_by_kind(db: &PgPool) -> Result<BTreeMap<String, JobCounts>> {
    let rows: Vec<(String, String, bool, i64)> = sqlx::query_as(
        "select kind, status::text, finished_at is null, count(*) from jobs \
         where finished_at is null or finished_at > now() - interval '24 hours' \
         group by 1, 2, 3",
    )
    .fetch_all(db)
    .await?;
    let mut by_kind: BTreeMap<String, JobCounts> = BTreeMap::new();
    for (kind, status, open, n) in rows {
        let counts = by_kind
            .entry(kind)
            .or_insert_with(|| JobCounts { open: BTreeMap::new(), finished_last_24_hours: BTreeMap::new() });
        let into = if open { &mut counts.open } else { &mut counts.finished_last_24_hours };
        *into.entry(status).or_default() += n;
    }
    Ok(by_kind)
}

/// Outbox events not yet published to the stream (the relay is behind or Redis is down).
pub async fn unpublished_events(db: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from outbox_events where published_at is null").fetch_one(db).await?)
}

/// One resource's usage as the last rollup recorded it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolledUsage {
    pub used: i64,
    pub limit: i64,
    /// `used` over `limit` in percent (a zero limit with usage counts as 100 %).
    pub percent: f64,
}

/// A tenant's usage across its resources, from the rollups.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantUsage {
    pub tenant_id: TenantId,
    pub slug: String,
    pub status: TenantStatus,
    pub plan: String,
    /// The highest `percent` over its resources.
    pub highest_usage_percent: f64,
    #[sqlx(json)]
    #[schema(value_type = BTreeMap<String, RolledUsage>)]
    pub quotas: BTreeMap<String, RolledUsage>,
    /// When these figures last changed: a rollup that found new counts, or a limit change.
    pub as_of: Option<DateTime<Utc>>,
}

pub fn percent(used: i64, limit: i64) -> f64 {
    match (used, limit) {
        (u, _) if u <= 0 => 0.0,
        (_, l) if l <= 0 => 100.0,
        // Two decimals are plenty for a dashboard.
        (u, l) => (u as f64 * 10_000.0 / l as f64).round() / 100.0,
    }
}

const USAGE_PERCENT: &str = "case when q.used_value <= 0 then 0::float8 when q.limit_value <= 0 then 100::float8 \
     else round(q.used_value::numeric * 100 / q.limit_value, 2)::float8 end";

/// Every tenant that is not deleted, busiest first (highest usage percent), paged; `status`
/// narrows it. The figures are the last rollup's: reading every tenant's live counters is what
/// the per-tenant endpoints are for.
pub async fn usage_page(
    db: &PgPool,
    status: Option<TenantStatus>,
    page: u32,
    limit: u32,
) -> Result<(Vec<TenantUsage>, i64)> {
    let offset = i64::from(page.saturating_sub(1)) * i64::from(limit);
    let rows: Vec<TenantUsage> = sqlx::query_as(&format!(
        "select t.id as tenant_id, t.slug, t.status, p.slug as plan, \
                coalesce(max({USAGE_PERCENT}), 0) as highest_usage_percent, \
                coalesce(jsonb_object_agg(q.resource_type, jsonb_build_object( \
                    'used', q.used_value, 'limit', q.limit_value, 'percent', {USAGE_PERCENT})) \
                    filter (where q.resource_type is not null), '{{}}') as quotas, \
                max(q.updated_at) as as_of \
         from tenants t join subscription_plans p on p.id = t.plan_id \
         left join tenant_quotas q on q.tenant_id = t.id \
         where t.status <> 'deleted' and ($1::tenant_status_enum is null or t.status = $1) \
         group by t.id, p.slug \
         order by highest_usage_percent desc, t.created_at, t.id \
         limit $2 offset $3"
    ))
    .bind(status)
    .bind(i64::from(limit))
    .bind(offset)
    .fetch_all(db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from tenants where status <> 'deleted' and ($1::tenant_status_enum is null or status = $1)",
    )
    .bind(status)
    .fetch_one(db)
    .await?;
    Ok((rows, total))
}

/// Tenant resources at or above `min_percent` of their limit as of the last rollup, highest first,
/// at most `cap` of them (so a metric labelled by tenant stays bounded).
pub async fn high_usage(db: &PgPool, min_percent: f64, cap: i64) -> Result<Vec<(TenantId, String, f64)>> {
    Ok(sqlx::query_as(&format!(
        "select q.tenant_id, q.resource_type, {USAGE_PERCENT} as percent \
         from tenant_quotas q join tenants t on t.id = q.tenant_id \
         where t.status in ('active', 'suspended') and {USAGE_PERCENT} >= $1 \
         order by percent desc, q.tenant_id, q.resource_type limit $2"
    ))
    .bind(min_percent)
    .bind(cap)
    .fetch_all(db)
    .await?)
}

/// Tenant resources at or above `min_percent` of their limit **now** — live counts from Redis
/// against the limits in PostgreSQL — highest first, at most `cap` of them. For the Prometheus
/// gauge, which must follow a change within a scrape, not wait for the next rollup.
pub async fn live_high_usage(
    db: &PgPool,
    quota: &crate::quota::engine::QuotaEngine,
    min_percent: f64,
    cap: usize,
) -> Result<Vec<(TenantId, String, f64)>> {
    let rows: Vec<(TenantId, String, i64, String)> = sqlx::query_as(
        "select q.tenant_id, q.resource_type, q.limit_value, q.reset_period::text \
         from tenant_quotas q join tenants t on t.id = q.tenant_id \
         where t.status in ('active', 'suspended') and q.limit_value > 0",
    )
    .fetch_all(db)
    .await?;
    let which: Vec<(TenantId, String, crate::quota::Period)> = rows
        .iter()
        .map(|(t, r, _, p)| (*t, r.clone(), crate::quota::Period::parse(p).unwrap_or(crate::quota::Period::None)))
        .collect();
    let used = match quota.usage_many(&which).await {
        Ok(used) => used,
        Err(err) => {
            tracing::debug!(error = %err, "live usage unavailable; metrics fall back to the rollups");
            return high_usage(db, min_percent, i64::try_from(cap).unwrap_or(i64::MAX)).await;
        }
    };
    let mut high: Vec<(TenantId, String, f64)> = rows
        .into_iter()
        .zip(used)
        .map(|((tenant, resource, limit, _), used)| {
            let percent = (used as f64 * 10_000.0 / limit as f64).round() / 100.0;
            (tenant, resource, percent)
        })
        .filter(|(_, _, percent)| *percent >= min_percent)
        .collect();
    high.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)).then_with(|| a.1.cmp(&b.1)));
    high.truncate(cap);
    Ok(high)
}

/// What a tenant health check looks at besides Redis.
#[derive(Debug, sqlx::FromRow)]
pub struct HealthFacts {
    pub schema_exists: bool,
    pub billing_status: Option<String>,
    pub failed_jobs_last_24_hours: i64,
    pub stuck_jobs: i64,
}

/// `stuck`: jobs open for longer than this.
pub async fn health_facts(db: &PgPool, tenant: TenantId, stuck_after: std::time::Duration) -> Result<HealthFacts> {
    Ok(sqlx::query_as(
        "select exists (select from pg_namespace where nspname = $2) as schema_exists, \
                (select status from billing_accounts where tenant_id = $1) as billing_status, \
                (select count(*) from jobs where tenant_id = $1 and status in ('failed', 'compensated') \
                     and finished_at > now() - interval '24 hours') as failed_jobs_last_24_hours, \
                (select count(*) from jobs where tenant_id = $1 and finished_at is null \
                     and created_at < now() - $3) as stuck_jobs",
    )
    .bind(tenant)
    .bind(crate::tenant_schema::schema_name(tenant))
    .bind(stuck_after)
    .fetch_one(db)
    .await?)
}
