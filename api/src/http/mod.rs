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
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, Method, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::{get, patch, post};
use error::ApiError;
use std::sync::Arc;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

    let sensitive: Arc<[HeaderName]> = Arc::new([header::AUTHORIZATION, HeaderName::from_static("x-service-token")]);
    Router::new()
        .merge(api)
        .merge(internal)
        .merge(operations)
        .merge(openapi::routes())
        .merge(console::routes())
        .fallback(|| async { ApiError::route_not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::from_shared(sensitive))
                .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
                .layer(
                    TraceLayer::new_for_http().make_span_with(make_span).on_request(()).on_response(()).on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
                }))
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

/// A random (v4) UUID for a request that came without `x-request-id`: tower-http's
/// `MakeRequestUuid`, without formatting it into a `String` first.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        axum::http::HeaderValue::from_str(id).ok().map(RequestId::new)
    }
}

pub fn is_hot(route: &str) -> bool {
    HOT_ROUTES.iter().any(|(_, hot)| *hot == route)
}

/// The index in [`HOT_ROUTES`] of `method route`.
pub fn hot_route(method: &Method, route: &str) -> Option<usize> {
    HOT_ROUTES.iter().position(|(m, hot)| m == method && *hot == route)
}

// `tenant_id` is filled in once the request is authorized for a tenant (the `access` gate),
// `service` once an internal call's service token is (`auth::require_service_token`).
fn make_span(request: &Request) -> tracing::Span {
    let hot = request.extensions().get::<axum::extract::MatchedPath>().is_some_and(|p| is_hot(p.as_str()));
    if hot {
        // Disabled at the default level: no fields are formatted, nothing is allocated.
        return tracing::debug_span!(
            "http",
            method = %request.method(),
            path = %request.uri().path(),
            request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            tenant_id = tracing::field::Empty,
            service = tracing::field::Empty
        );
    }
    let request_id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
        tenant_id = tracing::field::Empty,
        service = tracing::field::Empty
    )
}
