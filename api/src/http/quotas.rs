//! Quotas over HTTP: the hot-path checks (internal and public), usage recording, the limits view,
//! limit changes and usage history. Checks and usage touch Redis only (see
//! `tenant_domain::quota::engine`).

use super::access::{Platform, Read, TenantAccess};
use super::auth::ServiceCaller;
use super::error::{ApiError, Result};
use super::extract::{Json, Path, Query};
use super::idempotency::IdempotencyKey;
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use tenant_domain::db::{self, TenantTx};
use tenant_domain::quota::engine::{Decision, Mode, Outcome, QuotaError};
use tenant_domain::quota::{Resource, store, window};
use tenant_domain::{Error, TenantId};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    /// One of users, storage, api_calls, bandwidth, databases, compute_hours, file_uploads, email_sends.
    #[schema(pattern = "^(users|storage|api_calls|bandwidth|databases|compute_hours|file_uploads|email_sends)$")]
    pub resource: String,
    /// Default 1.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub amount: Option<i64>,
    /// Count the amount if allowed, atomically with the check (default false).
    #[serde(default)]
    pub consume: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResponse {
    pub allowed: bool,
    pub resource: &'static str,
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    /// End of the current window; null for gauges.
    #[serde(serialize_with = "response::utc_seconds")]
    pub reset_at: Option<DateTime<Utc>>,
    /// True when Redis was unreachable and the resource is configured to fail open.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
    /// True when this repeated an `Idempotency-Key`: nothing was counted again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

fn parse_resource(raw: &str) -> Result<Resource> {
    Resource::parse(raw).ok_or_else(|| ApiError::field("resource", "unknown resource"))
}

fn decision_body(resource: Resource, d: &Decision) -> CheckResponse {
    CheckResponse {
        allowed: d.allowed,
        resource: resource.as_str(),
        limit: d.limit,
        used: d.used,
        remaining: d.remaining(),
        reset_at: d.reset_at,
        degraded: false,
        replayed: d.replayed,
    }
}

/// Maps an engine outcome to the HTTP answer of a check.
fn check_response(resource: Resource, outcome: Outcome, requested: i64) -> Result<Response> {
    match outcome {
        Outcome::Decided(d) if d.allowed => Ok(response::ok(decision_body(resource, &d))),
        Outcome::Decided(d) => {
            let mut details = serde_json::to_value(decision_body(resource, &d)).unwrap_or_default();
            details["requested"] = json!(requested);
            Err(ApiError::new(StatusCode::FORBIDDEN, "QUOTA_EXCEEDED", format!("{} quota exceeded", resource.as_str()))
                .with_details(details))
        }
        Outcome::NotActive(status) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "TENANT_NOT_ACTIVE",
            format!("the tenant is {status}; its quota checks are denied"),
        )
        .with_details(json!({ "allowed": false, "status": status, "resource": resource.as_str() }))),
        Outcome::UnknownTenant => Err(Error::tenant_not_found().into()),
        Outcome::NoLimit => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "QUOTA_EXCEEDED",
            format!("the tenant has no {} quota", resource.as_str()),
        )
        .with_details(json!({ "allowed": false, "resource": resource.as_str(), "limit": 0 }))),
    }
}

fn quota_failure(state: &AppState, resource: Resource, err: QuotaError) -> Result<Response> {
    match err {
        QuotaError::Store(e) => Err(e.into()),
        err if state.config.quota.fail_open.iter().any(|r| r == resource.as_str()) => {
            tracing::warn!(resource = resource.as_str(), error = %err, "quota engine unavailable; failing open");
            state.metrics.quota_fail_open.inc();
            let body = CheckResponse {
                allowed: true,
                resource: resource.as_str(),
                limit: 0,
                used: 0,
                remaining: 0,
                reset_at: None,
                degraded: true,
                replayed: false,
            };
            let mut res = response::ok(body);
            res.headers_mut().insert("x-quota-degraded", HeaderValue::from_static("true"));
            Ok(res)
        }
        err => Err(ApiError::unavailable("the quota store is unavailable", err)),
    }
}

