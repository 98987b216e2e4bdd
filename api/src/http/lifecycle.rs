//! The asynchronous part of the tenant API: creation, deletion and restore. Each writes the
//! tenant change, the job row (and the idempotency record) in one transaction, pushes the job to
//! Redis after commit, and answers 202 with `Location: /api/v1/jobs/{id}`. If the push fails
//! after commit, the worker's reconciler delivers the job.

use super::access::{Platform, PlatformUser, TenantAccess};
use super::error::{ApiError, Result};
use super::extract::{Json, RequestId};
use super::idempotency::{self, Begin, IdempotencyKey};
use super::response::{self, Envelope};
use super::validate;
use crate::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use std::time::Instant;
use tenant_domain::audit;
use tenant_domain::jobs::{self, Job, NewJob};
use tenant_domain::tenants::{self, ChangeContext, NewTenant, Tenant};
use tenant_domain::{Error, JobId, TenantId, TenantStatus, plans};
use tenant_jobs::delete::DeletePayload;
use tenant_jobs::provision::ProvisionPayload;
use tenant_jobs::restore::RestorePayload;
use tenant_jobs::{JobKind, Queue};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTenantRequest {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Unique among live tenants, immutable.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")]
    pub slug: String,
    pub domain: Option<String>,
    /// A plan's id or slug.
    pub plan_id: String,
    pub owner_id: Uuid,
    /// Where the welcome email goes.
    pub owner_email: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    /// Feature-flag overrides, e.g. `{"realTimeChat": true}`.
    #[schema(value_type = Option<Object>)]
    pub features: Option<Value>,
}

/// `data` of a 202: the tenant as it is now and the job to poll.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub tenant: Tenant,
    pub job: Job,
}

pub fn validate_slug(slug: &str) -> Result<()> {
    if tenants::is_valid_slug(slug) {
        Ok(())
    } else {
        Err(ApiError::field("slug", "must match ^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$"))
    }
}

fn validate_email(raw: &str) -> Result<String> {
    let email = raw.trim();
    let valid = email.len() <= 320
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if valid { Ok(email.to_owned()) } else { Err(ApiError::field("ownerEmail", "must be an email address")) }
}

fn validate_features(value: Value) -> Result<Value> {
    let Some(map) = value.as_object() else { return Err(ApiError::field("features", "must be an object of flags")) };
    for (flag, on) in map {
        if !tenant_domain::features::FLAGS.contains(&flag.as_str()) {
            return Err(ApiError::field(&format!("features.{flag}"), "unknown feature flag"));
        }
        if !on.is_boolean() {
            return Err(ApiError::field(&format!("features.{flag}"), "must be true or false"));
        }
    }
    Ok(value)
}

#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    request_body = CreateTenantRequest,
    responses((status = 202, description = "Provisioning started; poll the job", body = inline(Envelope<Accepted>),
                headers(("Location" = String, description = "/api/v1/jobs/{jobId}"))),
              (status = 400, description = "Invalid body", body = super::error::ErrorBody),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 409, description = "`TENANT_SLUG_TAKEN` or `TENANT_DOMAIN_TAKEN`", body = super::error::ErrorBody),
              (status = 422, description = "Idempotency-Key reused for another request", body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    PlatformUser(user): PlatformUser,
    request_id: RequestId,
    key: IdempotencyKey,
    Json(body): Json<CreateTenantRequest>,
) -> Result<Response> {
    let raw = serde_json::to_value(&body).map_err(ApiError::internal)?;
    let name = validate::name(&body.name)?;
    validate_slug(&body.slug)?;
    let domain = body.domain.as_deref().map(validate::domain).transpose()?;
    let owner_email = body.owner_email.as_deref().map(validate_email).transpose()?;
    let settings = body.settings.map(validate::settings).transpose()?.unwrap_or_else(|| json!({}));
    let features = body.features.map(validate_features).transpose()?.unwrap_or_else(|| json!({}));
    let plan = match plans::find(&state.db, &body.plan_id).await {
        Ok(plan) if plan.is_active => plan,
        Ok(_) | Err(Error::NotFound { .. }) => return Err(ApiError::field("planId", "no such plan")),
        Err(err) => return Err(err.into()),
    };
    let started = Instant::now();
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let claim =
        match idempotency::begin(&mut tx, &key, &user.idempotency_scope(), "POST", "/api/v1/tenants", &raw).await? {
            Begin::Replay(response) => return Ok(response),
            Begin::Proceed(claim) => claim,
        };
    let new = NewTenant {
        id: TenantId::new_v7(),
        name,
        slug: body.slug,
        domain,
        status: TenantStatus::Provisioning,
        plan_id: plan.id,
        owner_id: body.owner_id,
        owner_email,
        settings,
        features,
    };
    let tenant = tenants::insert(&mut *tx, &new).await?;
    let ctx = ChangeContext { actor: user.actor(), request_id: request_id.0 };
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant: Some(tenant.id),
            actor: &ctx.actor,
            action: "tenant.create",
            resource: Some(format!("tenants/{}", tenant.id)),
            old_value: None,
            new_value: Some(json!({ "name": tenant.name, "slug": tenant.slug, "planId": tenant.plan_id })),
            request_id: ctx.request_id.as_deref(),
        },
    )
    .await?;
    let payload = serde_json::to_value(ProvisionPayload { tenant_id: tenant.id }).map_err(ApiError::internal)?;
    let response = accept(&state, tx, claim, JobKind::ProvisionTenant, tenant, payload).await;
    state.metrics.operation("create", response.is_ok(), started);
    response
}

