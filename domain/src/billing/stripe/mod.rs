//! Stripe through async-stripe 1.0 (`STRIPE_SECRET_KEY`; `STRIPE_API_BASE` points it at another
//! endpoint, such as localstripe in the tests).
//!
//! **Requests** are async-stripe's typed requests; **replies** are read into the small types at
//! the end of this file (`.customize::<T>()`), because the full generated types require fields
//! that older Stripe-compatible fakes (localstripe) do not send, and we need a handful of fields.
//!
//! **Idempotency.** Every call that creates or changes something carries an `Idempotency-Key`
//! derived from the request's key and the step (`<key>:customer`, `<key>:subscription`, …), so a
//! repeat within Stripe's 24 hours answers what the first call answered. Beyond that, and for
//! endpoints that ignore the header (localstripe does), each object we create is tagged with
//! metadata `tenant_id` and `idempotency_key`, and a repeat first looks for the object the earlier
//! attempt made: subscriptions in the customer's list, customers and payment intents through
//! Stripe's search API (or, where the endpoint has none, its plain lists).
//!
//! **Plans.** A plan version and interval map to a Stripe *plan* with a fixed id
//! (`plan_<version uuid>_<month|year>`, amount `Plan::price(interval)` in minor units) under a
//! product `prod_<version uuid>` named after the plan; both are created on first use.
//!
//! **Who invoices.** This service issues the invoices (subscription, prorations, overage) and
//! collects them with PaymentIntents; the Stripe subscription records the plan and interval (and
//! Stripe's own proration at the same `proration_date`), with `collection_method=send_invoice` and
//! collection paused with `behavior=void`, so Stripe never bills the subscription a second time.
//!
//! **Local fakes.** With a test key and an API base that is not Stripe's, the endpoint is taken
//! for a local fake speaking an older API (localstripe 1.15): a subscription there needs a
//! default payment method, so the customer gets Stripe's test card `pm_card_visa`, and the few
//! parameters it refuses are left out (see [`StripeBilling::fake`]). A live key never does this.
//!
//! **Failures** are classified in one place, [`classify`]: network errors, timeouts, 429, 5xx and
//! Stripe's "try again" conflicts are transient; other refusals are permanent. Messages are
//! Stripe's own short `message`, scrubbed of anything that looks like a key or a card number.

use super::period::Interval;
use super::{
    AccountRef, Billing, CardSummary, ChangeSubscription, Charge, ChargeResult, ChargeStatus, CloseAccount,
    OpenAccount, ProviderHealth,
};
use crate::TenantId;
use crate::config::StripeSettings;
use crate::external::ExternalError;
use crate::plans::Plan;
use async_trait::async_trait;
use chrono::Utc;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;
use stripe::{ApiErrorsType, Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError};
use stripe_billing::plan::{CreatePlan, CreatePlanProduct, RetrievePlan};
use stripe_billing::subscription::{
    CancelSubscription, CreateSubscription, CreateSubscriptionItems, ListSubscription, ListSubscriptionStatus,
    RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems, UpdateSubscriptionPauseCollection,
    UpdateSubscriptionPauseCollectionBehavior, UpdateSubscriptionProrationBehavior,
};
use stripe_billing::{PlanInterval, SubscriptionCollectionMethod};
use stripe_client_core::StripeRequest;
use stripe_core::customer::{
    CreateCustomer, ListCustomer, RetrieveCustomer, SearchCustomer, UpdateCustomer, UpdateCustomerInvoiceSettings,
};
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, CreatePaymentIntentOffSession, ListPaymentIntent,
    RetrievePaymentIntent, SearchPaymentIntent,
};
use stripe_payment::payment_method::{AttachPaymentMethod, RetrievePaymentMethod};
use stripe_product::product::{CreateProduct, RetrieveProduct};
use wire::*;

mod provider;
#[cfg(test)]
mod tests;
mod wire;

/// Per HTTP attempt; a job retries a transient failure with its own backoff.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Stripe's own invoices for our subscriptions are sent, not charged: we collect through
/// [`Billing::charge`] on our invoices.
const DAYS_UNTIL_DUE: u32 = 30;
/// An anchor closer than this is "now": Stripe refuses an anchor that has passed by the time the
/// request arrives.
const ANCHOR_MARGIN_SECS: i64 = 60;
/// Stripe's test card (a real test-mode payment method id, also known to localstripe).
const TEST_CARD: &str = "pm_card_visa";
const PAGE_SIZE: i64 = 100;
const MAX_MESSAGE: usize = 200;

