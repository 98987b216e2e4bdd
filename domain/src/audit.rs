//! The audit log: who changed what, from which value to which, when, under which request id.

use crate::{Result, TenantId};
use serde_json::Value;
use sqlx::PgExecutor;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, by the `sub` of their token.
    User(String),
    /// Another platform service, through the internal API.
    Service(String),
    /// The service itself (jobs, reconcilers).
    System,
}

impl Actor {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Actor::User(id) => ("user", id),
            Actor::Service(name) => ("service", name),
            Actor::System => ("system", "tenant-management-service"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub tenant: Option<TenantId>,
    pub actor: &'a Actor,
    pub action: &'a str,
    pub resource: Option<String>,
    pub old_value: Option<Value>,
    pub new_value: Option<Value>,
    pub request_id: Option<&'a str>,
}

pub async fn record(db: impl PgExecutor<'_>, entry: Entry<'_>) -> Result<()> {
    let (actor_type, actor_id) = entry.actor.parts();
    sqlx::query(
        "insert into audit_log (tenant_id, actor_type, actor_id, action, resource, old_value, new_value, request_id) \
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.tenant)
    .bind(actor_type)
    .bind(actor_id)
    .bind(entry.action)
    .bind(entry.resource)
    .bind(entry.old_value)
    .bind(entry.new_value)
    .bind(entry.request_id)
    .execute(db)
    .await?;
    Ok(())
}
