//! `deliver_event`: posts one event to the platform's audit or notification service (URLs from
//! `AUDIT_SERVICE_URL` / `NOTIFICATION_SERVICE_URL`; nothing is enqueued when unset), with
//! `X-Service-Token`, and the event id as `Idempotency-Key` so the receiver can drop repeats.
//! Network errors, timeouts, 408, 429 and 5xx are retried with the engine's exponential backoff
//! (1 s, 2 s, 4 s… by default); any other 4xx is permanent.

use crate::context::JobContext;
use crate::engine::{self, Saga, StepError};
use crate::kinds::JobKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenant_domain::jobs::{Job, StepRecord};
use uuid::Uuid;

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum DeliverStep {
        Deliver => "deliver",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Audit,
    Notification,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverPayload {
    pub event_id: Uuid,
    pub target: Target,
}

pub struct Deliver {
    event: Value,
    event_id: Uuid,
    target: Target,
    url: String,
}

/// The event as published: `{id, type, tenantId, occurredAt, data}`.
pub fn event_json(
    id: Uuid,
    tenant: Option<Uuid>,
    event_type: &str,
    occurred_at: chrono::DateTime<chrono::Utc>,
    payload: &Value,
) -> Value {
    json!({
        "id": id,
        "type": event_type,
        "tenantId": tenant,
        "occurredAt": occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": payload.get("data").cloned().unwrap_or(Value::Null),
    })
}

impl Saga for Deliver {
    const KIND: JobKind = JobKind::DeliverEvent;
    type Step = DeliverStep;

    async fn load(ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: DeliverPayload = engine::payload(job)?;
        let row: Option<(Option<Uuid>, String, Value, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("select tenant_id, event_type, payload, occurred_at from outbox_events where id = $1")
                .bind(payload.event_id)
                .fetch_optional(&ctx.db)
                .await?;
        let (tenant, event_type, body, occurred_at) =
            row.ok_or_else(|| StepError::Permanent(format!("event {} does not exist", payload.event_id)))?;
        let url = match payload.target {
            Target::Audit => ctx.config.outbound.audit_url.clone(),
            Target::Notification => ctx.config.outbound.notification_url.clone(),
        }
        .ok_or_else(|| StepError::Permanent(format!("no URL is configured for the {:?} service", payload.target)))?;
        Ok(Deliver {
            event: event_json(payload.event_id, tenant, &event_type, occurred_at, &body),
            event_id: payload.event_id,
            target: payload.target,
            url,
        })
    }

    async fn run(&self, ctx: &JobContext, _step: DeliverStep) -> Result<(), StepError> {
        let response = ctx
            .http
            .post(&self.url)
            .header("x-service-token", ctx.config.outbound.token.expose())
            .header("x-service-name", ctx.config.service_name.as_str())
            .header("idempotency-key", self.event_id.to_string())
            .json(&self.event)
            .send()
            .await
            .map_err(|e| StepError::Transient(format!("{:?} service unreachable: {e}", self.target)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(StepError::Transient(format!("{:?} service answered {status}", self.target)))
        } else {
            Err(StepError::Permanent(format!("{:?} service refused the event: {status}", self.target)))
        }
    }

    async fn compensate(&self, _ctx: &JobContext, _step: DeliverStep) -> Result<(), StepError> {
        Ok(())
    }

    async fn failed(&self, _ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        tracing::error!(event = %self.event_id, target = ?self.target, %reason, "event not delivered");
        Ok(())
    }

    fn result(&self) -> Value {
        json!({ "eventId": self.event_id, "target": self.target })
    }
}
