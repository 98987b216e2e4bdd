//! Authentication and authorisation.
//!
//! * `/api/v1/*`: `Authorization: Bearer <JWT>` with claims `sub`, `tenant_id` (absent for
//!   platform staff), `roles` and `exp`, verified by [`TokenVerifier`] (HS256 with `JWT_SECRET`,
//!   RS256/ES256 with a configured public key or JWKS — see [`super::tokens`]). [`AuthUser`]
//!   extracts it; what it may do on a tenant is decided in one place, the extractors of
//!   [`super::access`].
//! * `/internal/*`: `X-Service-Token` must be one of `SERVICE_TOKENS` (compared in constant time);
//!   the name configured with that token is the caller, [`ServiceCaller`]. `X-Service-Name` is not
//!   trusted for identity.

use super::error::{ApiError, Result};
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tenant_domain::TenantId;
use tenant_domain::audit::Actor;

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

impl AuthUser {
    pub fn is_platform_admin(&self) -> bool {
        self.roles.contains(&Role::PlatformAdmin)
    }

    pub fn actor(&self) -> Actor {
        Actor::User(self.user_id.clone())
    }

    /// Whose `Idempotency-Key`s these are: the subject within its tenant (or the platform), so
    /// equal subjects issued for two tenants never share stored answers.
    pub fn idempotency_scope(&self) -> String {
        match self.tenant {
            Some(t) => format!("{t}:{}", self.user_id),
            None => format!("platform:{}", self.user_id),
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
    /// Shared with the token's configuration: naming the caller allocates nothing per request.
    pub name: std::sync::Arc<str>,
}

impl ServiceCaller {
    pub fn actor(&self) -> Actor {
        Actor::Service(self.name.to_string())
    }
}

/// The gate of `/internal/*`: every internal handler takes a [`ServiceCaller`], which is only
/// had with a configured `X-Service-Token` (401 otherwise, before the body is read). The request's
/// span (so its log lines) carries the token's service name. An extractor rather than a layer:
/// the hot internal routes pay for no extra middleware.
impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let presented = parts.headers.get("x-service-token").and_then(|v| v.to_str().ok());
        let name = match presented {
            Some(token) => match state.tokens.service_name(token) {
                Some(name) => name.clone(),
                None => return Err(ApiError::unauthorized("invalid service token")),
            },
            None => return Err(ApiError::unauthorized("missing X-Service-Token header")),
        };
        tracing::Span::current().record("service", &*name);
        Ok(ServiceCaller { name })
    }
}
