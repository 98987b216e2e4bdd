//! Job rows: the source of truth for every asynchronous job (Redis only carries delivery).
//!
//! A worker *claims* a row before it runs anything: the claim is a lease (`lease_owner`,
//! `lease_expires_at`) that it renews while it works. Every write a worker makes to the row is
//! guarded by `lease_owner = me`, so a worker that lost its lease (paused, partitioned) can't
//! overwrite the progress of the one that took over. apalis-redis delivers at least once; the
//! lease is what keeps two deliveries of one job from running at the same time.

use crate::db::TenantTx;
use crate::{JobId, Result, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "job_status_enum", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Compensated,
}

impl JobStatus {
    /// Succeeded, failed or compensated: nothing will change the job any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Compensated)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Compensated,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub status: JobStatus,
    pub tenant_id: Option<TenantId>,
    pub attempts: i32,
    pub max_attempts: i32,
    #[schema(value_type = Vec<StepRecord>)]
    pub steps: Json<Vec<StepRecord>>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// `{message, step?}` when the job failed or was compensated (or, while retrying, the last
    /// transient error).
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub payload: Value,
    #[serde(skip)]
    pub phase: String,
    /// Deliveries that claimed the job (attempts and compensation runs alike).
    #[serde(skip)]
    pub claims: i32,
}

const COLUMNS: &str = "id, kind, status, tenant_id, attempts, max_attempts, steps, result, error, \
    next_attempt_at, created_at, updated_at, finished_at, payload, phase, claims";

pub struct NewJob<'a> {
    pub id: JobId,
    pub kind: &'a str,
    pub tenant: Option<TenantId>,
    pub payload: Value,
    pub steps: &'a [&'a str],
    pub max_attempts: i32,
    pub delivery_id: String,
}

fn pending_steps(names: &[&str]) -> Vec<StepRecord> {
    names
        .iter()
        .map(|name| StepRecord {
            name: (*name).to_owned(),
            status: StepStatus::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        })
        .collect()
}

