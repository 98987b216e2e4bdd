//! The success envelope: `{"success":true,"data":…,"meta":{"total","page","limit"}?}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    /// Always `true`.
    pub success: bool,
    pub data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<PageMeta>,
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct PageMeta {
    pub total: i64,
    pub page: u32,
    pub limit: u32,
}

/// `200` with `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    with_status(StatusCode::OK, data)
}

pub fn with_status<T: Serialize>(status: StatusCode, data: T) -> Response {
    (status, axum::Json(Envelope { success: true, data, meta: None })).into_response()
}

/// `200` with one page of a list.
pub fn page<T: Serialize>(items: Vec<T>, meta: PageMeta) -> Response {
    axum::Json(Envelope { success: true, data: items, meta: Some(meta) }).into_response()
}
