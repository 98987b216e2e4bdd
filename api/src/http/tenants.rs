//! The synchronous part of the tenant API: list, read, update, and the administrator's
//! lifecycle moves (suspend / reactivate). Creation and deletion are jobs (see `jobs`).

use super::access::{Admin, Platform, Read, TenantAccess};
use super::auth::AuthUser;
use super::error::{ApiError, Result};
use super::extract::{Json, Query};
use super::response::{self, Envelope, PageMeta};
use super::validate;
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Instant;
use tenant_domain::quota::store::{self as quota_store, LimitRow};
use tenant_domain::tenants::{self, ChangeContext, ListFilter, Tenant, TenantUpdate};
use tenant_domain::{PlanId, TenantStatus, db, plans};
use uuid::Uuid;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-based page number (default 1).
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    pub status: Option<TenantStatus>,
    /// Full-text search on name, slug and domain (every word must prefix-match).
    pub q: Option<String>,
    /// A plan's id or slug.
    pub plan_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(ListParams),
    security(("bearer" = [])),
    responses((status = 200, description = "One page of tenants", body = inline(Envelope<Vec<Tenant>>)),
              (status = 400, description = "Bad parameters", body = super::error::ErrorBody),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, user: AuthUser, Query(params): Query<ListParams>) -> Result<Response> {
    let (page, limit) = response::PageParams { page: params.page, limit: params.limit }.resolve()?;
    // Platform staff see every tenant; anyone else only their own.
    let only = if user.is_platform_admin() {
        None
    } else {
        Some(user.tenant.ok_or_else(|| ApiError::forbidden("the token names no tenant"))?)
    };
    let plan_id = match params.plan_id.as_deref() {
        None => None,
        Some(p) => Some(plans::find(&state.db, p).await.map_err(|_| ApiError::field("planId", "no such plan"))?.id),
    };
    if params.q.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::field("q", "at most 200 characters"));
    }
    let filter = ListFilter { status: params.status, q: params.q, plan_id, only, page, limit };
    // A tenant user's list is read as that tenant: the database, not only the filter, keeps
    // other tenants out.
    let (items, total) = match only {
        Some(tenant) => {
            let mut tx = db::begin_tenant(&state.db, tenant).await?;
            let page = tenants::list(&mut tx, &filter).await?;
            tx.commit().await?;
            page
        }
        None => tenants::list(&mut *state.db.acquire().await.map_err(tenant_domain::Error::from)?, &filter).await?,
    };
    Ok(response::page(items, PageMeta { total, page, limit }))
}

/// A tenant with its plan, quota limits and effective features.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantDetail {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub plan: PlanSummary,
    pub quotas: Vec<LimitRow>,
    /// The plan's feature flags with the tenant's overrides applied.
    #[schema(value_type = Object)]
    pub effective_features: Value,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub id: PlanId,
    pub slug: String,
    pub name: String,
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = inline(Envelope<TenantDetail>)),
              (status = 403, description = "Not this token's tenant", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn get(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let mut tx = access.begin(&state).await?;
    let tenant = tenants::get(&mut *tx, access.tenant).await?;
    let quotas = quota_store::limits(&mut tx).await?;
    tx.commit().await?;
    Ok(response::ok(detail(&state, tenant, quotas).await?))
}

async fn detail(state: &AppState, tenant: Tenant, quotas: Vec<LimitRow>) -> Result<TenantDetail> {
    let plan = plans::find(&state.db, &tenant.plan_id.to_string()).await?;
    let mut effective = plan.features.clone();
    if let (Some(eff), Some(overrides)) = (effective.as_object_mut(), tenant.features.as_object()) {
        for (flag, value) in overrides {
            if eff.contains_key(flag) {
                eff.insert(flag.clone(), value.clone());
            }
        }
    }
    Ok(TenantDetail {
        plan: PlanSummary { id: plan.id, slug: plan.slug, name: plan.name },
        tenant,
        quotas,
        effective_features: effective,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTenantRequest {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: Option<String>,
    /// `null` clears the domain.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>)]
    pub domain: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    /// Platform admins only.
    pub owner_id: Option<Uuid>,
    /// Accepted only when unchanged: the slug is immutable.
    pub slug: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = UpdateTenantRequest,
    responses((status = 200, description = "The updated tenant", body = inline(Envelope<Tenant>)),
              (status = 400, description = "Invalid body", body = super::error::ErrorBody),
              (status = 403, description = "Not allowed", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 409, description = "Deleting/deleted tenant, or domain taken", body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    Json(body): Json<UpdateTenantRequest>,
) -> Result<Response> {
    let id = access.tenant;
    if body.owner_id.is_some() && !access.user.is_platform_admin() {
        return Err(ApiError::forbidden("only a platform admin may change the owner"));
    }
    let change = TenantUpdate {
        name: body.name.as_deref().map(validate::name).transpose()?,
        domain: body.domain.map(|d| d.as_deref().map(validate::domain).transpose()).transpose()?,
        settings: body.settings.map(validate::settings).transpose()?,
        owner_id: body.owner_id,
    };
    let started = Instant::now();
    let mut tx = access.begin(&state).await?;
    if let Some(slug) = &body.slug {
        let current = tenants::get(&mut *tx, id).await?;
        if *slug != current.slug {
            return Err(ApiError::field("slug", "is immutable"));
        }
    }
    let ctx = ChangeContext { actor: access.actor(), request_id: access.request_id.0 };
    let result = tenants::update(tx, &change, &ctx).await;
    state.metrics.operation("update", result.is_ok(), started);
    let tenant = result?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(tenant))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChangeRequest {
    /// `suspended` or `active`; other moves belong to the lifecycle jobs.
    pub status: TenantStatus,
    pub reason: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/tenants/{id}/status", tag = "tenants", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body = StatusChangeRequest,
    responses((status = 200, description = "The tenant in its new status", body = inline(Envelope<Tenant>)),
              (status = 400, description = "Invalid body", body = super::error::ErrorBody),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 409, description = "`INVALID_STATE`: the lifecycle does not allow this move", body = super::error::ErrorBody)))]
pub async fn set_status(
    State(state): State<AppState>,
    access: TenantAccess<Platform>,
    Json(body): Json<StatusChangeRequest>,
) -> Result<Response> {
    let id = access.tenant;
    let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::field("reason", "at most 500 characters"));
    }
    let started = Instant::now();
    let ctx = ChangeContext { actor: access.actor(), request_id: access.request_id.0.clone() };
    let result = async {
        let mut tx = access.begin(&state).await?;
        let tenant = tenants::set_status(&mut tx, id, body.status, reason, &ctx).await?;
        // Quota checks must see the new status at once.
        super::quotas::commit_and_mirror(&state, tx).await?;
        Ok::<_, ApiError>(tenant)
    }
    .await;
    state.metrics.operation("status_change", result.is_ok(), started);
    Ok(response::ok(result?))
}
