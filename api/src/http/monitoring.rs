//! Monitoring as JSON: the service's figures (`GET /api/v1/metrics`), one tenant's
//! (`GET /api/v1/tenants/{id}/metrics`), every tenant's usage for the monitoring service
//! (`GET /internal/tenants/metrics`) and one tenant's health (`GET /internal/tenants/{id}/health`).
//! Prometheus scrapes `/metrics`; these are for dashboards, admin tools and other services.

use super::access::{PlatformUser, Read, TenantAccess};
use super::auth::ServiceCaller;
use super::error::Result;
use super::extract::{Path, Query};
use super::quotas::{QuotaView, quota_views};
use super::response::{self, Envelope, PageMeta, PageParams};
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use prometheus::core::Collector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tenant_domain::monitoring::{self, JobCounts, TenantCounts, TenantUsage, percent};
use tenant_domain::{TenantId, TenantStatus, plans, tenants};

/// A job open for longer than this counts against a tenant's health.
const STUCK_AFTER: Duration = Duration::from_secs(3600);
/// A resource at or above this share of its limit counts against a tenant's health.
const HEADROOM_PERCENT: f64 = 95.0;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMetrics {
    pub tenants: TenantCounts,
    pub jobs: JobCounts,
    /// The same counts per job kind.
    pub jobs_by_kind: BTreeMap<String, JobCounts>,
    /// Job deliveries waiting in Redis (null when Redis is unreachable).
    pub queue_depth: Option<u64>,
    /// Outbox events not yet on the `tenant-events` stream.
    pub unpublished_events: i64,
    /// This API process since it started.
    pub process: ProcessMetrics,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessMetrics {
    pub uptime_seconds: u64,
    /// Resident memory (null where `/proc` is not available).
    pub resident_memory_bytes: Option<u64>,
    pub http_requests: u64,
    /// Requests answered with a 5xx.
    pub http_server_errors: u64,
    pub cache_hit_rate: f64,
    /// Quota checks served from leased budget without a Redis round trip.
    pub quota_leased_checks: u64,
    /// Tenant states loaded from PostgreSQL into Redis by the hot path.
    pub quota_state_loads: u64,
    pub database_connections_in_use: u32,
}

#[utoipa::path(get, path = "/api/v1/metrics", tag = "operations", security(("bearer" = [])),
    responses((status = 200, description = "Tenants by status and plan, jobs (in all and per kind), queue and outbox backlog, and this process's figures", body = inline(Envelope<ServiceMetrics>)),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody)))]
pub async fn service(State(state): State<AppState>, _platform: PlatformUser) -> Result<Response> {
    let (tenants, jobs, jobs_by_kind, unpublished_events) = tokio::try_join!(
        monitoring::tenant_counts(&state.db),
        monitoring::job_counts(&state.db, None),
        monitoring::job_counts_by_kind(&state.db),
        monitoring::unpublished_events(&state.db),
    )?;
    let queue_depth = tokio::time::timeout(Duration::from_secs(1), state.queue.depth()).await.ok().and_then(|r| r.ok());
    Ok(response::ok(ServiceMetrics {
        tenants,
        jobs,
        jobs_by_kind,
        queue_depth,
        unpublished_events,
        process: process_metrics(&state),
    }))
}

