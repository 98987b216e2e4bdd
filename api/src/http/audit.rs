//! `GET /api/v1/tenants/{id}/audit`: the tenant's audit log, newest first.

use super::access::{Admin, TenantAccess};
use super::error::Result;
use super::extract::Query;
use super::response::{self, Envelope, PageMeta, PageParams};
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tenant_domain::Error;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    /// `user`, `service` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub resource: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub old_value: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub new_value: Option<Value>,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/audit", tag = "audit", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageParams),
    responses((status = 200, description = "Who changed what, old → new (secrets masked), when", body = inline(Envelope<Vec<AuditEntry>>)),
              (status = 403, description = "Admins of the tenant and platform admins only", body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    Query(params): Query<PageParams>,
) -> Result<Response> {
    let (page, limit) = params.resolve()?;
    // Read as the tenant: row-level security keeps other tenants' entries out.
    let mut tx = access.begin(&state).await?;
    let total: i64 =
        sqlx::query_scalar("select count(*) from audit_log").fetch_one(&mut *tx).await.map_err(Error::from)?;
    let entries: Vec<AuditEntry> = sqlx::query_as(
        "select id, actor_type, actor_id, action, resource, old_value, new_value, request_id, created_at \
         from audit_log order by id desc limit $1 offset $2",
    )
    .bind(i64::from(limit))
    .bind(i64::from(page - 1) * i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(Error::from)?;
    tx.commit().await?;
    Ok(response::page(entries, PageMeta { total, page, limit }))
}
