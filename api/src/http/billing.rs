//! Billing of one tenant: `GET …/billing`, `POST …/billing/plans` (a `change_plan` job, or its
//! preview), `GET …/invoices[/{invoiceId}]`, `POST …/payments`. Tenant billing rows are read and
//! written in the tenant-scoped transaction; the plan change's checks and proration are
//! `billing::plan_change::quote`, the very function the job's first step runs.

use super::access::{Admin, Read, TenantAccess};
use super::error::{ApiError, Result};
use super::extract::{Json, Path, Query};
use super::idempotency::IdempotencyKey;
use super::response::{self, Envelope, PageMeta, PageParams};
use crate::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenant_domain::audit;
use tenant_domain::billing::invoicing::{self, UpcomingInvoice};
use tenant_domain::billing::period::{Interval, Period};
use tenant_domain::billing::plan_change::{self, Quote};
use tenant_domain::billing::store::{self, Invoice, Payment};
use tenant_domain::billing::{self, CardSummary, Charge, ChargeStatus};
use tenant_domain::db::TenantTx;
use tenant_domain::external::ExternalError;
use tenant_domain::jobs::{self, Job, NewJob};
use tenant_domain::money::{Currency, Money};
use tenant_domain::tenants::{self, ChangeContext};
use tenant_domain::{Error, JobId, TenantId, TenantStatus, db, events, plans};
use tenant_jobs::change_plan::ChangePlanPayload;
use tenant_jobs::{JobKind, Queue};
use uuid::Uuid;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingView {
    pub tenant_id: TenantId,
    /// `local` or `stripe`.
    pub provider: String,
    pub plan: BillingPlan,
    pub interval: Interval,
    /// `active`, `past_due` or `canceled`.
    pub status: String,
    /// The subscription's status as the provider last reported it (Stripe webhooks).
    pub provider_status: Option<String>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub current_period: Period,
    /// Amount due on open invoices.
    pub balance: Money,
    /// Brand and last four digits only.
    pub payment_method: Option<CardSummary>,
    /// Subscription of the next period + prorations so far + overage so far (from the rollups).
    pub upcoming_invoice: UpcomingInvoice,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillingPlan {
    pub id: tenant_domain::PlanId,
    pub family: tenant_domain::PlanId,
    pub slug: String,
    pub name: String,
    pub version: i32,
    /// A newer version exists; the tenant keeps this one until moved.
    pub superseded: bool,
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/billing", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id")),
    responses((status = 200, description = "Plan, interval, status, period, balance, card on file, upcoming invoice", body = inline(Envelope<BillingView>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody),
              (status = 404, description = "`TENANT_NOT_FOUND` or `BILLING_ACCOUNT_NOT_FOUND`", body = super::error::ErrorBody)))]
