//! Threshold events when the counters do not live on `REDIS_URL` (another Redis, or a Redis
//! Cluster): the script can't reach the events stream, so it queues each event in the tenant's
//! `events` list (in the tenant's slot, atomically with the decision that crossed the threshold)
//! and returns it; the engine adds it to the stream on `REDIS_URL` right away and then takes it
//! off the list. An event whose relay failed (Redis unreachable, the process died) stays queued
//! and the next rollup relays it — so none is lost. It may then reach the stream twice (if the
//! process died between the two steps); consumers dedupe on its `id`, as the alert mailer does.

use super::engine::{QuotaEngine, QuotaError, within};
use crate::TenantId;
use chrono::Utc;
use serde::Deserialize;

/// Queued events younger than this are left to the call that queued them.
const SWEEP_AFTER_SECS: i64 = 30;
/// Events relayed per tenant per sweep.
const SWEEP_BATCH: isize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Queued {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    tenant_id: String,
    occurred_at: String,
    data: String,
    #[serde(default)]
    at: i64,
}

impl QuotaEngine {
    /// Adds events the script queued to the stream, then takes them off the tenant's list.
    /// Failures are logged: the events stay queued for the next rollup.
    pub(super) async fn relay(&self, tenant: TenantId, events: &[String]) {
        if let Err(err) = self.try_relay(tenant, events).await {
            tracing::warn!(%tenant, error = %err, "quota threshold events not relayed yet; the next rollup will");
        }
    }

    async fn try_relay(&self, tenant: TenantId, events: &[String]) -> Result<(), QuotaError> {
        let Some(relay) = &self.relay else { return Ok(()) };
        let mut stream = relay.clone();
        let mut quota = self.conn();
        let list = self.keys.pending_events(tenant);
        for raw in events {
            match serde_json::from_str::<Queued>(raw) {
                Ok(e) => {
                    let mut add = redis::cmd("XADD");
                    add.arg(&self.stream)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(self.stream_maxlen)
                        .arg("*")
                        .arg("id")
                        .arg(&e.id)
                        .arg("type")
                        .arg(&e.kind)
                        .arg("tenantId")
                        .arg(&e.tenant_id)
                        .arg("occurredAt")
                        .arg(&e.occurred_at)
                        .arg("data")
                        .arg(&e.data);
                    within(self.timeout, add.query_async::<String>(&mut stream)).await?;
                }
                Err(err) => tracing::error!(%tenant, error = %err, "a queued quota event is malformed; dropped"),
            }
            let mut remove = redis::cmd("LREM");
            remove.arg(&list).arg(1).arg(raw);
            within(self.timeout, remove.query_async::<i64>(&mut quota)).await?;
        }
        Ok(())
    }

    /// Relays the tenant's events whose own relay did not happen (older than 30 s); returns how
    /// many. Called by the rollup for every tenant; nothing to do where the script writes to the
    /// stream itself.
    pub async fn relay_pending(&self, tenant: TenantId) -> Result<usize, QuotaError> {
        if self.relay.is_none() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let mut read = redis::cmd("LRANGE");
        read.arg(self.keys.pending_events(tenant)).arg(0).arg(SWEEP_BATCH - 1);
        let queued = within(self.timeout, read.query_async::<Vec<String>>(&mut conn)).await?;
        let cutoff = Utc::now().timestamp() - SWEEP_AFTER_SECS;
        let due: Vec<String> = queued
            .into_iter()
            .filter(|raw| serde_json::from_str::<Queued>(raw).map_or(true, |e| e.at <= cutoff))
            .collect();
        if !due.is_empty() {
            tracing::warn!(%tenant, events = due.len(), "relaying quota threshold events left queued");
            self.try_relay(tenant, &due).await?;
        }
        Ok(due.len())
    }
}
