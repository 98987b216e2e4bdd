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
        let Some(raw) = parts.headers.get("idempotency-key") else { return Ok(IdempotencyKey(None)) };
        let key = raw
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()));
        match key {
            Some(k) => Ok(IdempotencyKey(Some(k.to_owned()))),
            None => Err(ApiError::field("Idempotency-Key", "1 to 255 visible ASCII characters")),
        }
    }
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
    let claimed: Option<String> = sqlx::query_scalar(
        "insert into idempotency_keys (scope, key, method, path, request_hash) values ($1, $2, $3, $4, $5) \
         on conflict (scope, key) do update set method = excluded.method, path = excluded.path, \
             request_hash = excluded.request_hash, status_code = null, response_body = null, created_at = now() \
             where idempotency_keys.created_at < now() - interval '24 hours' \
         returning key",
    )
    .bind(scope)
    .bind(key)
    .bind(method)
    .bind(path)
    .bind(&hash)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ApiError::internal)?;
    if claimed.is_some() {
        return Ok(Begin::Proceed(Some(Claim { scope: scope.to_owned(), key: key.clone() })));
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
            let mut response = (status, axum::Json(body)).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Some(location) = location {
                response.headers_mut().insert(axum::http::header::LOCATION, location);
            }
            Ok(Begin::Replay(response))
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
    sqlx::query("update idempotency_keys set status_code = $3, response_body = $4 where scope = $1 and key = $2")
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(i32::from(status.as_u16()))
        .bind(body)
        .execute(conn)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}
