//! The saga engine: runs a job's steps in order, records each in the job row, resumes after the
//! last completed step, retries transient failures with exponential backoff, and compensates the
//! completed steps in reverse when a step fails for good (or attempts run out).
//!
//! Whether a failure is transient or permanent is decided where it happens, as a [`StepError`]
//! variant — infrastructure errors (database, Redis, network, 5xx) are transient, business
//! refusals (validation, 4xx) permanent — never by matching strings here.

use crate::context::JobContext;
use crate::kinds::JobKind;
use crate::queue::Queue;
use serde_json::{Value, json};
use std::future::Future;
use std::time::{Duration, Instant};
use tenant_domain::JobId;
use tenant_domain::external::ExternalError;
use tenant_domain::jobs::{self, Job, JobStatus, Lease, StepRecord, StepStatus};
use tokio::sync::watch;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
}

impl From<tenant_domain::Error> for StepError {
    fn from(err: tenant_domain::Error) -> Self {
        match err {
            tenant_domain::Error::Database(err) => err.into(),
            tenant_domain::Error::Redis(err) => err.into(),
            // Business outcomes: their messages are written for clients.
            err => StepError::Permanent(err.to_string()),
        }
    }
}

/// Store failures are classified once (`tenant_domain::error::db_is_transient`); what PostgreSQL
/// said is logged here, inside the job's span (job id, kind, attempt), and never written to the
/// job or the tenant, which clients read: they get a short message that names no internals.
impl From<sqlx::Error> for StepError {
    fn from(err: sqlx::Error) -> Self {
        if tenant_domain::error::db_is_transient(&err) {
            tracing::warn!(error = %err, "a job step met a database failure; will retry");
            StepError::Transient("the database is unavailable".into())
        } else {
            tracing::error!(error = %err, "the database refused a job step");
            StepError::Permanent("the database refused the change (details in the service log)".into())
        }
    }
}

impl From<redis::RedisError> for StepError {
    fn from(err: redis::RedisError) -> Self {
        tracing::warn!(error = %err, "a job step met a Redis failure; will retry");
        StepError::Transient("Redis is unavailable".into())
    }
}

impl From<ExternalError> for StepError {
    fn from(err: ExternalError) -> Self {
        match err {
            ExternalError::Transient(m) => StepError::Transient(m),
            ExternalError::Permanent(m) => StepError::Permanent(m),
        }
    }
}

impl From<tenant_domain::quota::engine::QuotaError> for StepError {
    fn from(err: tenant_domain::quota::engine::QuotaError) -> Self {
        match err {
            tenant_domain::quota::engine::QuotaError::Store(e) => e.into(),
            other => {
                tracing::warn!(error = %other, "a job step met a quota store failure; will retry");
                StepError::Transient("the quota store is unavailable".into())
            }
        }
    }
}

impl From<tenant_domain::mail::MailError> for StepError {
    fn from(err: tenant_domain::mail::MailError) -> Self {
        match err {
            tenant_domain::mail::MailError::External(e) => e.into(),
            tenant_domain::mail::MailError::Store(e) => e.into(),
        }
    }
}

/// Decodes a job's payload; a payload that doesn't decode can never run.
pub fn payload<T: serde::de::DeserializeOwned>(job: &Job) -> Result<T, StepError> {
    serde_json::from_value(job.payload.clone()).map_err(|e| StepError::Permanent(format!("bad payload: {e}")))
}

/// The idempotency key of one step's side effect (Stripe `Idempotency-Key`, sent-mail record).
pub fn step_key(job: JobId, step: &str) -> String {
    format!("job:{job}:{step}")
}

/// A saga's steps: an enum whose variants are the steps, in order (written with [`steps!`]).
pub trait Step: Copy + Send + Sync + 'static {
    const ALL: &'static [Self];
    /// The names, in the same order, as the job row records them.
    const NAMES: &'static [&'static str];
    fn name(self) -> &'static str;
}

/// Declares a saga's step enum: `steps! { pub enum ProvisionStep { CreateSchema => "create_schema", … } }`.
#[macro_export]
macro_rules! steps {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($variant),+ }

        impl $crate::engine::Step for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
    };
}

/// A saga: its steps (an enum), each with an idempotent `run` and `compensate`.
pub trait Saga: Sized + Send + Sync {
    const KIND: JobKind;

    /// The saga's steps (an enum, see [`steps!`](crate::steps)).
    type Step: Step;

    /// Loads what the steps need, from the job's payload and the database.
    fn load(ctx: &JobContext, job: &Job) -> impl Future<Output = Result<Self, StepError>> + Send;

    fn run(&self, ctx: &JobContext, step: Self::Step) -> impl Future<Output = Result<(), StepError>> + Send;

