//! Quota limits in PostgreSQL (`tenant_quotas`), written under row-level security as the tenant.
//! The hot-path counters live in Redis (quota engine); these rows are the limits and the
//! rolled-up usage.

use crate::plans::Plan;
use crate::{Result, TenantId, db};
use sqlx::PgPool;

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
