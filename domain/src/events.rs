//! Domain events, written to the transactional outbox in the same transaction as the change they
//! describe, so an event exists exactly when its change committed. A relay publishes them to the
//! `tenant-events` Redis Stream.

use crate::{Result, TenantId};
use serde_json::{Value, json};
use sqlx::PgExecutor;
use uuid::Uuid;

pub const TENANT_CREATED: &str = "tenant.created";
pub const TENANT_UPDATED: &str = "tenant.updated";
pub const TENANT_STATUS_CHANGED: &str = "tenant.status_changed";
pub const TENANT_DELETED: &str = "tenant.deleted";
pub const TENANT_RESTORED: &str = "tenant.restored";
pub const TENANT_QUOTAS_UPDATED: &str = "tenant.quotas.updated";
pub const TENANT_CONFIG_UPDATED: &str = "tenant.config.updated";
pub const TENANT_FEATURES_UPDATED: &str = "tenant.features.updated";
pub const TENANT_PLAN_CHANGED: &str = "tenant.plan_changed";
pub const INVOICE_ISSUED: &str = "invoice.issued";
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_FAILED: &str = "payment.failed";

/// Writes one event to the outbox; returns its id (which consumers use to deduplicate).
pub async fn record(db: impl PgExecutor<'_>, tenant: TenantId, event_type: &str, data: Value) -> Result<Uuid> {
    let id = Uuid::now_v7();
    let payload = json!({ "id": id, "type": event_type, "tenantId": tenant, "data": data });
    sqlx::query("insert into outbox_events (id, tenant_id, event_type, payload) values ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant)
        .bind(event_type)
        .bind(payload)
        .execute(db)
        .await?;
    Ok(id)
}
