#![forbid(unsafe_code)]
//! `tenant-worker`: runs the jobs the API enqueues, as sagas (see `tenant-jobs`). Run several
//! processes side by side; the job lease in PostgreSQL keeps them from running one job twice.
//!
//! apalis is configured deliberately (see APALIS.md): worker names unique per process and
//! restart, one task per fetch, bounded concurrency, a short heartbeat so a dead worker's
//! deliveries move on in seconds, a polling strategy that can't lose its wake-up, a raised Redis
//! response timeout, restart of any worker that dies, panics caught, and our own attempt cap and
//! backoff (apalis's retries only cover failures of the bookkeeping itself, and give up to the
//! reconciler after a few).

pub mod alerts;
pub mod dispatcher;
pub mod metrics;
pub mod poll;
pub mod reconciler;
pub mod relay;
pub mod scheduler;

use anyhow::Context as _;
use apalis::prelude::{
    AbortError, Attempt, BackendExt, BoxDynError, Data, Event, Monitor, WorkerBuilder, WorkerBuilderExt,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tenant_domain::backup::BackupStore;
use tenant_domain::billing;
use tenant_domain::jobs::ProgressChannel;
use tenant_domain::kv::{self, Keys};
use tenant_domain::mail::LettreMailer;
use tenant_domain::quota::engine::QuotaEngine;
use tenant_domain::{Config, db};
use tenant_jobs::{JobContext, JobKind, JobMessage, Queue, engine};
use tokio::sync::watch;

/// The whole `tenant-worker` program: configuration from the environment, logging, and [`run`]
/// until SIGTERM/SIGINT.
pub fn main_entry() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return std::process::ExitCode::from(2);
        }
    };
    tenant_domain::telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tenant-worker: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, tenant_domain::telemetry::shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tenant-worker failed");
            eprintln!("tenant-worker: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Deliveries a job may fail with bookkeeping errors before apalis gives it up to the reconciler.
const MAX_DELIVERY_ATTEMPTS: usize = 5;

/// Runs the worker until `shutdown` resolves; in-flight jobs then finish their current step and
/// are handed back (or finish), within `SHUTDOWN_TIMEOUT_SECS`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let mut config = config;
    // Under load a 500 ms response timeout turns slowness into fatal queue errors (apalis-redis#76).
    config.redis_response_timeout = config.redis_response_timeout.max(Duration::from_secs(5));
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = context(config.clone(), stop_rx.clone()).await?;
    let (db, worker_id) = (ctx.db.clone(), ctx.worker_id.clone());
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let background = [
        tokio::spawn(reconciler::run(ctx.clone())),
        tokio::spawn(dispatcher::run(ctx.clone())),
        tokio::spawn(scheduler::run(ctx.clone())),
        tokio::spawn(scheduler::billing(ctx.clone())),
        tokio::spawn(scheduler::retention(ctx.clone())),
        tokio::spawn(scheduler::vacuum(ctx.clone())),
        tokio::spawn(alerts::run(ctx.clone())),
        tokio::spawn(relay::run(ctx.clone())),
    ];

    let job_metrics = Arc::new(metrics::JobMetrics::new()?);
    let metrics_task =
        config.worker_metrics_port.map(|port| tokio::spawn(metrics::serve(ctx.clone(), job_metrics.clone(), port)));
    let ctx = Arc::new(ctx);
    let mut monitor = Monitor::new()
        .should_restart({
            let job_metrics = job_metrics.clone();
            move |worker, error| {
                tracing::error!(worker = worker.name(), %error, "queue worker died; restarting it");
                job_metrics.restarts.inc();
                if let Ok(mut last) = job_metrics.last_restart.lock() {
                    *last = Some(serde_json::json!({
                        "at": chrono::Utc::now(), "queueWorker": worker.name(), "error": error.to_string(),
                    }));
                }
                true
            }
        })
        .on_event(|worker, event| match event {
            Event::Error(error) => tracing::warn!(worker = worker.name(), %error, "queue error"),
            Event::Start => tracing::debug!(worker = worker.name(), "queue worker started"),
            _ => {}
        })
        .with_terminator(tokio::time::sleep(config.shutdown_timeout));
    for kind in JobKind::ALL {
        let ctx = ctx.clone();
        let job_metrics = job_metrics.clone();
        let worker_id = worker_id.clone();
        monitor = monitor.register(move |restarts| {
            let storage =
                ctx.queue.storage(kind).poll_with_strategy(poll::RearmingInterval::new(ctx.config.jobs.poll_interval));
            WorkerBuilder::new(format!("{}-{worker_id}-{restarts}", kind.name()))
                .backend(storage)
                .data(ctx.clone())
                .data(kind)
                .data(job_metrics.clone())
                .concurrency(ctx.config.jobs.concurrency)
                .catch_panic()
                .build(handle)
        });
    }
    tracing::info!(worker = %worker_id, concurrency = config.jobs.concurrency, "tenant-worker running");
    let mut stop = stop_rx.clone();
    let result = monitor
        .run_with_signal(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        })
        .await;
    for task in background.into_iter().chain(metrics_task) {
        task.abort();
    }
    db.close().await;
    tracing::info!("tenant-worker stopped");
    result.map_err(|e| anyhow::anyhow!("queue workers: {e}"))
}

