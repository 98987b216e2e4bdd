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
        // async-stripe's connector takes rustls' process-wide crypto provider, which rustls cannot
        // choose (it panics) when the build enables both ring and aws-lc-rs (object_store's `aws`
        // does): settle it for ring, the one async-stripe is built with, unless the program
        // installed one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
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

#[async_trait]
impl Billing for StripeBilling {
    fn provider(&self) -> &'static str {
        "stripe"
    }

    async fn open_account(&self, request: OpenAccount<'_>) -> Result<AccountRef, ExternalError> {
        let key = request.idempotency_key;
        let customer = match request.existing_customer {
            Some(existing) => existing.to_owned(),
            None => match self.find_customer(key).await? {
                Some(found) => found,
                None => {
                    let mut create =
                        CreateCustomer::new().name(request.tenant_name).metadata(made_for_tags(request.tenant, key));
                    if let Some(email) = request.email {
                        create = create.email(email);
                    }
                    let made: Tagged = self.write(&create, key, "customer").await.map_err(classify)?;
                    made.id
                }
            },
        };
        let plan = self.ensure_plan(request.plan, request.interval, key).await?;
        if self.fake {
            self.ensure_test_payment_method(&customer, key).await?;
        }
        let subscription = match self.find_subscription(&customer, key).await? {
            Some(found) => found,
            None => {
                let item = CreateSubscriptionItems { plan: Some(plan), ..Default::default() };
                let mut create = CreateSubscription::new()
                    .customer(customer.as_str())
                    .items(vec![item])
                    .metadata(made_for_tags(request.tenant, key));
                let anchor = request.anchor.timestamp();
                if anchor > Utc::now().timestamp() + ANCHOR_MARGIN_SECS {
                    create = create.billing_cycle_anchor(anchor);
                }
                if !self.fake {
                    create = create
                        .collection_method(SubscriptionCollectionMethod::SendInvoice)
                        .days_until_due(DAYS_UNTIL_DUE);
                }
                let made: Tagged = self.write(&create, key, "subscription").await.map_err(classify)?;
                made.id
            }
        };
        if !self.fake {
            // This service issues the invoices (subscription, prorations, overage) and collects
            // them with PaymentIntents: Stripe's own invoices for the subscription are voided, so
            // nothing is billed twice. The subscription still carries the plan and interval.
            let pause = UpdateSubscription::new(subscription.as_str()).pause_collection(
                UpdateSubscriptionPauseCollection::new(UpdateSubscriptionPauseCollectionBehavior::Void),
            );
            let _: Tagged = self.write(&pause, key, "pause-collection").await.map_err(classify)?;
        }
        tracing::info!(tenant = %request.tenant, %customer, %subscription, "Stripe account opened");
        Ok(AccountRef { provider: "stripe".into(), customer_ref: customer, subscription_ref: Some(subscription) })
    }

    async fn change_subscription(&self, request: ChangeSubscription<'_>) -> Result<(), ExternalError> {
        let key = request.idempotency_key;
        let plan = self.ensure_plan(request.plan, request.interval, key).await?;
        let current: SubscriptionReply =
            self.read(&RetrieveSubscription::new(request.subscription_ref)).await.map_err(classify)?;
        let [item] = current.items.data.as_slice() else {
            return Err(ExternalError::Permanent(format!(
                "subscription {} has {} items, not one",
                current.id,
                current.items.data.len()
            )));
        };
        if item.plan.as_ref().is_some_and(|p| p.id == plan) {
            return Ok(()); // already moved: a repeat
        }
        let item = UpdateSubscriptionItems { id: Some(item.id.clone()), plan: Some(plan), ..Default::default() };
        let mut update = UpdateSubscription::new(request.subscription_ref)
            .items(vec![item])
            .proration_date(request.proration_date.timestamp());
        if !self.fake {
            update = update.proration_behavior(UpdateSubscriptionProrationBehavior::CreateProrations);
        }
        let _: Tagged = self.write(&update, key, "update").await.map_err(classify)?;
        tracing::info!(tenant = %request.tenant, subscription = request.subscription_ref, "Stripe subscription changed");
        Ok(())
    }

    async fn close_account(&self, request: CloseAccount<'_>) -> Result<(), ExternalError> {
        let Some(subscription) = request.subscription_ref else {
            return Ok(());
        };
        let get = RetrieveSubscription::new(subscription);
        match self.read::<SubscriptionReply>(&get).await {
            Err(err) if status(&err) == Some(404) => return Ok(()),
            Err(err) => return Err(classify(err)),
            Ok(found) if found.has_ended() => return Ok(()),
            Ok(_) => {}
        }
        let cancel = CancelSubscription::new(subscription);
        match self.write::<SubscriptionReply>(&cancel, request.idempotency_key, "cancel").await {
            Ok(_) => {}
            Err(err) if status(&err) == Some(404) => {}
            // Another cancel may have won the race: what counts is that it has ended.
            Err(err) => match self.read::<SubscriptionReply>(&get).await {
                Ok(found) if found.has_ended() => {}
                _ => return Err(classify(err)),
            },
        }
        tracing::info!(tenant = %request.tenant, subscription, "Stripe subscription canceled");
        Ok(())
    }

    async fn charge(&self, request: Charge<'_>) -> Result<ChargeResult, ExternalError> {
        let key = request.idempotency_key;
        // A repeat answers what the first attempt got.
        if let Some(found) = self.find_payment_intent(key).await? {
            let intent: PaymentIntentReply =
                self.read(&RetrievePaymentIntent::new(found.as_str())).await.map_err(classify)?;
            let card = match &intent.payment_method {
                Some(method) => self.card_of(method).await?,
                None => None,
            };
            return Self::charge_result(intent, card);
        }

        let payment_method = match request.payment_method {
            Some(method) => method.to_owned(),
            None => {
                let customer: CustomerReply =
                    self.read(&RetrieveCustomer::new(request.customer_ref)).await.map_err(classify)?;
                match customer.default_payment_method() {
                    Some(method) => method.to_owned(),
                    None => {
                        return Ok(ChargeResult {
                            provider_ref: String::new(),
                            status: ChargeStatus::Failed { message: "no payment method on file".into() },
                            card: None,
                        });
                    }
                }
            }
        };
        let method: PaymentMethodReply =
            self.read(&RetrievePaymentMethod::new(payment_method.as_str())).await.map_err(classify)?;
        let card = method.card();
        let declined = |err: &StripeError, provider_ref: String| ChargeResult {
            provider_ref,
            status: ChargeStatus::Failed { message: decline_message(err) },
            card: card.clone(),
        };

        // A payment method not saved yet is saved on the customer first (an off-session charge
        // needs that); a card refused there is a decline like any other.
        if method.customer.is_none() {
            let attach = AttachPaymentMethod::new(payment_method.as_str()).customer(request.customer_ref);
            match self.write::<Tagged>(&attach, key, "attach").await {
                Ok(_) => {}
                Err(err) if is_decline(&err) => return Ok(declined(&err, String::new())),
                Err(err) => return Err(classify(err)),
            }
        }

        let mut tags = made_for_tags(request.tenant, key);
        tags.insert("invoice".into(), request.invoice_number.to_owned());
        let Ok(currency) = stripe_types::Currency::from_str(request.amount.currency.as_str());
        let mut create = CreatePaymentIntent::new(request.amount.amount, currency)
            .customer(request.customer_ref)
            .payment_method(payment_method.as_str())
            .confirm(true)
            .off_session(CreatePaymentIntentOffSession::Bool(true))
            .metadata(tags);
        if !self.fake {
            let mut methods = CreatePaymentIntentAutomaticPaymentMethods::new(true);
            methods.allow_redirects = Some(CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never);
            create = create.description(request.invoice_number).automatic_payment_methods(methods);
        }
        match self.write::<PaymentIntentReply>(&create, key, "payment_intent").await {
            Ok(intent) => Self::charge_result(intent, card),
            Err(err) if is_decline(&err) => {
                // Stripe names the intent in the error; localstripe does not, but it is tagged.
                let provider_ref = match declined_intent(&err) {
                    Some(id) => id,
                    None => self.find_payment_intent(key).await?.unwrap_or_default(),
                };
                Ok(declined(&err, provider_ref))
            }
            Err(err) => Err(classify(err)),
        }
    }

    async fn health(&self) -> ProviderHealth {
        let request = ListCustomer::new().limit(1).build().customize::<Page<Tagged>>().timeout(HEALTH_TIMEOUT);
        match request.send(&self.client).await {
            Ok(_) => ProviderHealth::Up,
            Err(err) => {
                tracing::debug!(error = %classify(err), "Stripe health check failed");
                ProviderHealth::Down
            }
        }
    }
}

