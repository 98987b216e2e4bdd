//! `Idempotency-Key` for mutating endpoints: a repeat of a request with the same key within 24 h
//! returns the first response and does nothing twice.
//!
//! The key is claimed *inside the handler's transaction* and the response stored in it, so the
//! claim, the change and the stored response commit (or vanish) together. A concurrent repeat
//! blocks on the claim's row until the first commits, then replays its response. Reusing a key
//! for a different request is 422 `IDEMPOTENCY_KEY_REUSED`.

use super::error::{ApiError, Result};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

/// The `Idempotency-Key` header, if any (1–255 visible ASCII characters).
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        parts.headers.get("idempotency-key").map(parse_key).transpose().map(IdempotencyKey)
    }
}

fn parse_key(raw: &HeaderValue) -> Result<String> {
    raw.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::field("Idempotency-Key", "1 to 255 visible ASCII characters"))
}

/// A claimed key, to be completed with the response in the same transaction.
pub struct Claim {
    scope: String,
    key: String,
}

/// What a claim attempt found.
pub enum Begin {
    /// No key given, or the key is fresh: go on (and call [`complete`] with the claim).
    Proceed(Option<Claim>),
    /// The key was used before for this request: answer with this.
    Replay(Response),
}

/// Claims `key` for (`scope`, `method`, `path`, `body`) in the caller's transaction.
pub async fn begin(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    scope: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> Result<Begin> {
    let Some(key) = &key.0 else { return Ok(Begin::Proceed(None)) };
    let hash = Sha256::digest(format!("{method} {path} {body}").as_bytes()).to_vec();
    Ok(match claim(conn, scope, key, method, path, &hash).await? {
        Claimed::Fresh => Begin::Proceed(Some(Claim { scope: scope.to_owned(), key: key.clone() })),
        Claimed::Replay(response) => Begin::Replay(response),
    })
}

enum Claimed {
    Fresh,
    Replay(Response),
}

/// Claims (`scope`, `key`) for a request hashing to `hash`, or finds the stored answer. A key
/// older than 24 h, or claimed but never answered for a minute (a crash), is claimed afresh.
async fn claim(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    method: &str,
    path: &str,
    hash: &[u8],
) -> Result<Claimed> {
    let claimed: Option<String> = sqlx::query_scalar(
        "insert into idempotency_keys (scope, key, method, path, request_hash) values ($1, $2, $3, $4, $5) \
         on conflict (scope, key) do update set method = excluded.method, path = excluded.path, \
             request_hash = excluded.request_hash, status_code = null, response_body = null, created_at = now() \
             where idempotency_keys.created_at < now() - interval '24 hours' \
                or (idempotency_keys.status_code is null and idempotency_keys.created_at < now() - make_interval(secs => $6)) \
         returning key",
    )
    .bind(scope)
    .bind(key)
    .bind(method)
    .bind(path)
    .bind(hash)
    .bind(STALE_CLAIM_SECS as f64)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ApiError::internal)?;
    if claimed.is_some() {
        return Ok(Claimed::Fresh);
    }
    let (stored_hash, status, body): (Vec<u8>, Option<i32>, Option<Value>) = sqlx::query_as(
        "select request_hash, status_code, response_body from idempotency_keys where scope = $1 and key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await
    .map_err(ApiError::internal)?;
    if stored_hash != hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "IDEMPOTENCY_KEY_REUSED",
            "this Idempotency-Key was used for a different request",
        ));
    }
    let status = status.and_then(|s| u16::try_from(s).ok()).and_then(|s| StatusCode::from_u16(s).ok());
    match (status, body) {
        (Some(status), Some(body)) => {
            let location = job_location(&body);
            let mut response = super::response::json(status, &body);
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Some(location) = location {
                response.headers_mut().insert(axum::http::header::LOCATION, location);
            }
            Ok(Claimed::Replay(response))
        }
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "IDEMPOTENCY_IN_PROGRESS",
            "a request with this key is in progress",
        )),
    }
}

/// Rebuilds `Location` of a replayed 202 from the job id in the stored body.
fn job_location(body: &Value) -> Option<HeaderValue> {
    let id = body.pointer("/data/job/id").and_then(Value::as_str)?;
    HeaderValue::from_str(&format!("/api/v1/jobs/{id}")).ok()
}