async fn check(state: &AppState, tenant: TenantId, body: CheckRequest, key: Option<&str>) -> Result<Response> {
    let resource = parse_resource(&body.resource)?;
    let amount = body.amount.unwrap_or(1);
    if !(1..=MAX_AMOUNT).contains(&amount) {
        return Err(ApiError::field("amount", "must be a whole number from 1 to 10^15"));
    }
    let result = if body.consume {
        state.quota.consume(&state.db, tenant, resource, amount, key).await
    } else {
        state.quota.check(&state.db, tenant, resource, amount, Mode::Check).await
    };
    match result {
        Ok(outcome) => check_response(resource, outcome, amount),
        Err(err) => quota_failure(state, resource, err),
    }
}

#[utoipa::path(post, path = "/internal/tenants/{id}/quota-check", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"),
           ("Idempotency-Key" = Option<String>, Header, description = "A consume with a key already used (24 h) counts nothing and answers `replayed: true`")),
    request_body = CheckRequest,
    responses((status = 200, description = "Allowed (and counted, with consume)", body = inline(Envelope<CheckResponse>)),
              (status = 400, description = "Bad resource or amount", body = super::error::ErrorBody),
              (status = 403, description = "`QUOTA_EXCEEDED` (figures in details) or `TENANT_NOT_ACTIVE`", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 503, description = "Redis unreachable", body = super::error::ErrorBody)))]
pub async fn internal_check(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    key: IdempotencyKey,
    Path(id): Path<TenantId>,
    Json(body): Json<CheckRequest>,
) -> Result<Response> {
    check(&state, id, body, key.0.as_deref()).await
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/quotas/check", tag = "quotas", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")), request_body = CheckRequest,
    responses((status = 200, description = "Allowed", body = inline(Envelope<CheckResponse>)),
              (status = 403, description = "`QUOTA_EXCEEDED`, `TENANT_NOT_ACTIVE` or another tenant", body = super::error::ErrorBody)))]
pub async fn public_check(
    State(state): State<AppState>,
    access: TenantAccess<Read>,
    Json(body): Json<CheckRequest>,
) -> Result<Response> {
    let id = access.tenant;
    check(&state, id, body, None).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageRequest {
    #[schema(pattern = "^(users|storage|api_calls|bandwidth|databases|compute_hours|file_uploads|email_sends)$")]
    pub resource: String,
    /// Non-zero; negative only for gauges (users, storage, databases).
    #[schema(minimum = -1_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_i64)]
    pub amount: i64,
}

#[utoipa::path(post, path = "/internal/tenants/{id}/usage", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Usage sent again with the same key (24 h) is not counted twice")),
    request_body = UsageRequest,
    responses((status = 200, description = "Recorded; the new figures", body = inline(Envelope<CheckResponse>)),
              (status = 400, description = "Bad resource or amount", body = super::error::ErrorBody),
              (status = 403, description = "`TENANT_NOT_ACTIVE`", body = super::error::ErrorBody),
              (status = 503, description = "Redis unreachable", body = super::error::ErrorBody)))]