/// Connects to PostgreSQL and Redis (checking both answer) and builds what the sagas use.
pub async fn context(config: Arc<Config>, shutdown: watch::Receiver<bool>) -> anyhow::Result<JobContext> {
    let db = db::pool(&config)?;
    let redis = kv::connect(&config)?;
    db::check_owner(&db).await.context("PostgreSQL does not answer")?;
    let mut probe = redis.clone();
    anyhow::ensure!(kv::ping(&mut probe, config.redis_response_timeout).await, "Redis does not answer PING");
    Ok(JobContext {
        redis: redis.clone(),
        keys: Keys::new(config.redis_key_prefix.clone()),
        queue: Queue::new(redis.clone(), &config.redis_key_prefix, config.jobs.clone()),
        quota: QuotaEngine::connect(&config)?,
        http: reqwest::Client::builder().timeout(config.outbound.timeout).build()?,
        billing: billing::from_config(&config, db.clone())?,
        mailer: Arc::new(LettreMailer::new(&config.mail)?),
        backups: BackupStore::new(&config.backup)?,
        progress: ProgressChannel::new(redis, &config.redis_key_prefix),
        worker_id: format!("worker-{}-{}", std::process::id(), ulid::Ulid::generate()),
        shutdown,
        db,
        config,
    })
}

/// One delivery: run the job's saga. Failures of the saga's steps are handled in the engine;
/// an `Err` here means the bookkeeping itself failed (e.g. PostgreSQL is down) and apalis should
/// deliver again a little later.
async fn handle(
    message: JobMessage,
    ctx: Data<Arc<JobContext>>,
    kind: Data<JobKind>,
    metrics: Data<Arc<metrics::JobMetrics>>,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let started = std::time::Instant::now();
    let result = tenant_jobs::run(&ctx, *kind, message.job_id).await;
    let outcome = match &result {
        Ok(o) => match o {
            engine::Outcome::Succeeded => "succeeded",
            engine::Outcome::Compensated => "compensated",
            engine::Outcome::Failed => "failed",
            engine::Outcome::Retrying(_) => "retrying",
            engine::Outcome::NotClaimed => "not_claimed",
            engine::Outcome::LeaseLost => "lease_lost",
            engine::Outcome::Released => "released",
        },
        Err(_) => "error",
    };
    metrics.outcomes.with_label_values(&[kind.name(), outcome]).inc();
    metrics.duration.with_label_values(&[kind.name()]).observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outcome) => {
            tracing::debug!(job = %message.job_id, kind = kind.name(), ?outcome, "delivery handled");
            Ok(())
        }
        Err(err) if attempt.current() >= MAX_DELIVERY_ATTEMPTS => {
            tracing::error!(job = %message.job_id, error = %err, "giving the job up to the reconciler");
            Err(AbortError::new(err).into())
        }
        Err(err) => {
            tracing::warn!(job = %message.job_id, error = %err, "delivery failed; apalis will retry");
            Err(err.into())
        }
    }
}
