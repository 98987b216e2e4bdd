//! The billing tables of one tenant — account, invoice lines, invoices, payments, plan changes —
//! read and written inside the tenant-scoped transaction ([`crate::db::TenantTx`]), so
//! row-level security holds even for a query that forgot its `tenant_id`. Every function takes
//! a `&mut TenantTx` and works on its tenant; none can be handed the platform pool.

use super::period::{Interval, Period};
use super::{AccountRef, CardSummary};
use crate::db::TenantTx;
use crate::{Error, PlanId, Result, TenantId};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

mod invoices;
mod payments;

pub use invoices::*;
pub use payments::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub tenant_id: TenantId,
    pub provider: String,
    pub customer_ref: String,
    pub subscription_ref: Option<String>,
    pub plan_id: PlanId,
    pub billing_interval: String,
    pub status: String,
    pub billing_anchor: DateTime<Utc>,
    pub current_period_start: DateTime<Utc>,
    pub current_period_end: DateTime<Utc>,
    pub invoiced_through: DateTime<Utc>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub dunning_suspended_at: Option<DateTime<Utc>>,
    pub payment_method_brand: Option<String>,
    pub payment_method_last4: Option<String>,
    pub provider_status: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Account {
    pub fn interval(&self) -> Interval {
        Interval::parse(&self.billing_interval).unwrap_or(Interval::Month)
    }

    pub fn period(&self) -> Period {
        Period { start: self.current_period_start, end: self.current_period_end }
    }

    pub fn card(&self) -> Option<CardSummary> {
        Some(CardSummary { brand: self.payment_method_brand.clone()?, last4: self.payment_method_last4.clone()? })
    }
}

const ACCOUNT_COLUMNS: &str = "tenant_id, provider, customer_ref, subscription_ref, plan_id, billing_interval, status, \
    billing_anchor, current_period_start, current_period_end, invoiced_through, past_due_since, \
    dunning_suspended_at, payment_method_brand, payment_method_last4, provider_status, created_at";

pub async fn account(tx: &mut TenantTx) -> Result<Option<Account>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let sql = format!("select {ACCOUNT_COLUMNS} from billing_accounts where tenant_id = $1");
    Ok(sqlx::query_as(&sql).bind(tenant).fetch_optional(conn).await?)
}

pub async fn account_for_update(tx: &mut TenantTx) -> Result<Account> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let sql = format!("select {ACCOUNT_COLUMNS} from billing_accounts where tenant_id = $1 for update");
    sqlx::query_as(&sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound { code: "BILLING_ACCOUNT_NOT_FOUND", what: "billing account" })
}

/// Records the account a provider opened (or reopened): its references, plan version, interval,
/// anchor and first period. A reopened account starts a new period; usage before it is not billed.
pub async fn save_opened(
    tx: &mut TenantTx,
    account: &AccountRef,
    plan: PlanId,
    interval: Interval,
    anchor: DateTime<Utc>,
    period: Period,
) -> Result<()> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "insert into billing_accounts (tenant_id, provider, customer_ref, subscription_ref, plan_id, billing_interval, \
             billing_anchor, current_period_start, current_period_end, invoiced_through) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8) \
         on conflict (tenant_id) do update set provider = excluded.provider, customer_ref = excluded.customer_ref, \
             subscription_ref = excluded.subscription_ref, plan_id = excluded.plan_id, \
             billing_interval = excluded.billing_interval, billing_anchor = excluded.billing_anchor, \
             current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
             invoiced_through = excluded.invoiced_through, status = 'active', canceled_at = null, \
             past_due_since = null, dunning_suspended_at = null, updated_at = now()",
    )
    .bind(tenant)
    .bind(&account.provider)
    .bind(&account.customer_ref)
    .bind(&account.subscription_ref)
    .bind(plan)
    .bind(interval.as_str())
    .bind(anchor)
    .bind(period.start)
    .bind(period.end)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_canceled(tx: &mut TenantTx) -> Result<()> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "update billing_accounts set status = 'canceled', canceled_at = coalesce(canceled_at, now()), \
             updated_at = now() where tenant_id = $1",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// After a plan change: the plan version, interval, anchor and current period.
pub async fn set_subscription(
    tx: &mut TenantTx,
    plan: PlanId,
    interval: Interval,
    anchor: DateTime<Utc>,
    period: Period,
) -> Result<()> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "update billing_accounts set plan_id = $2, billing_interval = $3, billing_anchor = $4, \
             current_period_start = $5, current_period_end = $6, updated_at = now() where tenant_id = $1",
    )
    .bind(tenant)
    .bind(plan)
    .bind(interval.as_str())
    .bind(anchor)
    .bind(period.start)
    .bind(period.end)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_card(tx: &mut TenantTx, card: &CardSummary) -> Result<()> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "update billing_accounts set payment_method_brand = $2, payment_method_last4 = $3, updated_at = now() \
         where tenant_id = $1",
    )
    .bind(tenant)
    .bind(&card.brand)
    .bind(&card.last4)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the account to its next period once the closing invoice is issued.
pub async fn advance_period(tx: &mut TenantTx, next: Period) -> Result<()> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    sqlx::query(
        "update billing_accounts set invoiced_through = current_period_end, current_period_start = $2, \
             current_period_end = $3, updated_at = now() where tenant_id = $1",
    )
    .bind(tenant)
    .bind(next.start)
    .bind(next.end)
    .execute(conn)
    .await?;
    Ok(())
}

/// The proration of one plan change, as computed by its first step.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanChange {
    pub job_id: Uuid,
    pub from_plan_id: PlanId,
    pub to_plan_id: PlanId,
    pub from_interval: String,
    pub to_interval: String,
    pub proration_date: DateTime<Utc>,
    pub old_anchor: DateTime<Utc>,
    pub old_period_start: DateTime<Utc>,
    pub old_period_end: DateTime<Utc>,
    pub new_anchor: DateTime<Utc>,
    pub new_period_start: DateTime<Utc>,
    pub new_period_end: DateTime<Utc>,
    pub currency: String,
    pub lines: Value,
    pub total_minor: i64,
    pub applied_at: Option<DateTime<Utc>>,
    pub announced_at: Option<DateTime<Utc>>,
}

pub async fn plan_change(tx: &mut TenantTx, job: Uuid) -> Result<Option<PlanChange>> {
    let conn: &mut PgConnection = tx;
    Ok(sqlx::query_as("select * from plan_changes where job_id = $1").bind(job).fetch_optional(conn).await?)
}
