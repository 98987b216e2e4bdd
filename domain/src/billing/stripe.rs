//! Stripe through async-stripe (being written).

use super::{AccountRef, Billing, Charge, ChargeResult, ChangeSubscription, CloseAccount, OpenAccount, ProviderHealth};
use crate::config::StripeSettings;
use crate::external::ExternalError;
use async_trait::async_trait;

pub struct StripeBilling {}

impl StripeBilling {
    pub fn new(_settings: &StripeSettings) -> anyhow::Result<Self> {
        anyhow::bail!("Stripe billing is not built yet")
    }
}

#[async_trait]
impl Billing for StripeBilling {
    fn provider(&self) -> &'static str {
        "stripe"
    }
    async fn open_account(&self, _request: OpenAccount<'_>) -> Result<AccountRef, ExternalError> {
        Err(ExternalError::Permanent("not built".into()))
    }
    async fn change_subscription(&self, _request: ChangeSubscription<'_>) -> Result<(), ExternalError> {
        Err(ExternalError::Permanent("not built".into()))
    }
    async fn close_account(&self, _request: CloseAccount<'_>) -> Result<(), ExternalError> {
        Err(ExternalError::Permanent("not built".into()))
    }
    async fn charge(&self, _request: Charge<'_>) -> Result<ChargeResult, ExternalError> {
        Err(ExternalError::Permanent("not built".into()))
    }
    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Down
    }
}