/// The one place a Stripe failure is classified: network errors, timeouts, 429, 5xx and Stripe's
/// "another request holds this object or key" conflicts are worth another attempt; every other
/// refusal is permanent. The message is Stripe's own, scrubbed and short.
fn classify(err: StripeError) -> ExternalError {
    match err {
        StripeError::Stripe(api, status) => {
            let code = api.code.as_ref().map(|c| c.as_str().to_owned());
            let message = safe_message(api.message.as_deref().unwrap_or("no message"));
            let text = match &code {
                Some(code) => format!("Stripe answered {status} ({code}): {message}"),
                None => format!("Stripe answered {status}: {message}"),
            };
            let busy = matches!(code.as_deref(), Some("lock_timeout" | "idempotency_key_in_use" | "rate_limit"));
            if status == 429 || status >= 500 || busy {
                ExternalError::Transient(text)
            } else {
                ExternalError::Permanent(text)
            }
        }
        StripeError::Timeout => ExternalError::Transient("Stripe did not answer in time".into()),
        StripeError::ClientError(err) => {
            ExternalError::Transient(format!("Stripe unreachable: {}", safe_message(&err)))
        }
        // An error status whose body is not Stripe's JSON: a proxy's or server's error page.
        StripeError::JSONDeserialize(err) if err.contains("Stripe error") => {
            ExternalError::Transient("Stripe answered an error without details".into())
        }
        StripeError::JSONDeserialize(_) => ExternalError::Permanent("Stripe's answer could not be read".into()),
        StripeError::ConfigError(err) => ExternalError::Permanent(format!("Stripe client: {}", safe_message(&err))),
    }
}

