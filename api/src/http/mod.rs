//! Everything HTTP: the router, its middleware stack, and one module per resource.

pub mod access;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod billing_webhook;
pub mod console;
pub mod error;
pub mod extract;
pub mod features;
pub mod guard;
pub mod health;
pub mod idempotency;
pub mod internal;
pub mod jobs;
pub mod jwks;
pub mod lifecycle;
pub mod metrics;
pub mod monitoring;
pub mod openapi;
pub mod plans;
pub mod quotas;
pub mod response;
pub mod settings;
pub mod tenants;
pub mod tokens;
pub mod validate;

use crate::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{get, patch, post};
use error::ApiError;
use tower::ServiceBuilder;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/tenants", get(tenants::list).post(lifecycle::create))
        .route("/api/v1/tenants/restore", post(lifecycle::restore))
        .route("/api/v1/tenants/{id}", get(tenants::get).put(tenants::update).delete(lifecycle::delete))
        .route("/api/v1/tenants/{id}/jobs", get(jobs::list_for_tenant))
        .route("/api/v1/tenants/{id}/quotas", get(quotas::list).put(quotas::set_limits))
        .route("/api/v1/tenants/{id}/quotas/check", post(quotas::public_check))
        .route("/api/v1/tenants/{id}/usage", get(quotas::usage))
        .route("/api/v1/tenants/{id}/config", get(settings::get).put(settings::put))
        .route("/api/v1/tenants/{id}/config/reset", post(settings::reset))
        .route("/api/v1/tenants/{id}/features", get(features::get).patch(features::patch))
        .route("/api/v1/tenants/{id}/audit", get(audit::list))
        .route("/api/v1/jobs/{id}", get(jobs::get))
        .route("/api/v1/jobs/{id}/events", get(jobs::events))
        .route("/api/v1/tenants/{id}/status", patch(tenants::set_status))
        .route("/api/v1/plans", get(plans::list).post(plans::create))
        .route("/api/v1/plans/{id}", get(plans::get).put(plans::update))
        .route("/api/v1/tenants/{id}/billing", get(billing::show))
        .route("/api/v1/tenants/{id}/billing/plans", post(billing::change_plan))
        .route("/api/v1/tenants/{id}/invoices", get(billing::invoices))
        .route("/api/v1/tenants/{id}/invoices/{invoice_id}", get(billing::invoice))
        .route("/api/v1/tenants/{id}/payments", post(billing::pay))
        .route("/api/v1/metrics", get(monitoring::service))
        .route("/api/v1/tenants/{id}/metrics", get(monitoring::tenant))
        .route_layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::rate_limit));

    // Every internal handler takes a `ServiceCaller`: the service-token gate (see `auth`).
    let internal = Router::new()
        .route("/internal/tenants/validate", post(internal::validate))
        .route("/internal/tenants/{id}/quota-check", post(quotas::internal_check))
        .route("/internal/tenants/{id}/usage", post(quotas::record_usage))
        .route("/internal/tenants/{id}/quotas", get(quotas::internal_list))
        .route("/internal/tenants/{id}/context", get(internal::context))
        .route("/internal/tenants/{id}/features", get(features::internal))
        .route("/internal/tenants/metrics", get(monitoring::all_tenants))
        .route("/internal/tenants/{id}/health", get(monitoring::tenant_health));

    let mut operations = Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/health", get(health::health))
        .route("/livez", get(health::livez))
        // Authenticated by its Stripe-Signature, not by a token; outside the idempotency layer
        // (Stripe's event id is the key).
        .route("/api/v1/billing/stripe/webhook", post(billing_webhook::receive));
    if state.config.prometheus_enabled {
        operations = operations.route("/metrics", get(metrics::scrape));
    }

    Router::new()
        .merge(api)
        .merge(internal)
        .merge(operations)
        .merge(openapi::routes())
        .merge(console::routes())
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // The request id, span, panics, deadline and measurements: see `guard`.
        .layer(
            ServiceBuilder::new()
                .layer(guard::GuardLayer::new(state.clone()))
                .layer(DefaultBodyLimit::max(state.config.body_limit_bytes)),
        )
        .with_state(state)
}

/// The routes other services call on their own hot path, thousands of times a second. At the
/// default level they cost no log line and no span (errors and slow ones are still logged, see
/// `metrics::record`, and every request is in the Prometheus histogram); `RUST_LOG=debug` brings
/// both back.
pub const HOT_ROUTES: [(Method, &str); 6] = [
    (Method::POST, "/internal/tenants/{id}/quota-check"),
    (Method::POST, "/internal/tenants/{id}/usage"),
    (Method::GET, "/internal/tenants/{id}/context"),
    (Method::GET, "/internal/tenants/{id}/features"),
    (Method::POST, "/internal/tenants/validate"),
    (Method::GET, "/livez"),
];

/// The index in [`HOT_ROUTES`] of `method route`.
pub fn hot_route(method: &Method, route: &str) -> Option<usize> {
    HOT_ROUTES.iter().position(|(m, hot)| m == method && *hot == route)
}
