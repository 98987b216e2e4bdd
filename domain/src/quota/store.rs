//! Quota limits in PostgreSQL (`tenant_quotas`), written under row-level security as the tenant.
//! The hot-path counters live in Redis (quota engine); these rows are the limits and the
//! rolled-up usage.

use super::{Period, Resource};
use crate::audit::{self, Actor};
use crate::db::{self, TenantTx};
use crate::plans::Plan;
use crate::{Error, Result, TenantId, events};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;

/// Sets the tenant's quota rows from its plan; rows that exist are left alone (idempotent).
pub async fn insert_from_plan(pool: &PgPool, tenant: TenantId, plan: &Plan) -> Result<u64> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let inserted = sqlx::query(
        "insert into tenant_quotas (tenant_id, resource_type, limit_value, unit, reset_period, last_reset_at) \
         select $1, q.key, (q.value->>'limit')::bigint, q.value->>'unit', \
                (q.value->>'resetPeriod')::quota_reset_period_enum, now() \
         from jsonb_each($2) q \
         on conflict (tenant_id, resource_type) do nothing",
    )
    .bind(tenant)
    .bind(&plan.quotas)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(inserted)
}

pub async fn delete_all(pool: &PgPool, tenant: TenantId) -> Result<u64> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let deleted = sqlx::query("delete from tenant_quotas").execute(&mut *tx).await?.rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// One limit row (live usage comes from Redis; `used_value` is the last rollup's).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitRow {
    pub resource_type: String,
    pub limit_value: i64,
    pub used_value: i64,
    pub unit: String,
    pub reset_period: String,
    pub last_reset_at: Option<DateTime<Utc>>,
}

impl LimitRow {
    pub fn period(&self) -> Period {
        Period::parse(&self.reset_period).unwrap_or(Period::None)
    }
}

/// The tenant's limit rows, read under row-level security as the tenant.
pub async fn limits(tx: &mut TenantTx) -> Result<Vec<LimitRow>> {
    Ok(sqlx::query_as(
        "select resource_type, limit_value, used_value, unit, reset_period::text as reset_period, last_reset_at \
         from tenant_quotas where tenant_id = $1 order by resource_type",
    )
    .bind(tx.tenant())
    .fetch_all(&mut **tx)
    .await?)
}

/// Sets new limits (in the caller's transaction), audited with old and new values and
/// published as `tenant.quotas.updated`. Unknown resources and negative limits are refused.
pub async fn set_limits(
    tx: &mut TenantTx,
    limits: &BTreeMap<String, i64>,
    actor: &Actor,
    request_id: Option<&str>,
) -> Result<()> {
    let tenant = tx.tenant();
    let tx: &mut PgConnection = tx;
    let mut old = serde_json::Map::new();
    for (resource, limit) in limits {
        if Resource::parse(resource).is_none() {
            return Err(Error::validation(format!("limits.{resource}"), "unknown resource"));
        }
        if *limit < 0 {
            return Err(Error::validation(format!("limits.{resource}"), "must be 0 or more"));
        }
        let previous: Option<i64> = sqlx::query_scalar(
            "update tenant_quotas q set limit_value = $3, updated_at = now() \
             from (select limit_value from tenant_quotas where tenant_id = $1 and resource_type = $2 for update) o \
             where q.tenant_id = $1 and q.resource_type = $2 returning o.limit_value",
        )
        .bind(tenant)
        .bind(resource)
        .bind(limit)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(previous) = previous else {
            return Err(Error::validation(format!("limits.{resource}"), "the tenant has no quota for this resource"));
        };
        old.insert(resource.clone(), json!(previous));
    }
    let new = json!(limits);
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant: Some(tenant),
            actor,
            action: "tenant.quotas.update",
            resource: Some(format!("tenants/{tenant}/quotas")),
            old_value: Some(serde_json::Value::Object(old.clone())),
            new_value: Some(new.clone()),
            request_id,
        },
    )
    .await?;
    events::record(&mut *tx, tenant, events::TENANT_QUOTAS_UPDATED, json!({ "old": old, "new": new })).await?;
    Ok(())
}