fn status(err: &StripeError) -> Option<u16> {
    match err {
        StripeError::Stripe(_, status) => Some(*status),
        _ => None,
    }
}

/// A refused payment (402, or Stripe's `card_error`), as opposed to a failed call.
fn is_decline(err: &StripeError) -> bool {
    matches!(err, StripeError::Stripe(api, status) if *status == 402 || api.type_ == ApiErrorsType::CardError)
}

fn decline_message(err: &StripeError) -> String {
    match err {
        StripeError::Stripe(api, _) => safe_message(api.message.as_deref().unwrap_or("the payment was declined")),
        _ => "the payment was declined".into(),
    }
}

fn declined_intent(err: &StripeError) -> Option<String> {
    match err {
        StripeError::Stripe(api, _) => api.payment_intent.as_ref().map(|intent| intent.id.to_string()),
        _ => None,
    }
}

/// A message fit for logs and users: no key-like words (`sk_…`, `rk_…`), no long digit runs
/// (card numbers), at most [`MAX_MESSAGE`] characters.
fn safe_message(raw: &str) -> String {
    let words: Vec<&str> = raw
        .split_whitespace()
        .map(|word| {
            let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
            if ["sk_", "rk_", "whsec_"].iter().any(|prefix| bare.starts_with(prefix)) {
                "[redacted]"
            } else if word.chars().filter(char::is_ascii_digit).count() >= 12 {
                "[number]"
            } else {
                word
            }
        })
        .collect();
    let message = words.join(" ");
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// `<key>:<step>` as Stripe's `Idempotency-Key` (at most 255 bytes: longer ones are hashed).
fn idempotent(key: &str, step: &str) -> Result<RequestStrategy, StripeError> {
    let full = format!("{key}:{step}");
    let full = if full.len() <= 255 { full } else { format!("sha256:{}", hex::encode(Sha256::digest(&full))) };
    let key = IdempotencyKey::new(full).map_err(|err| StripeError::ConfigError(err.to_string()))?;
    Ok(RequestStrategy::Idempotent(key))
}

/// The metadata that lets a repeat find what an earlier attempt made.
fn made_for_tags(tenant: TenantId, key: &str) -> HashMap<String, String> {
    HashMap::from([("tenant_id".to_owned(), tenant.to_string()), ("idempotency_key".to_owned(), key.to_owned())])
}

/// Stripe search query for objects tagged with `key`.
fn made_for_query(key: &str) -> String {
    let quoted = key.replace('\\', "\\\\").replace('\'', "\\'");
    format!("metadata['idempotency_key']:'{quoted}'")
}

fn made_for(objects: &[Tagged], key: &str) -> Option<String> {
    objects
        .iter()
        .find(|o| o.metadata.as_ref().and_then(|m| m.get("idempotency_key")).is_some_and(|k| k == key))
        .map(|o| o.id.clone())
}

/// Whether `base` (an API base URL) names Stripe itself.
fn is_stripe_host(base: &str) -> bool {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
    host == "stripe.com" || host.ends_with(".stripe.com")
}

// ---------------------------------------------------------------- replies (only what we read)

#[derive(miniserde::Deserialize)]
struct Tagged {
    id: String,
    metadata: Option<HashMap<String, String>>,
}

/// A list or search page.
#[derive(miniserde::Deserialize)]
struct Page<T> {
    data: Vec<T>,
    has_more: bool,
}

#[derive(miniserde::Deserialize)]
struct PlanReply {
    id: String,
    amount: Option<i64>,
    currency: String,
    interval: String,
}

#[derive(miniserde::Deserialize)]
struct CustomerReply {
    invoice_settings: Option<InvoiceSettings>,
    default_source: Option<String>,
}

#[derive(miniserde::Deserialize)]
struct InvoiceSettings {
    default_payment_method: Option<String>,
}

impl CustomerReply {
    fn default_payment_method(&self) -> Option<&str> {
        self.invoice_settings
            .as_ref()
            .and_then(|s| s.default_payment_method.as_deref())
            .or(self.default_source.as_deref())
    }
}

#[derive(miniserde::Deserialize)]
struct SubscriptionReply {
    id: String,
    status: String,
    items: ItemPage,
}

#[derive(miniserde::Deserialize)]
struct ItemPage {
    data: Vec<ItemReply>,
}

#[derive(miniserde::Deserialize)]
struct ItemReply {
    id: String,
    plan: Option<IdReply>,
}

#[derive(miniserde::Deserialize)]
struct IdReply {
    id: String,
}

impl SubscriptionReply {
    fn has_ended(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "incomplete_expired")
    }
}

