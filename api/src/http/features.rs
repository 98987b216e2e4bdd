//! Feature flags: `GET/PATCH /api/v1/tenants/{id}/features`, `GET /internal/tenants/{id}/features`.

use super::access::{Admin, Read, TenantAccess};
use super::auth::ServiceCaller;
use super::error::{ApiError, Result};
use super::extract::{Json, Path};
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tenant_domain::features::{self, FlagView};
use tenant_domain::{Error, TenantId, plans, tenants};

#[utoipa::path(get, path = "/api/v1/tenants/{id}/features", tag = "features", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "The eight flags, each with its source (`plan` or `override`)", body = inline(Envelope<Vec<FlagView>>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody)))]
pub async fn get(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let mut tx = access.begin(&state).await?;
    let tenant = tenants::get(&mut *tx, access.tenant).await?;
    let plan = plans::find(&mut *tx, &tenant.plan_id.to_string()).await?;
    tx.commit().await?;
    Ok(response::ok(features::view(&plan.features, &tenant.features)))
}

#[utoipa::path(patch, path = "/api/v1/tenants/{id}/features", tag = "features", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body(content = Object, description = "`{flag: true | false | null}`; null drops an override"),
    responses((status = 200, description = "The flags after the change", body = inline(Envelope<Vec<FlagView>>)),
              (status = 400, description = "Unknown flag or bad value", body = super::error::ErrorBody),
              (status = 403, description = "`FEATURE_NOT_IN_PLAN` (a tenant admin enabling a flag outside the plan)", body = super::error::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    Json(body): Json<Value>,
) -> Result<Response> {
    let id = access.tenant;
    let Some(changes) = body.as_object().filter(|o| !o.is_empty()) else {
        return Err(ApiError::validation("expected an object of flags, e.g. {\"realTimeChat\": true}"));
    };
    let mut tx = access.begin(&state).await?;
    let admin = access.user.is_platform_admin();
    let flags = features::patch(&mut tx, changes, admin, &access.actor(), access.request_id()).await?;
    tx.commit().await?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(flags))
}

#[utoipa::path(get, path = "/internal/tenants/{id}/features", tag = "internal", security(("serviceToken" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "`{tenantId, status, features: {flag: enabled}}`, from the cache", body = Object),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn internal(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    let cached = state.contexts.get(&state.db, &state.cipher, id).await?.ok_or_else(Error::tenant_not_found)?;
    let features: Map<String, Value> = cached.ctx.features.clone();
    Ok(response::ok(json!({ "tenantId": id, "status": cached.ctx.tenant.status, "features": features })))
}
