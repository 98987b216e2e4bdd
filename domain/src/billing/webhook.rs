//! Stripe webhooks: verifying a delivery, then applying its event once and in order.
//!
//! **Verified**: async-stripe checks `Stripe-Signature` (HMAC-SHA256 of `"{t}.{body}"` under the
//! endpoint secret) and parses the event into its typed object. The timestamp window is ours
//! (`BillingSettings::webhook_tolerance`), checked once the signature is known good. An event of a
//! type we do not act on whose object this SDK cannot read is still acknowledged (from its
//! envelope), so a newer API shape never makes Stripe retry it for days; one of the four types we
//! act on must parse.
//!
//! **Once**: Stripe delivers at least once. The event id goes into `stripe_events` in the
//! transaction that applies the event; a second delivery finds the row and changes nothing (a
//! concurrent one waits on the first's row lock and then finds it).
//!
//! **In order**: Stripe does not deliver in order, so an event's `created` decides what it may
//! still change ([`standing`] holds these rules):
//! - a subscription report applies only if not older than the last one applied
//!   (`provider_synced_at`); a deletion wins a tie and no later tie undoes it;
//! - a payment failure is stale if our copy of the invoice is already paid or a newer subscription
//!   report says the subscription is in good standing;
//! - a payment clears past-due unless it is older than the first unpaid failure
//!   (`past_due_since`) or a newer report says the subscription is still past due; it marks our
//!   copy of the invoice paid either way;
//! - an `active` report clears past-due only if it is newer than the first unpaid failure (a
//!   failure after it is still pending);
//! - a canceled account stays canceled (reopening is `store::save_opened`), and a report about
//!   another subscription than the account's (one replaced by a restore) changes nothing.
//!
//! A payment or subscription report that leaves the account active lifts a suspension made by
//! dunning (`dunning_suspended_at`): the tenant is reactivated if it is still suspended, and the
//! caller commits through the quota mirror so quota checks see it at once.

use super::EVENTS;
use crate::audit::Actor;
use crate::db::TenantTx;
use crate::tenants::{self, ChangeContext};
use crate::{Result, TenantId, TenantStatus, events};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use standing::{AccountRow, AccountStatus};
use std::time::Duration;
use stripe_webhook::{EventObject, Webhook, WebhookError};

mod standing;

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or invalid Stripe-Signature")]
    Signature,
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Timestamp,
    #[error("the signed body is not a Stripe event")]
    NotAnEvent,
}

/// A verified event, reduced to what we act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    pub id: String,
    /// Stripe's event type, e.g. `invoice.paid`.
    pub kind: String,
    pub created: DateTime<Utc>,
    pub fact: Fact,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    PaymentFailed(InvoiceFact),
    PaymentSucceeded(InvoiceFact),
    SubscriptionUpdated {
        customer: String,
        subscription: String,
        status: String,
    },
    SubscriptionDeleted {
        customer: String,
        subscription: String,
    },
    /// A type we do not act on, or an invoice without a customer.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFact {
    pub customer: String,
    pub invoice: Option<String>,
    /// Due (failure) or paid (payment), in minor units.
    pub amount: i64,
    pub currency: String,
    pub paid_at: Option<DateTime<Utc>>,
}

const HANDLED: [(&str, &str); 4] = [
    ("invoice.payment_failed", "stripe.invoice.payment_failed"),
    ("invoice.paid", "stripe.invoice.paid"),
    ("customer.subscription.updated", "stripe.customer.subscription.updated"),
    ("customer.subscription.deleted", "stripe.customer.subscription.deleted"),
];

impl StripeEvent {
    /// The `type` label of `tenant_billing_events_total`: one per handled type, else `stripe.ignored`.
    pub fn metric_label(&self) -> &'static str {
        HANDLED.iter().find(|(kind, _)| *kind == self.kind).map_or("stripe.ignored", |(_, label)| label)
    }

    fn customer(&self) -> Option<&str> {
        match &self.fact {
            Fact::PaymentFailed(i) | Fact::PaymentSucceeded(i) => Some(&i.customer),
            Fact::SubscriptionUpdated { customer, .. } | Fact::SubscriptionDeleted { customer, .. } => Some(customer),
            Fact::Ignored => None,
        }
    }
}

