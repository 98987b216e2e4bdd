//! The plan catalogue: reading for anyone signed in, writing for platform admins.
//!
//! Every version of a plan is a row of its own (see `tenant_domain::plans`). A change of what
//! tenants bought — prices, currency, quotas, features, overage prices, rate limit — locks the
//! current version, supersedes it and inserts the next in one transaction, so tenants keep the
//! row they bought; a change of name, description, order or availability is made in place. Both
//! bodies become a `PlanDraft`, checked in one place (`PlanDraft::build`).

use super::access::PlatformUser;
use super::auth::AuthUser;
use super::error::{ApiError, Result};
use super::extract::{Json, Path, RequestId};
use super::response::{self, Envelope};
use super::validate;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use tenant_domain::audit;
use tenant_domain::plans::{self, OveragePrice, Plan, PlanDefinition, PlanDraft, QuotaTerms};
use tenant_domain::{Error, Result as DomainResult};

#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", security(("bearer" = [])),
    responses((status = 200, description = "The current version of every active plan, cheapest first", body = inline(Envelope<Vec<Plan>>)),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, _user: AuthUser) -> Result<Response> {
    Ok(response::ok(plans::list(&state.db).await?))
}

#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "plans", security(("bearer" = [])),
    params(("id" = String, Path, description = "A version's id (superseded versions too), or a plan's slug for its current version")),
    responses((status = 200, description = "The plan version", body = inline(Envelope<Plan>)),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody),
              (status = 404, description = "`PLAN_NOT_FOUND`", body = super::error::ErrorBody)))]
pub async fn get(State(state): State<AppState>, _user: AuthUser, Path(id): Path<String>) -> Result<Response> {
    Ok(response::ok(plans::find(&state.db, lookup_key(&id)?).await?))
}

// The required fields are `Option`s so that a missing one is refused naming it, by
// `PlanDraft::build`, like any other bad field; the schema still marks them required.
/// A new plan (version 1).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePlanRequest {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: Option<String>,
    /// Names the plan's current version; immutable.
    #[schema(value_type = String, required = true, pattern = "^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")]
    pub slug: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// ISO 4217: usd, eur, gbp, jpy, cny, cad, aud or chf.
    #[schema(value_type = String, required = true, example = "usd")]
    pub currency: Option<String>,
    /// Minor units (cents; yen for jpy).
    #[schema(value_type = i64, required = true, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_monthly: Option<i64>,
    #[schema(value_type = i64, required = true, minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_yearly: Option<i64>,
    /// Requests per minute to the public API.
    #[schema(value_type = i64, required = true, minimum = 1, maximum = 2147483647)]
    pub api_rate_limit: Option<i64>,
    /// `{flag: bool}` for the eight flags; those not named are off.
    #[schema(value_type = BTreeMap<String, bool>, required = true)]
    pub features: Option<BTreeMap<String, bool>>,
    /// Every resource's terms: `users`, `storage`, `api_calls`, `bandwidth`, `databases`,
    /// `compute_hours`, `file_uploads`, `email_sends`.
    #[schema(value_type = BTreeMap<String, QuotaTerms>, required = true)]
    pub quotas: Option<BTreeMap<String, QuotaTerms>>,
    /// Counters only: minor units per `per` units beyond the limit.
    pub overage_prices: Option<BTreeMap<String, OveragePrice>>,
    pub sort_order: Option<i32>,
    /// Listed and open to new tenants (default true).
    pub is_active: Option<bool>,
}