pub async fn show(State(state): State<AppState>, access: TenantAccess<Read>) -> Result<Response> {
    let id = access.tenant;
    let mut tx = db::begin_tenant(&state.db, id).await?;
    let account = store::account(&mut tx)
        .await?
        .ok_or(Error::NotFound { code: "BILLING_ACCOUNT_NOT_FOUND", what: "billing account" })?;
    let plan = plans::find(&mut *tx, &account.plan_id.to_string()).await?;
    let price = plan.price(account.interval()).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let usage_billing = state.config.billing.usage_billing;
    let upcoming = invoicing::upcoming(&mut tx, &account, &plan, usage_billing, Utc::now()).await?;
    let balance = Money::new(store::balance_due(&mut tx).await?, price.currency);
    tx.commit().await?;
    Ok(response::ok(BillingView {
        tenant_id: id,
        provider: account.provider.clone(),
        plan: BillingPlan {
            id: plan.id,
            family: plan.family,
            slug: plan.slug.clone(),
            name: plan.name.clone(),
            version: plan.version,
            superseded: plan.superseded_at.is_some(),
        },
        interval: account.interval(),
        status: account.status.clone(),
        provider_status: account.provider_status.clone(),
        past_due_since: account.past_due_since,
        current_period: account.period(),
        balance,
        payment_method: account.card(),
        upcoming_invoice: upcoming,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePlanRequest {
    /// A plan version's id, or a plan's slug (its current version).
    #[schema(min_length = 1, max_length = 100)]
    pub plan_id: String,
    pub interval: Interval,
    /// When the change takes effect (whole seconds; default now). Pass the `prorationDate` of a
    /// preview to be charged exactly what it showed; at most an hour in the past.
    pub proration_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangePlanParams {
    /// `true`: answer the proration without changing anything.
    pub preview: Option<bool>,
}

/// `data` of an accepted plan change: the job to poll and the proration it will record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PlanChangeAccepted {
    pub job: Job,
    pub quote: Quote,
}

/// How far back a `prorationDate` may lie (a preview's date, reused to confirm it).
const PRORATION_DATE_MAX_AGE: ChronoDuration = ChronoDuration::hours(1);

#[utoipa::path(post, path = "/api/v1/tenants/{id}/billing/plans", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), ChangePlanParams,
           ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    request_body = ChangePlanRequest,
    responses((status = 200, description = "Preview: the proration lines and total, nothing changed", body = inline(Envelope<Quote>)),
              (status = 202, description = "The `change_plan` job; poll it", body = inline(Envelope<PlanChangeAccepted>),
                headers(("Location" = String, description = "/api/v1/jobs/{jobId}"))),
              (status = 400, description = "Unknown or retired plan, other currency, bad date", body = super::error::ErrorBody),
              (status = 403, description = "Not a tenant admin of this tenant", body = super::error::ErrorBody),
              (status = 404, description = "No such tenant", body = super::error::ErrorBody),
              (status = 409, description = "`INVALID_STATE` (not active, no account), `PLAN_UNCHANGED`, `PLAN_CHANGE_IN_PROGRESS`, `BILLING_PERIOD_CLOSING`", body = super::error::ErrorBody)))]
pub async fn change_plan(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    Query(params): Query<ChangePlanParams>,
    Json(body): Json<ChangePlanRequest>,
) -> Result<Response> {
    let id = access.tenant;
    let now = Utc::now();
    let at = body.proration_date.unwrap_or(now);
    if at > now + ChronoDuration::seconds(60) || at < now - PRORATION_DATE_MAX_AGE {
        return Err(ApiError::field("prorationDate", "must lie between an hour ago and now"));
    }
    let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    let to = match plans::find(&state.db, body.plan_id.trim()).await {
        Ok(plan) => plan,
        Err(Error::NotFound { .. }) => return Err(ApiError::field("planId", "no such plan")),
        Err(err) => return Err(err.into()),
    };
    let mut tx = db::begin_tenant(&state.db, id).await?;
    let tenant = tenants::get(&mut *tx, id).await?;
    let account = plan_change::account(&mut tx).await?;
    let quote = plan_change::quote(&mut tx, &tenant, &account, &to, body.interval, at).await?;
    tx.rollback().await?;
    if params.preview.unwrap_or(false) {
        return Ok(response::ok(quote));
    }

    let started = std::time::Instant::now();
    let payload = ChangePlanPayload { tenant_id: id, plan_id: to.id, interval: body.interval, proration_date: at };
    let payload = serde_json::to_value(payload).map_err(ApiError::internal)?;
    let delivery = Queue::new_delivery_id();
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let job = jobs::insert(
        &mut *tx,
        NewJob {
            id: JobId::new_v7(),
            kind: JobKind::ChangePlan.name(),
            tenant: Some(id),
            payload,
            steps: tenant_jobs::steps(JobKind::ChangePlan),
            max_attempts: state.config.jobs.max_attempts,
            delivery_id: delivery.clone(),
        },
    )
    .await
    .map_err(|err| match err {
        Error::Database(sqlx::Error::Database(db)) if db.constraint() == Some("jobs_one_open_plan_change") => {
            ApiError::new(
                StatusCode::CONFLICT,
                "PLAN_CHANGE_IN_PROGRESS",
                "a plan change of this tenant is in progress",
            )
        }
        other => other.into(),
    })?;
    audit::record(
        &mut *tx,
        audit::Entry {
            tenant: Some(id),
            actor: &access.actor(),
            action: "tenant.plan_change_requested",
            resource: Some(format!("tenants/{id}/billing")),
            old_value: Some(json!({ "planId": quote.from.plan_id, "interval": quote.from.interval })),
            new_value: Some(json!({ "planId": quote.to.plan_id, "interval": quote.to.interval, "jobId": job.id })),
            request_id: access.request_id(),
        },
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    tracing::info!(job_id = %job.id, tenant_id = %id, kind = JobKind::ChangePlan.name(), "job enqueued");
    if let Err(err) = state.queue.push(JobKind::ChangePlan, job.id, &delivery).await {
        tracing::warn!(job = %job.id, error = %err, "job push failed after commit; left to the reconciler");
    }
    state.metrics.operation("change_plan", true, started);
    let location = format!("/api/v1/jobs/{}", job.id);
    let body = Envelope { success: true, data: PlanChangeAccepted { job, quote }, meta: None };
    Ok(([(header::LOCATION, location)], response::json(StatusCode::ACCEPTED, &body)).into_response())
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/invoices", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), PageParams),
    responses((status = 200, description = "Invoices, newest first, with their lines", body = inline(Envelope<Vec<Invoice>>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody)))]
pub async fn invoices(
    State(state): State<AppState>,
    access: TenantAccess<Read>,
    Query(params): Query<PageParams>,
) -> Result<Response> {
    let id = access.tenant;
    let (page, limit) = params.resolve()?;
    let mut tx = db::begin_tenant(&state.db, id).await?;
    let (items, total) = store::invoices(&mut tx, page, limit).await?;
    tx.commit().await?;
    Ok(response::page(items, PageMeta { total, page, limit }))
}

#[utoipa::path(get, path = "/api/v1/tenants/{id}/invoices/{invoice_id}", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"), ("invoice_id" = Uuid, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice with its lines", body = inline(Envelope<Invoice>)),
              (status = 403, description = "Another tenant", body = super::error::ErrorBody),
              (status = 404, description = "`INVOICE_NOT_FOUND`", body = super::error::ErrorBody)))]
