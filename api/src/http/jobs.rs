//! Job polling: `GET /api/v1/jobs/{id}` and `GET /api/v1/tenants/{id}/jobs`.

use super::auth::{Access, AuthUser};
use super::error::{ApiError, Result};
use super::extract::{Path, Query, RequestId};
use super::response::{self, Envelope, PageMeta};
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use tenant_domain::jobs::{self, Job};
use tenant_domain::{JobId, TenantId};

#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job with its steps", body = inline(Envelope<Job>)),
              (status = 403, description = "Another tenant's job", body = super::error::ErrorBody),
              (status = 404, description = "`JOB_NOT_FOUND`", body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    request_id: RequestId,
    Path(id): Path<JobId>,
) -> Result<Response> {
    let job = jobs::get(&state.db, id).await?;
    match job.tenant_id {
        Some(tenant) => user.authorize(&state, tenant, Access::Read, &request_id).await?,
        None if user.is_platform_admin() => {}
        None => return Err(ApiError::forbidden("platform jobs are for platform admins")),
    }
    Ok(response::ok(job))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    pub page: Option<u32>,
    pub limit: Option<u32>,
}

impl PageParams {
    pub fn resolve(&self) -> Result<(u32, u32)> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(20);
        if page == 0 {
            return Err(ApiError::field("page", "must be 1 or more"));
        }
        if !(1..=100).contains(&limit) {
            return Err(ApiError::field("limit", "must be from 1 to 100"));
        }
        Ok((page, limit))
    }
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/jobs", tag = "jobs", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageParams),
    responses((status = 200, description = "The tenant's jobs, newest first", body = inline(Envelope<Vec<Job>>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody)))]
pub async fn list_for_tenant(
    State(state): State<AppState>,
    user: AuthUser,
    request_id: RequestId,
    Path(id): Path<TenantId>,
    Query(params): Query<PageParams>,
) -> Result<Response> {
    user.authorize(&state, id, Access::Read, &request_id).await?;
    let (page, limit) = params.resolve()?;
    let (items, total) = jobs::list_for_tenant(&state.db, id, page, limit).await?;
    Ok(response::page(items, PageMeta { total, page, limit }))
}
