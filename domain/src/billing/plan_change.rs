//! A plan change's quote: the checks that refuse a change before any job exists, and the
//! proration — computed by [`quote`], which both `POST …/billing/plans?preview=true` and the
//! `change_plan` job's first step call, so the preview is what the job records (given the same
//! `prorationDate`).

use super::period::{self, Interval, PriceRef, Proration};
use super::store::{self, Account};
use crate::db::TenantTx;
use crate::plans::{self, Plan};
use crate::tenants::Tenant;
use crate::{Error, Result, TenantStatus};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub from: PriceRef,
    pub to: PriceRef,
    #[serde(flatten)]
    pub proration: Proration,
}

pub fn price_ref(plan: &Plan, interval: Interval) -> Result<PriceRef> {
    let amount =
        plan.price(interval).map_err(|e| Error::Validation { field: Some("planId".into()), message: e.to_string() })?;
    Ok(PriceRef { plan_id: plan.id, plan_name: plan.name.clone(), version: plan.version, interval, amount })
}

/// The proration of moving `tenant` to `to` on `interval` at `at`, or the reason it can't move:
/// the tenant is not active (409 `INVALID_STATE`), has no open billing account (409), is already
/// on that plan version and interval (409 `PLAN_UNCHANGED`), the plan is superseded or inactive
/// (400 on `planId`), the currencies differ (400), or its period has ended and waits to be closed
/// (409 `BILLING_PERIOD_CLOSING`). `conn` is the tenant-scoped transaction.
pub async fn quote(
    tx: &mut TenantTx,
    tenant: &Tenant,
    account: &Account,
    to: &Plan,
    interval: Interval,
    at: DateTime<Utc>,
) -> Result<Quote> {
    let conn: &mut PgConnection = tx;
    if tenant.status != TenantStatus::Active {
        return Err(Error::InvalidState {
            message: format!("only an active tenant can change plan; this one is {}", tenant.status.as_str()),
        });
    }
    if account.status == "canceled" {
        return Err(Error::InvalidState { message: "the billing account is canceled".into() });
    }
    if !to.is_active || to.superseded_at.is_some() {
        return Err(Error::validation("planId", "this plan (or version) is no longer offered"));
    }
    if to.id == account.plan_id && interval == account.interval() {
        return Err(Error::Conflict {
            code: "PLAN_UNCHANGED",
            message: format!("the tenant is already on {} v{} ({})", to.name, to.version, interval.adjective()).into(),
        });
    }
    let from_plan = plans::find(&mut *conn, &account.plan_id.to_string()).await?;
    let from = price_ref(&from_plan, account.interval())?;
    let to_ref = price_ref(to, interval)?;
    if from.amount.currency != to_ref.amount.currency {
        return Err(Error::validation(
            "planId",
            format!("the plan is priced in {}, the account in {}", to_ref.amount.currency, from.amount.currency),
        ));
    }
    if at >= account.current_period_end {
        return Err(Error::Conflict {
            code: "BILLING_PERIOD_CLOSING",
            message: "the billing period has ended and is being closed; try again in a few minutes".into(),
        });
    }
    if at < account.current_period_start {
        return Err(Error::validation("prorationDate", "must fall inside the current billing period"));
    }
    let proration = period::prorate(&from, &to_ref, account.billing_anchor, account.period(), at)
        .map_err(|e| Error::validation("prorationDate", e.to_string()))?;
    Ok(Quote { from, to: to_ref, proration })
}

/// The account of `tenant` for a plan change (locked), or 409 if it has none.
pub async fn account(tx: &mut TenantTx) -> Result<Account> {
    store::account_for_update(tx).await.map_err(|err| match err {
        Error::NotFound { .. } => Error::InvalidState { message: "the tenant has no billing account".into() },
        other => other,
    })
}
