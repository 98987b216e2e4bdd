//! Invoice lines (pending until an invoice takes them) and invoices.

use crate::billing::period::Period;
use crate::db::TenantTx;
use crate::money::{Currency, Money};
use crate::{Error, Result, TenantId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

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
pub async fn add_line(tx: &mut TenantTx, invoice: Option<Uuid>, line: &NewLine) -> Result<()> {
    let tenant = tx.tenant();
    add_line_in(tx, tenant, invoice, line).await
}

async fn add_line_in(conn: &mut PgConnection, tenant: TenantId, invoice: Option<Uuid>, line: &NewLine) -> Result<()> {
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
pub async fn pending_lines(tx: &mut TenantTx) -> Result<Vec<InvoiceLine>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
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
pub async fn invoices(tx: &mut TenantTx, page: u32, limit: u32) -> Result<(Vec<Invoice>, i64)> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
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

pub async fn invoice(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Invoice> {
    let tenant = tx.tenant();
    invoice_in(tx, tenant, id, lock).await
}

async fn invoice_in(conn: &mut PgConnection, tenant: TenantId, id: Uuid, lock: bool) -> Result<Invoice> {
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
    tx: &mut TenantTx,
    currency: Currency,
    period: Period,
    lines: &[NewLine],
) -> Result<Option<Invoice>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
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
        add_line_in(conn, tenant, Some(id), line).await?;
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
        add_line_in(conn, tenant, Some(id), &carry(-credit, "Credit carried to the next invoice".into(), "carry-out"))
            .await?;
        add_line_in(conn, tenant, None, &carry(credit, format!("Credit carried over from {number}"), "carry-in"))
            .await?;
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
    Ok(Some(invoice_in(conn, tenant, id, false).await?))
}

/// Usage beyond the limit per counter resource, summed over the quota windows that started in
/// `[from, to)`: each window's last rolled-up count minus the tenant's limit, when above it.
pub async fn overage_units(tx: &mut TenantTx, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<(String, i64)>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
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
