//! The layered configuration: `GET/PUT /api/v1/tenants/{id}/config` and `POST …/config/reset`.

use super::auth::{Access, AuthUser};
use super::error::{ApiError, Result};
use super::extract::{Json, Path, RequestId};
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tenant_domain::tenant_config::schema::{self, CATEGORIES};
use tenant_domain::tenant_config::store;
use tenant_domain::{Error, TenantId, db, plans, tenants};

/// The layered configuration (schema for the API description).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LayeredConfig {
    /// `{version, environment, region}` — read-only.
    #[schema(value_type = Object)]
    system: Value,
    /// `{slug, maxUsers, storageLimit, apiRateLimit, features}` — from the plan, read-only.
    #[schema(value_type = Object)]
    plan: Value,
    /// `{branding, notifications, security, integrations}` — writable; secrets masked.
    #[schema(value_type = Object)]
    tenant: Value,
}

fn invalid(path: &str, reason: &str) -> ApiError {
    // An empty path is the body as a whole.
    let message = if path.is_empty() { reason.to_owned() } else { format!("{path}: {reason}") };
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_CONFIG", message)
        .with_details(json!({ "path": path, "reason": reason }))
}

/// `{system, plan, tenant}`.
async fn layered(state: &AppState, id: TenantId) -> Result<Value> {
    let tenant = tenants::get(&state.db, id).await?;
    let plan = plans::find(&state.db, &tenant.plan_id.to_string()).await?;
    let layer = store::read_layer(&state.db, &state.cipher, id).await?;
    Ok(json!({
        "system": {
            "version": env!("CARGO_PKG_VERSION"),
            "environment": state.config.environment,
            "region": state.config.region,
        },
        "plan": {
            "slug": plan.slug,
            "maxUsers": plan.quotas["users"]["limit"],
            "storageLimit": plan.quotas["storage"]["limit"],
            "apiRateLimit": plan.api_rate_limit,
            "features": plan.features,
        },
        "tenant": layer,
    }))
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/config", tag = "config", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "`{system, plan, tenant}`; secrets masked", body = inline(Envelope<LayeredConfig>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    request_id: RequestId,
    Path(id): Path<TenantId>,
) -> Result<Response> {
    user.authorize(&state, id, Access::Read, &request_id).await?;
    Ok(response::ok(layered(&state, id).await?))
}

#[utoipa::path(put, path = "/api/v1/tenants/{id}/config", tag = "config", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body(content = Object, description = "A partial `tenant` layer, e.g. `{\"branding\": {\"primaryColor\": \"#ff0000\"}}`; `null` resets a key"),
    responses((status = 200, description = "The configuration after the change", body = inline(Envelope<LayeredConfig>)),
              (status = 400, description = "`INVALID_CONFIG` naming the path", body = super::error::ErrorBody),
              (status = 403, description = "Not an admin of this tenant", body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    user: AuthUser,
    request_id: RequestId,
    Path(id): Path<TenantId>,
    Json(body): Json<Value>,
) -> Result<Response> {
    user.authorize(&state, id, Access::Admin, &request_id).await?;
    let body = body.get("tenant").cloned().filter(|_| body.as_object().is_some_and(|o| o.len() == 1)).unwrap_or(body);
    let (changes, removals) = schema::parse_changes(&body).map_err(|e| invalid(&e.path, &e.reason))?;
    let tenant = tenants::get(&state.db, id).await?;
    if matches!(tenant.status, tenant_domain::TenantStatus::Deleting | tenant_domain::TenantStatus::Deleted) {
        return Err(Error::InvalidState {
            message: format!("a {} tenant cannot be configured", tenant.status.as_str()),
        }
        .into());
    }
    let mut tx = db::begin_tenant(&state.db, id).await?;
    store::apply(&mut tx, &state.cipher, id, &changes, &removals, &user.actor(), request_id.0.as_deref()).await?;
    tx.commit().await.map_err(Error::from)?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(layered(&state, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Categories to reset; all four when absent.
    pub categories: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/config/reset", tag = "config", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")), request_body(content = ResetRequest, description = "Optional"),
    responses((status = 200, description = "The configuration with defaults restored", body = inline(Envelope<LayeredConfig>)),
              (status = 400, description = "`INVALID_CONFIG`: unknown category", body = super::error::ErrorBody)))]
pub async fn reset(
    State(state): State<AppState>,
    user: AuthUser,
    request_id: RequestId,
    Path(id): Path<TenantId>,
    body: std::result::Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response> {
    user.authorize(&state, id, Access::Admin, &request_id).await?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB")
        } else {
            ApiError::validation(format!("unreadable body: {}", r.body_text()))
        }
    })?;
    let request: ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetRequest { categories: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::validation(format!("invalid JSON body: {e}")))?
    };
    let wanted = request.categories.unwrap_or_default();
    let mut categories = Vec::new();
    for c in &wanted {
        match CATEGORIES.iter().find(|k| *k == c) {
            Some(k) => categories.push(*k),
            None => return Err(invalid(c, "unknown category")),
        }
    }
    tenants::get(&state.db, id).await?;
    let mut tx = db::begin_tenant(&state.db, id).await?;
    store::reset(&mut tx, &state.cipher, id, &categories, &user.actor(), request_id.0.as_deref()).await?;
    tx.commit().await.map_err(Error::from)?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(layered(&state, id).await?))
}
