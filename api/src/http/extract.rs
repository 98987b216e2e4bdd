//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the error envelope and a
//! 400 (or 413) instead of axum's plain-text rejections.

use super::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

/// A JSON body, read and checked as `axum::Json` does (content type, size limit, shape), with
/// its rejections turned into [`ApiError`]s that name the offending field.
///
/// The common case — `Content-Type: application/json` and a body of the right shape — is parsed
/// by `serde_json` alone; the field-path tracking `axum::Json` always pays for (a wrapper around
/// every value) is paid only when the body is refused, by parsing it once more through
/// `axum::Json` for its exact rejection. Any other content type goes through `axum::Json`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !plain_json(request.headers()) {
            let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
            return Ok(Json(value));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(JsonRejection::from)?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Ok(Json(value)),
            Err(_) => match axum::Json::<T>::from_bytes(&bytes) {
                Err(rejection) => Err(rejection.into()),
                // Not reachable: both parse the same bytes with the same serde implementation.
                Ok(axum::Json(value)) => Ok(Json(value)),
            },
        }
    }
}

fn plain_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"))
}

#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The request id (`x-request-id`, set or propagated by the request-id layer).
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned)))
    }
}