/// Verifies a delivery: the signature over the raw body, the timestamp within `tolerance` of
/// `now`, and the body an event. Nothing of the body, header or secret is logged.
pub fn verify(
    body: &[u8],
    header: &str,
    secret: &str,
    tolerance: Duration,
    now: DateTime<Utc>,
) -> std::result::Result<StripeEvent, VerifyError> {
    // Bytes that are not UTF-8 change under the lossy reading and so fail the signature.
    let payload = String::from_utf8_lossy(body);
    let signed_at = signed_at(header).ok_or(VerifyError::Signature)?;
    // async-stripe measures its own fixed window from the time it is given: from `signed_at`, it
    // always passes, and the window that counts is ours, checked after the signature.
    let parsed = match Webhook::construct_event_with_timestamp(&payload, header, secret, signed_at) {
        Ok(event) => Some(event),
        Err(WebhookError::BadParse(_)) => None,
        Err(_) => return Err(VerifyError::Signature),
    };
    if now.timestamp().abs_diff(signed_at) > tolerance.as_secs() {
        return Err(VerifyError::Timestamp);
    }
    let event = match parsed {
        Some(event) => from_typed(event)?,
        None => from_envelope(&payload)?,
    };
    if event.id.is_empty() || event.id.len() > 255 || event.kind.len() > 100 {
        return Err(VerifyError::NotAnEvent);
    }
    Ok(event)
}

/// The header's `t`, read as async-stripe reads it (the last one; every part must be `k=v`).
fn signed_at(header: &str) -> Option<i64> {
    let mut t = None;
    for part in header.split(',') {
        let (key, value) = part.split_once('=')?;
        if key == "t" {
            t = Some(value.parse().ok()?);
        }
    }
    t
}

fn timestamp(secs: i64) -> std::result::Result<DateTime<Utc>, VerifyError> {
    DateTime::from_timestamp(secs, 0).ok_or(VerifyError::NotAnEvent)
}

fn from_typed(event: stripe_webhook::Event) -> std::result::Result<StripeEvent, VerifyError> {
    let fact = match &event.data.object {
        EventObject::InvoicePaymentFailed(i) | EventObject::InvoicePaid(i) => match &i.customer {
            None => Fact::Ignored,
            Some(customer) => {
                let failed = matches!(&event.data.object, EventObject::InvoicePaymentFailed(_));
                let fact = InvoiceFact {
                    customer: customer.id().as_str().to_owned(),
                    invoice: i.id.as_ref().map(|id| id.as_str().to_owned()),
                    amount: if failed { i.amount_due } else { i.amount_paid },
                    currency: i.currency.to_string().to_uppercase(),
                    paid_at: i.status_transitions.paid_at.and_then(|t| DateTime::from_timestamp(t, 0)),
                };
                if failed { Fact::PaymentFailed(fact) } else { Fact::PaymentSucceeded(fact) }
            }
        },
        EventObject::CustomerSubscriptionUpdated(s) => Fact::SubscriptionUpdated {
            customer: s.customer.id().as_str().to_owned(),
            subscription: s.id.as_str().to_owned(),
            status: s.status.as_str().to_owned(),
        },
        EventObject::CustomerSubscriptionDeleted(s) => Fact::SubscriptionDeleted {
            customer: s.customer.id().as_str().to_owned(),
            subscription: s.id.as_str().to_owned(),
        },
        _ => Fact::Ignored,
    };
    Ok(StripeEvent {
        id: event.id.as_str().to_owned(),
        kind: event.type_.as_str().to_owned(),
        created: timestamp(event.created)?,
        fact,
    })
}

/// An event whose object async-stripe could not read: acknowledged as ignored if its type is
/// not one we act on.
fn from_envelope(payload: &str) -> std::result::Result<StripeEvent, VerifyError> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        id: String,
        object: String,
        #[serde(rename = "type")]
        kind: String,
        created: i64,
    }
    let envelope: Envelope = serde_json::from_str(payload).map_err(|_| VerifyError::NotAnEvent)?;
    if envelope.object != "event" || HANDLED.iter().any(|(kind, _)| *kind == envelope.kind) {
        return Err(VerifyError::NotAnEvent);
    }
    Ok(StripeEvent { id: envelope.id, kind: envelope.kind, created: timestamp(envelope.created)?, fact: Fact::Ignored })
}

/// What applying an event did. Call [`Outcome::committed`] once the transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Outcome {
    /// The event id was applied before; nothing changed.
    pub duplicate: bool,
    /// The event changed something (not a duplicate, an ignored type, an unknown customer or stale).
    pub applied: bool,
    /// The tenant reactivated (a dunning suspension lifted): commit through the quota mirror.
    pub reactivated: Option<TenantId>,
    label: &'static str,
}

impl Outcome {
    /// Counts the event in `tenant_billing_events_total` (each event id once).
    pub fn committed(&self) {
        if !self.duplicate {
            EVENTS.with_label_values(&[self.label]).inc();
        }
    }
}

/// Where an event goes, decided on the platform pool: its id recorded (each event applies at
/// most once) and the tenant found by the event's Stripe customer.
pub enum Route {
    /// Seen before: nothing to do.
    Duplicate,
    /// Not about an account of ours (or about no customer at all).
    Unrouted,
    Tenant(TenantId),
}