#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"),
           ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    responses((status = 202, description = "Deletion started (backup first); poll the job", body = inline(Envelope<Accepted>)),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 409, description = "`INVALID_STATE`: provisioning, deleting or deleted", body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    access: TenantAccess<Platform>,
    key: IdempotencyKey,
) -> Result<Response> {
    let (id, user, request_id) = (access.tenant, access.user, access.request_id);
    let started = Instant::now();
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let path = format!("/api/v1/tenants/{id}");
    let claim =
        match idempotency::begin(&mut tx, &key, &user.idempotency_scope(), "DELETE", &path, &Value::Null).await? {
            Begin::Replay(response) => return Ok(response),
            Begin::Proceed(claim) => claim,
        };
    let ctx = ChangeContext { actor: user.actor(), request_id: request_id.0 };
    let (previous_status, tenant) = tenants::mark_deleting(&mut tx, id, &ctx).await?;
    let payload = serde_json::to_value(DeletePayload { tenant_id: id, previous_status }).map_err(ApiError::internal)?;
    let response = accept(&state, tx, claim, JobKind::DeleteTenant, tenant, payload).await;
    state.metrics.operation("delete", response.is_ok(), started);
    response
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    pub backup_id: Uuid,
}

#[utoipa::path(post, path = "/api/v1/tenants/restore", tag = "tenants", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    request_body = RestoreRequest,
    responses((status = 202, description = "Restore started; poll the job", body = inline(Envelope<Accepted>)),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 404, description = "`BACKUP_NOT_FOUND`", body = super::error::ErrorBody),
              (status = 409, description = "`INVALID_STATE` (tenant not deleted) or `TENANT_SLUG_TAKEN`", body = super::error::ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    PlatformUser(user): PlatformUser,
    request_id: RequestId,
    key: IdempotencyKey,
    Json(body): Json<RestoreRequest>,
) -> Result<Response> {
    let raw = serde_json::to_value(&body).map_err(ApiError::internal)?;
    let started = Instant::now();
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let claim =
        match idempotency::begin(&mut tx, &key, &user.idempotency_scope(), "POST", "/api/v1/tenants/restore", &raw)
            .await?
        {
            Begin::Replay(response) => return Ok(response),
            Begin::Proceed(claim) => claim,
        };
    let tenant_id: Option<TenantId> = sqlx::query_scalar("select tenant_id from tenant_backups where id = $1")
        .bind(body.backup_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(Error::from)?;
    let tenant_id =
        tenant_id.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "BACKUP_NOT_FOUND", "backup not found"))?;
    let ctx = ChangeContext { actor: user.actor(), request_id: request_id.0 };
    let tenant = tenants::mark_restoring(&mut tx, tenant_id, &ctx).await?;
    let payload =
        serde_json::to_value(RestorePayload { tenant_id, backup_id: body.backup_id }).map_err(ApiError::internal)?;
    let response = accept(&state, tx, claim, JobKind::RestoreTenant, tenant, payload).await;
    state.metrics.operation("restore", response.is_ok(), started);
    response
}

/// Writes the job row, stores the idempotent response, commits, then pushes the delivery.
async fn accept(
    state: &AppState,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    claim: Option<idempotency::Claim>,
    kind: JobKind,
    tenant: Tenant,
    payload: Value,
) -> Result<Response> {
    let delivery = Queue::new_delivery_id();
    let job = insert_job(&mut tx, state, kind, tenant.id, payload, &delivery).await?;
    let (job_id, tenant_id) = (job.id, tenant.id);
    let body = Envelope { success: true, data: Accepted { tenant, job }, meta: None };
    idempotency::complete(&mut tx, claim, StatusCode::ACCEPTED, &body).await?;
    tx.commit().await.map_err(Error::from)?;
    tracing::info!(job_id = %job_id, tenant_id = %tenant_id, kind = kind.name(), "job enqueued");
    if let Err(err) = state.queue.push(kind, job_id, &delivery).await {
        // Committed: the reconciler will deliver it. The client polls the job either way.
        tracing::warn!(job = %job_id, error = %err, "job push failed after commit; left to the reconciler");
    }
    // The new status (provisioning, deleting) holds for quota checks at once.
    super::quotas::mirror_after_commit(state, tenant_id).await;
    let location = format!("/api/v1/jobs/{job_id}");
    Ok(([(header::LOCATION, location)], response::json(StatusCode::ACCEPTED, &body)).into_response())
}

async fn insert_job(
    tx: &mut PgConnection,
    state: &AppState,
    kind: JobKind,
    tenant: TenantId,
    payload: Value,
    delivery: &str,
) -> Result<Job> {
    Ok(jobs::insert(
        &mut *tx,
        NewJob {
            id: JobId::new_v7(),
            kind: kind.name(),
            tenant: Some(tenant),
            payload,
            steps: tenant_jobs::steps(kind),
            max_attempts: state.config.jobs.max_attempts,
            delivery_id: delivery.to_owned(),
        },
    )
    .await?)
}
