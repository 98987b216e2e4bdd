//! The internal API for the platform's other services (`X-Service-Token`).

use super::auth::ServiceCaller;
use super::error::{ApiError, Result};
use super::extract::Json;
use super::extract::Path;
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tenant_domain::Error;
use tenant_domain::context::TenantContext;
use tenant_domain::{PlanId, TenantId, TenantStatus, tenants};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidateRequest {
    pub tenant_id: Option<TenantId>,
    pub slug: Option<String>,
    pub domain: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ValidateResponse {
    /// True when the tenant exists and is active.
    pub valid: bool,
    pub tenant: TenantRef,
    /// The tenant's context (as `GET /internal/tenants/{id}/context`), from the cache.
    pub context: Option<TenantContext>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantRef {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub status: TenantStatus,
    pub plan_id: PlanId,
}

#[utoipa::path(post, path = "/internal/tenants/validate", tag = "internal", security(("serviceToken" = [])),
    request_body = ValidateRequest,
    responses((status = 200, description = "The tenant and whether it is active", body = inline(Envelope<ValidateResponse>)),
              (status = 400, description = "Exactly one of tenantId, slug, domain is required", body = super::error::ErrorBody),
              (status = 401, description = "Missing or wrong service token", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn validate(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Json(body): Json<ValidateRequest>,
) -> Result<Response> {
    let given = [body.tenant_id.is_some(), body.slug.is_some(), body.domain.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::validation("give exactly one of tenantId, slug, domain"));
    }
    let tenant = match body.tenant_id {
        Some(id) => tenants::get(&state.db, id).await?,
        None => tenants::find_by_slug_or_domain(&state.db, body.slug.as_deref(), body.domain.as_deref()).await?,
    };
    let context = state.contexts.get(&state.db, &state.cipher, tenant.id).await?.map(|c| c.ctx.clone());
    Ok(response::ok(ValidateResponse {
        context,
        valid: tenant.status == TenantStatus::Active,
        tenant: TenantRef {
            id: tenant.id,
            slug: tenant.slug,
            name: tenant.name,
            domain: tenant.domain,
            status: tenant.status,
            plan_id: tenant.plan_id,
        },
    }))
}

#[utoipa::path(get, path = "/internal/tenants/{id}/context", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Status, plan, effective features, quota limits and configuration (secrets masked), from the cache", body = inline(Envelope<TenantContext>)),
              (status = 401, description = "Missing or wrong service token", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn context(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    let cached = state.contexts.get(&state.db, &state.cipher, id).await?.ok_or_else(Error::tenant_not_found)?;
    Ok(response::with_body(StatusCode::OK, cached.envelope.clone()))
}