pub async fn invoice(
    State(state): State<AppState>,
    access: TenantAccess<Read>,
    Path((_, invoice_id)): Path<(String, Uuid)>,
) -> Result<Response> {
    let id = access.tenant;
    let mut tx = db::begin_tenant(&state.db, id).await?;
    let invoice = store::invoice(&mut tx, invoice_id, false).await?;
    tx.commit().await?;
    Ok(response::ok(invoice))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentRequest {
    pub invoice_id: Uuid,
    /// Minor units of the invoice's currency; at most what is still due.
    #[schema(minimum = 1, maximum = 1000000000000i64)]
    pub amount: i64,
    /// A provider payment method (Stripe `pm_…`); the customer's default when absent.
    #[schema(min_length = 1, max_length = 255)]
    pub payment_method_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentResult {
    pub payment: Payment,
    pub invoice: Invoice,
}

#[utoipa::path(post, path = "/api/v1/tenants/{id}/payments", tag = "billing", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Tenant id"),
           ("Idempotency-Key" = Option<String>, Header, description = "One payment per key")),
    request_body = PaymentRequest,
    responses((status = 201, description = "Paid (the invoice is `paid` once fully paid)", body = inline(Envelope<PaymentResult>)),
              (status = 200, description = "The payment made earlier under this Idempotency-Key", body = inline(Envelope<PaymentResult>)),
              (status = 400, description = "Invalid body", body = super::error::ErrorBody),
              (status = 402, description = "`PAYMENT_FAILED`: declined; recorded as failed", body = super::error::ErrorBody),
              (status = 403, description = "Not a tenant admin of this tenant", body = super::error::ErrorBody),
              (status = 404, description = "`INVOICE_NOT_FOUND` or `BILLING_ACCOUNT_NOT_FOUND`", body = super::error::ErrorBody),
              (status = 409, description = "`INVOICE_NOT_OPEN` (paid or void)", body = super::error::ErrorBody),
              (status = 422, description = "`PAYMENT_EXCEEDS_BALANCE`: more than is still due", body = super::error::ErrorBody),
              (status = 503, description = "The payment provider is unreachable; retry with the same key", body = super::error::ErrorBody)))]
