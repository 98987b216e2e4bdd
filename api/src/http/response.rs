//! The success envelope: `{"success":true,"data":…,"meta":{"total","page","limit"}?}`.

use super::error::{ApiError, Result};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

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

/// `?page&limit` of every paged list: page 1 and 20 items unless asked otherwise.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Pages beyond this are refused rather than scanned for.
pub const MAX_PAGE: u32 = 1_000_000;

impl PageParams {
    pub fn resolve(&self) -> Result<(u32, u32)> {
        let page = self.page.unwrap_or(1);
        let limit = self.limit.unwrap_or(20);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::field("page", "must be from 1 to 1000000"));
        }
        if !(1..=100).contains(&limit) {
            return Err(ApiError::field("limit", "must be from 1 to 100"));
        }
        Ok((page, limit))
    }
}
