//! `retention`: deletes finished bookkeeping past its age — stored `Idempotency-Key` answers,
//! published outbox events, finished periodic and delivery jobs, finished tenant jobs (each with
//! its own period, see `RetentionSettings`). Enqueued by the workers' scheduler every
//! `RETENTION_INTERVAL_SECS` (one job per tick across replicas). Deletes go in batches of
//! `RETENTION_BATCH` rows, each its own short statement, so none holds locks for long; a re-run
//! deletes what is left. Idempotent by nature.

use crate::context::JobContext;
use crate::engine::{self, Saga, StepError};
use crate::kinds::JobKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::Duration;
use tenant_domain::jobs::{Job, StepRecord};

crate::steps! {
    /// The steps, in order; their names are what the job row records.
    pub enum RetentionStep {
        Purge => "purge",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPayload {
    pub at: DateTime<Utc>,
}

pub struct Retention {
    at: DateTime<Utc>,
    removed: Mutex<Value>,
}

/// The periodic and delivery jobs, kept for `RETENTION_PERIODIC_JOBS_DAYS`.
const PERIODIC_KINDS: &[&str] = &["quota_rollup", "billing_cycle", "deliver_event", "retention"];

/// `(name, statement, uses $3)`: each statement deletes at most `$2` rows older than `$1` (jobs:
/// of the kinds in or not in `$3`) and is repeated until it deletes fewer.
fn purges() -> [(&'static str, &'static str, bool); 4] {
    [
        (
            "idempotencyKeys",
            "delete from idempotency_keys where ctid in \
             (select ctid from idempotency_keys where created_at < $1 limit $2)",
            false,
        ),
        (
            "publishedEvents",
            "delete from outbox_events where ctid in \
             (select ctid from outbox_events where published_at is not null and published_at < $1 limit $2)",
            false,
        ),
        (
            "periodicJobs",
            "delete from jobs where ctid in \
             (select ctid from jobs where kind = any($3) and finished_at < $1 \
                  and status in ('succeeded', 'failed', 'compensated') limit $2)",
            true,
        ),
        (
            "tenantJobs",
            "delete from jobs where ctid in \
             (select ctid from jobs where not (kind = any($3)) and finished_at < $1 \
                  and status in ('succeeded', 'failed', 'compensated') limit $2)",
            true,
        ),
    ]
}

impl Retention {
    fn older_than(&self, age: Duration) -> DateTime<Utc> {
        self.at - chrono::Duration::from_std(age).unwrap_or_default()
    }
}

impl Saga for Retention {
    const KIND: JobKind = JobKind::Retention;
    type Step = RetentionStep;

    async fn load(_ctx: &JobContext, job: &Job) -> Result<Self, StepError> {
        let payload: RetentionPayload = engine::payload(job)?;
        Ok(Retention { at: payload.at, removed: Mutex::new(json!({})) })
    }

    async fn run(&self, ctx: &JobContext, _step: RetentionStep) -> Result<(), StepError> {
        let settings = &ctx.config.retention;
        let ages = [settings.idempotency, settings.published_events, settings.periodic_jobs, settings.tenant_jobs];
        let kinds: Vec<String> = PERIODIC_KINDS.iter().map(|k| (*k).to_owned()).collect();
        let mut removed = serde_json::Map::new();
        for ((name, sql, by_kind), age) in purges().into_iter().zip(ages) {
            let cutoff = self.older_than(age);
            let mut total = 0u64;
            loop {
                let mut query = sqlx::query(sql).bind(cutoff).bind(settings.batch);
                if by_kind {
                    query = query.bind(&kinds);
                }
                let n = query.execute(&ctx.db).await?.rows_affected();
                total += n;
                if n < u64::try_from(settings.batch).unwrap_or(u64::MAX) || ctx.shutting_down() {
                    break;
                }
            }
            removed.insert(name.to_owned(), json!(total));
        }
        let removed = Value::Object(removed);
        tracing::info!(%removed, "retention done");
        if let Ok(mut slot) = self.removed.lock() {
            *slot = removed;
        }
        Ok(())
    }

    async fn compensate(&self, _ctx: &JobContext, _step: RetentionStep) -> Result<(), StepError> {
        Ok(())
    }

    async fn failed(&self, _ctx: &JobContext, reason: &str, _steps: &[StepRecord]) -> Result<(), StepError> {
        tracing::error!(%reason, "retention failed");
        Ok(())
    }

    fn result(&self) -> Value {
        let removed = self.removed.lock().map(|r| r.clone()).unwrap_or_default();
        json!({ "at": self.at, "removed": removed })
    }
}
