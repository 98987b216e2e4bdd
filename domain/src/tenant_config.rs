//! The tenant's writable configuration rows (`tenant_configs`), written under row-level security
//! as the tenant. Provisioning writes the defaults below.

use crate::{Result, TenantId, db};
use serde_json::{Value, json};
use sqlx::PgPool;

/// `(category, key, value, data_type)` of every default row.
pub fn defaults() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        ("branding", "primaryColor", json!("#1f6feb"), "string"),
        ("branding", "logoUrl", json!(""), "string"),
        ("notifications", "emailEnabled", json!(true), "boolean"),
        ("notifications", "quotaAlerts", json!(true), "boolean"),
        ("security", "sessionTimeoutMinutes", json!(60), "number"),
        ("security", "mfaRequired", json!(false), "boolean"),
        ("integrations", "webhooks", json!([]), "array"),
    ]
}

/// Writes the default rows that are missing (idempotent).
pub async fn insert_defaults(pool: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    for (category, key, value, data_type) in defaults() {
        sqlx::query(
            "insert into tenant_configs (tenant_id, category, key, value, data_type) \
             values ($1, $2, $3, $4, $5::config_data_type_enum) on conflict (tenant_id, category, key) do nothing",
        )
        .bind(tenant)
        .bind(category)
        .bind(key)
        .bind(value)
        .bind(data_type)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "insert into tenant_configs (tenant_id, category, key, value, data_type) \
         values ($1, 'system', 'initializedAt', to_jsonb(now()), 'string') on conflict do nothing",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn delete_all(pool: &PgPool, tenant: TenantId) -> Result<u64> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let deleted = sqlx::query("delete from tenant_configs").execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(deleted)
}
