//! `POST /api/v1/billing/stripe/webhook`: Stripe's event deliveries. Authenticated by the
//! `Stripe-Signature` over the raw body (no token), verified and applied by
//! [`tenant_domain::billing::webhook`]. Any answer but 2xx makes Stripe retry, so a duplicate, an
//! event for a customer we don't know and a type we don't act on are all `200`; a database that is
//! down is `503`. Neither the body, the signature nor the secret is ever logged.

use super::error::{ApiError, Result};
use super::extract::RequestId;
use super::response::{self, Envelope};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tenant_domain::Error;
use tenant_domain::billing::webhook::{self, Outcome, Route, VerifyError};
use tenant_domain::db::TenantTx;

/// What became of a delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    /// Always `true`.
    pub received: bool,
    /// The event was applied before; nothing changed.
    pub duplicate: bool,
    /// The event changed something (`false` for a duplicate, a type not acted on, an unknown
    /// customer, or an event older than what it would overwrite).
    pub applied: bool,
}

#[utoipa::path(post, path = "/api/v1/billing/stripe/webhook", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "`t={unix time},v1={HMAC-SHA256 hex}` over `{t}.{raw body}`")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, as Stripe signed it"),
    responses((status = 200, description = "Received (applied, or acknowledged without effect)", body = inline(Envelope<WebhookReceipt>)),
              (status = 400, description = "`WEBHOOK_SIGNATURE_INVALID` (missing or bad signature, timestamp outside 300 s) or `VALIDATION_FAILED` (a signed body that is not an event)", body = super::error::ErrorBody),
              (status = 404, description = "`WEBHOOKS_NOT_CONFIGURED`: `STRIPE_WEBHOOK_SECRET` is not set", body = super::error::ErrorBody),
              (status = 413, description = "`PAYLOAD_TOO_LARGE`: the body exceeds the limit", body = super::error::ErrorBody),
              (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: the database or Redis is down (Stripe retries)", body = super::error::ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    request_id: RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let settings = &state.config.billing;
    let Some(secret) = &settings.webhook_secret else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "WEBHOOKS_NOT_CONFIGURED",
            "Stripe webhooks are not configured",
        ));
    };
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).ok_or_else(signature_invalid)?;
    let event = webhook::verify(&body, signature, secret.expose(), settings.webhook_tolerance, chrono::Utc::now())
        .map_err(|err| match err {
            VerifyError::Signature | VerifyError::Timestamp => {
                ApiError::new(StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID", err.to_string())
            }
            VerifyError::NotAnEvent => ApiError::validation(err.to_string()),
        })?;

    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let outcome = match webhook::route(&mut tx, &event).await? {
        Route::Tenant(tenant) => {
            let mut tx = TenantTx::enter(tx, tenant).await?;
            let outcome = webhook::apply(&mut tx, &event, request_id.0.as_deref()).await?;
            if outcome.reactivated.is_some() {
                super::quotas::commit_and_mirror(&state, tx).await?;
            } else {
                tx.commit().await?;
            }
            outcome
        }
        route => {
            tx.commit().await.map_err(Error::from)?;
            Outcome::skipped(&event, matches!(route, Route::Duplicate))
        }
    };
    outcome.committed();
    Ok(response::ok(WebhookReceipt { received: true, duplicate: outcome.duplicate, applied: outcome.applied }))
}

fn signature_invalid() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID", VerifyError::Signature.to_string())
}
