//! The `tenant` layer's rows in `tenant_configs` (one row per leaf: category, dotted key, value,
//! data type, whether encrypted), read and written under row-level security as the tenant.

use super::schema::{self, CATEGORIES, Change, Removal};
use super::secrets::{ConfigCipher, mask};
use crate::audit::{self, Actor};
use crate::db::{self, TenantTx};
use crate::{Result, TenantId, events};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};

/// Writes the default row of every fixed leaf that is missing (idempotent; provisioning).
pub async fn insert_defaults(pool: &PgPool, tenant: TenantId) -> Result<()> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    write_defaults(&mut tx, tenant, &CATEGORIES).await?;
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

async fn write_defaults(conn: &mut PgConnection, tenant: TenantId, categories: &[&str]) -> Result<()> {
    for category in categories {
        for leaf in schema::leaves(category) {
            let value = (leaf.default)();
            sqlx::query(
                "insert into tenant_configs (tenant_id, category, key, value, data_type) \
                 values ($1, $2, $3, $4, $5::config_data_type_enum) on conflict (tenant_id, category, key) do nothing",
            )
            .bind(tenant)
            .bind(category)
            .bind(leaf.key)
            .bind(&value)
            .bind(schema::data_type(&value))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

pub async fn delete_all(pool: &PgPool, tenant: TenantId) -> Result<u64> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let deleted = sqlx::query("delete from tenant_configs").execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Reads the tenant layer — defaults overlaid with the stored rows — with secrets masked.
pub async fn read_layer(tx: &mut TenantTx, cipher: &ConfigCipher) -> Result<Value> {
    let tenant = tx.tenant();
    read_layer_in(tx, cipher, tenant).await
}

async fn rows(conn: &mut PgConnection) -> Result<Vec<(String, String, Value, bool)>> {
    Ok(sqlx::query_as(
        "select category, key, value, is_encrypted from tenant_configs where category = any($1) order by category, key",
    )
    .bind(CATEGORIES.map(str::to_owned).to_vec())
    .fetch_all(conn)
    .await?)
}

fn shown(cipher: &ConfigCipher, tenant: TenantId, category: &str, key: &str, value: &Value, encrypted: bool) -> Value {
    if !encrypted {
        return value.clone();
    }
    match value.as_str().map(|s| cipher.decrypt(tenant, category, key, s)) {
        Some(Ok(plain)) => json!(mask(&plain)),
        _ => {
            tracing::error!(%tenant, category, key, "a secret configuration value does not decrypt");
            json!("****")
        }
    }
}

async fn read_layer_in(conn: &mut PgConnection, cipher: &ConfigCipher, tenant: TenantId) -> Result<Value> {
    let mut layer = Map::new();
    for category in CATEGORIES {
        let defaults: Map<String, Value> =
            schema::leaves(category).iter().map(|l| (l.key.to_owned(), (l.default)())).collect();
        layer.insert(category.to_owned(), Value::Object(defaults));
    }
    for (category, key, value, encrypted) in rows(conn).await? {
        let value = shown(cipher, tenant, &category, &key, &value, encrypted);
        let Some(Value::Object(target)) = layer.get_mut(&category) else { continue };
        match key.split_once('.') {
            Some((name, field)) if category == "integrations" => {
                let entry = target.entry(name.to_owned()).or_insert_with(|| json!({}));
                if let Some(obj) = entry.as_object_mut() {
                    obj.insert(field.to_owned(), value);
                }
            }
            _ => {
                target.insert(key, value);
            }
        }
    }
    Ok(Value::Object(layer))
}

/// One leaf's change as recorded in the audit log and the event (secrets masked).
fn record(path: String, old: Value, new: Value) -> Value {
    json!({ "path": path, "old": old, "new": new })
}

/// Applies validated changes in the caller's tenant transaction; audits and publishes them
/// (masked). Returns the recorded changes (empty if nothing changed).
pub async fn apply(
    tx: &mut TenantTx,
    cipher: &ConfigCipher,
    changes: &[Change],
    removals: &[Removal],
    actor: &Actor,
    request_id: Option<&str>,
) -> Result<Vec<Value>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let mut recorded = Vec::new();
    for change in changes {
        let secret = schema::is_secret(change.category, &change.key);
        let current: Option<(Value, bool)> = sqlx::query_as(
            "select value, is_encrypted from tenant_configs where category = $1 and key = $2 for update",
        )
        .bind(change.category)
        .bind(&change.key)
        .fetch_optional(&mut *conn)
        .await?;
        let old =
            current.as_ref().map_or(Value::Null, |(v, e)| shown(cipher, tenant, change.category, &change.key, v, *e));
        let path = format!("{}.{}", change.category, change.key);
        match &change.value {
            None => {
                sqlx::query("delete from tenant_configs where category = $1 and key = $2")
                    .bind(change.category)
                    .bind(&change.key)
                    .execute(&mut *conn)
                    .await?;
                let default =
                    schema::leaves(change.category).iter().find(|l| l.key == change.key).map(|l| (l.default)());
                if current.is_some() {
                    recorded.push(record(path, old, default.unwrap_or(Value::Null)));
                }
            }
            Some(value) => {
                let (stored, shown_new) = match (secret, value.as_str()) {
                    (true, Some(plain)) => {
                        (json!(cipher.encrypt(tenant, change.category, &change.key, plain)), json!(mask(plain)))
                    }
                    _ => (value.clone(), value.clone()),
                };
                if !secret && current.as_ref().is_some_and(|(v, _)| v == value) {
                    continue;
                }
                sqlx::query(
                    "insert into tenant_configs (tenant_id, category, key, value, data_type, is_encrypted) \
                     values ($1, $2, $3, $4, $5::config_data_type_enum, $6) \
                     on conflict (tenant_id, category, key) do update set value = excluded.value, \
                         data_type = excluded.data_type, is_encrypted = excluded.is_encrypted, updated_at = now()",
                )
                .bind(tenant)
                .bind(change.category)
                .bind(&change.key)
                .bind(&stored)
                .bind(schema::data_type(value))
                .bind(secret)
                .execute(&mut *conn)
                .await?;
                recorded.push(record(path, old, shown_new));
            }
        }
    }
    for removal in removals {
        let removed = sqlx::query("delete from tenant_configs where category = 'integrations' and key like $1")
            .bind(format!("{}.%", removal.integration.replace('%', "").replace('_', "\\_")))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if removed > 0 {
            recorded.push(record(format!("integrations.{}", removal.integration), json!("(configured)"), Value::Null));
        }
    }
    publish(conn, tenant, "tenant.config.update", &recorded, actor, request_id).await?;
    Ok(recorded)
}

/// Restores the defaults of `categories` (all four when empty), in the caller's tenant
/// transaction.
pub async fn reset(
    tx: &mut TenantTx,
    cipher: &ConfigCipher,
    categories: &[&str],
    actor: &Actor,
    request_id: Option<&str>,
) -> Result<Vec<Value>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let categories: Vec<&str> = if categories.is_empty() { CATEGORIES.to_vec() } else { categories.to_vec() };
    let before = read_layer_in(conn, cipher, tenant).await?;
    sqlx::query("delete from tenant_configs where category = any($1)")
        .bind(categories.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    write_defaults(conn, tenant, &categories).await?;
    let after = read_layer_in(conn, cipher, tenant).await?;
    let recorded: Vec<Value> = categories
        .iter()
        .filter(|c| before[**c] != after[**c])
        .map(|c| record((*c).to_owned(), before[*c].clone(), after[*c].clone()))
        .collect();
    publish(conn, tenant, "tenant.config.reset", &recorded, actor, request_id).await?;
    Ok(recorded)
}

async fn publish(
    conn: &mut PgConnection,
    tenant: TenantId,
    action: &str,
    recorded: &[Value],
    actor: &Actor,
    request_id: Option<&str>,
) -> Result<()> {
    if recorded.is_empty() {
        return Ok(());
    }
    let old: Map<String, Value> =
        recorded.iter().map(|r| (r["path"].as_str().unwrap_or_default().to_owned(), r["old"].clone())).collect();
    let new: Map<String, Value> =
        recorded.iter().map(|r| (r["path"].as_str().unwrap_or_default().to_owned(), r["new"].clone())).collect();
    audit::record(
        &mut *conn,
        audit::Entry {
            tenant: Some(tenant),
            actor,
            action,
            resource: Some(format!("tenants/{tenant}/config")),
            old_value: Some(Value::Object(old)),
            new_value: Some(Value::Object(new)),
            request_id,
        },
    )
    .await?;
    events::record(&mut *conn, tenant, events::TENANT_CONFIG_UPDATED, json!({ "changes": recorded })).await?;
    Ok(())
}
