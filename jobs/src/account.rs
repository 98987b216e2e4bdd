//! Opening and closing a tenant's billing account, for the lifecycle sagas: the provider call
//! (with the step's idempotency key) and the record of what it returned, written in the
//! tenant-scoped transaction. A retried step calls the provider with the same key — which
//! answers the first answer — and writes the same record again.

use crate::context::JobContext;
use crate::engine::StepError;
use chrono::{DateTime, Utc};
use tenant_domain::billing::invoicing;
use tenant_domain::billing::period::{self, Interval};
use tenant_domain::billing::store::{self, LineKind, NewLine};
use tenant_domain::billing::{CloseAccount, OpenAccount};
use tenant_domain::plans::Plan;
use tenant_domain::tenants::Tenant;
use tenant_domain::{PlanId, db, plans};

/// Opens the account on `plan` (monthly) as of `opened` (the job's creation, so a retry computes
/// the same period), records it and the first, partial period's subscription charge.
pub async fn open(
    ctx: &JobContext,
    tenant: &Tenant,
    plan: &Plan,
    opened: DateTime<Utc>,
    key: &str,
) -> Result<(), StepError> {
    let interval = Interval::Month;
    let price =
        plan.price(interval).map_err(|e| StepError::Permanent(format!("plan {} is priced in an {e}", plan.slug)))?;
    let opened = DateTime::from_timestamp(opened.timestamp(), 0).unwrap_or(opened);
    let anchor = period::cycle_anchor(opened, ctx.config.billing.cycle_day);
    let first = period::first_period(anchor, interval, opened);
    let existing = {
        let mut tx = db::begin_tenant(&ctx.db, tenant.id).await?;
        store::account(&mut tx).await?.map(|a| a.customer_ref)
    };
    let account = ctx
        .billing
        .open_account(OpenAccount {
            tenant: tenant.id,
            tenant_name: &tenant.name,
            email: tenant.owner_email.as_deref(),
            plan,
            interval,
            anchor,
            existing_customer: existing.as_deref(),
            idempotency_key: key,
        })
        .await?;
    let charge = period::period_charge(price, anchor, interval, first)
        .map_err(|e| StepError::Permanent(format!("first period charge: {e}")))?;
    let mut tx = db::begin_tenant(&ctx.db, tenant.id).await?;
    store::save_opened(&mut tx, &account, plan.id, interval, anchor, first).await?;
    store::add_line(
        &mut tx,
        None,
        &NewLine {
            kind: LineKind::Subscription,
            description: invoicing::subscription_description(plan, interval, first),
            resource: None,
            quantity: 1,
            amount: charge,
            period: first,
            source_key: format!("{key}:first-period"),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Reopens a restored tenant's account on the plan its row names, under its existing customer.
pub async fn reopen(
    ctx: &JobContext,
    tenant: &Tenant,
    plan: Option<PlanId>,
    opened: DateTime<Utc>,
    key: &str,
) -> Result<(), StepError> {
    let plan = plans::find(&ctx.db, &plan.unwrap_or(tenant.plan_id).to_string()).await?;
    open(ctx, tenant, &plan, opened, key).await
}

/// Cancels the subscription at the provider and marks the account canceled.
pub async fn close(ctx: &JobContext, tenant: &Tenant, key: &str) -> Result<(), StepError> {
    let account = {
        let mut tx = db::begin_tenant(&ctx.db, tenant.id).await?;
        store::account(&mut tx).await?
    };
    let Some(account) = account else { return Ok(()) };
    ctx.billing
        .close_account(CloseAccount {
            tenant: tenant.id,
            subscription_ref: account.subscription_ref.as_deref(),
            idempotency_key: key,
        })
        .await?;
    let mut tx = db::begin_tenant(&ctx.db, tenant.id).await?;
    store::mark_canceled(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
