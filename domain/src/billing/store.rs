//! The billing tables of one tenant — account, invoice lines, invoices, payments, plan changes —
//! read and written inside the tenant-scoped transaction ([`crate::db::begin_tenant`]), so
//! row-level security holds even for a query that forgot its `tenant_id`. Every function takes
//! that transaction's connection; none takes the owner pool.

use super::period::{Interval, Period};
use super::{AccountRef, CardSummary};
use crate::money::{Currency, Money};
use crate::{Error, PlanId, Result, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

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

pub async fn account(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<Account>> {
    let sql = format!("select {ACCOUNT_COLUMNS} from billing_accounts where tenant_id = $1");
    Ok(sqlx::query_as(&sql).bind(tenant).fetch_optional(conn).await?)
}

pub async fn account_for_update(conn: &mut PgConnection, tenant: TenantId) -> Result<Account> {
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
    conn: &mut PgConnection,
    tenant: TenantId,
    account: &AccountRef,
    plan: PlanId,
    interval: Interval,
    anchor: DateTime<Utc>,
    period: Period,
) -> Result<()> {
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

pub async fn mark_canceled(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
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
    conn: &mut PgConnection,
    tenant: TenantId,
    plan: PlanId,
    interval: Interval,
    anchor: DateTime<Utc>,
    period: Period,
) -> Result<()> {
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

pub async fn set_card(conn: &mut PgConnection, tenant: TenantId, card: &CardSummary) -> Result<()> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Subscription,
    Proration,
    Overage,
    /// A negative total carried from one invoice to the next.
    Credit,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Subscription => "subscription",
            LineKind::Proration => "proration",
            LineKind::Overage => "overage",
            LineKind::Credit => "credit",
        }
    }
}

/// A line to add; `source_key` makes its creation idempotent.
#[derive(Debug, Clone)]
pub struct NewLine {
    pub kind: LineKind,
    pub description: String,
    pub resource: Option<String>,
    pub quantity: i64,
    pub amount: Money,
    pub period: Period,
    pub source_key: String,
}

/// Adds a line waiting for the next invoice (or, with `invoice`, on that invoice). A line whose
/// `source_key` exists is left as it is.
pub async fn add_line(conn: &mut PgConnection, tenant: TenantId, invoice: Option<Uuid>, line: &NewLine) -> Result<()> {
    sqlx::query(
        "insert into invoice_lines (id, tenant_id, invoice_id, kind, description, resource, quantity, amount_minor, \
             currency, period_start, period_end, source_key) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) on conflict (source_key) do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(invoice)
    .bind(line.kind.as_str())
    .bind(&line.description)
    .bind(&line.resource)
    .bind(line.quantity)
    .bind(line.amount.amount)
    .bind(line.amount.currency.as_str())
    .bind(line.period.start)
    .bind(line.period.end)
    .bind(&line.source_key)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvoiceLine {
    pub id: Uuid,
    #[serde(skip)]
    pub invoice_id: Option<Uuid>,
    /// `subscription`, `proration`, `overage` or `credit`.
    pub kind: String,
    pub description: String,
    /// The resource of an overage line.
    pub resource: Option<String>,
    pub quantity: i64,
    /// Minor units; negative for credits.
    pub amount: i64,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
}

const LINE_COLUMNS: &str = "id, invoice_id, kind, description, resource, quantity, amount_minor as amount, \
    trim(currency) as currency, period_start, period_end";

/// Lines not yet on an invoice, oldest first.
pub async fn pending_lines(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<InvoiceLine>> {
    let sql = format!(
        "select {LINE_COLUMNS} from invoice_lines where tenant_id = $1 and invoice_id is null \
         order by period_start, created_at, id"
    );
    Ok(sqlx::query_as(&sql).bind(tenant).fetch_all(conn).await?)
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invoice {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub number: String,
    /// `open`, `paid` or `void`.
    pub status: String,
    pub currency: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    /// Minor units.
    pub total: i64,
    pub amount_paid: i64,
    pub amount_due: i64,
    pub issued_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub lines: Vec<InvoiceLine>,
}

const INVOICE_COLUMNS: &str = "id, tenant_id, number, status, trim(currency) as currency, period_start, period_end, \
    total_minor as total, amount_paid_minor as amount_paid, total_minor - amount_paid_minor as amount_due, \
    issued_at, paid_at";

/// The tenant's invoices, newest first, with their lines; and the total count.
pub async fn invoices(conn: &mut PgConnection, tenant: TenantId, page: u32, limit: u32) -> Result<(Vec<Invoice>, i64)> {
    let total: i64 = sqlx::query_scalar("select count(*) from invoices where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
    let sql = format!(
        "select {INVOICE_COLUMNS} from invoices where tenant_id = $1 order by issued_at desc, id desc \
         limit $2 offset $3"
    );
    let mut list: Vec<Invoice> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(i64::from(limit))
        .bind(i64::from(page.saturating_sub(1)) * i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    let ids: Vec<Uuid> = list.iter().map(|i| i.id).collect();
    let sql = format!(
        "select {LINE_COLUMNS} from invoice_lines where invoice_id = any($1) order by kind desc, period_start, id"
    );
    let lines: Vec<InvoiceLine> = sqlx::query_as(&sql).bind(&ids).fetch_all(&mut *conn).await?;
    for invoice in &mut list {
        invoice.lines = lines.iter().filter(|l| l.invoice_id == Some(invoice.id)).cloned().collect();
    }
    Ok((list, total))
}

pub async fn invoice(conn: &mut PgConnection, tenant: TenantId, id: Uuid, lock: bool) -> Result<Invoice> {
    let sql = format!(
        "select {INVOICE_COLUMNS} from invoices where tenant_id = $1 and id = $2 {}",
        if lock { "for update" } else { "" }
    );
    let mut invoice: Invoice = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound { code: "INVOICE_NOT_FOUND", what: "invoice" })?;
    let sql =
        format!("select {LINE_COLUMNS} from invoice_lines where invoice_id = $1 order by kind desc, period_start, id");
    invoice.lines = sqlx::query_as(&sql).bind(id).fetch_all(&mut *conn).await?;
    Ok(invoice)
}

/// Issues the invoice that closes `period`: takes every pending line, adds `lines`, and sums
/// them. Returns `None` if the period already has its invoice (a repeated close).
pub async fn issue_invoice(
    conn: &mut PgConnection,
    tenant: TenantId,
    currency: Currency,
    period: Period,
    lines: &[NewLine],
) -> Result<Option<Invoice>> {
    let id = Uuid::now_v7();
    let number = format!("INV-{}-{}", period.end.format("%Y%m%d"), &id.simple().to_string()[20..]);
    let inserted = sqlx::query(
        "insert into invoices (id, tenant_id, number, status, currency, period_start, period_end, total_minor) \
         values ($1, $2, $3, 'open', $4, $5, $6, 0) on conflict (tenant_id, period_start) do nothing",
    )
    .bind(id)
    .bind(tenant)
    .bind(&number)
    .bind(currency.as_str())
    .bind(period.start)
    .bind(period.end)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    sqlx::query("update invoice_lines set invoice_id = $2 where tenant_id = $1 and invoice_id is null")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for line in lines {
        add_line(conn, tenant, Some(id), line).await?;
    }
    // A negative total (credits beyond the charges) is not lost: it is carried to the next
    // invoice, as Stripe keeps it on the customer's balance.
    let sum: i64 =
        sqlx::query_scalar("select coalesce(sum(amount_minor), 0)::bigint from invoice_lines where invoice_id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    if sum < 0 {
        let credit = Money::new(sum, currency);
        let carry = |amount: Money, description: String, key: &str| NewLine {
            kind: LineKind::Credit,
            description,
            resource: None,
            quantity: 1,
            amount,
            period,
            source_key: format!("{id}:{key}"),
        };
        add_line(conn, tenant, Some(id), &carry(-credit, "Credit carried to the next invoice".into(), "carry-out"))
            .await?;
        add_line(conn, tenant, None, &carry(credit, format!("Credit carried over from {number}"), "carry-in")).await?;
    }
    sqlx::query(
        "update invoices set total_minor = (select coalesce(sum(amount_minor), 0) from invoice_lines where invoice_id = $1), \
             status = case when (select coalesce(sum(amount_minor), 0) from invoice_lines where invoice_id = $1) <= 0 \
                 then 'paid' else 'open' end, \
             paid_at = case when (select coalesce(sum(amount_minor), 0) from invoice_lines where invoice_id = $1) <= 0 \
                 then now() end \
         where id = $1",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(invoice(conn, tenant, id, false).await?))
}

/// Moves the account to its next period once the closing invoice is issued.
pub async fn advance_period(conn: &mut PgConnection, tenant: TenantId, next: Period) -> Result<()> {
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

/// Usage beyond the limit per counter resource, summed over the quota windows that started in
/// `[from, to)`: each window's last rolled-up count minus the tenant's limit, when above it.
pub async fn overage_units(
    conn: &mut PgConnection,
    tenant: TenantId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "select w.resource_type, sum(greatest(w.used - q.limit_value, 0))::bigint \
         from (select resource_type, window_start, max(used) as used from usage_history \
               where tenant_id = $1 and window_start is not null and window_start >= $2 and window_start < $3 \
               group by resource_type, window_start) w \
         join tenant_quotas q on q.tenant_id = $1 and q.resource_type = w.resource_type \
         group by w.resource_type having sum(greatest(w.used - q.limit_value, 0)) > 0 order by 1",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?)
}

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

pub async fn payment_by_key(conn: &mut PgConnection, tenant: TenantId, key: &str) -> Result<Option<Payment>> {
    let sql = format!("select {PAYMENT_COLUMNS} from payments where tenant_id = $1 and idempotency_key = $2");
    Ok(sqlx::query_as(&sql).bind(tenant).bind(key).fetch_optional(conn).await?)
}

/// Records a payment attempt as `pending` (before the provider is called).
pub async fn insert_payment(
    conn: &mut PgConnection,
    tenant: TenantId,
    invoice: Uuid,
    amount: Money,
    provider: &str,
    key: Option<&str>,
) -> Result<Payment> {
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
    conn: &mut PgConnection,
    tenant: TenantId,
    payment: Uuid,
    provider_ref: &str,
    failure: Option<&str>,
) -> Result<(Payment, bool)> {
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
pub async fn balance_due(conn: &mut PgConnection, tenant: TenantId) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select coalesce(sum(total_minor - amount_paid_minor), 0)::bigint from invoices \
         where tenant_id = $1 and status = 'open'",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
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

pub async fn plan_change(conn: &mut PgConnection, job: Uuid) -> Result<Option<PlanChange>> {
    Ok(sqlx::query_as("select * from plan_changes where job_id = $1").bind(job).fetch_optional(conn).await?)
}
