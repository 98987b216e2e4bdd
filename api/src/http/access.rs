//! The one authorisation gate of the public API.
//!
//! A handler says what it needs in its signature and gets only what it may use:
//!
//! * [`TenantAccess<Read>`] / [`TenantAccess<Admin>`] / [`TenantAccess<Platform>`] for routes
//!   whose `{id}` names a tenant (by id or slug): authenticates, resolves the tenant, checks the
//!   token's tenant and roles, and hands over the tenant id — and [`TenantAccess::begin`], the
//!   tenant-scoped transaction for it.
//! * [`JobAccess`] for `/api/v1/jobs/{id}`: the job, read on the platform pool, then the same
//!   check on the job's tenant (platform jobs are for platform staff).
//! * [`PlatformUser`] for platform-wide actions.
//!
//! These are `FromRequestParts` extractors, so they run before any body is read: a tenant admin
//! of A sending a malformed body to B's endpoint gets 403, not 400. A cross-tenant attempt is
//! counted (`tenant_cross_tenant_denials_total`), logged and audited on the tenant it aimed at.

use super::auth::{AuthUser, Role};
use super::error::{ApiError, Result};
use super::extract::RequestId;
use crate::AppState;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::marker::PhantomData;
use tenant_domain::audit::{self, Actor};
use tenant_domain::db::{self, TenantTx};
use tenant_domain::jobs::{self, Job};
use tenant_domain::{JobId, TenantId, tenants};

/// What a request needs on a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Admins and members of the tenant.
    Read,
    /// Admins of the tenant.
    Admin,
    /// Platform staff only.
    Platform,
}

/// A marker type naming an [`Access`] level in a handler's signature.
pub trait Need: Send + Sync + 'static {
    const ACCESS: Access;
}

/// Admins and members of the tenant (and platform staff).
pub struct Read;
/// Admins of the tenant (and platform staff).
pub struct Admin;
/// Platform staff only.
pub struct Platform;

impl Need for Read {
    const ACCESS: Access = Access::Read;
}
impl Need for Admin {
    const ACCESS: Access = Access::Admin;
}
impl Need for Platform {
    const ACCESS: Access = Access::Platform;
}

/// A caller allowed `N` on the tenant its path names.
pub struct TenantAccess<N> {
    pub tenant: TenantId,
    pub user: AuthUser,
    pub request_id: RequestId,
    need: PhantomData<N>,
}

impl<N> TenantAccess<N> {
    /// A transaction that sees and writes only this tenant's rows.
    pub async fn begin(&self, state: &AppState) -> Result<TenantTx> {
        Ok(db::begin_tenant(&state.db, self.tenant).await?)
    }

    pub fn actor(&self) -> Actor {
        self.user.actor()
    }

    pub fn request_id(&self) -> Option<&str> {
        self.request_id.0.as_deref()
    }
}

impl<N: Need> FromRequestParts<AppState> for TenantAccess<N> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        let raw = tenant_param(parts).await?;
        let tenant = match raw.parse::<uuid::Uuid>() {
            Ok(id) => Some(TenantId(id)),
            // A slug: resolved on the platform pool. An unknown slug is 404 for platform staff;
            // anyone else gets the same answer as for another tenant's slug, so slugs can't be
            // probed for existence.
            Err(_) if !tenants::is_valid_slug(&raw) => return Err(ApiError::field("id", "not a tenant id or slug")),
            Err(_) => match tenants::find_by_slug_or_domain(&state.db, Some(&raw), None).await {
                Ok(t) => Some(t.id),
                Err(tenant_domain::Error::NotFound { .. }) => None,
                Err(err) => return Err(err.into()),
            },
        };
        let tenant = match tenant {
            Some(t) => t,
            None if user.is_platform_admin() => return Err(tenant_domain::Error::tenant_not_found().into()),
            None => return Err(deny_cross_tenant(state, &user, None, &request_id).await),
        };
        check(state, &user, tenant, N::ACCESS, &request_id).await?;
        Ok(TenantAccess { tenant, user, request_id, need: PhantomData })
    }
}

