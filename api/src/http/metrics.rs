//! Prometheus metrics. HTTP metrics are labelled by route *template* (`/api/v1/tenants/{id}`),
//! never the raw URL, and errors by their code, so label values stay bounded.

use super::error::ErrorCode;
use crate::AppState;
use axum::extract::{MatchedPath, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::time::{Duration, Instant};
use tenant_domain::monitoring;

pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub errors: IntCounterVec,
    pub operations: IntCounterVec,
    pub operation_duration: HistogramVec,
    pub cross_tenant_denials: IntCounter,
    pub active_tenants: IntGauge,
    pub quota_fail_open: IntCounter,
    pub quota_state_loads: IntCounter,
    pub quota_leased: IntCounter,
    pub config_cache_hit_rate: Gauge,
    pub config_cache_lookups: IntCounterVec,
    /// Serializes the catch-up of the counters above from the atomics they mirror.
    counters: std::sync::Mutex<()>,
    pub db_connections: IntGauge,
    pub quota_usage_percent: GaugeVec,
    pub memory: IntGauge,
    /// When this process started (for uptime).
    pub started: Instant,
    /// The process collector and `tenant_service_cpu_usage_percent`.
    pub process: std::sync::Arc<tenant_domain::process_metrics::ProcessMetrics>,
    /// The series of each of [`super::HOT_ROUTES`], in its order.
    hot: Vec<HotRoute>,
}

/// A hot route's duration histogram and its count of 200s.
struct HotRoute {
    duration: Histogram,
    ok: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let latency_buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let mut m = Metrics {
            http_requests: IntCounterVec::new(
                Opts::new("http_requests_total", "HTTP requests by method, route template and status"),
                &["method", "route", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request duration by method and route template",
                )
                .buckets(latency_buckets.clone()),
                &["method", "route"],
            )?,
            errors: IntCounterVec::new(Opts::new("tenant_errors_total", "Error responses by error code"), &["code"])?,
            operations: IntCounterVec::new(
                Opts::new("tenant_operations_total", "Tenant operations by operation and outcome"),
                &["operation", "outcome"],
            )?,
            operation_duration: HistogramVec::new(
                HistogramOpts::new("tenant_operation_duration_seconds", "Tenant operation duration")
                    .buckets(latency_buckets),
                &["operation"],
            )?,
            cross_tenant_denials: IntCounter::new(
                "tenant_cross_tenant_denials_total",
                "Requests refused because the token belongs to another tenant",
            )?,
            active_tenants: IntGauge::new("tenant_active_count", "Tenants whose status is active")?,
            quota_fail_open: IntCounter::new(
                "tenant_quota_fail_open_total",
                "Quota checks allowed without Redis (fail-open resources)",
            )?,
            config_cache_hit_rate: Gauge::new(
                "tenant_config_cache_hit_rate",
                "Tenant context lookups answered from memory or Redis, over all lookups",
            )?,
            config_cache_lookups: IntCounterVec::new(
                Opts::new(
                    "tenant_config_cache_lookups",
                    "Tenant context lookups since start, by where they were answered",
                ),
                &["result"],
            )?,
            quota_leased: IntCounter::new(
                "tenant_quota_leased_checks_total",
                "Consuming quota checks answered from budget leased in-process (no Redis round trip)",
            )?,
            quota_state_loads: IntCounter::new(
                "tenant_quota_state_loads_total",
                "Times a tenant's quota state had to be read from PostgreSQL into Redis",
            )?,
            db_connections: IntGauge::new("tenant_database_connections_active", "PostgreSQL connections in use")?,
            quota_usage_percent: GaugeVec::new(
                Opts::new(
                    "tenant_quota_usage_percent",
                    "Usage in percent of the limit as of the last rollup, for tenant resources at 75 % or more \
                     (at most 1000 series, highest first)",
                ),
                &["tenant_id", "resource"],
            )?,
            memory: IntGauge::new("tenant_service_memory_usage_bytes", "Resident memory of this process")?,
            started: Instant::now(),
            counters: std::sync::Mutex::new(()),
            process: tenant_domain::process_metrics::ProcessMetrics::register(&registry)?,
            registry,
            hot: Vec::new(),
        };
        m.registry.register(Box::new(m.http_requests.clone()))?;
        m.registry.register(Box::new(m.http_duration.clone()))?;
        m.registry.register(Box::new(m.errors.clone()))?;
        m.registry.register(Box::new(m.operations.clone()))?;
        m.registry.register(Box::new(m.operation_duration.clone()))?;
        m.registry.register(Box::new(m.cross_tenant_denials.clone()))?;
        m.registry.register(Box::new(m.active_tenants.clone()))?;
        m.registry.register(Box::new(m.quota_fail_open.clone()))?;
        m.registry.register(Box::new(m.quota_state_loads.clone()))?;
        m.registry.register(Box::new(m.quota_leased.clone()))?;
        m.registry.register(Box::new(m.config_cache_hit_rate.clone()))?;
        m.registry.register(Box::new(m.config_cache_lookups.clone()))?;
        m.registry.register(Box::new(m.db_connections.clone()))?;
        m.registry.register(Box::new(m.quota_usage_percent.clone()))?;
        m.registry.register(Box::new(m.memory.clone()))?;
        m.registry.register(Box::new(tenant_domain::billing::EVENTS.clone()))?;
        m.hot = super::HOT_ROUTES
            .iter()
            .map(|(method, route)| HotRoute {
                duration: m.http_duration.with_label_values(&[method.as_str(), route]),
                ok: m.http_requests.with_label_values(&[method.as_str(), route, "200"]),
            })
            .collect();
        Ok(m)
    }

    /// Counts one tenant operation and its duration.
    pub fn operation(&self, operation: &str, ok: bool, started: Instant) {
        let outcome = if ok { "success" } else { "failure" };
        self.operations.with_label_values(&[operation, outcome]).inc();
        self.operation_duration.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
    }
}