impl From<CreatePlanRequest> for PlanDraft {
    fn from(body: CreatePlanRequest) -> Self {
        PlanDraft {
            name: body.name,
            slug: body.slug,
            description: Some(body.description),
            currency: body.currency,
            price_monthly: body.price_monthly,
            price_yearly: body.price_yearly,
            api_rate_limit: body.api_rate_limit,
            features: body.features,
            quotas: body.quotas,
            overage_prices: body.overage_prices.map(|p| p.into_iter().map(|(k, v)| (k, Some(v))).collect()),
            sort_order: body.sort_order,
            is_active: body.is_active,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    request_body = CreatePlanRequest,
    responses((status = 201, description = "The new plan (version 1)", body = inline(Envelope<Plan>)),
              (status = 400, description = "`VALIDATION_FAILED`, naming the field in `details.field`", body = super::error::ErrorBody),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 409, description = "`PLAN_SLUG_TAKEN`, or `IDEMPOTENCY_IN_PROGRESS`", body = super::error::ErrorBody),
              (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`", body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    PlatformUser(user): PlatformUser,
    request_id: RequestId,
    body: Result<Json<CreatePlanRequest>>,
) -> Result<Response> {
    let Json(body) = body?;
    let def = PlanDraft::from(body).build(None)?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let plan = plans::insert_version(&mut tx, None, 1, &def).await?;
    record(&mut tx, &user, &request_id, "plan.create", None, &plan).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(response::with_status(StatusCode::CREATED, plan))
}

/// Any field of a new plan but the slug; maps merge by key.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePlanRequest {
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    pub name: Option<String>,
    /// `null` clears the description.
    #[serde(default, deserialize_with = "validate::double_option")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub description: Option<Option<String>>,
    #[schema(example = "usd")]
    pub currency: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_monthly: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    pub price_yearly: Option<i64>,
    #[schema(minimum = 1, maximum = 2147483647)]
    pub api_rate_limit: Option<i64>,
    /// The flags to change; the others keep their value.
    pub features: Option<BTreeMap<String, bool>>,
    /// The resources whose terms change, each whole.
    pub quotas: Option<BTreeMap<String, QuotaTerms>>,
    /// The counters whose price changes; `null` removes a counter's price.
    #[schema(value_type = Option<BTreeMap<String, OveragePrice>>)]
    pub overage_prices: Option<BTreeMap<String, Option<OveragePrice>>>,
    pub sort_order: Option<i32>,
    pub is_active: Option<bool>,
}

impl From<UpdatePlanRequest> for PlanDraft {
    fn from(body: UpdatePlanRequest) -> Self {
        PlanDraft {
            name: body.name,
            slug: None,
            description: body.description,
            currency: body.currency,
            price_monthly: body.price_monthly,
            price_yearly: body.price_yearly,
            api_rate_limit: body.api_rate_limit,
            features: body.features,
            quotas: body.quotas,
            overage_prices: body.overage_prices,
            sort_order: body.sort_order,
            is_active: body.is_active,
        }
    }
}

#[utoipa::path(put, path = "/api/v1/plans/{id}", tag = "plans", security(("bearer" = [])),
    params(("id" = String, Path, description = "Any version's id, or the plan's slug"),
           ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe key (24 h)")),
    request_body = UpdatePlanRequest,
    responses((status = 200, description = "The current version: a new one if prices, currency, quotas, features, \
                overage prices or the rate limit changed, else the same one changed in place (or not at all)",
                body = inline(Envelope<Plan>)),
              (status = 400, description = "`VALIDATION_FAILED`, naming the field in `details.field`", body = super::error::ErrorBody),
              (status = 401, description = "No or bad token", body = super::error::ErrorBody),
              (status = 403, description = "Platform admins only", body = super::error::ErrorBody),
              (status = 404, description = "`PLAN_NOT_FOUND`", body = super::error::ErrorBody),
              (status = 409, description = "`IDEMPOTENCY_IN_PROGRESS`", body = super::error::ErrorBody),
              (status = 422, description = "`IDEMPOTENCY_KEY_REUSED`", body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    PlatformUser(user): PlatformUser,
    request_id: RequestId,
    Path(id): Path<String>,
    body: Result<Json<UpdatePlanRequest>>,
) -> Result<Response> {
    let Json(body) = body?;
    let key = lookup_key(&id)?;
    let mut tx = state.db.begin().await.map_err(Error::from)?;
    let current = lock_current(&mut tx, key).await?;
    let base = PlanDefinition::of(&current).map_err(ApiError::internal)?;
    let def = PlanDraft::from(body).build(Some(&base))?;
    if def.same_as(&current) {
        // Nothing to write; the transaction ends unused.
        return Ok(response::ok(current));
    }
    let (action, plan) = if def.changes_terms_of(&current) {
        plans::supersede(&mut tx, current.id).await?;
        ("plan.version", plans::insert_version(&mut tx, Some(current.family), current.version + 1, &def).await?)
    } else {
        ("plan.update", plans::update_in_place(&mut tx, current.id, &def).await?)
    };
    record(&mut tx, &user, &request_id, action, Some(&current), &plan).await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(response::ok(plan))
}

/// `id` if it can name a plan (a UUID or a slug); anything else names none, without a query.
fn lookup_key(id: &str) -> Result<&str> {
    if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(id)
    } else {
        Err(Error::plan_not_found().into())
    }
}

/// The current version of `key`'s plan, locked. Concurrent changes queue on that lock; when the
/// one ahead commits, the row we waited for is superseded and the lock finds nothing, so we look
/// again (a new statement sees the new current version) for as long as the plan exists.
async fn lock_current(conn: &mut PgConnection, key: &str) -> DomainResult<Plan> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match plans::current_for_update(&mut *conn, key).await {
            Err(Error::NotFound { .. }) if attempts < 100 && plans::find(&mut *conn, key).await.is_ok() => continue,
            found => return found,
        }
    }
}

async fn record(
    conn: &mut PgConnection,
    user: &AuthUser,
    request_id: &RequestId,
    action: &str,
    old: Option<&Plan>,
    new: &Plan,
) -> Result<()> {
    let value = |plan: &Plan| serde_json::to_value(plan).map_err(ApiError::internal);
    let entry = audit::Entry {
        tenant: None,
        actor: &user.actor(),
        action,
        resource: Some(format!("plans/{}", new.id)),
        old_value: old.map(value).transpose()?,
        new_value: Some(value(new)?),
        request_id: request_id.0.as_deref(),
    };
    Ok(audit::record(conn, entry).await?)
}
