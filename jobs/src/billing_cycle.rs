//! `billing_cycle`: closes every billing period that has ended and runs dunning. Enqueued by the
//! workers' scheduler every `BILLING_CLOSE_INTERVAL_SECS` (one job per tick across replicas: a
//! unique schedule key), so periods anchored on `BILLING_CYCLE_DAY` close within that interval of
//! their end.
//!
//! **Close.** For each account whose period ended, in its own tenant-scoped transaction: one
//! invoice for the period (unique per tenant and period start, so a second run issues nothing)
//! holding the lines waiting for it (the first period's charge, prorations), the usage beyond the
//! limits of the quota windows since the last close priced at the plan's overage prices
//! (`USAGE_BILLING_ENABLED`), and the subscription for the next period, in advance — Stripe's
//! invoice layout. Then the account moves to the next period and `invoice.issued` is written.
//!
//! **Dunning.** A tenant whose account has been `past_due` for `BILLING_GRACE_DAYS` is suspended
//! (`dunning_suspended_at` marks why); a later payment reactivates it (webhook or payment API).

use crate::context::JobContext;
use crate::engine::{self, Saga, StepError};
use crate::kinds::JobKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use tenant_domain::billing::period;
use tenant_domain::billing::{invoicing, store};
use tenant_domain::jobs::{Job, StepRecord};
use tenant_domain::tenants::{self, ChangeContext};
use tenant_domain::{TenantId, TenantStatus, billing, db, events, plans};

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum BillingCycleStep {
        ClosePeriods => "close_periods",
        Dunning => "dunning",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingCyclePayload {
    /// Periods that ended by this moment are closed.
    pub at: DateTime<Utc>,
}

pub struct BillingCycle {
    at: DateTime<Utc>,
    issued: AtomicU64,
    suspended: AtomicU64,
}

impl Saga for BillingCycle {
    const KIND: JobKind = JobKind::BillingCycle;
    type Step = BillingCycleStep;

    async fn load(_ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: BillingCyclePayload = engine::payload(job)?;
        Ok(BillingCycle { at: payload.at, issued: AtomicU64::new(0), suspended: AtomicU64::new(0) })
    }

    async fn run(&self, ctx: &JobContext, step: BillingCycleStep) -> Result<(), StepError> {
        match step {
            BillingCycleStep::ClosePeriods => {
                let n = close_periods(ctx, self.at).await?;
                self.issued.store(n, Ordering::Relaxed);
            }
            BillingCycleStep::Dunning => {
                let n = dunning(ctx, self.at).await?;
                self.suspended.store(n, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn compensate(&self, _ctx: &JobContext, _step: BillingCycleStep) -> Result<(), StepError> {
        Ok(())
    }

    async fn failed(&self, _ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        tracing::error!(at = %self.at, %reason, "billing cycle failed");
        Ok(())
    }

    fn result(&self) -> Value {
        json!({
            "at": self.at,
            "invoicesIssued": self.issued.load(Ordering::Relaxed),
            "tenantsSuspended": self.suspended.load(Ordering::Relaxed),
        })
    }
}

/// Closes every period that ended by `at`; returns the invoices issued. One tenant failing does
/// not hold up the others; a transient failure retries the job (which skips what is done).
pub async fn close_periods(ctx: &JobContext, at: DateTime<Utc>) -> Result<u64, StepError> {
    let due: Vec<TenantId> = sqlx::query_scalar(
        "select a.tenant_id from billing_accounts a join tenants t on t.id = a.tenant_id \
         where a.status in ('active', 'past_due') and a.current_period_end <= $1 \
           and t.status in ('active', 'suspended') order by a.current_period_end",
    )
    .bind(at)
    .fetch_all(&ctx.db)
    .await?;
    let (mut issued, mut failure) = (0, None);
    for tenant in due {
        match close_one(ctx, tenant, at).await {
            Ok(true) => issued += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(%tenant, error = %err, "could not close the billing period");
                failure.get_or_insert(err);
            }
        }
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(issued),
    }
}

/// Closes the tenant's ended periods up to `at` (several, if the workers were down that long).
async fn close_one(ctx: &JobContext, tenant: TenantId, at: DateTime<Utc>) -> Result<bool, StepError> {
    let mut any = false;
    loop {
        let mut tx = db::begin_tenant(&ctx.db, tenant).await?;
        let account = store::account_for_update(&mut tx).await?;
        if account.current_period_end > at || account.status == "canceled" {
            return Ok(any);
        }
        let plan = plans::find(&mut *tx, &account.plan_id.to_string()).await?;
        let currency = plan.price(account.interval()).map_err(|e| StepError::Permanent(e.to_string()))?.currency;
        let closing = account.period();
        let next = period::next_period(account.billing_anchor, account.interval(), closing.end);
        let key = format!("close:{tenant}:{}", closing.start.timestamp());
        let usage_billing = ctx.config.billing.usage_billing;
        let lines = invoicing::closing_lines(&mut tx, &account, &plan, usage_billing, closing.end, &key).await?;
        let invoice = store::issue_invoice(&mut tx, currency, closing, &lines).await?;
        if let Some(invoice) = &invoice {
            billing::record_event(
                &mut *tx,
                tenant,
                events::INVOICE_ISSUED,
                json!({
                    "invoiceId": invoice.id, "number": invoice.number, "status": invoice.status,
                    "total": { "amount": invoice.total, "currency": invoice.currency },
                    "periodStart": invoice.period_start, "periodEnd": invoice.period_end,
                }),
            )
            .await?;
            any = true;
        }
        store::advance_period(&mut tx, next).await?;
        tx.commit().await?;
    }
}

/// Suspends the active tenants whose accounts are past due beyond the grace period.
pub async fn dunning(ctx: &JobContext, at: DateTime<Utc>) -> Result<u64, StepError> {
    let grace = chrono::Duration::from_std(ctx.config.billing.grace).unwrap_or_default();
    let overdue: Vec<TenantId> = sqlx::query_scalar(
        "select a.tenant_id from billing_accounts a join tenants t on t.id = a.tenant_id \
         where a.status = 'past_due' and a.past_due_since <= $1 and a.dunning_suspended_at is null \
           and t.status = 'active'",
    )
    .bind(at - grace)
    .fetch_all(&ctx.db)
    .await?;
    let mut suspended = 0;
    for tenant in overdue {
        let mut tx = db::begin_tenant(&ctx.db, tenant).await?;
        let account = store::account_for_update(&mut tx).await?;
        if account.status != "past_due" || account.dunning_suspended_at.is_some() {
            continue;
        }
        let current = tenants::get(&mut *tx, tenant).await?;
        if current.status != TenantStatus::Active {
            continue;
        }
        let ctx_change = ChangeContext::system();
        tenants::set_status(&mut tx, tenant, TenantStatus::Suspended, Some("payment overdue"), &ctx_change).await?;
        sqlx::query(
            "update billing_accounts set dunning_suspended_at = now(), updated_at = now() where tenant_id = $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        ctx.quota.forget(tenant).await?;
        tx.commit().await?;
        ctx.quota.drop_leases(tenant);
        ctx.quota.sync(&ctx.db, tenant).await?;
        tracing::warn!(%tenant, "tenant suspended: payment overdue beyond the grace period");
        suspended += 1;
    }
    Ok(suspended)
}