#[derive(miniserde::Deserialize)]
struct PaymentMethodReply {
    customer: Option<String>,
    card: Option<CardReply>,
}

#[derive(miniserde::Deserialize)]
struct CardReply {
    brand: String,
    last4: String,
}

impl PaymentMethodReply {
    fn card(&self) -> Option<CardSummary> {
        self.card.as_ref().map(|c| CardSummary { brand: c.brand.clone(), last4: c.last4.clone() })
    }
}

#[derive(miniserde::Deserialize)]
struct PaymentIntentReply {
    id: String,
    status: String,
    payment_method: Option<String>,
    last_payment_error: Option<PaymentErrorReply>,
}

#[derive(miniserde::Deserialize)]
struct PaymentErrorReply {
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_keys_and_card_numbers() {
        let raw = "Invalid API Key provided: sk_test_abc123; card 4242424242424242 ('rk_live_x')";
        let safe = safe_message(raw);
        assert!(!safe.contains("sk_test") && !safe.contains("rk_live") && !safe.contains("4242424242"), "{safe}");
        assert!(safe_message(&"x".repeat(500)).chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn long_idempotency_keys_are_hashed() {
        let short = idempotent("job-1:open", "customer").map(|s| s.get_key().map(|k| k.into_inner()));
        assert_eq!(short.ok().flatten().as_deref(), Some("job-1:open:customer"));
        let long = idempotent(&"k".repeat(300), "customer").map(|s| s.get_key().map(|k| k.into_inner()));
        assert!(long.ok().flatten().is_some_and(|k| k.starts_with("sha256:") && k.len() <= 255));
    }

    /// What goes on the wire for a write: the key as `Idempotency-Key`, the secret only in
    /// `Authorization`. (localstripe ignores the header, so this reads the request itself.)
    #[tokio::test]
    async fn writes_send_the_idempotency_key() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = std::thread::spawn(move || {
            let (socket, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(socket.try_clone().expect("clone"));
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                reader.read_line(&mut head).expect("read");
            }
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("body");
            let reply = r#"{"id":"cus_1","object":"customer","metadata":{}}"#;
            let mut socket = socket;
            write!(
                socket,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            )
            .expect("write");
            (head, String::from_utf8_lossy(&body).into_owned())
        });
        let settings = StripeSettings {
            secret_key: crate::Secret::new("sk_test_wire".into()),
            api_base: Some(format!("http://{addr}")),
        };
        let billing = StripeBilling::new(&settings).expect("client");
        let made: Tagged =
            billing.write(&CreateCustomer::new().name("Acme"), "job-7:open", "customer").await.expect("sent");
        assert_eq!(made.id, "cus_1");
        let (head, body) = peer.join().expect("peer");
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("post /v1/customers "), "{head}");
        assert!(head.contains("\r\nidempotency-key: job-7:open:customer\r\n"), "{head}");
        assert_eq!(head.matches("sk_test_wire").count(), 1, "{head}");
        assert!(head.contains("\r\nauthorization: bearer sk_test_wire\r\n"), "{head}");
        assert_eq!(body, "name=Acme");
    }