pub struct StripeBilling {
    client: Client,
    /// A local fake speaking an older API (a test key and a non-Stripe API base). It refuses
    /// `collection_method`/`days_until_due` on subscriptions, `proration_behavior` on updates
    /// (it prorates, Stripe's default, anyway), `description` and `automatic_payment_methods` on
    /// payment intents, and wants a default payment method before it subscribes a customer.
    fake: bool,
}

impl StripeBilling {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        // async-stripe's connector takes rustls' process-wide crypto provider (ring, the one
        // async-stripe is built with).
        crate::install_crypto_provider();
        let key = settings.secret_key.expose();
        let mut builder = ClientBuilder::new(key.as_str()).timeout(CALL_TIMEOUT);
        if let Some(base) = &settings.api_base {
            builder = builder.url(base.as_str());
        }
        // The builder's errors name the setting, never the key.
        let client = builder.build().map_err(|err| anyhow::anyhow!("Stripe client: {}", classify(err)))?;
        let test_key = key.starts_with("sk_test_") || key.starts_with("rk_test_");
        let fake = test_key && settings.api_base.as_deref().is_some_and(|base| !is_stripe_host(base));
        if fake {
            tracing::info!("STRIPE_API_BASE is a local Stripe fake: using its older request shape");
        }
        Ok(Self { client, fake })
    }

    /// Sends a read (no idempotency key: Stripe ignores it on GET).
    async fn read<T: miniserde::Deserialize>(&self, request: &impl StripeRequest) -> Result<T, StripeError> {
        request.build().customize::<T>().send(&self.client).await
    }

    /// Sends a write under `<key>:<step>`.
    async fn write<T: miniserde::Deserialize>(
        &self,
        request: &impl StripeRequest,
        key: &str,
        step: &str,
    ) -> Result<T, StripeError> {
        request.build().customize::<T>().request_strategy(idempotent(key, step)?).send(&self.client).await
    }

    /// Reads an object with a fixed id, creating it when missing. A create refused because
    /// someone else created it meanwhile (Stripe: 400 `resource_already_exists`, localstripe:
    /// 409) is a success: the object is read again.
    async fn get_or_create<T: miniserde::Deserialize>(
        &self,
        get: &impl StripeRequest,
        create: &impl StripeRequest,
        key: &str,
        step: &str,
    ) -> Result<T, ExternalError> {
        match self.read(get).await {
            Ok(found) => return Ok(found),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) => return Err(classify(err)),
        }
        match self.write(create, key, step).await {
            Ok(made) => Ok(made),
            Err(err) => self.read(get).await.map_err(|_| classify(err)),
        }
    }

    /// The id of the object an earlier attempt made under `key` (metadata `idempotency_key`):
    /// through `search` when given (Stripe's search API), else — or where the endpoint has no
    /// search API (it answers 404) — through every page of `list`.
    async fn find_made_for<S, L>(
        &self,
        key: &str,
        search: Option<S>,
        list: impl Fn(Option<&str>) -> L,
    ) -> Result<Option<String>, ExternalError>
    where
        S: StripeRequest,
        L: StripeRequest,
    {
        if let Some(search) = search {
            match self.read::<Page<Tagged>>(&search).await {
                Ok(page) => return Ok(made_for(&page.data, key)),
                Err(err) if status(&err) == Some(404) => {}
                Err(err) => return Err(classify(err)),
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page: Page<Tagged> = self.read(&list(after.as_deref())).await.map_err(classify)?;
            if let Some(id) = made_for(&page.data, key) {
                return Ok(Some(id));
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => return Ok(None),
            }
        }
    }

    async fn find_customer(&self, key: &str) -> Result<Option<String>, ExternalError> {
        let search = SearchCustomer::new(made_for_query(key)).limit(PAGE_SIZE);
        self.find_made_for(key, Some(search), |after| {
            let list = ListCustomer::new().limit(PAGE_SIZE);
            match after {
                Some(after) => list.starting_after(after),
                None => list,
            }
        })
        .await
    }

    async fn find_subscription(&self, customer: &str, key: &str) -> Result<Option<String>, ExternalError> {
        self.find_made_for(key, None::<SearchCustomer>, |after| {
            let list = ListSubscription::new().customer(customer).status(ListSubscriptionStatus::All).limit(PAGE_SIZE);
            match after {
                Some(after) => list.starting_after(after),
                None => list,
            }
        })
        .await
    }

    async fn find_payment_intent(&self, key: &str) -> Result<Option<String>, ExternalError> {
        let search = SearchPaymentIntent::new(made_for_query(key)).limit(PAGE_SIZE);
        self.find_made_for(key, Some(search), |after| {
            let list = ListPaymentIntent::new().limit(PAGE_SIZE);
            match after {
                Some(after) => list.starting_after(after),
                None => list,
            }
        })
        .await
    }

    /// The Stripe plan for `plan` at `interval` (and its product), created on first use.
    async fn ensure_plan(&self, plan: &Plan, interval: Interval, key: &str) -> Result<String, ExternalError> {
        let price = plan
            .price(interval)
            .map_err(|err| ExternalError::Permanent(format!("plan {} cannot be billed: {err}", plan.slug)))?;
        let version = plan.id.0.simple();
        let product_id = format!("prod_{version}");
        let plan_id = format!("plan_{version}_{}", interval.as_str());
        let tags = HashMap::from([
            ("plan_id".to_owned(), plan.id.to_string()),
            ("plan_slug".to_owned(), plan.slug.clone()),
            ("plan_version".to_owned(), plan.version.to_string()),
        ]);

        let get = RetrievePlan::new(plan_id.as_str());
        let found: Option<PlanReply> = match self.read(&get).await {
            Ok(found) => Some(found),
            Err(err) if status(&err) == Some(404) => None,
            Err(err) => return Err(classify(err)),
        };
        let stripe_plan = match found {
            Some(found) => found,
            None => {
                let product = CreateProduct::new(plan.name.as_str()).id(product_id.as_str()).metadata(tags.clone());
                let _: Tagged =
                    self.get_or_create(&RetrieveProduct::new(product_id.as_str()), &product, key, "product").await?;
                let stripe_interval = match interval {
                    Interval::Month => PlanInterval::Month,
                    Interval::Year => PlanInterval::Year,
                };
                let Ok(currency) = stripe_types::Currency::from_str(price.currency.as_str());
                let create = CreatePlan::new(currency, stripe_interval)
                    .id(plan_id.as_str())
                    .amount(price.amount)
                    .product(CreatePlanProduct::Id(product_id.clone()))
                    .nickname(format!("{} ({})", plan.name, interval.as_str()))
                    .metadata(tags);
                self.get_or_create(&get, &create, key, "plan").await?
            }
        };
        // Prices of a plan version never change; a Stripe plan that says otherwise was not ours.
        if stripe_plan.amount != Some(price.amount)
            || stripe_plan.currency != price.currency.as_str()
            || stripe_plan.interval != interval.as_str()
        {
            return Err(ExternalError::Permanent(format!(
                "Stripe plan {plan_id} exists with another price than plan {} version {}",
                plan.slug, plan.version
            )));
        }
        Ok(stripe_plan.id)
    }

    /// For a local fake only: gives the customer the test card as default payment method unless
    /// it has one (localstripe charges a subscription's first invoice at once).
    async fn ensure_test_payment_method(&self, customer: &str, key: &str) -> Result<(), ExternalError> {
        let found: CustomerReply = self.read(&RetrieveCustomer::new(customer)).await.map_err(classify)?;
        if found.default_payment_method().is_some() {
            return Ok(());
        }
        let attach = AttachPaymentMethod::new(TEST_CARD).customer(customer);
        let card: Tagged = self.write(&attach, key, "test-card").await.map_err(classify)?;
        let mut settings = UpdateCustomerInvoiceSettings::new();
        settings.default_payment_method = Some(card.id);
        let update = UpdateCustomer::new(customer).invoice_settings(settings);
        let _: Tagged = self.write(&update, key, "test-card-default").await.map_err(classify)?;
        Ok(())
    }

    async fn card_of(&self, payment_method: &str) -> Result<Option<CardSummary>, ExternalError> {
        let method: PaymentMethodReply =
            self.read(&RetrievePaymentMethod::new(payment_method)).await.map_err(classify)?;
        Ok(method.card())
    }

    /// The result of a payment intent as [`Billing::charge`] reports it.
    fn charge_result(intent: PaymentIntentReply, card: Option<CardSummary>) -> Result<ChargeResult, ExternalError> {
        let status = match intent.status.as_str() {
            "succeeded" => ChargeStatus::Succeeded,
            // Asynchronous methods (SEPA debits): a later attempt finds the intent and answers.
            "processing" => {
                return Err(ExternalError::Transient(format!("payment {} is still processing", intent.id)));
            }
            "requires_action" => {
                ChargeStatus::Failed { message: "the payment needs the customer's authentication".into() }
            }
            other => ChargeStatus::Failed {
                message: intent
                    .last_payment_error
                    .and_then(|e| e.message)
                    .map(|m| safe_message(&m))
                    .unwrap_or_else(|| format!("the payment was not completed ({other})")),
            },
        };
        Ok(ChargeResult { provider_ref: intent.id, status, card })
    }
}
