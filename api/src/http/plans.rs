//! `GET /api/v1/plans`.

use super::auth::AuthUser;
use super::error::Result;
use super::response::{self, Envelope};
use crate::AppState;
use axum::extract::State;
use axum::response::Response;
use tenant_domain::plans::{self, Plan};

#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", security(("bearer" = [])),
    responses((status = 200, description = "The active plans, cheapest first", body = inline(Envelope<Vec<Plan>>)),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, _user: AuthUser) -> Result<Response> {
    Ok(response::ok(plans::list(&state.db).await?))
}
