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

    /// True for failures of PostgreSQL or Redis themselves (down, timed out, a serialization
    /// conflict), which a caller may retry, as opposed to business outcomes and to errors in the
    /// request itself (see [`db_is_transient`]).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(err) => db_is_transient(err),
            Error::Redis(_) => true,
            _ => false,
        }
    }
}

/// Whether a PostgreSQL failure may pass when tried again — the one place this is decided.
///
/// Transient: the connection, the pool or TLS failed, or the server answered with a class that
/// means "not now": 08 connection exception, 40 transaction rollback (serialization failure,
/// deadlock), 53 insufficient resources, 55P03 lock not available, 57 operator intervention
/// (shutdown, cancelled statement), 58 system error. Permanent: everything about the request
/// itself — 23 integrity constraint, 42 syntax or access rule (a row-level-security policy
/// refusing a row included), 22 data exception, a raised exception — and decoding errors, which
/// would fail the same way on every attempt.
pub fn db_is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => code == "55P03" || matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")),
            None => true,
        },
        _ => false,
    }
}
