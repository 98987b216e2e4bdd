//! The bare reference of `scripts/bench quota`: the least a quota-check server can do, built and
//! run in the same bench run as `tenant-api` so the ratio between them means something.
//!
//! `POST /internal/tenants/{id}/quota-check` — the same route shape, the same `X-Service-Token`
//! check (SHA-256 digests compared in constant time), the same JSON body — answered with **one
//! `EVALSHA` of the service's own quota script** (the quota engine's `evaluate`, on one
//! multiplexed connection), and a small JSON reply. No middleware, no logging, no metrics, no
//! envelope. `GET /livez` answers a fixed reply. Same allocator and runtime as `tenant-api`.
//!
//! Configured from the same environment as the API (`REDIS_URL`, `REDIS_KEY_PREFIX`,
//! `SERVICE_TOKENS`, …), listening on `SERVICE_HOST:SERVICE_PORT`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tenant_domain::quota::Resource;
use tenant_domain::quota::engine::{Mode, QuotaEngine, RawOutcome};
use tenant_domain::{Config, TenantId};

struct Reference {
    engine: Arc<QuotaEngine>,
    tokens: Vec<[u8; 32]>,
}

#[derive(Deserialize)]
struct CheckRequest {
    resource: String,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    consume: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let tokens = config.service_tokens.iter().map(|t| Sha256::digest(t.token.expose().as_bytes()).into()).collect();
    let engine = QuotaEngine::connect(&config)?;
    let state = Arc::new(Reference { engine, tokens });
    let app = Router::new()
        .route("/internal/tenants/{id}/quota-check", post(check))
        .route("/livez", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(format!("{}:{}", config.host, config.port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn check(
    State(state): State<Arc<Reference>>,
    Path(id): Path<TenantId>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let presented: [u8; 32] = Sha256::digest(headers.get("x-service-token").map_or(&b""[..], |v| v.as_bytes())).into();
    let known = state.tokens.iter().fold(subtle::Choice::from(0), |found, t| found | t.ct_eq(&presented));
    if !bool::from(known) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(request) = serde_json::from_slice::<CheckRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(resource) = Resource::parse(&request.resource) else { return StatusCode::BAD_REQUEST.into_response() };
    let mode = if request.consume { Mode::Consume } else { Mode::Check };
    let amount = request.amount.unwrap_or(1);
    match state.engine.evaluate(id, resource, amount, mode, chrono::Utc::now(), None).await {
        Ok(RawOutcome::Decided(d)) => {
            let status = if d.allowed { StatusCode::OK } else { StatusCode::FORBIDDEN };
            (status, format!(r#"{{"allowed":{},"remaining":{}}}"#, d.allowed, d.remaining())).into_response()
        }
        Ok(_) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