/// Records a request's count and duration and its error's code, and logs it: at info, but health
/// checks, scrapes and the hot routes ([`super::HOT_ROUTES`]) at debug — a hot request that fails
/// (5xx) or is slower than `HTTP_SLOW_REQUEST_MS` is logged at error/warn. Called for every
/// request by the [`super::guard`] layer, which knows `hot`: the request's index in
/// [`super::HOT_ROUTES`] (method and route), if it is one.
pub fn record(
    state: &AppState,
    method: &Method,
    route: Option<&MatchedPath>,
    hot: Option<usize>,
    elapsed: Duration,
    response: &Response,
) {
    let route = route.map_or("unmatched", MatchedPath::as_str);
    let status = response.status();
    let m = &state.metrics;
    let seconds = elapsed.as_secs_f64();
    // A hot route's series are looked up once, at start; a 200 from one costs no label lookup.
    match hot.map(|i| &m.hot[i]) {
        Some(hot) => {
            if status == StatusCode::OK {
                hot.ok.inc();
            } else {
                m.http_requests.with_label_values(&[method.as_str(), route, status.as_str()]).inc();
            }
            hot.duration.observe(seconds);
        }
        None => {
            m.http_requests.with_label_values(&[method.as_str(), route, status.as_str()]).inc();
            m.http_duration.with_label_values(&[method.as_str(), route]).observe(seconds);
        }
    }
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        m.errors.with_label_values(&[code]).inc();
    }
    let latency_ms = seconds * 1000.0;
    if hot.is_some() {
        // The hot path: an access line at debug only; what an operator must see stays visible.
        if status.is_server_error() {
            tracing::error!(%method, %route, status = status.as_u16(), latency_ms, "request failed");
        } else if elapsed >= state.config.slow_request {
            tracing::warn!(%method, %route, status = status.as_u16(), latency_ms, "slow request");
        } else {
            tracing::debug!(%method, %route, status = status.as_u16(), latency_ms, "request");
        }
    } else if matches!(route, "/health" | "/api/v1/health" | "/metrics") {
        tracing::debug!(%method, %route, status = status.as_u16(), latency_ms, "request");
    } else {
        tracing::info!(%method, %route, status = status.as_u16(), latency_ms, "request");
    }
}

/// `tenant_quota_usage_percent` lists tenant resources from this share of their limit up.
const HIGH_USAGE_PERCENT: f64 = 75.0;
const HIGH_USAGE_SERIES: usize = 1000;

/// `GET /metrics`: Prometheus text format.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let count =
        sqlx::query_scalar::<_, i64>("select count(*) from tenants where status = 'active'").fetch_one(&state.db);
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), count).await {
        m.active_tenants.set(n);
    }
    // Counters exported as counters: each catches up with the atomic the hot path increments.
    let catch_up = |counter: &IntCounter, now: u64| counter.inc_by(now.saturating_sub(counter.get()));
    let c = &state.contexts;
    m.config_cache_hit_rate.set(c.hit_rate());
    if let Ok(_serial) = m.counters.lock() {
        use std::sync::atomic::Ordering::Relaxed;
        catch_up(&m.quota_leased, state.quota.leased_hits.load(Relaxed));
        catch_up(&m.quota_state_loads, state.quota.state_loads.load(Relaxed));
        for (result, n) in [("memory", &c.local_hits), ("redis", &c.redis_hits), ("miss", &c.misses)] {
            catch_up(&m.config_cache_lookups.with_label_values(&[result]), n.load(Relaxed));
        }
    }
    let in_use = state.db.size().saturating_sub(u32::try_from(state.db.num_idle()).unwrap_or(u32::MAX));
    m.db_connections.set(i64::from(in_use));
    m.process.sample();
    if let Some(bytes) = super::monitoring::resident_memory() {
        m.memory.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    let high = monitoring::live_high_usage(&state.db, &state.quota, HIGH_USAGE_PERCENT, HIGH_USAGE_SERIES);
    if let Ok(Ok(rows)) = tokio::time::timeout(Duration::from_secs(1), high).await {
        // Only what is high now: a tenant back under 75 % loses its series.
        m.quota_usage_percent.reset();
        for (tenant, resource, percent) in rows {
            m.quota_usage_percent.with_label_values(&[tenant.to_string().as_str(), resource.as_str()]).set(percent);
        }
    }
    let mut buf = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&m.registry.gather(), &mut buf) {
        tracing::error!(error = %err, "could not encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}
