//! The worker's own `/metrics` (Prometheus text) and `/health`, on `WORKER_METRICS_PORT`: job
//! outcomes and durations by kind (low-cardinality labels: kinds and outcomes only), deliveries
//! waiting in Redis, open jobs by status and unpublished events — read at scrape time.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::time::Duration;
use tenant_domain::jobs;
use tenant_jobs::JobContext;
use tokio::net::TcpListener;

pub struct JobMetrics {
    registry: Registry,
    /// Queue workers that died and were restarted (`tenant_worker_restarts_total`).
    pub restarts: IntCounter,
    /// The last death: when, which queue worker, why — shown in `/health`.
    pub last_restart: std::sync::Mutex<Option<serde_json::Value>>,
    process: Arc<tenant_domain::process_metrics::ProcessMetrics>,
    pub outcomes: IntCounterVec,
    pub duration: HistogramVec,
    queue_depth: IntGauge,
    open: IntGaugeVec,
    unpublished: IntGauge,
}

impl JobMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = JobMetrics {
            restarts: IntCounter::new("tenant_worker_restarts_total", "Queue workers that died and were restarted")?,
            last_restart: std::sync::Mutex::new(None),
            process: tenant_domain::process_metrics::ProcessMetrics::register(&registry)?,
            registry,
            outcomes: IntCounterVec::new(
                Opts::new("tenant_jobs_total", "Job deliveries handled, by job kind and outcome"),
                &["kind", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new("tenant_job_duration_seconds", "Time spent running one delivery of a job, by kind")
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
                &["kind"],
            )?,
            queue_depth: IntGauge::new("tenant_queue_depth", "Job deliveries waiting in Redis (ready and scheduled)")?,
            open: IntGaugeVec::new(Opts::new("tenant_jobs_open", "Jobs not finished, by status"), &["status"])?,
            unpublished: IntGauge::new("tenant_outbox_unpublished", "Events written but not yet published")?,
        };
        m.registry.register(Box::new(m.outcomes.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.open.clone()))?;
        m.registry.register(Box::new(m.unpublished.clone()))?;
        m.registry.register(Box::new(tenant_domain::billing::EVENTS.clone()))?;
        m.registry.register(Box::new(m.restarts.clone()))?;
        Ok(m)
    }
}

#[derive(Clone)]
struct Shared {
    ctx: JobContext,
    metrics: Arc<JobMetrics>,
}

/// Serves `/metrics` and `/health` until shutdown.
pub async fn serve(ctx: JobContext, metrics: Arc<JobMetrics>, port: u16) {
    let listener = match TcpListener::bind((ctx.config.host.as_str(), port)).await {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(port, error = %err, "worker metrics endpoint cannot bind");
            return;
        }
    };
    let mut shutdown = ctx.shutdown.clone();
    let app =
        Router::new().route("/metrics", get(scrape)).route("/health", get(health)).with_state(Shared { ctx, metrics });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
}

async fn scrape(State(shared): State<Shared>) -> Response {
    let m = &shared.metrics;
    let deadline = Duration::from_secs(1);
    if let Ok(Ok(depth)) = tokio::time::timeout(deadline, shared.ctx.queue.depth()).await {
        m.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    if let Ok(Ok(counts)) = tokio::time::timeout(deadline, jobs::open_counts(&shared.ctx.db)).await {
        for status in ["queued", "running", "retrying"] {
            let n = counts
                .iter()
                .find(|(s, _)| serde_json::to_value(s).ok().as_ref().and_then(|v| v.as_str()) == Some(status));
            m.open.with_label_values(&[status]).set(n.map_or(0, |(_, n)| *n));
        }
    }
    let unpublished = sqlx::query_scalar::<_, i64>("select count(*) from outbox_events where published_at is null")
        .fetch_one(&shared.ctx.db);
    if let Ok(Ok(n)) = tokio::time::timeout(deadline, unpublished).await {
        m.unpublished.set(n);
    }
    m.process.sample();
    let mut buf = Vec::new();
    if TextEncoder::new().encode(&m.registry.gather(), &mut buf).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

async fn health(State(shared): State<Shared>) -> Response {
    let db = tokio::time::timeout(Duration::from_secs(1), sqlx::query("select 1").execute(&shared.ctx.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let mut redis = shared.ctx.redis.clone();
    let (redis_ok, quota_ok) = tokio::join!(
        tenant_domain::kv::ping(&mut redis, Duration::from_secs(1)),
        shared.ctx.quota.ping(Duration::from_secs(1))
    );
    let up = db && redis_ok && quota_ok;
    let body = serde_json::json!({
        "success": up,
        "data": {
            "worker": shared.ctx.worker_id,
            "dependencies": { "database": db, "redis": redis_ok, "quotaStore": quota_ok },
            "queueWorkerRestarts": shared.metrics.restarts.get(),
            "lastRestart": shared.metrics.last_restart.lock().ok().and_then(|l| l.clone()),
        },
    });
    let status = if up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}
