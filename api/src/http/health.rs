//! `GET /health` and `GET /api/v1/health`: checks PostgreSQL and Redis for real (with a short
//! deadline each) and answers 503 in the error envelope when either is down.

use super::error::ApiError;
use super::response;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tenant_domain::billing::ProviderHealth;
use tenant_domain::kv;

const CHECK_DEADLINE: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub service: String,
    pub version: &'static str,
    pub dependencies: Dependencies,
    pub metrics: HealthMetrics,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dependencies {
    pub database: bool,
    pub redis: bool,
    /// `up` or `down` from a real call to Stripe (at most one every 30 s), or `not_configured`
    /// in local billing mode. Billing is not needed for reads and quota checks, so a Stripe outage
    /// does not make the service unhealthy.
    pub stripe: ProviderHealth,
    /// The job queue lives in Redis.
    pub queue: bool,
    /// Where the quota counters live (`QUOTA_REDIS_URL`: the same Redis by default, or another
    /// Redis or a Redis Cluster) answers `PING`.
    #[serde(rename = "quotaStore")]
    pub quota_store: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthMetrics {
    pub active_tenants: Option<i64>,
    /// Job deliveries waiting in Redis (ready and scheduled).
    pub queue_depth: Option<u64>,
    /// Share of context lookups this process answered from its caches (memory or Redis).
    pub cache_hit_rate: f64,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "PostgreSQL and Redis answer", body = inline(response::Envelope<Health>)),
              (status = 503, description = "A dependency is down; `details` holds the health report", body = super::error::ErrorBody)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let db_check = async {
        let q =
            sqlx::query_scalar::<_, i64>("select count(*) from tenants where status = 'active'").fetch_one(&state.db);
        tokio::time::timeout(CHECK_DEADLINE, q).await.ok().and_then(Result::ok)
    };
    let mut redis = state.redis.clone();
    let (active, redis_ok, stripe, quota_ok) = tokio::join!(
        db_check,
        kv::ping(&mut redis, CHECK_DEADLINE),
        state.billing_health.check(&state),
        state.quota.ping(CHECK_DEADLINE)
    );
    let queue_depth = if redis_ok {
        tokio::time::timeout(CHECK_DEADLINE, state.queue.depth()).await.ok().and_then(Result::ok)
    } else {
        None
    };
    let database = active.is_some();
    let up = database && redis_ok && quota_ok;
    let report = Health {
        status: if up { "healthy" } else { "unhealthy" },
        service: state.config.service_name.clone(),
        version: env!("CARGO_PKG_VERSION"),
        dependencies: Dependencies { database, redis: redis_ok, stripe, queue: redis_ok, quota_store: quota_ok },
        metrics: HealthMetrics { active_tenants: active, queue_depth, cache_hit_rate: state.contexts.hit_rate() },
    };
    if up {
        response::ok(report)
    } else {
        let details = serde_json::to_value(&report).unwrap_or_default();
        let down: Vec<&str> = [("database", database), ("redis", redis_ok), ("quota store", quota_ok)]
            .into_iter()
            .filter_map(|(name, ok)| (!ok).then_some(name))
            .collect();
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DEPENDENCY_UNAVAILABLE",
            format!("unavailable: {}", down.join(", ")),
        )
        .with_details(details)
        .into_response()
    }
}

/// `GET /livez`: answers without touching any dependency (for liveness probes and as the
/// benchmarks' reference for the cheapest possible route).
#[utoipa::path(get, path = "/livez", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn livez() -> Response {
    response::ok(serde_json::json!({ "status": "ok" }))
}

/// The payment provider's health, asked at most every [`PROVIDER_CHECK_EVERY`].
#[derive(Default)]
pub struct ProviderHealthCache(Mutex<Option<(Instant, ProviderHealth)>>);

const PROVIDER_CHECK_EVERY: Duration = Duration::from_secs(30);

impl ProviderHealthCache {
    pub async fn check(&self, state: &AppState) -> ProviderHealth {
        if let Some((at, health)) = self.0.lock().ok().and_then(|g| *g)
            && at.elapsed() < PROVIDER_CHECK_EVERY
        {
            return health;
        }
        let health = tokio::time::timeout(CHECK_DEADLINE, state.billing.health()).await.unwrap_or(ProviderHealth::Down);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((Instant::now(), health));
        }
        health
    }
}
