//! Payments of invoices: recorded pending before the provider is called, settled after.

use crate::Result;
use crate::db::TenantTx;
use crate::money::Money;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: Uuid,
    pub invoice_id: Uuid,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// `local` (an offline payment) or `stripe`.
    pub provider: String,
    pub provider_ref: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
}

const PAYMENT_COLUMNS: &str = "id, invoice_id, amount_minor as amount, trim(currency) as currency, status, provider, \
    provider_ref, failure_message, created_at";

pub async fn payment_by_key(tx: &mut TenantTx, key: &str) -> Result<Option<Payment>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let sql = format!("select {PAYMENT_COLUMNS} from payments where tenant_id = $1 and idempotency_key = $2");
    Ok(sqlx::query_as(&sql).bind(tenant).bind(key).fetch_optional(conn).await?)
}

/// Records a payment attempt as `pending` (before the provider is called).
pub async fn insert_payment(
    tx: &mut TenantTx,
    invoice: Uuid,
    amount: Money,
    provider: &str,
    key: Option<&str>,
) -> Result<Payment> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let sql = format!(
        "insert into payments (id, tenant_id, invoice_id, amount_minor, currency, status, provider, idempotency_key) \
         values ($1, $2, $3, $4, $5, 'pending', $6, $7) returning {PAYMENT_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(invoice)
        .bind(amount.amount)
        .bind(amount.currency.as_str())
        .bind(provider)
        .bind(key)
        .fetch_one(conn)
        .await?)
}

/// Settles a pending payment; a succeeded one is added to its invoice, which is `paid` when
/// fully paid. Returns the payment and whether the invoice became paid.
pub async fn settle_payment(
    tx: &mut TenantTx,
    payment: Uuid,
    provider_ref: &str,
    failure: Option<&str>,
) -> Result<(Payment, bool)> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let sql = format!(
        "update payments set status = $3, provider_ref = $4, failure_message = $5, updated_at = now() \
         where tenant_id = $1 and id = $2 and status = 'pending' returning {PAYMENT_COLUMNS}"
    );
    let settled: Option<Payment> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(payment)
        .bind(if failure.is_some() { "failed" } else { "succeeded" })
        .bind(provider_ref)
        .bind(failure)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(settled) = settled else {
        let sql = format!("select {PAYMENT_COLUMNS} from payments where tenant_id = $1 and id = $2");
        return Ok((sqlx::query_as(&sql).bind(tenant).bind(payment).fetch_one(&mut *conn).await?, false));
    };
    if failure.is_some() {
        return Ok((settled, false));
    }
    let became_paid: Option<bool> = sqlx::query_scalar(
        "update invoices set amount_paid_minor = amount_paid_minor + $3, \
             status = case when amount_paid_minor + $3 >= total_minor then 'paid' else status end, \
             paid_at = case when amount_paid_minor + $3 >= total_minor then now() else paid_at end \
         where tenant_id = $1 and id = $2 returning status = 'paid'",
    )
    .bind(tenant)
    .bind(settled.invoice_id)
    .bind(settled.amount)
    .fetch_optional(&mut *conn)
    .await?;
    Ok((settled, became_paid.unwrap_or(false)))
}

/// Amount due on the tenant's open invoices, in minor units.
pub async fn balance_due(tx: &mut TenantTx) -> Result<i64> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    Ok(sqlx::query_scalar(
        "select coalesce(sum(total_minor - amount_paid_minor), 0)::bigint from invoices \
         where tenant_id = $1 and status = 'open'",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}
