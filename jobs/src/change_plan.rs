//! `change_plan`: compute the proration → update the subscription at the provider (idempotency
//! key) → apply the new plan's quotas (PostgreSQL and Redis, so the next quota check sees them)
//! and features → record the proration lines for the next invoice → confirmation email → event
//! `tenant.plan_changed` (with its audit row).
//!
//! The proration is computed once, by [`billing::plan_change::quote`] (the preview's function),
//! at the `prorationDate` fixed when the change was requested, and stored in `plan_changes`;
//! every later step reads it from there. A permanent failure after the subscription changed
//! compensates in reverse: the lines are withdrawn, the old plan's quotas and account period put
//! back, and the subscription moved back to the old plan — so the provider and the database never
//! disagree silently. A transient failure retries from the failed step.

use crate::context::JobContext;
use crate::engine::{self, Saga, Step, StepError};
use crate::kinds::JobKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;
use tenant_domain::audit::{self, Actor};
use tenant_domain::billing::period::{Interval, Period, ProrationLine};
use tenant_domain::billing::store::{self, LineKind, NewLine, PlanChange};
use tenant_domain::billing::{self, ChangeSubscription, plan_change};
use tenant_domain::context::ContextStore;
use tenant_domain::external::ExternalError;
use tenant_domain::jobs::{Job, StepRecord};
use tenant_domain::mail::{self, MailError, OutgoingMail};
use tenant_domain::plans::{self, Plan};
use tenant_domain::tenants::{self, Tenant};
use tenant_domain::{JobId, PlanId, TenantId, db, events};
use uuid::Uuid;

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum ChangePlanStep {
        ComputeProration => "compute_proration",
        UpdateSubscription => "update_subscription",
        ApplyPlan => "apply_plan",
        RecordInvoiceLines => "record_invoice_lines",
        ConfirmationEmail => "confirmation_email",
        PublishEvent => "publish_event",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangePlanPayload {
    pub tenant_id: TenantId,
    /// The plan version to move to.
    pub plan_id: PlanId,
    pub interval: Interval,
    /// The moment the change takes effect (whole seconds), fixed at request time.
    pub proration_date: DateTime<Utc>,
}

pub struct ChangePlan {
    job: JobId,
    payload: ChangePlanPayload,
    tenant: Tenant,
    to: Plan,
    change: Mutex<Option<PlanChange>>,
}

impl ChangePlan {
    fn key(&self, step: &str) -> String {
        engine::step_key(self.job, step)
    }

    /// The stored proration (written by the first step).
    async fn change(&self, ctx: &JobContext) -> Result<PlanChange, StepError> {
        if let Some(change) = self.change.lock().ok().and_then(|c| c.clone()) {
            return Ok(change);
        }
        let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
        let change = store::plan_change(&mut tx, self.job.0)
            .await?
            .ok_or_else(|| StepError::Permanent("the plan change's proration was not recorded".into()))?;
        tx.commit().await?;
        if let Ok(mut slot) = self.change.lock() {
            *slot = Some(change.clone());
        }
        Ok(change)
    }

    async fn compute(&self, ctx: &JobContext) -> Result<(), StepError> {
        let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
        if store::plan_change(&mut tx, self.job.0).await?.is_some() {
            return Ok(());
        }
        let tenant = tenants::get(&mut *tx, self.tenant.id).await?;
        let account = plan_change::account(&mut tx).await?;
        let quote = plan_change::quote(
            &mut tx,
            &tenant,
            &account,
            &self.to,
            self.payload.interval,
            self.payload.proration_date,
        )
        .await?;
        let p = &quote.proration;
        sqlx::query(
            "insert into plan_changes (job_id, tenant_id, from_plan_id, to_plan_id, from_interval, to_interval, \
                 proration_date, old_anchor, old_period_start, old_period_end, new_anchor, new_period_start, \
                 new_period_end, currency, lines, total_minor) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(self.job)
        .bind(self.tenant.id)
        .bind(quote.from.plan_id)
        .bind(quote.to.plan_id)
        .bind(quote.from.interval.as_str())
        .bind(quote.to.interval.as_str())
        .bind(p.proration_date)
        .bind(account.billing_anchor)
        .bind(account.current_period_start)
        .bind(account.current_period_end)
        .bind(p.new_anchor)
        .bind(p.new_period.start)
        .bind(p.new_period.end)
        .bind(p.total.currency.as_str())
        .bind(serde_json::to_value(&p.lines).unwrap_or_default())
        .bind(p.total.amount)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn move_subscription(
        &self,
        ctx: &JobContext,
        plan: PlanId,
        interval: &str,
        key: &str,
    ) -> Result<(), StepError> {
        let change = self.change(ctx).await?;
        let account = {
            let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
            store::account(&mut tx).await?
        };
        let Some(subscription) = account.and_then(|a| a.subscription_ref) else {
            return Err(StepError::Permanent("the billing account has no subscription".into()));
        };
        let plan = plans::find(&ctx.db, &plan.to_string()).await?;
        let interval = Interval::parse(interval).unwrap_or(Interval::Month);
        ctx.billing
            .change_subscription(ChangeSubscription {
                tenant: self.tenant.id,
                subscription_ref: &subscription,
                plan: &plan,
                interval,
                proration_date: change.proration_date,
                idempotency_key: key,
            })
            .await?;
        Ok(())
    }

    /// Puts `plan`'s quotas, the plan reference and the account period in place, in one
    /// tenant-scoped transaction, then mirrors the limits into Redis and drops cached contexts.
    async fn put_plan(
        &self,
        ctx: &JobContext,
        plan: PlanId,
        interval: &str,
        anchor: DateTime<Utc>,
        period: Period,
        applied: bool,
    ) -> Result<(), StepError> {
        let id = self.tenant.id;
        let plan = plans::find(&ctx.db, &plan.to_string()).await?;
        let interval = Interval::parse(interval).unwrap_or(Interval::Month);
        let mut tx = db::begin_tenant(&ctx.db, id).await?;
        sqlx::query("update tenants set plan_id = $2, updated_at = now() where id = $1")
            .bind(id)
            .bind(plan.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "insert into tenant_quotas (tenant_id, resource_type, limit_value, unit, reset_period, last_reset_at) \
             select $1, q.key, (q.value->>'limit')::bigint, q.value->>'unit', \
                    (q.value->>'resetPeriod')::quota_reset_period_enum, now() \
             from jsonb_each($2) q \
             on conflict (tenant_id, resource_type) do update set limit_value = excluded.limit_value, \
                 unit = excluded.unit, reset_period = excluded.reset_period, updated_at = now()",
        )
        .bind(id)
        .bind(&plan.quotas)
        .execute(&mut *tx)
        .await?;
        store::set_subscription(&mut tx, plan.id, interval, anchor, period).await?;
        sqlx::query(&format!(
            "update plan_changes set applied_at = {} where job_id = $1",
            if applied { "coalesce(applied_at, now())" } else { "null" }
        ))
        .bind(self.job)
        .execute(&mut *tx)
        .await?;
        // The hot path's mirror is dropped before the commit and rewritten after (as the API's
        // limit changes do), so no check decides with a limit that is no longer true.
        ctx.quota.forget(id).await?;
        tx.commit().await?;
        ctx.quota.drop_leases(id);
        ctx.quota.sync(&ctx.db, id).await?;
        if let Err(err) = ContextStore::new(&ctx.config, ctx.redis.clone()).invalidate(id).await {
            tracing::warn!(tenant = %id, error = %err, "could not drop the cached context; the event will");
        }
        Ok(())
    }

    async fn record_lines(&self, ctx: &JobContext) -> Result<(), StepError> {
        let change = self.change(ctx).await?;
        let lines: Vec<ProrationLine> = serde_json::from_value(change.lines.clone())
            .map_err(|e| StepError::Permanent(format!("stored proration: {e}")))?;
        let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
        for (index, line) in lines.iter().enumerate() {
            store::add_line(
                &mut tx,
                None,
                &NewLine {
                    kind: LineKind::Proration,
                    description: line.description.clone(),
                    resource: None,
                    quantity: 1,
                    amount: line.amount,
                    period: line.period,
                    source_key: format!("{}:{index}", self.key("record_invoice_lines")),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn confirm(&self, ctx: &JobContext, step: &str) -> Result<(), StepError> {
        let Some(to) = &self.tenant.owner_email else { return Ok(()) };
        let change = self.change(ctx).await?;
        let total = tenant_domain::money::Money::new(
            change.total_minor,
            tenant_domain::money::Currency::parse(&change.currency).map_err(|e| StepError::Permanent(e.to_string()))?,
        );
        let mail = OutgoingMail {
            to: to.clone(),
            subject: format!("Your plan is now {}", self.to.name),
            text: format!(
                "Tenant \"{}\" ({}) moved to the {} plan (v{}, {}) as of {}.\n\
                 Proration on your next invoice: {}.\n",
                self.tenant.name,
                self.tenant.slug,
                self.to.name,
                self.to.version,
                self.payload.interval.adjective(),
                change.proration_date.format("%Y-%m-%d %H:%M:%S UTC"),
                total
            ),
            message_id: format!("plan-change.{}@tenant-service", self.job),
        };
        match mail::send_once(
            &ctx.db,
            ctx.mailer.as_ref(),
            &self.key(step),
            Some(self.tenant.id),
            "plan_changed",
            &mail,
        )
        .await
        {
            Ok(_) => Ok(()),
            // A refused mailbox does not undo a plan change that is in force.
            Err(MailError::External(ExternalError::Permanent(message))) => {
                tracing::warn!(job = %self.job, %message, "plan change confirmation refused by the mail server");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn announce(&self, ctx: &JobContext) -> Result<(), StepError> {
        let change = self.change(ctx).await?;
        let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
        let first: Option<Uuid> = sqlx::query_scalar(
            "update plan_changes set announced_at = now() where job_id = $1 and announced_at is null returning job_id",
        )
        .bind(self.job)
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_some() {
            let data = json!({
                "jobId": self.job,
                "from": { "planId": change.from_plan_id, "interval": change.from_interval },
                "to": { "planId": change.to_plan_id, "interval": change.to_interval },
                "prorationDate": change.proration_date,
                "prorationTotal": { "amount": change.total_minor, "currency": change.currency },
            });
            billing::record_event(&mut *tx, self.tenant.id, events::TENANT_PLAN_CHANGED, data.clone()).await?;
            audit::record(
                &mut *tx,
                audit::Entry {
                    tenant: Some(self.tenant.id),
                    actor: &Actor::System,
                    action: "tenant.plan_change",
                    resource: Some(format!("tenants/{}/billing", self.tenant.id)),
                    old_value: Some(json!({ "planId": change.from_plan_id, "interval": change.from_interval })),
                    new_value: Some(json!({ "planId": change.to_plan_id, "interval": change.to_interval })),
                    request_id: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Saga for ChangePlan {
    const KIND: JobKind = JobKind::ChangePlan;
    type Step = ChangePlanStep;

    async fn load(ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: ChangePlanPayload = engine::payload(job)?;
        let tenant = tenants::get(&ctx.db, payload.tenant_id).await?;
        let to = plans::find(&ctx.db, &payload.plan_id.to_string()).await?;
        let saga = ChangePlan { job: job.id, payload, tenant, to, change: Mutex::new(None) };
        // Resuming: the proration may already be recorded (a missing one is not an error here).
        let mut tx = db::begin_tenant(&ctx.db, saga.tenant.id).await?;
        let change = store::plan_change(&mut tx, saga.job.0).await?;
        tx.commit().await?;
        if let Ok(mut slot) = saga.change.lock() {
            *slot = change;
        }
        Ok(saga)
    }

    async fn run(&self, ctx: &JobContext, step: ChangePlanStep) -> Result<(), StepError> {
        match step {
            ChangePlanStep::ComputeProration => self.compute(ctx).await,
            ChangePlanStep::UpdateSubscription => {
                let change = self.change(ctx).await?;
                self.move_subscription(ctx, change.to_plan_id, &change.to_interval, &self.key(step.name())).await
            }
            ChangePlanStep::ApplyPlan => {
                let c = self.change(ctx).await?;
                let period = Period { start: c.new_period_start, end: c.new_period_end };
                self.put_plan(ctx, c.to_plan_id, &c.to_interval, c.new_anchor, period, true).await
            }
            ChangePlanStep::RecordInvoiceLines => self.record_lines(ctx).await,
            ChangePlanStep::ConfirmationEmail => self.confirm(ctx, step.name()).await,
            ChangePlanStep::PublishEvent => self.announce(ctx).await,
        }
    }

    async fn compensate(&self, ctx: &JobContext, step: ChangePlanStep) -> Result<(), StepError> {
        match step {
            ChangePlanStep::UpdateSubscription => {
                let change = self.change(ctx).await?;
                let key = self.key("update_subscription_undo");
                self.move_subscription(ctx, change.from_plan_id, &change.from_interval, &key).await
            }
            ChangePlanStep::ApplyPlan => {
                let c = self.change(ctx).await?;
                let period = Period { start: c.old_period_start, end: c.old_period_end };
                self.put_plan(ctx, c.from_plan_id, &c.from_interval, c.old_anchor, period, false).await
            }
            ChangePlanStep::RecordInvoiceLines => {
                let mut tx = db::begin_tenant(&ctx.db, self.tenant.id).await?;
                sqlx::query("delete from invoice_lines where source_key like $1 and invoice_id is null")
                    .bind(format!("{}:%", self.key("record_invoice_lines")))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            // Nothing was changed by the quote; a sent mail can't be unsent; the event is last.
            _ => Ok(()),
        }
    }

    async fn failed(&self, _ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        tracing::warn!(job = %self.job, tenant = %self.tenant.id, %reason, "plan change undone");
        Ok(())
    }

    fn result(&self) -> Value {
        let change = self.change.lock().ok().and_then(|c| c.clone());
        match change {
            Some(c) => json!({
                "tenantId": self.tenant.id,
                "planId": c.to_plan_id,
                "interval": c.to_interval,
                "prorationDate": c.proration_date,
                "lines": c.lines,
                "total": { "amount": c.total_minor, "currency": c.currency },
                "currentPeriod": { "start": c.new_period_start, "end": c.new_period_end },
            }),
            None => json!({ "tenantId": self.tenant.id, "planId": self.payload.plan_id }),
        }
    }
}
