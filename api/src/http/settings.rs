//! The layered configuration: `GET/PUT /api/v1/tenants/{id}/config` and `POST …/config/reset`.

use super::access::{Admin, Read, TenantAccess};
use super::error::{ApiError, Result};
use super::extract::Json;
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tenant_domain::db::TenantTx;
use tenant_domain::tenant_config::schema::{self, CATEGORIES};
use tenant_domain::tenant_config::store;
use tenant_domain::{Error, plans, tenants};

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

/// `{system, plan, tenant}`, read in the tenant's transaction.
async fn layered(state: &AppState, tx: &mut TenantTx) -> Result<Value> {
    let id = tx.tenant();
    let tenant = tenants::get(&mut **tx, id).await?;
    let plan = plans::find(&mut **tx, &tenant.plan_id.to_string()).await?;
    let layer = store::read_layer(tx, &state.cipher).await?;
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
pub async fn get(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let mut tx = access.begin(&state).await?;
    let layered = layered(&state, &mut tx).await?;
    tx.commit().await?;
    Ok(response::ok(layered))
}

#[utoipa::path(put, path = "/api/v1/tenants/{id}/config", tag = "config", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    request_body(content = Object, description = "A partial `tenant` layer, e.g. `{\"branding\": {\"primaryColor\": \"#ff0000\"}}`; `null` resets a key"),
    responses((status = 200, description = "The configuration after the change", body = inline(Envelope<LayeredConfig>)),
              (status = 400, description = "`INVALID_CONFIG` naming the path", body = super::error::ErrorBody),
              (status = 403, description = "Not an admin of this tenant", body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    Json(body): Json<Value>,
) -> Result<Response> {
    let id = access.tenant;
    let body = body.get("tenant").cloned().filter(|_| body.as_object().is_some_and(|o| o.len() == 1)).unwrap_or(body);
    let (changes, removals) = schema::parse_changes(&body).map_err(|e| invalid(&e.path, &e.reason))?;
    let mut tx = access.begin(&state).await?;
    let tenant = tenants::get_for_update(&mut tx, id).await?;
    if matches!(tenant.status, tenant_domain::TenantStatus::Deleting | tenant_domain::TenantStatus::Deleted) {
        return Err(Error::InvalidState {
            message: format!("a {} tenant cannot be configured", tenant.status.as_str()),
        }
        .into());
    }
    store::apply(&mut tx, &state.cipher, &changes, &removals, &access.actor(), access.request_id()).await?;
    let layered = layered(&state, &mut tx).await?;
    tx.commit().await?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(layered))
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
    access: TenantAccess<Admin>,
    body: std::result::Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response> {
    let id = access.tenant;
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
    let mut tx = access.begin(&state).await?;
    tenants::get(&mut *tx, id).await?;
    store::reset(&mut tx, &state.cipher, &categories, &access.actor(), access.request_id()).await?;
    let layered = layered(&state, &mut tx).await?;
    tx.commit().await?;
    state.contexts.invalidate(id).await;
    Ok(response::ok(layered))
}