pub async fn record_usage(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    key: IdempotencyKey,
    Path(id): Path<TenantId>,
    Json(body): Json<UsageRequest>,
) -> Result<Response> {
    let resource = parse_resource(&body.resource)?;
    if body.amount == 0 || body.amount.abs() > MAX_AMOUNT {
        return Err(ApiError::field("amount", "must be non-zero and at most 10^15 in size"));
    }
    if body.amount < 0 && !resource.is_gauge() {
        return Err(ApiError::field("amount", "may be negative only for users, storage and databases"));
    }
    match state.quota.check_keyed(&state.db, id, resource, body.amount, Mode::Record, key.0.as_deref()).await {
        // Recorded usage may exceed the limit (it happened); the figures say so.
        Ok(Outcome::Decided(d)) => {
            let mut body = decision_body(resource, &d);
            body.allowed = d.used <= d.limit;
            let replayed = body.replayed;
            let mut res = response::ok(body);
            if replayed {
                res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            Ok(res)
        }
        Ok(other) => check_response(resource, other, body.amount),
        Err(err) => Err(match err {
            QuotaError::Store(e) => e.into(),
            err => ApiError::unavailable("the quota store is unavailable", err),
        }),
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    #[schema(pattern = "^(users|storage|api_calls|bandwidth|databases|compute_hours|file_uploads|email_sends)$")]
    pub resource: String,
    pub limit: i64,
    pub unit: String,
    pub reset_period: String,
    pub used: i64,
    pub remaining: i64,
    pub reset_at: Option<DateTime<Utc>>,
}

pub(super) async fn quota_views(state: &AppState, tenant: TenantId) -> Result<Vec<QuotaView>> {
    let mut tx = db::begin_tenant(&state.db, tenant).await?;
    let rows = store::limits(&mut tx).await?;
    if rows.is_empty() {
        // Either no such tenant or one not provisioned yet.
        tenant_domain::tenants::get(&mut *tx, tenant).await?;
    }
    tx.commit().await?;
    let now = Utc::now();
    let which: Vec<_> = rows.iter().map(|r| (r.resource_type.clone(), r.period(), now)).collect();
    let used = state
        .quota
        .usage(tenant, &which)
        .await
        .map_err(|e| ApiError::unavailable("the quota store is unavailable", e))?;
    Ok(rows
        .into_iter()
        .zip(used)
        .map(|(r, used)| QuotaView {
            remaining: (r.limit_value - used).max(0),
            reset_at: window(r.period(), now).map(|w| w.end),
            resource: r.resource_type,
            limit: r.limit_value,
            unit: r.unit,
            reset_period: r.reset_period,
            used,
        })
        .collect())
}

#[utoipa::path(get, path = "/internal/tenants/{id}/quotas", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Limits and live usage", body = inline(Envelope<Vec<QuotaView>>)),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn internal_list(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    Ok(response::ok(quota_views(&state, id).await?))
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/quotas", tag = "quotas", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Limits with unit, reset period, used, remaining, resetAt", body = inline(Envelope<Vec<QuotaView>>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let id = access.tenant;
    Ok(response::ok(quota_views(&state, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimitsRequest {
    /// New limits by resource, e.g. `{"api_calls": 50000}`.
    pub limits: BTreeMap<String, i64>,
}

#[utoipa::path(put, path = "/api/v1/tenants/{id}/quotas", tag = "quotas", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")), request_body = SetLimitsRequest,
    responses((status = 200, description = "The new limits", body = inline(Envelope<Vec<QuotaView>>)),
              (status = 400, description = "Unknown resource or bad limit", body = super::error::ErrorBody),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 503, description = "Redis unreachable: nothing changed", body = super::error::ErrorBody)))]
pub async fn set_limits(
    State(state): State<AppState>,
    access: TenantAccess<Platform>,
    Json(body): Json<SetLimitsRequest>,
) -> Result<Response> {
    let id = access.tenant;
    if body.limits.is_empty() {
        return Err(ApiError::field("limits", "give at least one resource"));
    }
    let mut tx = db::begin_tenant(&state.db, id).await?;
    tenant_domain::tenants::get(&mut *tx, id).await?;
    store::set_limits(&mut tx, &body.limits, &access.actor(), access.request_id()).await?;
    commit_and_mirror(&state, tx).await?;
    Ok(response::ok(quota_views(&state, id).await?))
}

/// Commits a change to what the hot path mirrors (status, limits) and mirrors it into Redis.
/// The mirrored state is dropped *before* the commit (if Redis can't be reached, nothing
/// changes: 503), then rewritten from the committed rows; a check in between reloads it from
/// PostgreSQL. The rollups re-mirror every tenant, should the rewrite fail.
pub async fn commit_and_mirror(state: &AppState, tx: TenantTx) -> Result<()> {
    let tenant = tx.tenant();
    state.quota.forget(tenant).await.map_err(|e| ApiError::unavailable("the quota store is unavailable", e))?;
    tx.commit().await?;
    mirror_after_commit(state, tenant).await;
    Ok(())
}

/// After a committed change to what the hot path or the context shows (status, limits): drop
/// this process's leases (their unused budget goes back to Redis before this returns), rewrite
/// the tenant's quota state in Redis from the committed rows, and drop its cached context
/// everywhere — which makes every other replica drop its leases too. Failures are logged: the
/// next check reloads the state, and the change's outbox event invalidates the caches again.
pub async fn mirror_after_commit(state: &AppState, tenant: TenantId) {
    state.quota.release_leases(tenant).await;
    if let Err(err) = state.quota.sync(&state.db, tenant).await {
        tracing::warn!(%tenant, error = %err, "could not mirror the change into Redis; the next check reloads it");
    }
    state.contexts.invalidate(tenant).await;
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Start of the history (default: 24 h ago).
    pub from: Option<DateTime<Utc>>,
    /// End of the history (default: now).
    pub to: Option<DateTime<Utc>>,
    /// `hour` (default) or `day` (the last snapshot of each day).
    pub granularity: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePoint {
    #[schema(pattern = "^(users|storage|api_calls|bandwidth|databases|compute_hours|file_uploads|email_sends)$")]
    pub resource: String,
    pub bucket_start: DateTime<Utc>,
    pub window_start: Option<DateTime<Utc>>,
    pub used: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    pub current: Vec<QuotaView>,
    pub history: Vec<UsagePoint>,
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/usage", tag = "quotas", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), UsageParams),
    responses((status = 200, description = "Current usage and history from the rollups", body = inline(Envelope<UsageReport>)),
              (status = 400, description = "Bad range or granularity", body = super::error::ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    access: TenantAccess<Read>,
    Query(params): Query<UsageParams>,
) -> Result<Response> {
    let id = access.tenant;
    let to = params.to.unwrap_or_else(Utc::now);
    let from = params.from.unwrap_or(to - chrono::Duration::hours(24));
    if from > to {
        return Err(ApiError::field("from", "must not be after `to`"));
    }
    if to - from > chrono::Duration::days(400) {
        return Err(ApiError::field("from", "the range is at most 400 days"));
    }
    let sql = match params.granularity.as_deref() {
        None | Some("hour") => {
            "select resource_type as resource, bucket_start, window_start, used from usage_history \
             where tenant_id = $1 and bucket_start >= $2 and bucket_start <= $3 order by bucket_start, resource_type"
        }
        Some("day") => {
            "select distinct on (date_trunc('day', bucket_start), resource_type) resource_type as resource, \
                    date_trunc('day', bucket_start) as bucket_start, window_start, used from usage_history \
             where tenant_id = $1 and bucket_start >= $2 and bucket_start <= $3 \
             order by date_trunc('day', bucket_start), resource_type, usage_history.bucket_start desc"
        }
        Some(_) => return Err(ApiError::field("granularity", "hour or day")),
    };
    let mut tx = access.begin(&state).await?;
    let history: Vec<UsagePoint> =
        sqlx::query_as(sql).bind(id).bind(from).bind(to).fetch_all(&mut *tx).await.map_err(Error::from)?;
    tx.commit().await?;
    Ok(response::ok(UsageReport { current: quota_views(&state, id).await?, history }))
}

/// The answer to a rate-limited request.
pub fn rate_limited(retry_after_secs: i64) -> Response {
    let mut res =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "the tenant's API rate limit is reached")
            .with_details(json!({ "retryAfter": retry_after_secs }))
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(1).to_string()) {
        res.headers_mut().insert("retry-after", v);
    }
    res
}
