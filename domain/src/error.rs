//! The domain's error: business outcomes the API maps to 4xx, and infrastructure failures that
//! are 5xx (or, in a worker, retryable).

use std::borrow::Cow;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { code: &'static str, what: &'static str },

    #[error("{message}")]
    Conflict { code: &'static str, message: Cow<'static, str> },

    #[error("{message}")]
    InvalidState { message: String },

    /// Refused by a business rule (403), e.g. `FEATURE_NOT_IN_PLAN`.
    #[error("{message}")]
    Forbidden { code: &'static str, message: Cow<'static, str> },

    #[error("{message}")]
    Validation { field: Option<String>, message: String },

    #[error("database error")]
    Database(#[from] sqlx::Error),

    #[error("migration error")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

impl Error {
    pub fn tenant_not_found() -> Self {
        Error::NotFound { code: "TENANT_NOT_FOUND", what: "tenant" }
    }

    pub fn plan_not_found() -> Self {
        Error::NotFound { code: "PLAN_NOT_FOUND", what: "plan" }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation { field: Some(field.into()), message: message.into() }
    }

    /// Maps a violated unique constraint to the client error it means; anything else stays a
    /// database error. One place, so handlers never match on constraint names themselves.
    pub fn from_db(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            match db.constraint() {
                Some("tenants_slug_live_key") => {
                    return Error::Conflict { code: "TENANT_SLUG_TAKEN", message: "slug is already taken".into() };
                }
                Some("tenants_domain_live_key") => {
                    return Error::Conflict { code: "TENANT_DOMAIN_TAKEN", message: "domain is already taken".into() };
                }
                Some("tenants_slug_check") => {
                    return Error::validation("slug", "slug must match ^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$");
                }
                _ => {}
            }
        }
        Error::Database(err)
    }

    /// True for failures of PostgreSQL or Redis themselves (down, timed out), which a caller may
    /// retry, as opposed to business outcomes.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Database(_) | Error::Redis(_))
    }
}