fn process_metrics(state: &AppState) -> ProcessMetrics {
    let m = &state.metrics;
    let (mut requests, mut server_errors) = (0u64, 0u64);
    for family in m.http_requests.collect() {
        for metric in family.get_metric() {
            let n = metric.get_counter().get_value() as u64;
            requests += n;
            if metric.get_label().iter().any(|l| l.name() == "status" && l.value().starts_with('5')) {
                server_errors += n;
            }
        }
    }
    let in_use = state.db.size().saturating_sub(u32::try_from(state.db.num_idle()).unwrap_or(u32::MAX));
    ProcessMetrics {
        uptime_seconds: m.started.elapsed().as_secs(),
        resident_memory_bytes: resident_memory(),
        http_requests: requests,
        http_server_errors: server_errors,
        cache_hit_rate: state.contexts.hit_rate(),
        quota_leased_checks: state.quota.leased_hits.load(std::sync::atomic::Ordering::Relaxed),
        quota_state_loads: state.quota.state_loads.load(std::sync::atomic::Ordering::Relaxed),
        database_connections_in_use: in_use,
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>();
    kb.ok().map(|kb| kb * 1024)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantMetrics {
    pub tenant_id: TenantId,
    pub status: TenantStatus,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    /// Live usage from Redis, with each resource's share of its limit.
    pub quotas: Vec<QuotaUsage>,
    pub highest_usage_percent: f64,
    pub jobs: JobCounts,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUsage {
    #[serde(flatten)]
    pub quota: QuotaView,
    pub percent: f64,
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/metrics", tag = "operations", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Live quota usage in percent and the tenant's jobs", body = inline(Envelope<TenantMetrics>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 503, description = "Redis unreachable", body = super::error::ErrorBody)))]
pub async fn tenant(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let id = access.tenant;
    let mut tx = access.begin(&state).await?;
    let tenant = tenants::get(&mut *tx, id).await?;
    let plan = plans::find(&mut *tx, &tenant.plan_id.to_string()).await?;
    let jobs = monitoring::job_counts(&mut *tx, Some(id)).await?;
    tx.commit().await?;
    let views = quota_views(&state, id).await?;
    let quotas: Vec<QuotaUsage> =
        views.into_iter().map(|q| QuotaUsage { percent: percent(q.used, q.limit), quota: q }).collect();
    Ok(response::ok(TenantMetrics {
        tenant_id: id,
        status: tenant.status,
        plan: plan.slug,
        created_at: tenant.created_at,
        highest_usage_percent: quotas.iter().map(|q| q.percent).fold(0.0, f64::max),
        quotas,
        jobs,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only tenants in this status (deleted tenants are never listed).
    pub status: Option<TenantStatus>,
}

#[utoipa::path(get, path = "/internal/tenants/metrics", tag = "internal", security(("serviceToken" = [])),
    params(UsageParams),
    responses((status = 200, description = "Every tenant's usage as of the last rollup, busiest first, paged", body = inline(Envelope<Vec<TenantUsage>>)),
              (status = 400, description = "Bad parameters", body = super::error::ErrorBody)))]
pub async fn all_tenants(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Query(params): Query<UsageParams>,
) -> Result<Response> {
    let (page, limit) = PageParams { page: params.page, limit: params.limit }.resolve()?;
    let (items, total) = monitoring::usage_page(&state.db, params.status, page, limit).await?;
    Ok(response::page(items, PageMeta { total, page, limit }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantHealth {
    pub tenant_id: TenantId,
    pub status: TenantStatus,
    /// Every check passed.
    pub healthy: bool,
    pub checks: BTreeMap<&'static str, Check>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
}

fn check(ok: bool, detail: impl Into<String>) -> Check {
    Check { ok, detail: detail.into() }
}

#[utoipa::path(get, path = "/internal/tenants/{id}/health", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "`healthy` and each check: `status` (active), `schema` (its schema exists), \
                                            `quotaState` (the hot path decides with its current status), `billing` \
                                            (an active billing account), `jobs` (none failed in 24 h or open for over an hour), \
                                            `quotaHeadroom` (every resource under 95 %)", body = inline(Envelope<TenantHealth>)),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn tenant_health(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    let tenant = tenants::get(&state.db, id).await?;
    let facts = monitoring::health_facts(&state.db, id, STUCK_AFTER).await?;
    let status = tenant.status;
    let mut checks = BTreeMap::new();
    checks.insert("status", check(status == TenantStatus::Active, status.as_str()));
    // What should exist depends on where the tenant is in its lifecycle; mid-saga, either.
    let expected = match status {
        TenantStatus::Active | TenantStatus::Suspended => Some(true),
        TenantStatus::Deleted | TenantStatus::Failed => Some(false),
        TenantStatus::Provisioning | TenantStatus::Deleting => None,
    };
    let phase = status.as_str();
    checks.insert(
        "schema",
        match (expected, facts.schema_exists) {
            (None, exists) => check(true, format!("{} while {phase}", if exists { "present" } else { "absent" })),
            (Some(true), true) => check(true, "present"),
            (Some(false), false) => check(true, "none, as expected"),
            (Some(true), false) => check(false, "missing"),
            (Some(false), true) => check(false, format!("present although the tenant is {phase}")),
        },
    );
    let billing_active = facts.billing_status.as_deref() == Some("active");
    let billing = facts.billing_status.as_deref().unwrap_or("no account");
    checks.insert(
        "billing",
        match expected {
            None => check(true, format!("{billing} while {phase}")),
            Some(true) => check(billing_active, billing),
            Some(false) if billing_active => check(false, format!("active although the tenant is {phase}")),
            Some(false) => check(true, billing),
        },
    );
    let stuck = facts.stuck_jobs;
    let failed = facts.failed_jobs_last_24_hours;
    checks.insert(
        "jobs",
        check(failed == 0 && stuck == 0, format!("{failed} failed in the last 24 h, {stuck} open for over an hour")),
    );
    let quota_state = match state.quota.mirrored_status(id).await {
        Ok(Some(mirrored)) if mirrored == status.as_str() => check(true, format!("mirrored as {mirrored}")),
        Ok(Some(mirrored)) => check(false, format!("Redis says {mirrored}, PostgreSQL says {}", status.as_str())),
        // Loaded by the next check; not a fault.
        Ok(None) => check(true, "not loaded; the next check loads it"),
        Err(err) => check(false, format!("Redis unreachable: {err}")),
    };
    checks.insert("quotaState", quota_state);
    let headroom = match quota_views(&state, id).await {
        Ok(views) => {
            let tight: Vec<String> = views
                .iter()
                .filter(|q| percent(q.used, q.limit) >= HEADROOM_PERCENT)
                .map(|q| format!("{} at {}%", q.resource, percent(q.used, q.limit)))
                .collect();
            check(
                tight.is_empty(),
                if tight.is_empty() { "every resource under 95%".to_owned() } else { tight.join(", ") },
            )
        }
        Err(err) => check(false, err.message.into_owned()),
    };
    checks.insert("quotaHeadroom", headroom);
    Ok(response::ok(TenantHealth { tenant_id: id, status, healthy: checks.values().all(|c| c.ok), checks }))
}
