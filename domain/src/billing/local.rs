//! Local billing (no `STRIPE_SECRET_KEY`): the provider's side lives in PostgreSQL, in
//! `local_billing_requests` — every request by its idempotency key with the answer it got, as
//! Stripe keeps its idempotency records. A repeated key answers the first answer and creates
//! nothing; customer and subscription ids are fresh per request (like Stripe's), so a step that
//! forgot its key would visibly create a second customer. Payments are recorded as offline
//! payments and always succeed.

use super::{
    AccountRef, Billing, ChangeSubscription, Charge, ChargeResult, ChargeStatus, CloseAccount, OpenAccount,
    ProviderHealth,
};
use crate::external::ExternalError;
use crate::money::Currency;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;

pub struct LocalBilling {
    db: PgPool,
}

impl LocalBilling {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Runs `make` once per `key`: the first answer is stored and every repeat gets it back.
    async fn once<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        operation: &str,
        make: impl FnOnce() -> T,
    ) -> Result<T, ExternalError> {
        let fresh = make();
        let value =
            serde_json::to_value(&fresh).map_err(|e| ExternalError::Permanent(format!("local billing: {e}")))?;
        let stored: (String, Value) = sqlx::query_as(
            "with ins as ( \
                 insert into local_billing_requests (idempotency_key, operation, response) values ($1, $2, $3) \
                 on conflict (idempotency_key) do nothing returning operation, response) \
             select operation, response from ins \
             union all select operation, response from local_billing_requests where idempotency_key = $1 \
             limit 1",
        )
        .bind(key)
        .bind(operation)
        .bind(&value)
        .fetch_one(&self.db)
        .await
        .map_err(db_error)?;
        if stored.0 != operation {
            // Stripe answers 400 to a key reused for another request.
            return Err(ExternalError::Permanent(format!(
                "idempotency key {key} was used for {} before, not {operation}",
                stored.0
            )));
        }
        serde_json::from_value(stored.1).map_err(|e| ExternalError::Permanent(format!("local billing: {e}")))
    }
}

fn db_error(err: sqlx::Error) -> ExternalError {
    tracing::warn!(error = %err, "local billing store failed");
    ExternalError::Transient("the local billing store is unavailable".into())
}

fn local_id(prefix: &str) -> String {
    format!("{prefix}_local_{}", uuid::Uuid::now_v7().simple())
}

#[async_trait]
impl Billing for LocalBilling {
    fn provider(&self) -> &'static str {
        "local"
    }

    async fn open_account(&self, request: OpenAccount<'_>) -> Result<AccountRef, ExternalError> {
        // The same refusal Stripe gives a price in a currency it does not support.
        Currency::parse(&request.plan.currency)
            .map_err(|e| ExternalError::Permanent(format!("plan {} is priced in an {e}", request.plan.slug)))?;
        let existing = request.existing_customer.map(str::to_owned);
        self.once(request.idempotency_key, "open_account", move || AccountRef {
            provider: "local".into(),
            customer_ref: existing.unwrap_or_else(|| local_id("cus")),
            subscription_ref: Some(local_id("sub")),
        })
        .await
    }

    async fn change_subscription(&self, request: ChangeSubscription<'_>) -> Result<(), ExternalError> {
        let answer = json!({
            "subscription": request.subscription_ref,
            "plan": request.plan.id,
            "interval": request.interval,
            "prorationDate": request.proration_date,
        });
        self.once(request.idempotency_key, "change_subscription", move || answer).await?;
        Ok(())
    }

    async fn close_account(&self, request: CloseAccount<'_>) -> Result<(), ExternalError> {
        let answer = json!({ "subscription": request.subscription_ref, "status": "canceled" });
        self.once(request.idempotency_key, "close_account", move || answer).await?;
        Ok(())
    }

    async fn charge(&self, request: Charge<'_>) -> Result<ChargeResult, ExternalError> {
        self.once(request.idempotency_key, "charge", || ChargeResult {
            provider_ref: local_id("pay"),
            status: ChargeStatus::Succeeded,
            card: None,
        })
        .await
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth::NotConfigured
    }
}
