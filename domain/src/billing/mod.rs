//! Billing: the payment provider behind a small trait, periods and proration (pure), and the
//! billing tables (accounts, invoices, lines, payments, plan changes).
//!
//! Two providers implement [`Billing`] with the same observable behaviour: [`stripe::StripeBilling`]
//! (async-stripe; chosen when `STRIPE_SECRET_KEY` is set) and [`local::LocalBilling`] (no key:
//! the provider's ledger lives in PostgreSQL and payments are recorded as offline payments).
//! Every call that creates or changes something carries an idempotency key derived from the job
//! and step (or the caller's `Idempotency-Key`): a retried call answers what the first answered
//! and creates nothing twice. The provider does not write our tables: the saga step that calls it
//! stores the reference it returns.

pub mod invoicing;
pub mod local;
pub mod period;
pub mod plan_change;
pub mod store;
pub mod stripe;
pub mod webhook;

use crate::TenantId;
use crate::external::ExternalError;
use crate::money::Money;
use crate::plans::Plan;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use period::Interval;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};

/// Currencies billing can invoice in.
pub use crate::money::SUPPORTED as SUPPORTED_CURRENCIES;

/// Opening (or reopening) a tenant's account: a customer and a subscription to a plan version.
#[derive(Debug, Clone)]
pub struct OpenAccount<'a> {
    pub tenant: TenantId,
    pub tenant_name: &'a str,
    pub email: Option<&'a str>,
    pub plan: &'a Plan,
    pub interval: Interval,
    /// Where the subscription's periods are anchored (BILLING_CYCLE_DAY).
    pub anchor: DateTime<Utc>,
    /// An existing customer to subscribe again (a restore), instead of creating one.
    pub existing_customer: Option<&'a str>,
    pub idempotency_key: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRef {
    /// `local` or `stripe`.
    pub provider: String,
    pub customer_ref: String,
    pub subscription_ref: Option<String>,
}

/// Moving a subscription to another plan version or interval, prorated at `proration_date`.
#[derive(Debug, Clone)]
pub struct ChangeSubscription<'a> {
    pub tenant: TenantId,
    pub subscription_ref: &'a str,
    pub plan: &'a Plan,
    pub interval: Interval,
    pub proration_date: DateTime<Utc>,
    pub idempotency_key: &'a str,
}

/// Cancelling a subscription (deletion); the customer stays for the record.
#[derive(Debug, Clone)]
pub struct CloseAccount<'a> {
    pub tenant: TenantId,
    pub subscription_ref: Option<&'a str>,
    pub idempotency_key: &'a str,
}

/// Collecting a payment for one of our invoices.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub tenant: TenantId,
    pub customer_ref: &'a str,
    pub invoice_number: &'a str,
    pub amount: Money,
    /// A provider payment method (Stripe `pm_…`); the customer's default when absent.
    pub payment_method: Option<&'a str>,
    pub idempotency_key: &'a str,
}

/// A card as it may be shown: brand and last four digits, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChargeStatus {
    Succeeded,
    /// Declined or otherwise refused; the message is safe to show (no card data).
    Failed {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeResult {
    /// The provider's payment id (`pi_…`, or a local id).
    pub provider_ref: String,
    pub status: ChargeStatus,
    pub card: Option<CardSummary>,
}

/// Whether the provider answers, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderHealth {
    Up,
    Down,
    NotConfigured,
}

#[async_trait]
pub trait Billing: Send + Sync {
    /// `local` or `stripe`.
    fn provider(&self) -> &'static str;

    /// Creates the customer (unless `existing_customer`) and subscribes it to the plan.
    async fn open_account(&self, request: OpenAccount<'_>) -> Result<AccountRef, ExternalError>;

    /// Moves the subscription to another plan version or interval.
    async fn change_subscription(&self, request: ChangeSubscription<'_>) -> Result<(), ExternalError>;

    /// Cancels the subscription.
    async fn close_account(&self, request: CloseAccount<'_>) -> Result<(), ExternalError>;

    /// Collects a payment.
    async fn charge(&self, request: Charge<'_>) -> Result<ChargeResult, ExternalError>;

    /// A cheap call that tells whether the provider answers.
    async fn health(&self) -> ProviderHealth;
}

/// `tenant_billing_events_total{type}`: billing events this process recorded (`tenant.plan_changed`,
/// `invoice.issued`, `payment.succeeded`, `payment.failed`) and Stripe webhook events it applied
/// (`stripe.<type>`) — counted when written. Each process registers it in its own registry.
pub static EVENTS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new("tenant_billing_events_total", "Billing events recorded, by type"),
        &["type"],
    )
    .expect("valid metric definition")
});

/// Writes a billing event to the outbox (in the caller's transaction) and counts it.
pub async fn record_event(
    db: impl sqlx::PgExecutor<'_>,
    tenant: TenantId,
    event_type: &'static str,
    data: serde_json::Value,
) -> crate::Result<uuid::Uuid> {
    let id = crate::events::record(db, tenant, event_type, data).await?;
    EVENTS.with_label_values(&[event_type]).inc();
    Ok(id)
}

/// The provider the configuration asks for: Stripe when `STRIPE_SECRET_KEY` is set, else local.
pub fn from_config(config: &crate::Config, db: sqlx::PgPool) -> anyhow::Result<Arc<dyn Billing>> {
    Ok(match &config.billing.stripe {
        Some(settings) => Arc::new(stripe::StripeBilling::new(settings)?),
        None => Arc::new(local::LocalBilling::new(db)),
    })
}