pub async fn pay(
    State(state): State<AppState>,
    access: TenantAccess<Admin>,
    key: IdempotencyKey,
    Json(body): Json<PaymentRequest>,
) -> Result<Response> {
    let id = access.tenant;
    if !(1..=1_000_000_000_000).contains(&body.amount) {
        return Err(ApiError::field("amount", "must be from 1 to 10^12 minor units"));
    }
    let method = body.payment_method_id.as_deref().map(str::trim);
    if method.is_some_and(|m| m.is_empty() || m.len() > 255 || !m.chars().all(|c| c.is_ascii_graphic())) {
        return Err(ApiError::field("paymentMethodId", "1 to 255 visible ASCII characters"));
    }
    let mut tx = db::begin_tenant(&state.db, id).await?;
    let account = store::account(&mut tx)
        .await?
        .ok_or(Error::NotFound { code: "BILLING_ACCOUNT_NOT_FOUND", what: "billing account" })?;
    let existing = match &key.0 {
        Some(k) => store::payment_by_key(&mut tx, k).await?,
        None => None,
    };
    let payment = match existing {
        // Settled before under this key: the same answer, nothing charged again.
        Some(p) if p.status != "pending" => {
            let invoice = store::invoice(&mut tx, p.invoice_id, false).await?;
            tx.commit().await?;
            return Ok(response::ok(PaymentResult { payment: p, invoice }));
        }
        // Interrupted before it settled: charge again under the same provider key.
        Some(p) => p,
        None => {
            let invoice = store::invoice(&mut tx, body.invoice_id, true).await?;
            if invoice.status != "open" {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "INVOICE_NOT_OPEN",
                    format!("the invoice is {}", invoice.status),
                ));
            }
            let pending: i64 = sqlx::query_scalar(
                "select coalesce(sum(amount_minor), 0)::bigint from payments \
                 where tenant_id = $1 and invoice_id = $2 and status = 'pending'",
            )
            .bind(id)
            .bind(invoice.id)
            .fetch_one(&mut *tx)
            .await
            .map_err(Error::from)?;
            let due = invoice.amount_due - pending;
            if body.amount > due {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "PAYMENT_EXCEEDS_BALANCE",
                    format!("at most {due} is due on this invoice"),
                )
                .with_details(json!({ "amountDue": due, "currency": invoice.currency })));
            }
            let currency =
                Currency::parse(&invoice.currency).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
            let amount = Money::new(body.amount, currency);
            store::insert_payment(&mut tx, invoice.id, amount, &account.provider, key.0.as_deref()).await?
        }
    };
    let invoice_number = store::invoice(&mut tx, payment.invoice_id, false).await?.number;
    tx.commit().await?;

    let currency = Currency::parse(&payment.currency).map_err(|e| ApiError::internal(anyhow::anyhow!("{e}")))?;
    let charged = state
        .billing
        .charge(Charge {
            tenant: id,
            customer_ref: &account.customer_ref,
            invoice_number: &invoice_number,
            amount: Money::new(payment.amount, currency),
            payment_method: method,
            idempotency_key: &format!("payment:{}", payment.id),
        })
        .await;
    let result = match charged {
        Ok(result) => result,
        Err(ExternalError::Transient(message)) => {
            return Err(ApiError::unavailable(
                "the payment provider is unreachable; retry with the same Idempotency-Key",
                anyhow::anyhow!(message),
            ));
        }
        Err(ExternalError::Permanent(message)) => {
            billing::ChargeResult { provider_ref: String::new(), status: ChargeStatus::Failed { message }, card: None }
        }
    };
    let failure = match &result.status {
        ChargeStatus::Succeeded => None,
        ChargeStatus::Failed { message } => Some(message.as_str()),
    };

    let mut tx = db::begin_tenant(&state.db, id).await?;
    let (payment, became_paid) = store::settle_payment(&mut tx, payment.id, &result.provider_ref, failure).await?;
    if let Some(card) = &result.card {
        store::set_card(&mut tx, card).await?;
    }
    let event_data = json!({
        "paymentId": payment.id, "invoiceId": payment.invoice_id,
        "amount": { "amount": payment.amount, "currency": payment.currency }, "provider": payment.provider,
    });
    let mut reactivated = false;
    if failure.is_none() {
        billing::record_event(&mut *tx, id, events::PAYMENT_SUCCEEDED, event_data).await?;
        if became_paid {
            reactivated = settle_dunning(&mut tx, &access).await?;
        }
    } else {
        billing::record_event(&mut *tx, id, events::PAYMENT_FAILED, event_data).await?;
    }
    let invoice = store::invoice(&mut tx, payment.invoice_id, false).await?;
    if reactivated {
        super::quotas::commit_and_mirror(&state, tx).await?;
    } else {
        tx.commit().await?;
    }
    if let Some(message) = failure {
        return Err(ApiError::new(StatusCode::PAYMENT_REQUIRED, "PAYMENT_FAILED", message.to_owned())
            .with_details(json!({ "paymentId": payment.id, "invoiceId": payment.invoice_id })));
    }
    Ok(response::with_status(StatusCode::CREATED, PaymentResult { payment, invoice }))
}

/// After an invoice became paid: with nothing else overdue, the account is in good standing
/// again, and a tenant that dunning suspended is reactivated. True if the tenant was.
async fn settle_dunning(tx: &mut TenantTx, access: &TenantAccess<Admin>) -> Result<bool> {
    let id = tx.tenant();
    let tx: &mut sqlx::PgConnection = tx;
    let still_open: i64 = sqlx::query_scalar(
        "select count(*) from invoices where tenant_id = $1 and status = 'open' and total_minor > amount_paid_minor",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await
    .map_err(Error::from)?;
    if still_open > 0 {
        return Ok(false);
    }
    let suspended_by_dunning: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "update billing_accounts set status = case when status = 'past_due' then 'active' else status end, \
             past_due_since = null, updated_at = now() \
         where tenant_id = $1 returning dunning_suspended_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(Error::from)?;
    if suspended_by_dunning.flatten().is_none() {
        return Ok(false);
    }
    let tenant = tenants::get(&mut *tx, id).await?;
    if tenant.status != TenantStatus::Suspended {
        return Ok(false);
    }
    let ctx = ChangeContext { actor: access.actor(), request_id: access.request_id.0.clone() };
    tenants::set_status(tx, id, TenantStatus::Active, Some("payment received"), &ctx).await?;
    sqlx::query("update billing_accounts set dunning_suspended_at = null where tenant_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(Error::from)?;
    Ok(true)
}