/// Stores the response of a claimed key (in the same transaction as the change).
pub async fn complete<T: Serialize>(
    conn: &mut PgConnection,
    claim: Option<Claim>,
    status: StatusCode,
    body: &T,
) -> Result<()> {
    let Some(claim) = claim else { return Ok(()) };
    let body = serde_json::to_value(body).map_err(ApiError::internal)?;
    store_answer(conn, &claim.scope, &claim.key, status, &body).await.map_err(ApiError::internal)
}

async fn store_answer(
    db: impl sqlx::PgExecutor<'_>,
    scope: &str,
    key: &str,
    status: StatusCode,
    body: &Value,
) -> sqlx::Result<()> {
    sqlx::query("update idempotency_keys set status_code = $3, response_body = $4 where scope = $1 and key = $2")
        .bind(scope)
        .bind(key)
        .bind(i32::from(status.as_u16()))
        .bind(body)
        .execute(db)
        .await
        .map(|_| ())
}

/// Routes whose handlers claim the key inside their own transaction (see [`begin`]).
const IN_TRANSACTION: [(&str, &str); 3] =
    [("POST", "/api/v1/tenants"), ("DELETE", "/api/v1/tenants/{id}"), ("POST", "/api/v1/tenants/restore")];

/// How long a claimed key whose request never finished (a crash) blocks repeats.
const STALE_CLAIM_SECS: i64 = 60;

/// `Idempotency-Key` for the other mutating endpoints of `/api/v1`: the key is claimed before the
/// handler runs and its answer stored after, so a repeat within 24 h gets the first answer (a
/// repeat while the first is still running gets 409 `IDEMPOTENCY_IN_PROGRESS`). A 5xx answer is
/// not stored: the request may be retried with the same key.
pub async fn middleware(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Most requests carry no key: nothing to do, and nothing allocated.
    let Some(key) = request.headers().get("idempotency-key").cloned() else { return next.run(request).await };
    let method = request.method().as_str().to_owned();
    let route = request.extensions().get::<axum::extract::MatchedPath>().map_or("", |p| p.as_str());
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
        || IN_TRANSACTION.contains(&(method.as_str(), route))
    {
        return next.run(request).await;
    }
    match run_idempotently(&state, key, method, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run_idempotently(
    state: &crate::AppState,
    key: HeaderValue,
    method: String,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, Response> {
    // The gate first: nothing is replayed or refused as a reused key for a tenant the caller
    // may not touch.
    let (mut parts, body) = request.into_parts();
    super::access::precheck(&mut parts, state).await.map_err(IntoResponse::into_response)?;
    let key = parse_key(&key).map_err(IntoResponse::into_response)?;
    // The caller: the token's tenant and subject (the precheck authenticated it on tenant routes).
    let scope = match parts.extensions.get::<super::auth::AuthUser>() {
        Some(user) => user.idempotency_scope(),
        None => {
            super::auth::authenticate(&parts, state).await.map_err(IntoResponse::into_response)?.idempotency_scope()
        }
    };
    let bytes = axum::body::to_bytes(body, state.config.body_limit_bytes).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "request body exceeds 1 MiB").into_response()
    })?;
    let path = parts.uri.path().to_owned();
    let mut hasher = Sha256::new();
    hasher.update(format!("{method} {path} ").as_bytes());
    hasher.update(&bytes);
    let hash = hasher.finalize().to_vec();
    let db = &state.db;
    let mut conn = db.acquire().await.map_err(|e| ApiError::internal(e).into_response())?;
    match claim(&mut conn, &scope, &key, &method, &path, &hash).await {
        Ok(Claimed::Fresh) => {}
        Ok(Claimed::Replay(response)) => return Ok(response),
        Err(err) => return Err(err.into_response()),
    }
    drop(conn);
    let response = next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    let (res_parts, res_body) = response.into_parts();
    let res_bytes = axum::body::to_bytes(res_body, usize::MAX).await.unwrap_or_default();
    let stored: Option<Value> = serde_json::from_slice(&res_bytes).ok();
    let outcome = match stored {
        Some(body) if !res_parts.status.is_server_error() => {
            store_answer(db, &scope, &key, res_parts.status, &body).await
        }
        // Not stored: the request may be tried again with the same key.
        _ => sqlx::query("delete from idempotency_keys where scope = $1 and key = $2")
            .bind(&scope)
            .bind(&key)
            .execute(db)
            .await
            .map(|_| ()),
    };
    if let Err(err) = outcome {
        tracing::error!(error = %err, "could not record an idempotent response");
    }
    Ok(Response::from_parts(res_parts, axum::body::Body::from(res_bytes)))
}