/// The gate for a layer that acts before the handler (the idempotency layer, which may replay a
/// stored answer or refuse a reused key): a request naming a tenant its caller may not read is
/// refused — counted and audited — exactly as the handler's extractor would refuse it. The
/// handler still checks its own level.
pub async fn precheck(parts: &mut Parts, state: &AppState) -> Result<()> {
    let names_tenant = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| p.as_str().starts_with("/api/v1/tenants/{id}"));
    if names_tenant {
        TenantAccess::<Read>::from_request_parts(parts, state).await?;
    }
    Ok(())
}

/// A caller allowed to read a job: platform staff, or a member of the job's tenant.
pub struct JobAccess {
    pub job: Job,
    pub user: AuthUser,
}

impl FromRequestParts<AppState> for JobAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        let raw = tenant_param(parts).await?;
        let id = JobId(raw.parse().map_err(|_| ApiError::field("id", "not a job id"))?);
        let job = jobs::get(&state.db, id).await?;
        match (job.tenant_id, user.is_platform_admin()) {
            (_, true) => {}
            (Some(tenant), false) => check(state, &user, tenant, Access::Read, &request_id).await?,
            (None, false) => return Err(ApiError::forbidden("platform jobs are for platform staff")),
        }
        Ok(JobAccess { job, user })
    }
}

/// A platform admin (any tenant, platform-wide actions).
pub struct PlatformUser(pub AuthUser);

impl FromRequestParts<AppState> for PlatformUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.is_platform_admin() {
            Ok(PlatformUser(user))
        } else {
            Err(ApiError::forbidden("this action needs the platform_admin role"))
        }
    }
}

/// The route's `{id}` parameter.
async fn tenant_param(parts: &mut Parts) -> Result<String> {
    let params = RawPathParams::from_request_parts(parts, &())
        .await
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"))?;
    params
        .iter()
        .find(|(name, _)| *name == "id")
        .map(|(_, value)| value.to_owned())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("route has no {{id}} parameter")))
}

/// Allows or refuses `access` to `tenant`.
async fn check(
    state: &AppState,
    user: &AuthUser,
    tenant: TenantId,
    access: Access,
    request_id: &RequestId,
) -> Result<()> {
    // The request's log lines carry the tenant it is about.
    tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
    if user.is_platform_admin() {
        return Ok(());
    }
    let Some(own) = user.tenant else {
        return Err(ApiError::forbidden("the token names no tenant"));
    };
    // Naming another tenant is a cross-tenant attempt whatever the action, platform-only ones
    // included: counted and audited before the role is even looked at.
    if own != tenant {
        return Err(deny_cross_tenant(state, user, Some(tenant), request_id).await);
    }
    if access == Access::Platform {
        return Err(ApiError::forbidden("this action needs the platform_admin role"));
    }
    let allowed = match access {
        Access::Admin => user.roles.contains(&Role::TenantAdmin),
        Access::Read => user.roles.iter().any(|r| matches!(r, Role::TenantAdmin | Role::TenantMember)),
        Access::Platform => false,
    };
    if allowed { Ok(()) } else { Err(ApiError::forbidden("the token's roles do not allow this")) }
}

/// Counts, logs and audits a cross-tenant attempt (on the tenant it aimed at, when there is one)
/// and returns the 403 to answer.
async fn deny_cross_tenant(
    state: &AppState,
    user: &AuthUser,
    target: Option<TenantId>,
    request_id: &RequestId,
) -> ApiError {
    state.metrics.cross_tenant_denials.inc();
    tracing::warn!(user = %user.user_id, token_tenant = ?user.tenant, target = ?target, "cross-tenant access denied");
    let entry = audit::Entry {
        tenant: target,
        actor: &user.actor(),
        action: "access.cross_tenant_denied",
        resource: target.map(|t| format!("tenants/{t}")),
        old_value: None,
        new_value: Some(serde_json::json!({ "tokenTenantId": user.tenant })),
        request_id: request_id.0.as_deref(),
    };
    // The denial stands whether or not the audit write succeeds.
    if let Err(err) = audit::record(&state.db, entry).await {
        tracing::error!(error = ?err, "could not audit a cross-tenant denial");
    }
    ApiError::new(StatusCode::FORBIDDEN, "CROSS_TENANT_ACCESS_DENIED", "the token does not belong to this tenant")
}
