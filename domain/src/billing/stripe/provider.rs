//! The `Billing` trait served by Stripe: the calls each operation makes (see the module note).

use super::*;

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