pub async fn insert(db: impl PgExecutor<'_>, new: NewJob<'_>) -> Result<Job> {
    let steps = pending_steps(new.steps);
    Ok(sqlx::query_as(&format!(
        "insert into jobs (id, kind, tenant_id, payload, steps, max_attempts, delivery_id, dispatched_at) \
         values ($1, $2, $3, $4, $5, $6, $7, now()) returning {COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.kind)
    .bind(new.tenant)
    .bind(new.payload)
    .bind(Json(steps))
    .bind(new.max_attempts)
    .bind(new.delivery_id)
    .fetch_one(db)
    .await?)
}

/// Inserts a periodic job once per `schedule_key`; `None` when another worker already did.
pub async fn insert_scheduled(db: impl PgExecutor<'_>, new: NewJob<'_>, schedule_key: &str) -> Result<Option<Job>> {
    let steps = pending_steps(new.steps);
    Ok(sqlx::query_as(&format!(
        "insert into jobs (id, kind, tenant_id, payload, steps, max_attempts, delivery_id, dispatched_at, schedule_key) \
         values ($1, $2, $3, $4, $5, $6, $7, now(), $8) on conflict (schedule_key) do nothing returning {COLUMNS}"
    ))
    .bind(new.id)
    .bind(new.kind)
    .bind(new.tenant)
    .bind(new.payload)
    .bind(Json(steps))
    .bind(new.max_attempts)
    .bind(new.delivery_id)
    .bind(schedule_key)
    .fetch_optional(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, id: JobId) -> Result<Job> {
    sqlx::query_as(&format!("select {COLUMNS} from jobs where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(crate::Error::NotFound { code: "JOB_NOT_FOUND", what: "job" })
}

/// One page of the tenant's jobs, newest first, read as the tenant.
pub async fn list_for_tenant(tx: &mut TenantTx, page: u32, limit: u32) -> Result<(Vec<Job>, i64)> {
    let tenant = tx.tenant();
    let total: i64 =
        sqlx::query_scalar("select count(*) from jobs where tenant_id = $1").bind(tenant).fetch_one(&mut **tx).await?;
    let rows = sqlx::query_as(&format!(
        "select {COLUMNS} from jobs where tenant_id = $1 order by created_at desc, id desc limit $2 offset $3"
    ))
    .bind(tenant)
    .bind(i64::from(limit))
    .bind(i64::from(page.saturating_sub(1)) * i64::from(limit))
    .fetch_all(&mut **tx)
    .await?;
    Ok((rows, total))
}

/// Records that a delivery was pushed to Redis.
pub async fn record_dispatch(db: impl PgExecutor<'_>, id: JobId, delivery_id: &str) -> Result<()> {
    sqlx::query("update jobs set delivery_id = $2, dispatched_at = now() where id = $1")
        .bind(id)
        .bind(delivery_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Takes the lease on a job that is due (queued or retrying). `None`: finished, not due yet, or
/// leased (a job whose holder died waits for the reconciler, which makes it due again after its
/// backoff).
///
/// The attempt cap is enforced here, whatever ended the earlier attempts: a claim made when every
/// attempt is used up (the last one's worker died) does not start another attempt but moves the
/// job to compensation, with `ATTEMPTS_EXHAUSTED` as its error.
pub async fn claim(db: &PgPool, id: JobId, owner: &str, lease: Duration) -> Result<Option<Job>> {
    Ok(sqlx::query_as(&format!(
        "update jobs set status = 'running', lease_owner = $2, lease_expires_at = now() + $3, \
             claims = claims + 1, \
             attempts = case when attempts < max_attempts then attempts + 1 else attempts end, \
             phase = case when attempts >= max_attempts then 'compensating' else phase end, \
             error = case when attempts >= max_attempts and phase = 'forward' then jsonb_build_object( \
                 'code', 'ATTEMPTS_EXHAUSTED', \
                 'message', 'gave up after ' || attempts || ' attempts: the worker running it stopped each time') \
                 else error end, \
             updated_at = now() \
         where id = $1 and status in ('queued', 'retrying') and next_attempt_at <= now() \
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(owner)
    .bind(lease)
    .fetch_optional(db)
    .await?)
}

/// How long until an open job is due; `None` if it is due now, leased, or finished.
pub async fn due_in(db: &PgPool, id: JobId) -> Result<Option<Duration>> {
    let secs: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from next_attempt_at - now())::float8 from jobs \
         where id = $1 and status in ('queued', 'retrying') and next_attempt_at > now()",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Extends the lease; false when it was lost.
pub async fn renew(db: &PgPool, id: JobId, owner: &str, lease: Duration) -> Result<bool> {
    let done = sqlx::query(
        "update jobs set lease_expires_at = now() + $3 where id = $1 and lease_owner = $2 and status = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(lease)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Announces committed job changes to the API replicas streaming them (`GET
/// /api/v1/jobs/{id}/events`): a Redis `PUBLISH` of the job id on `<prefix>job-progress` after
/// each change. Best effort by design: a stream that misses one re-reads its job within seconds
/// anyway. (A PostgreSQL `NOTIFY` trigger did this first; it serialized the commits of every
/// job update and cost provisioning 10–20 % of its throughput in the benchmark.)
#[derive(Clone)]
pub struct ProgressChannel {
    redis: redis::aio::ConnectionManager,
    channel: String,
}

impl ProgressChannel {
    pub fn new(redis: redis::aio::ConnectionManager, key_prefix: &str) -> Self {
        Self { redis, channel: Self::name(key_prefix) }
    }

    pub fn name(key_prefix: &str) -> String {
        format!("{key_prefix}job-progress")
    }

    pub async fn announce(&self, id: JobId) {
        let mut conn = self.redis.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(id.to_string());
        match tokio::time::timeout(Duration::from_secs(1), publish.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(job = %id, error = %err, "job progress not announced"),
            Err(_) => tracing::debug!(job = %id, "job progress not announced: Redis timed out"),
        }
    }
}

/// The guarded writes of the lease holder. Each returns false when the lease was lost; each
/// change made is announced on the progress channel.
pub struct Lease<'a> {
    pub db: &'a PgPool,
    pub id: JobId,
    pub owner: &'a str,
    pub progress: &'a ProgressChannel,
}

impl Lease<'_> {
    /// `done` (one row changed), announced.
    async fn announced(&self, done: sqlx::postgres::PgQueryResult) -> Result<bool> {
        let changed = done.rows_affected() == 1;
        if changed {
            self.progress.announce(self.id).await;
        }
        Ok(changed)
    }

    pub async fn step_started(&self, index: usize) -> Result<bool> {
        self.update_step(index, StepStatus::Running, "startedAt", None, false).await
    }

    /// Records the end of a step. `Succeeded` clears an earlier attempt's error, `Failed` records
    /// `error`, and `Compensated` keeps the error that made the saga compensate.
    pub async fn step_finished(&self, index: usize, status: StepStatus, error: Option<&str>) -> Result<bool> {
        let touch_error = status != StepStatus::Compensated;
        self.update_step(index, status, "finishedAt", error, touch_error).await
    }

    async fn update_step(
        &self,
        index: usize,
        status: StepStatus,
        stamp: &str,
        error: Option<&str>,
        touch_error: bool,
    ) -> Result<bool> {
        let status = serde_json::to_value(status).unwrap_or_default();
        let done = sqlx::query(
            "update jobs set steps = jsonb_set(steps, array[$3::text], \
                 (steps -> $3::int) || jsonb_build_object('status', $4::text, $6::text, now()) \
                     || case when $7 then jsonb_build_object('error', $5::text) else '{}'::jsonb end), \
                 updated_at = now() \
             where id = $1 and lease_owner = $2",
        )
        .bind(self.id)
        .bind(self.owner)
        .bind(i32::try_from(index).unwrap_or(i32::MAX))
        .bind(status.as_str())
        .bind(error)
        .bind(stamp)
        .bind(touch_error)
        .execute(self.db)
        .await?;
        self.announced(done).await
    }

    /// Switches the saga to compensation, recording why.
    pub async fn start_compensating(&self, error: &Value) -> Result<bool> {
        let done = sqlx::query(
            "update jobs set phase = 'compensating', error = $3, updated_at = now() where id = $1 and lease_owner = $2",
        )
        .bind(self.id)
        .bind(self.owner)
        .bind(error)
        .execute(self.db)
        .await?;
        self.announced(done).await
    }

    /// Gives the job back for another attempt at `delay` from now, under a new delivery id.
    pub async fn retry_later(&self, delay: Duration, error: &Value) -> Result<bool> {
        let done = sqlx::query(
            "update jobs set status = 'retrying', lease_owner = null, lease_expires_at = null, \
                 next_attempt_at = now() + $3, error = $4, dispatched_at = now(), updated_at = now() \
             where id = $1 and lease_owner = $2",
        )
        .bind(self.id)
        .bind(self.owner)
        .bind(delay)
        .bind(error)
        .execute(self.db)
        .await?;
        self.announced(done).await
    }

    /// Gives the job back at once (graceful shutdown), counting neither the attempt nor the claim.
    pub async fn release(&self) -> Result<bool> {
        let done = sqlx::query(
            "update jobs set status = 'retrying', lease_owner = null, lease_expires_at = null, \
                 next_attempt_at = now(), attempts = greatest(attempts - 1, 0), claims = greatest(claims - 1, 0), \
                 updated_at = now() \
             where id = $1 and lease_owner = $2",
        )
        .bind(self.id)
        .bind(self.owner)
        .execute(self.db)
        .await?;
        self.announced(done).await
    }

    pub async fn finish(&self, status: JobStatus, result: Option<&Value>, error: Option<&Value>) -> Result<bool> {
        let done = sqlx::query(
            "update jobs set status = $3, result = coalesce($4, result), error = coalesce($5, error), \
                 lease_owner = null, lease_expires_at = null, finished_at = now(), updated_at = now() \
             where id = $1 and lease_owner = $2",
        )
        .bind(self.id)
        .bind(self.owner)
        .bind(status)
        .bind(result)
        .bind(error)
        .execute(self.db)
        .await?;
        self.announced(done).await
    }
}

/// A job the reconciler should deliver again.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Undelivered {
    pub id: JobId,
    pub kind: String,
    pub delivery_id: Option<String>,
}

/// Jobs stuck `running` whose lease ran out (their worker died): back to `retrying`, due after
/// the job's backoff (`base × 2^(attempts−1)`, at most `max`, with jitter: 50–100 % of it), not at
/// once — a step that kills its worker must not be re-run in a tight loop.
pub async fn expire_leases(db: impl PgExecutor<'_>, base: Duration, max: Duration) -> Result<Vec<Undelivered>> {
    Ok(sqlx::query_as(
        "update jobs set status = 'retrying', lease_owner = null, lease_expires_at = null, \
             next_attempt_at = now() + make_interval(secs => \
                 least($1 * power(2, greatest(attempts - 1, 0)), $2) * (0.5 + random() / 2)), \
             updated_at = now() \
         where status = 'running' and lease_expires_at < now() \
         returning id, kind, delivery_id",
    )
    .bind(base.as_secs_f64())
    .bind(max.as_secs_f64())
    .fetch_all(db)
    .await?)
}

/// Due jobs whose latest delivery is older than `stale` (the caller checks Redis still holds it).
pub async fn due_and_stale(db: impl PgExecutor<'_>, stale: Duration, limit: i64) -> Result<Vec<Undelivered>> {
    Ok(sqlx::query_as(
        "select id, kind, delivery_id from jobs \
         where status in ('queued', 'retrying') and next_attempt_at <= now() \
           and coalesce(dispatched_at, created_at) < now() - $1 \
         order by next_attempt_at limit $2",
    )
    .bind(stale)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Up to `limit` jobs that are due (queued or retrying, `next_attempt_at` passed) and have had no
/// delivery since they became due — retries and backoffs, which are never pushed to Redis ahead
/// of time — each given a fresh delivery id, in one short transaction (rows another dispatcher
/// holds are skipped). The caller pushes them.
pub async fn dispatch_due(db: &PgPool, limit: i64) -> Result<Vec<Undelivered>> {
    let mut tx = db.begin().await?;
    let due: Vec<(JobId, String)> = sqlx::query_as(
        "select id, kind from jobs where status in ('queued', 'retrying') and next_attempt_at <= now() \
             and (dispatched_at is null or dispatched_at < next_attempt_at) \
         order by next_attempt_at limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = due.iter().map(|(id, _)| *id).collect();
    let deliveries: Vec<String> = due.iter().map(|_| ulid::Ulid::generate().to_string()).collect();
    sqlx::query(
        "update jobs set delivery_id = d.delivery, dispatched_at = now() \
         from unnest($1::uuid[], $2::text[]) as d(id, delivery) where jobs.id = d.id",
    )
    .bind(&ids)
    .bind(&deliveries)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(due
        .into_iter()
        .zip(deliveries)
        .map(|((id, kind), delivery)| Undelivered { id, kind, delivery_id: Some(delivery) })
        .collect())
}

/// Number of jobs not finished yet, by status (for metrics and health).
pub async fn open_counts(db: impl PgExecutor<'_>) -> Result<Vec<(JobStatus, i64)>> {
    Ok(sqlx::query_as(
        "select status, count(*) from jobs where status in ('queued', 'running', 'retrying') group by status",
    )
    .fetch_all(db)
    .await?)
}