    #[test]
    fn only_non_stripe_hosts_are_fakes() {
        assert!(is_stripe_host("https://api.stripe.com/"));
        assert!(is_stripe_host("https://files.stripe.com"));
        assert!(!is_stripe_host("http://127.0.0.1:8420"));
        assert!(!is_stripe_host("http://stripe.com.example.org/"));
        assert!(!is_stripe_host("http://localhost:12111/v1"));
    }

    fn refused(status: u16, code: Option<stripe::ApiErrorsCode>, type_: ApiErrorsType) -> StripeError {
        let api = stripe::ApiErrors {
            advice_code: None,
            charge: None,
            code,
            decline_code: None,
            doc_url: None,
            message: Some("Your card was declined.".into()),
            network_advice_code: None,
            network_decline_code: None,
            param: None,
            payment_intent: None,
            payment_method: None,
            payment_method_type: None,
            request_log_url: None,
            setup_intent: None,
            source: None,
            type_,
        };
        StripeError::Stripe(Box::new(api), status)
    }

    #[test]
    fn classification() {
        use stripe::ApiErrorsCode as Code;
        let transient = |e| matches!(classify(e), ExternalError::Transient(_));
        let invalid = ApiErrorsType::InvalidRequestError;
        assert!(transient(refused(429, Some(Code::RateLimit), invalid.clone())));
        assert!(transient(refused(500, None, ApiErrorsType::ApiError)));
        assert!(transient(refused(503, None, ApiErrorsType::ApiError)));
        assert!(transient(refused(409, Some(Code::LockTimeout), invalid.clone())));
        assert!(transient(refused(409, Some(Code::IdempotencyKeyInUse), ApiErrorsType::IdempotencyError)));
        assert!(!transient(refused(409, None, invalid.clone())));
        assert!(!transient(refused(400, Some(Code::ResourceAlreadyExists), invalid.clone())));
        assert!(!transient(refused(404, Some(Code::ResourceMissing), invalid.clone())));
        assert!(!transient(refused(401, None, invalid.clone())));
        assert!(!transient(refused(402, Some(Code::CardDeclined), ApiErrorsType::CardError)));
        assert!(is_decline(&refused(402, Some(Code::CardDeclined), ApiErrorsType::CardError)));
        assert!(is_decline(&refused(402, None, invalid.clone())));
        assert!(!is_decline(&refused(400, None, invalid)));
        assert!(transient(StripeError::Timeout));
        assert!(transient(StripeError::ClientError("connection refused".into())));
        assert!(transient(StripeError::JSONDeserialize("error deserializing Stripe error".into())));
        assert!(!transient(StripeError::JSONDeserialize("error deserializing request data".into())));
    }
}
