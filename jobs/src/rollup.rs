//! `quota_rollup`: copies the Redis counters into PostgreSQL (see
//! `tenant_domain::quota::rollup`). Enqueued once per `ROLLUP_INTERVAL_SECS` tick by the
//! workers' scheduler (a unique schedule key makes the tick's job exist once, however many
//! workers run), and idempotent, so a retried or repeated rollup changes nothing.

use crate::context::JobContext;
use crate::engine::{self, Saga, StepError};
use crate::kinds::JobKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;
use tenant_domain::jobs::{Job, StepRecord};
use tenant_domain::quota::rollup;

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum RollupStep {
        Rollup => "rollup",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupPayload {
    /// The tick: windows and the history bucket are those containing this moment.
    pub at: DateTime<Utc>,
}

pub struct Rollup {
    at: DateTime<Utc>,
    report: Mutex<Option<rollup::RollupReport>>,
}

impl Saga for Rollup {
    const KIND: JobKind = JobKind::QuotaRollup;
    type Step = RollupStep;

    async fn load(_ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: RollupPayload = engine::payload(job)?;
        Ok(Rollup { at: payload.at, report: Mutex::new(None) })
    }

    async fn run(&self, ctx: &JobContext, _step: RollupStep) -> Result<(), StepError> {
        let report = rollup::run(&ctx.db, &ctx.quota, self.at).await?;
        tracing::info!(
            tenants = report.tenants,
            rows = report.rows,
            restored = report.states_restored,
            "quota rollup done"
        );
        if let Ok(mut slot) = self.report.lock() {
            *slot = Some(report);
        }
        Ok(())
    }

    async fn compensate(&self, _ctx: &JobContext, _step: RollupStep) -> Result<(), StepError> {
        Ok(())
    }

    async fn failed(&self, _ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        tracing::error!(at = %self.at, %reason, "quota rollup failed");
        Ok(())
    }

    fn result(&self) -> Value {
        let report = self.report.lock().ok().and_then(|r| r.clone()).unwrap_or_default();
        json!({ "at": self.at, "tenants": report.tenants, "rows": report.rows, "statesRestored": report.states_restored })
    }
}
