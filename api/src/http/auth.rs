//! Authentication and authorisation.
//!
//! * `/api/v1/*`: `Authorization: Bearer <JWT>` with claims `sub`, `tenant_id` (absent for
//!   platform staff), `roles` and `exp`, verified by [`TokenVerifier`] (HS256 with `JWT_SECRET`,
//!   RS256/ES256 with a configured public key or JWKS — see [`super::tokens`]). [`AuthUser`] extracts it;
//!   [`AuthUser::authorize`] decides per tenant: a platform admin may act on any tenant, anyone
//!   else only on the tenant of their token — naming another is 403 `CROSS_TENANT_ACCESS_DENIED`,
//!   counted in a metric and written to the audit log.
//! * `/internal/*`: `X-Service-Token` must be one of `SERVICE_TOKENS` (compared in constant time);
//!   the name configured with that token is the caller, [`ServiceCaller`]. `X-Service-Name` is not
//!   trusted for identity.

use super::error::{ApiError, Result};
use super::extract::RequestId;
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tenant_domain::TenantId;
use tenant_domain::audit::{self, Actor};

pub use super::tokens::{Claims, TokenVerifier};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    TenantMember,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "platform_admin" => Some(Role::PlatformAdmin),
            "tenant_admin" => Some(Role::TenantAdmin),
            "tenant_member" => Some(Role::TenantMember),
            _ => None,
        }
    }
}

/// An authenticated user of the public API.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
    pub tenant: Option<TenantId>,
    pub roles: Vec<Role>,
}

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

impl AuthUser {
    pub fn is_platform_admin(&self) -> bool {
        self.roles.contains(&Role::PlatformAdmin)
    }

    pub fn actor(&self) -> Actor {
        Actor::User(self.user_id.clone())
    }

    /// Allows or refuses `access` to `tenant`. A cross-tenant attempt is counted and audited.
    pub async fn authorize(
        &self,
        state: &AppState,
        tenant: TenantId,
        access: Access,
        request_id: &RequestId,
    ) -> Result<()> {
        // The request's log lines carry the tenant it is about.
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        if self.is_platform_admin() {
            return Ok(());
        }
        if access == Access::Platform {
            return Err(ApiError::forbidden("this action needs the platform_admin role"));
        }
        let Some(own) = self.tenant else {
            return Err(ApiError::forbidden("the token names no tenant"));
        };
        if own != tenant {
            self.record_cross_tenant_denial(state, tenant, request_id).await;
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "CROSS_TENANT_ACCESS_DENIED",
                "the token does not belong to this tenant",
            ));
        }
        let allowed = match access {
            Access::Admin => self.roles.contains(&Role::TenantAdmin),
            Access::Read => self.roles.iter().any(|r| matches!(r, Role::TenantAdmin | Role::TenantMember)),
            Access::Platform => false,
        };
        if allowed { Ok(()) } else { Err(ApiError::forbidden("the token's roles do not allow this")) }
    }

    async fn record_cross_tenant_denial(&self, state: &AppState, target: TenantId, request_id: &RequestId) {
        state.metrics.cross_tenant_denials.inc();
        tracing::warn!(user = %self.user_id, token_tenant = ?self.tenant, target = %target, "cross-tenant access denied");
        let entry = audit::Entry {
            tenant: Some(target),
            actor: &self.actor(),
            action: "access.cross_tenant_denied",
            resource: Some(format!("tenants/{target}")),
            old_value: None,
            new_value: Some(serde_json::json!({ "tokenTenantId": self.tenant })),
            request_id: request_id.0.as_deref(),
        };
        // The denial stands whether or not the audit write succeeds.
        if let Err(err) = audit::record(&state.db, entry).await {
            tracing::error!(error = ?err, "could not audit a cross-tenant denial");
        }
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        authenticate(parts, state).await
    }
}

/// The user of a request's bearer token. Only a token naming a signing key we have not fetched
/// yet waits (for one bounded JWKS fetch); anything else is decided without waiting.
pub(crate) async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthUser> {
    {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <token>`"))?;
        let claims = state.tokens.verify(token.trim()).await?;
        Ok(AuthUser {
            user_id: claims.sub,
            tenant: claims.tenant_id.map(TenantId),
            roles: claims.roles.iter().filter_map(|r| Role::parse(r)).collect(),
        })
    }
}

/// Middleware for `/api/v1/*`: enforces the plan's `apiRateLimit` (requests per minute) per
/// tenant, counted in Redis by the quota engine (429 `RATE_LIMITED` with `Retry-After`).
/// Platform staff are not limited. If Redis can't answer, requests pass (logged): the admin API
/// stays usable while the quota store is down.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let user = match authenticate(&parts, &state).await {
        Ok(user) => user,
        // Let the handler's extractor produce the 401.
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    if let (Some(tenant), false) = (user.tenant, user.is_platform_admin()) {
        use tenant_domain::quota::Resource;
        use tenant_domain::quota::engine::{Mode, Outcome};
        match state.quota.check(&state.db, tenant, Resource::ApiRate, 1, Mode::Consume).await {
            Ok(Outcome::Decided(d)) if !d.allowed => {
                let retry = d.reset_at.map_or(60, |r| (r - chrono::Utc::now()).num_seconds() + 1);
                return super::quotas::rate_limited(retry);
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(%tenant, error = %err, "rate limit not enforced: quota store unavailable"),
        }
    }
    parts.extensions.insert(user);
    next.run(Request::from_parts(parts, body)).await
}

/// The calling service on `/internal/*`: the name `SERVICE_TOKENS` gives the token it presented
/// (`billing:<token>` → `billing`; a token without a name → `service`). `X-Service-Name` plays no
/// part: it is the caller's say-so.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub name: String,
}

impl ServiceCaller {
    pub fn actor(&self) -> Actor {
        Actor::Service(self.name.clone())
    }
}

/// Middleware for `/internal/*`: 401 unless `X-Service-Token` is a configured token; the request's
/// span (so its log lines) carries the token's service name.
pub async fn require_service_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response> {
    let presented = request.headers().get("x-service-token").and_then(|v| v.to_str().ok());
    let name = match presented {
        Some(token) => match state.tokens.service_name(token) {
            Some(name) => name.to_owned(),
            None => return Err(ApiError::unauthorized("invalid service token")),
        },
        None => return Err(ApiError::unauthorized("missing X-Service-Token header")),
    };
    tracing::Span::current().record("service", name.as_str());
    request.extensions_mut().insert(ServiceCaller { name });
    Ok(next.run(request).await)
}

impl<S: Send + Sync> FromRequestParts<S> for ServiceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        parts
            .extensions
            .get::<ServiceCaller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing X-Service-Token header"))
    }
}
