//! Subscription plans: prices, feature sets, quotas and overage prices (seeded by migration).

use crate::{Error, PlanId, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgExecutor;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: PlanId,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    /// Decimal string, e.g. `"29.00"`.
    pub price_monthly: String,
    pub price_yearly: String,
    pub currency: String,
    /// Requests per minute a tenant on this plan may make to the public API.
    pub api_rate_limit: i32,
    /// The eight feature flags and whether the plan includes each.
    #[schema(value_type = Object)]
    pub features: Value,
    /// Per resource: `{limit, unit, resetPeriod}`.
    #[schema(value_type = Object)]
    pub quotas: Value,
    /// Per resource: `{per, price}`.
    #[schema(value_type = Object)]
    pub overage_prices: Value,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, slug, description, price_monthly::text as price_monthly, \
    price_yearly::text as price_yearly, trim(currency) as currency, api_rate_limit, features, quotas, \
    overage_prices, is_active, created_at, updated_at";

pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Plan>> {
    let sql = format!("select {COLUMNS} from subscription_plans where is_active order by sort_order, slug");
    Ok(sqlx::query_as(&sql).fetch_all(db).await?)
}

/// A plan by its id or its slug (the API accepts either as `planId`).
pub async fn find(db: impl PgExecutor<'_>, id_or_slug: &str) -> Result<Plan> {
    let id = id_or_slug.parse::<uuid::Uuid>().ok();
    let sql = format!("select {COLUMNS} from subscription_plans where id = $1 or ($1 is null and slug = $2)");
    sqlx::query_as(&sql).bind(id).bind(id_or_slug).fetch_optional(db).await?.ok_or_else(Error::plan_not_found)
}
