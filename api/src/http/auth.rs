//! Authentication and authorisation.
//!
//! * `/api/v1/*`: `Authorization: Bearer <JWT>` (HS256, `JWT_SECRET`) with claims `sub`,
//!   `tenant_id` (absent for platform staff), `roles` and `exp`. [`AuthUser`] extracts it; what
//!   it may do on a tenant is decided in one place, the extractors of [`super::access`].
//! * `/internal/*`: `X-Service-Token` must be one of `SERVICE_TOKENS`. Both sides are hashed
//!   with SHA-256 and compared in constant time, so neither the token nor its length leaks
//!   through timing.

use super::error::{ApiError, Result};
use crate::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tenant_domain::audit::Actor;
use tenant_domain::{Config, TenantId};
use uuid::Uuid;

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

/// The claims of our bearer tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// Unknown roles are ignored rather than refused, so other services may add their own.
    #[serde(default)]
    pub roles: Vec<String>,
    pub exp: i64,
}

/// Verifies bearer tokens and service tokens (and signs dev tokens).
pub struct TokenVerifier {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    service_token_digests: Vec<[u8; 32]>,
}

impl TokenVerifier {
    pub fn new(config: &Config) -> Self {
        let secret = config.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            service_token_digests: config.service_tokens.iter().map(|t| digest(t.expose())).collect(),
        }
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)?)
    }

    fn verify(&self, token: &str) -> Result<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims).map_err(|err| {
            match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => ApiError::unauthorized("token expired"),
                _ => ApiError::unauthorized("invalid bearer token"),
            }
        })
    }

    /// Constant-time membership test; every configured token is compared.
    pub fn is_service_token(&self, presented: &str) -> bool {
        let presented = digest(presented);
        self.service_token_digests
            .iter()
            .fold(subtle::Choice::from(0u8), |found, known| found | known.ct_eq(&presented))
            .into()
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
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
        authenticate(parts, state)
    }
}

pub(crate) fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthUser> {
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
        let claims = state.tokens.verify(token.trim())?;
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
    let user = match authenticate(&parts, &state) {
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

/// The calling service on `/internal/*`, from `X-Service-Name` (informational; the token is what
/// authenticates).
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    pub name: String,
}

impl ServiceCaller {
    pub fn actor(&self) -> Actor {
        Actor::Service(self.name.clone())
    }
}

/// Middleware for `/internal/*`: 401 unless `X-Service-Token` is a configured token.
pub async fn require_service_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response> {
    let presented = request.headers().get("x-service-token").and_then(|v| v.to_str().ok());
    match presented {
        Some(token) if state.tokens.is_service_token(token) => {}
        Some(_) => return Err(ApiError::unauthorized("invalid service token")),
        None => return Err(ApiError::unauthorized("missing X-Service-Token header")),
    }
    let name = request
        .headers()
        .get("x-service-name")
        .and_then(|v| v.to_str().ok())
        .filter(|n| {
            !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or("service")
        .to_owned();
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
