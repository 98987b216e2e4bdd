//! Billing accounts behind a small trait, so the provisioning and deletion sagas don't care
//! whether Stripe is configured. [`LocalBilling`] keeps the account in PostgreSQL (local-billing
//! mode, used when `STRIPE_SECRET_KEY` is unset).
//!
//! Every call carries an idempotency key derived from job id + step, which a Stripe client sends
//! as `Idempotency-Key`; the local implementation is idempotent by construction (one account row
//! per tenant).

use crate::external::ExternalError;
use crate::{PlanId, TenantId};
use async_trait::async_trait;
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct OpenAccount<'a> {
    pub tenant: TenantId,
    pub plan: PlanId,
    pub email: Option<&'a str>,
    pub idempotency_key: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    pub provider: &'static str,
    pub customer_ref: String,
    pub subscription_ref: Option<String>,
}

#[async_trait]
pub trait Billing: Send + Sync {
    /// Opens (or reopens) the tenant's account and subscribes it to its plan.
    async fn open_account(&self, request: OpenAccount<'_>) -> Result<AccountRef, ExternalError>;
    /// Cancels the subscription; the account stays for the record.
    async fn close_account(&self, tenant: TenantId, idempotency_key: &str) -> Result<(), ExternalError>;
}

/// Currencies local billing can invoice in.
pub const SUPPORTED_CURRENCIES: &[&str] = &["usd", "eur", "gbp", "jpy", "cny", "cad", "aud", "chf"];

pub struct LocalBilling {
    db: PgPool,
}

impl LocalBilling {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }
}

fn db_error(err: sqlx::Error) -> ExternalError {
    ExternalError::Transient(format!("billing store: {err}"))
}

#[async_trait]
impl Billing for LocalBilling {
    async fn open_account(&self, request: OpenAccount<'_>) -> Result<AccountRef, ExternalError> {
        let plan: Option<(String, String, String)> =
            sqlx::query_as("select slug, trim(currency), price_monthly::text from subscription_plans where id = $1")
                .bind(request.plan)
                .fetch_optional(&self.db)
                .await
                .map_err(db_error)?;
        let Some((slug, currency, _price)) = plan else {
            return Err(ExternalError::Permanent(format!("plan {} does not exist", request.plan)));
        };
        if !SUPPORTED_CURRENCIES.contains(&currency.as_str()) {
            return Err(ExternalError::Permanent(format!(
                "plan {slug} is priced in unsupported currency {currency:?}"
            )));
        }
        let customer_ref = format!("local_cus_{}", request.tenant.0.simple());
        let subscription_ref = format!("local_sub_{}", request.tenant.0.simple());
        sqlx::query(
            "insert into billing_accounts (tenant_id, provider, customer_ref, subscription_ref, plan_id) \
             values ($1, 'local', $2, $3, $4) \
             on conflict (tenant_id) do update set status = 'active', canceled_at = null, \
                 plan_id = excluded.plan_id, updated_at = now()",
        )
        .bind(request.tenant)
        .bind(&customer_ref)
        .bind(&subscription_ref)
        .bind(request.plan)
        .execute(&self.db)
        .await
        .map_err(db_error)?;
        Ok(AccountRef { provider: "local", customer_ref, subscription_ref: Some(subscription_ref) })
    }

    async fn close_account(&self, tenant: TenantId, _idempotency_key: &str) -> Result<(), ExternalError> {
        sqlx::query(
            "update billing_accounts set status = 'canceled', canceled_at = coalesce(canceled_at, now()), \
                 updated_at = now() where tenant_id = $1",
        )
        .bind(tenant)
        .execute(&self.db)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