    fn compensate(&self, ctx: &JobContext, step: Self::Step) -> impl Future<Output = Result<(), StepError>> + Send;

    /// After compensation: record the failure where users see it (e.g. the tenant's status).
    fn failed(
        &self,
        ctx: &JobContext,
        reason: &str,
        steps: &[StepRecord],
    ) -> impl Future<Output = Result<(), StepError>> + Send;

    /// The job's result once every step succeeded.
    fn result(&self) -> Value;
}

/// How one delivery of a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    Compensated,
    /// Failed and could not be compensated (or could not even load); needs a human.
    Failed,
    /// A transient failure; another delivery is scheduled after the delay.
    Retrying(Duration),
    /// Not due, already finished, or leased by another worker: nothing done.
    NotClaimed,
    /// Another worker took the job over (our lease ran out); we stopped.
    LeaseLost,
    /// Shutting down: the job was handed back for another worker.
    Released,
}

/// Failures of the engine's own bookkeeping (the database is down): the delivery should be
/// retried as a whole.
#[derive(Debug, thiserror::Error)]
#[error("job bookkeeping failed: {0}")]
pub struct EngineError(#[from] tenant_domain::Error);

pub fn backoff(ctx: &JobContext, attempts: i32) -> Duration {
    let s = &ctx.config.jobs;
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    s.backoff_base.saturating_mul(2u32.saturating_pow(exp)).min(s.backoff_max)
}

/// Renews the lease in the background (every third of it). The lease counts as lost when another
/// worker holds the job, or when no renewal succeeded for two thirds of the lease (we can no
/// longer prove we hold it, and the reconciler may hand the job on once it runs out): the running
/// step is then cancelled — its future dropped — before another worker can take the job.
struct LeaseKeeper {
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    fn start(ctx: &JobContext, id: JobId) -> Self {
        let (tx, lost) = watch::channel(false);
        let (db, owner, lease) = (ctx.db.clone(), ctx.worker_id.clone(), ctx.config.jobs.lease);
        let task = tokio::spawn(
            async move {
                let mut renewed = Instant::now();
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match jobs::renew(&db, id, &owner, lease).await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => {
                            tracing::warn!("the job's lease was taken over");
                            let _ = tx.send(true);
                            return;
                        }
                        Err(err) if renewed.elapsed() >= lease * 2 / 3 => {
                            tracing::warn!(error = %err, "the job's lease could not be renewed in time");
                            let _ = tx.send(true);
                            return;
                        }
                        // A database hiccup: try again before the lease runs out.
                        Err(err) => tracing::warn!(error = %err, "could not renew the job lease"),
                    }
                }
            }
            .in_current_span(),
        );
        Self { lost, task }
    }

    fn lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (never, while it holds).
    async fn until_lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Runs `step` unless the lease is lost first, in which case `step` is dropped (cancelled).
    async fn guard<T>(&self, step: &str, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            result = work => Some(result),
            () = self.until_lost() => {
                tracing::warn!(step, "lease lost while the step ran: step cancelled, job left to its new holder");
                None
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A delivery that arrives early waits this long at most; beyond, it is dropped (the dispatcher
/// delivers the job again when it is due).
const MAX_EARLY_WAIT: Duration = Duration::from_secs(5);

/// Claims the job; a delivery that came shortly before the job is due waits for it.
async fn claim_when_due(ctx: &JobContext, id: JobId) -> Result<Option<Job>, EngineError> {
    if let Some(job) = jobs::claim(&ctx.db, id, &ctx.worker_id, ctx.config.jobs.lease).await? {
        return Ok(Some(job));
    }
    match jobs::due_in(&ctx.db, id).await? {
        Some(wait) if wait <= MAX_EARLY_WAIT => {
            tokio::time::sleep(wait).await;
            Ok(jobs::claim(&ctx.db, id, &ctx.worker_id, ctx.config.jobs.lease).await?)
        }
        // Due later: the workers' dispatcher delivers it then (`jobs::dispatch_due`).
        Some(_) => Ok(None),
        None => Ok(None),
    }
}

/// Runs one delivery of job `id` as saga `S`, in a span carrying the job's id, kind, tenant and
/// attempt (every line logged meanwhile — steps, store failures — carries them).
pub async fn run_saga<S: Saga>(ctx: &JobContext, id: JobId) -> Result<Outcome, EngineError> {
    let span = tracing::info_span!(
        "job",
        job_id = %id,
        kind = S::KIND.name(),
        tenant_id = tracing::field::Empty,
        attempt = tracing::field::Empty
    );
    deliver::<S>(ctx, id).instrument(span).await
}

async fn deliver<S: Saga>(ctx: &JobContext, id: JobId) -> Result<Outcome, EngineError> {
    let Some(job) = claim_when_due(ctx, id).await? else {
        return Ok(Outcome::NotClaimed);
    };
    let keeper = LeaseKeeper::start(ctx, id);
    ctx.progress.announce(id).await; // claimed: now running
    let lease = Lease { db: &ctx.db, id, owner: &ctx.worker_id, progress: &ctx.progress };
    let span = tracing::Span::current();
    span.record("attempt", job.attempts);
    if let Some(tenant) = job.tenant_id {
        span.record("tenant_id", tracing::field::display(tenant));
    }
    tracing::info!(claims = job.claims, phase = %job.phase, "job claimed");
    // A job whose deliveries keep dying (a step that crashes or hangs its worker) was moved to
    // compensation by the claim once its attempts ran out; if even that keeps dying, stop.
    if job.claims > 2 * job.max_attempts + 1 {
        let error = json!({
            "code": "ABANDONED",
            "message": format!("abandoned after {} deliveries died; needs an operator", job.claims - 1),
        });
        lease.finish(JobStatus::Failed, None, Some(&error)).await?;
        tracing::error!(claims = job.claims, "job abandoned: every delivery died");
        return Ok(Outcome::Failed);
    }

    let saga = match S::load(ctx, &job).await {
        Ok(saga) => saga,
        Err(StepError::Transient(message)) if job.attempts < job.max_attempts => {
            return retry(ctx, &lease, &job, None, &message).await;
        }
        Err(StepError::Transient(message) | StepError::Permanent(message)) => {
            let error = json!({ "code": "CANNOT_RUN", "message": message });
            lease.finish(JobStatus::Failed, None, Some(&error)).await?;
            tracing::error!(%message, "job cannot run");
            return Ok(Outcome::Failed);
        }
    };
    let mut steps = job.steps.0.clone();
    let steps_all = <S::Step as Step>::ALL;

    if job.phase != "compensating" {
        for (index, step) in steps_all.iter().copied().enumerate() {
            let name = step.name();
            if steps.get(index).is_some_and(|s| s.status == StepStatus::Succeeded) {
                continue;
            }
            if keeper.lost() {
                return Ok(Outcome::LeaseLost);
            }
            if ctx.shutting_down() {
                return release(ctx, S::KIND, &lease, &job).await;
            }
            if !lease.step_started(index).await? {
                return Ok(Outcome::LeaseLost);
            }
            tracing::info!(step = name, "step started");
            test_hooks::before_step(S::KIND, name);
            let Some(result) = keeper.guard(name, saga.run(ctx, step)).await else {
                return Ok(Outcome::LeaseLost);
            };
            match result {
                Ok(()) => {
                    if !lease.step_finished(index, StepStatus::Succeeded, None).await? {
                        return Ok(Outcome::LeaseLost);
                    }
                    set_status(&mut steps, index, StepStatus::Succeeded);
                    tracing::info!(step = name, "step succeeded");
                }
                Err(StepError::Transient(message)) if job.attempts < job.max_attempts => {
                    lease.step_finished(index, StepStatus::Failed, Some(&message)).await?;
                    return retry(ctx, &lease, &job, Some(name), &message).await;
                }
                Err(err) => {
                    let (code, message) = match err {
                        StepError::Transient(m) => {
                            ("ATTEMPTS_EXHAUSTED", format!("gave up after {} attempts: {m}", job.attempts))
                        }
                        StepError::Permanent(m) => ("STEP_FAILED", m),
                    };
                    tracing::warn!(step = name, %message, "step failed for good; compensating");
                    if !lease.step_finished(index, StepStatus::Failed, Some(&message)).await? {
                        return Ok(Outcome::LeaseLost);
                    }
                    set_status(&mut steps, index, StepStatus::Failed);
                    let error = json!({ "code": code, "message": message, "step": name });
                    if !lease.start_compensating(&error).await? {
                        return Ok(Outcome::LeaseLost);
                    }
                    return compensate(ctx, &saga, &lease, &keeper, &job, steps, &error).await;
                }
            }
        }
        let result = saga.result();
        lease.finish(JobStatus::Succeeded, Some(&result), None).await?;
        tracing::info!("job succeeded");
        return Ok(Outcome::Succeeded);
    }
    let error = job.error.clone().unwrap_or_else(|| json!({ "message": "compensating" }));
    compensate(ctx, &saga, &lease, &keeper, &job, steps, &error).await
}

fn set_status(steps: &mut [StepRecord], index: usize, status: StepStatus) {
    if let Some(step) = steps.get_mut(index) {
        step.status = status;
    }
}

async fn compensate<S: Saga>(
    ctx: &JobContext,
    saga: &S,
    lease: &Lease<'_>,
    keeper: &LeaseKeeper,
    job: &Job,
    mut steps: Vec<StepRecord>,
    error: &Value,
) -> Result<Outcome, EngineError> {
    let steps_all = <S::Step as Step>::ALL;
    for index in (0..steps_all.len()).rev() {
        let (step, name) = (steps_all[index], steps_all[index].name());
        let status = steps.get(index).map(|s| s.status);
        if !matches!(status, Some(StepStatus::Succeeded | StepStatus::Failed | StepStatus::Running)) {
            continue;
        }
        if keeper.lost() {
            return Ok(Outcome::LeaseLost);
        }
        let Some(result) = keeper.guard(name, saga.compensate(ctx, step)).await else {
            return Ok(Outcome::LeaseLost);
        };
        match result {
            Ok(()) => {
                if !lease.step_finished(index, StepStatus::Compensated, None).await? {
                    return Ok(Outcome::LeaseLost);
                }
                set_status(&mut steps, index, StepStatus::Compensated);
            }
            Err(StepError::Transient(message)) if job.attempts < job.max_attempts => {
                return retry(ctx, lease, job, Some(name), &format!("compensating: {message}")).await;
            }
            Err(err) => {
                let message = format!("compensation of {name} failed: {err}");
                tracing::error!(%message, "saga left half-undone");
                let error = json!({ "code": "COMPENSATION_FAILED", "message": message, "cause": error });
                lease.finish(JobStatus::Failed, None, Some(&error)).await?;
                return Ok(Outcome::Failed);
            }
        }
    }
    let reason = error.get("message").and_then(Value::as_str).unwrap_or("failed").to_owned();
    if let Err(err) = saga.failed(ctx, &reason, &steps).await {
        return match err {
            StepError::Transient(m) if job.attempts < job.max_attempts => retry(ctx, lease, job, None, &m).await,
            err => {
                let error = json!({
                    "code": "COMPENSATION_FAILED",
                    "message": format!("recording the failure failed: {err}"),
                    "cause": error
                });
                lease.finish(JobStatus::Failed, None, Some(&error)).await?;
                Ok(Outcome::Failed)
            }
        };
    }
    // Undone either way; a job that ran out of attempts ends `failed` (its steps show the
    // compensation), one refused for good `compensated`.
    if error.get("code").and_then(Value::as_str) == Some("ATTEMPTS_EXHAUSTED") {
        lease.finish(JobStatus::Failed, None, Some(error)).await?;
        tracing::warn!(%reason, "job failed after its last attempt; compensated");
        return Ok(Outcome::Failed);
    }
    lease.finish(JobStatus::Compensated, None, Some(error)).await?;
    tracing::warn!(%reason, "job compensated");
    Ok(Outcome::Compensated)
}

async fn retry(
    ctx: &JobContext,
    lease: &Lease<'_>,
    job: &Job,
    step: Option<&str>,
    message: &str,
) -> Result<Outcome, EngineError> {
    let delay = backoff(ctx, job.attempts);
    let error = json!({ "code": "RETRYING", "message": message, "step": step, "transient": true });
    // Due again after `delay`; the dispatcher delivers it then.
    if !lease.retry_later(delay, &error).await? {
        return Ok(Outcome::LeaseLost);
    }
    // No delayed delivery in Redis (apalis promotes every due scheduled task in one call, which
    // fails past ~8,000): the row says when, and the dispatcher delivers it then.
    tracing::warn!(?step, %message, ?delay, "transient failure; will retry");
    Ok(Outcome::Retrying(delay))
}

async fn release(ctx: &JobContext, kind: JobKind, lease: &Lease<'_>, job: &Job) -> Result<Outcome, EngineError> {
    if lease.release().await? {
        let delivery = Queue::new_delivery_id();
        jobs::record_dispatch(&ctx.db, job.id, &delivery).await?;
        if let Err(err) = ctx.queue.push(kind, job.id, &delivery).await {
            tracing::warn!(job = %job.id, error = %err, "could not re-push a released job");
        }
        tracing::info!(job = %job.id, "job released for another worker");
    }
    Ok(Outcome::Released)
}

/// Failure hooks for tests, compiled only with the `test-hooks` feature (the test crate turns it
/// on for its worker program): `JOB_TEST_CRASH_AT=<kind>:<step>` aborts the process as that step
/// starts, as a step that takes its worker down (an OOM, a segfault in a library) would.
mod test_hooks {
    #[cfg(feature = "test-hooks")]
    pub fn before_step(kind: crate::JobKind, step: &str) {
        if std::env::var("JOB_TEST_CRASH_AT").is_ok_and(|target| target == format!("{}:{step}", kind.name())) {
            tracing::error!(step, "JOB_TEST_CRASH_AT: aborting the worker process");
            std::process::abort();
        }
    }

    #[cfg(not(feature = "test-hooks"))]
    pub fn before_step(_kind: crate::JobKind, _step: &str) {}
}
