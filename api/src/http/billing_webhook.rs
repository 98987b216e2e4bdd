//! `POST /api/v1/billing/stripe/webhook` (being written).

use super::error::{ApiError, Result};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

pub async fn receive(State(_state): State<AppState>, _headers: HeaderMap, _body: Bytes) -> Result<Response> {
    Err(ApiError::validation("webhooks are not handled yet"))
}