/// Records `event`'s id in `tx` (a platform transaction) and finds the tenant it concerns. The
/// caller narrows the same transaction to that tenant ([`crate::db::TenantTx::enter`]) and
/// [`apply`]s the event there, so the id and the change commit together.
pub async fn route(tx: &mut PgConnection, event: &StripeEvent) -> Result<Route> {
    let recorded = sqlx::query(
        "insert into stripe_events (id, event_type, created) values ($1, $2, $3) on conflict (id) do nothing",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(event.created)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded == 0 {
        return Ok(Route::Duplicate);
    }
    let Some(customer) = event.customer() else { return Ok(Route::Unrouted) };
    let tenant: Option<TenantId> = sqlx::query_scalar(
        "select tenant_id from billing_accounts where provider = 'stripe' and customer_ref = $1 \
         order by created_at desc limit 1",
    )
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(tenant.map_or(Route::Unrouted, Route::Tenant))
}

impl Outcome {
    /// The outcome of an event that was not applied (a duplicate, or not routed to a tenant).
    pub fn skipped(event: &StripeEvent, duplicate: bool) -> Self {
        Outcome { duplicate, applied: false, reactivated: None, label: event.metric_label() }
    }
}

/// Applies a routed `event` to the tenant of `tx`.
pub async fn apply(tx: &mut TenantTx, event: &StripeEvent, request_id: Option<&str>) -> Result<Outcome> {
    let mut outcome = Outcome::skipped(event, false);
    let tenant = tx.tenant();
    let tx: &mut PgConnection = tx;

    let account = AccountRow::load(tx, tenant).await?;
    let standing = account.standing()?;
    let at = event.created;
    let (next, invoice_marked) = match &event.fact {
        Fact::PaymentFailed(invoice) => (standing.after_failure(at, already_paid(tx, tenant, invoice).await?), false),
        Fact::PaymentSucceeded(invoice) => (standing.after_payment(at), mark_paid(tx, tenant, invoice, at).await?),
        Fact::SubscriptionUpdated { subscription, status, .. } => {
            (standing.after_report(at, subscription, status), false)
        }
        Fact::SubscriptionDeleted { subscription, .. } => (standing.after_deletion(at, subscription), false),
        Fact::Ignored => (None, false),
    };
    outcome.applied = next.is_some() || invoice_marked;
    if let Some(next) = &next {
        next.save(tx, tenant).await?;
        let lifts = matches!(event.fact, Fact::PaymentSucceeded(_) | Fact::SubscriptionUpdated { .. });
        if lifts && next.status == AccountStatus::Active && account.dunning_suspended_at.is_some() {
            outcome.reactivated = lift_dunning(tx, tenant, request_id).await?.then_some(tenant);
        }
    }
    let payment = match &event.fact {
        Fact::PaymentFailed(invoice) => Some((events::PAYMENT_FAILED, invoice)),
        Fact::PaymentSucceeded(invoice) => Some((events::PAYMENT_SUCCEEDED, invoice)),
        _ => None,
    };
    if let (true, Some((kind, invoice))) = (outcome.applied, payment) {
        let data = json!({ "provider": "stripe", "stripeEventId": event.id, "invoiceRef": invoice.invoice,
            "amount": invoice.amount, "currency": invoice.currency, "at": at });
        super::record_event(&mut *tx, tenant, kind, data).await?;
    }
    Ok(outcome)
}

/// Whether our invoice with this provider reference is paid (a failure arriving after the payment).
async fn already_paid(tx: &mut PgConnection, tenant: TenantId, invoice: &InvoiceFact) -> Result<bool> {
    let Some(reference) = &invoice.invoice else { return Ok(false) };
    Ok(sqlx::query_scalar(
        "select exists (select from invoices where tenant_id = $1 and provider_ref = $2 and status = 'paid')",
    )
    .bind(tenant)
    .bind(reference)
    .fetch_one(&mut *tx)
    .await?)
}

/// Marks our invoice with this provider reference paid; whether one was.
async fn mark_paid(tx: &mut PgConnection, tenant: TenantId, invoice: &InvoiceFact, at: DateTime<Utc>) -> Result<bool> {
    let Some(reference) = &invoice.invoice else { return Ok(false) };
    let marked = sqlx::query(
        "update invoices set status = 'paid', amount_paid_minor = total_minor, paid_at = $3 \
         where tenant_id = $1 and provider_ref = $2 and status = 'open'",
    )
    .bind(tenant)
    .bind(reference)
    .bind(invoice.paid_at.unwrap_or(at))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(marked > 0)
}

/// Ends a dunning suspension: reactivates the tenant if it is still suspended; whether it was.
async fn lift_dunning(tx: &mut PgConnection, tenant: TenantId, request_id: Option<&str>) -> Result<bool> {
    let suspended = tenants::get_for_update(tx, tenant).await?.status == TenantStatus::Suspended;
    if suspended {
        let ctx = ChangeContext { actor: Actor::System, request_id: request_id.map(str::to_owned) };
        tenants::set_status(tx, tenant, TenantStatus::Active, None, &ctx).await?;
    }
    sqlx::query("update billing_accounts set dunning_suspended_at = null, updated_at = now() where tenant_id = $1")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    Ok(suspended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SECRET: &str = "whsec_unit_test_secret";
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_000_000 + secs, 0).single().expect("valid time")
    }

    fn envelope(kind: &str, object: serde_json::Value) -> String {
        json!({ "id": "evt_unit", "object": "event", "api_version": "2025-09-30.clover", "created": 1_764_000_000,
            "type": kind, "data": { "object": object }, "livemode": false, "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null } })
        .to_string()
    }

    fn subscription(status: &str) -> serde_json::Value {
        json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
            "automatic_tax": { "enabled": false }, "billing_cycle_anchor": 1_761_800_000,
            "billing_mode": { "type": "classic" }, "billing_schedules": [], "cancel_at_period_end": false,
            "collection_method": "charge_automatically", "created": 1_761_800_000, "currency": "usd", "discounts": [],
            "invoice_settings": { "issuer": { "type": "self" } },
            "items": { "object": "list", "data": [], "has_more": false, "url": "/v1/subscription_items" },
            "livemode": false, "metadata": {}, "start_date": 1_761_800_000 })
    }

    fn signed(payload: &str, at: DateTime<Utc>) -> String {
        Webhook::generate_test_header(payload, SECRET, Some(at.timestamp()))
    }

    #[test]
    fn a_signed_event_is_read_into_what_we_act_on() {
        let payload = envelope("customer.subscription.updated", subscription("past_due"));
        let event = verify(payload.as_bytes(), &signed(&payload, t(0)), SECRET, TOLERANCE, t(10)).expect("verified");
        assert_eq!(event.id, "evt_unit");
        assert_eq!(event.created, t(0));
        assert_eq!(event.metric_label(), "stripe.customer.subscription.updated");
        assert_eq!(
            event.fact,
            Fact::SubscriptionUpdated {
                customer: "cus_1".into(),
                subscription: "sub_1".into(),
                status: "past_due".into()
            }
        );
    }

    #[test]
    fn bad_signatures_and_stale_timestamps_are_refused() {
        let payload = envelope("customer.subscription.deleted", subscription("canceled"));
        let header = signed(&payload, t(0));
        let verify_at = |body: &str, header: &str, now| verify(body.as_bytes(), header, SECRET, TOLERANCE, now);
        assert!(verify_at(&payload, &header, t(300)).is_ok());
        assert_eq!(verify_at(&payload, &header, t(301)), Err(VerifyError::Timestamp));
        assert_eq!(verify_at(&payload, &header, t(-301)), Err(VerifyError::Timestamp));
        assert_eq!(verify_at(&payload.replace("sub_1", "sub_2"), &header, t(0)), Err(VerifyError::Signature));
        let other_secret = Webhook::generate_test_header(&payload, "whsec_other", Some(t(0).timestamp()));
        assert_eq!(verify_at(&payload, &other_secret, t(0)), Err(VerifyError::Signature));
        for header in ["", "t=1764000000", "v1=00", "t=abc,v1=00", "garbage"] {
            assert_eq!(verify_at(&payload, header, t(0)), Err(VerifyError::Signature), "{header}");
        }
        // a stale timestamp with a bad signature is a bad signature
        assert_eq!(verify_at("{}", &header, t(1000)), Err(VerifyError::Signature));
    }

    #[test]
    fn signed_bodies_that_are_not_events_are_refused_but_unknown_shapes_of_other_types_are_acknowledged() {
        let check = |payload: &str| verify(payload.as_bytes(), &signed(payload, t(0)), SECRET, TOLERANCE, t(0));
        assert_eq!(check("not json"), Err(VerifyError::NotAnEvent));
        assert_eq!(check(r#"{"hello":"world"}"#), Err(VerifyError::NotAnEvent));
        // a type we act on must parse
        assert_eq!(
            check(&envelope("invoice.paid", json!({ "id": "in_1", "object": "invoice" }))),
            Err(VerifyError::NotAnEvent)
        );
        // another type is acknowledged from its envelope, whatever its object
        let charge = check(&envelope("charge.succeeded", json!({ "id": "ch_1" }))).expect("acknowledged");
        assert_eq!((charge.metric_label(), charge.fact), ("stripe.ignored", Fact::Ignored));
        let future = check(&envelope("v3.something.new", json!({ "id": "x_1" }))).expect("acknowledged");
        assert_eq!((future.kind.as_str(), future.fact), ("v3.something.new", Fact::Ignored));
    }
}
