//! Subscription plans: prices (integer minor units), feature sets, quotas and overage prices.
//!
//! **Versions.** Every version of a plan is a row of its own; `family` is the id of the first
//! version and the slug names the current one. A change of price, quotas, features, overage
//! prices or rate limit inserts version n+1 and marks version n superseded; tenants reference the
//! row they bought (`tenants.plan_id`), so they keep its quotas, features and prices until a plan
//! change moves them. Name, description, order and availability change in place.

use crate::billing::period::Interval;
use crate::money::{Currency, Money, MoneyError};
use crate::{Error, PlanId, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use std::collections::BTreeMap;

mod draft;

pub use draft::{MAX_PRICE_MINOR, PlanDraft, QuotaTerms};

/// A price as stored: minor units and the plan's currency code (not yet checked to be supported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Price {
    /// Minor units (cents; whole units for zero-decimal currencies).
    pub amount: i64,
    /// ISO 4217, lower case.
    pub currency: String,
}

impl Price {
    pub fn money(&self) -> Result<Money, MoneyError> {
        Ok(Money::new(self.amount, Currency::parse(&self.currency)?))
    }
}

/// The price of `per` units beyond the limit, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OveragePrice {
    pub per: i64,
    pub unit_amount: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// This version's id (what tenants reference).
    pub id: PlanId,
    /// The id of the plan's first version, shared by all its versions.
    pub family: PlanId,
    pub version: i32,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    #[schema(value_type = Price)]
    pub price_monthly: Json<Price>,
    #[schema(value_type = Price)]
    pub price_yearly: Json<Price>,
    pub currency: String,
    /// Requests per minute a tenant on this plan may make to the public API.
    pub api_rate_limit: i32,
    /// The eight feature flags and whether the plan includes each.
    #[schema(value_type = Object)]
    pub features: Value,
    /// Per resource: `{limit, unit, resetPeriod}`.
    #[schema(value_type = Object)]
    pub quotas: Value,
    /// Per resource: `{per, unitAmount}` — minor units per `per` units beyond the limit.
    #[schema(value_type = Object)]
    pub overage_prices: Value,
    pub sort_order: i32,
    pub is_active: bool,
    /// Set when a newer version replaced this one.
    pub superseded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Plan {
    /// The price per `interval`, as money (refused if the currency is not supported).
    pub fn price(&self, interval: Interval) -> Result<Money, MoneyError> {
        match interval {
            Interval::Month => self.price_monthly.money(),
            Interval::Year => self.price_yearly.money(),
        }
    }

    pub fn overage_prices(&self) -> BTreeMap<String, OveragePrice> {
        serde_json::from_value(self.overage_prices.clone()).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, family, version, name, slug, description, \
    jsonb_build_object('amount', price_monthly_minor, 'currency', trim(currency)) as price_monthly, \
    jsonb_build_object('amount', price_yearly_minor, 'currency', trim(currency)) as price_yearly, \
    trim(currency) as currency, api_rate_limit, features, quotas, overage_prices, sort_order, is_active, \
    superseded_at, created_at, updated_at";

/// The current version of every active plan.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Plan>> {
    let sql = format!(
        "select {COLUMNS} from subscription_plans where is_active and superseded_at is null order by sort_order, slug"
    );
    Ok(sqlx::query_as(&sql).fetch_all(db).await?)
}

/// A plan version by its id, or the current version by slug (the API accepts either).
pub async fn find(db: impl PgExecutor<'_>, id_or_slug: &str) -> Result<Plan> {
    let id = id_or_slug.parse::<uuid::Uuid>().ok();
    // Neither an id nor a slug can name no plan (and never reaches the database).
    if id.is_none() && !crate::tenants::is_valid_slug(id_or_slug) {
        return Err(Error::plan_not_found());
    }
    let sql = format!(
        "select {COLUMNS} from subscription_plans \
         where id = $1 or ($1 is null and slug = $2 and superseded_at is null)"
    );
    sqlx::query_as(&sql).bind(id).bind(id_or_slug).fetch_optional(db).await?.ok_or_else(Error::plan_not_found)
}

/// The current version of the plan that `id_or_slug` (any version's id, or the slug) belongs to,
/// locked for an update.
pub async fn current_for_update(conn: &mut PgConnection, id_or_slug: &str) -> Result<Plan> {
    let id = id_or_slug.parse::<uuid::Uuid>().ok();
    if id.is_none() && !crate::tenants::is_valid_slug(id_or_slug) {
        return Err(Error::plan_not_found());
    }
    let sql = format!(
        "select {COLUMNS} from subscription_plans where superseded_at is null and family = \
             (select family from subscription_plans where id = $1 or ($1 is null and slug = $2) limit 1) \
         for update"
    );
    sqlx::query_as(&sql).bind(id).bind(id_or_slug).fetch_optional(conn).await?.ok_or_else(Error::plan_not_found)
}

/// What a new plan, or a new version, consists of.
#[derive(Debug, Clone)]
pub struct PlanDefinition {
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub currency: Currency,
    pub price_monthly: i64,
    pub price_yearly: i64,
    pub api_rate_limit: i32,
    pub features: Value,
    pub quotas: Value,
    pub overage_prices: Value,
    pub sort_order: i32,
    pub is_active: bool,
}

impl PlanDefinition {
    pub fn of(plan: &Plan) -> Result<Self, MoneyError> {
        Ok(PlanDefinition {
            name: plan.name.clone(),
            slug: plan.slug.clone(),
            description: plan.description.clone(),
            currency: Currency::parse(&plan.currency)?,
            price_monthly: plan.price_monthly.amount,
            price_yearly: plan.price_yearly.amount,
            api_rate_limit: plan.api_rate_limit,
            features: plan.features.clone(),
            quotas: plan.quotas.clone(),
            overage_prices: plan.overage_prices.clone(),
            sort_order: plan.sort_order,
            is_active: plan.is_active,
        })
    }

    /// Whether `self` differs from `plan` in what a tenant bought (so a new version is needed).
    pub fn changes_terms_of(&self, plan: &Plan) -> bool {
        self.currency.as_str() != plan.currency
            || self.price_monthly != plan.price_monthly.amount
            || self.price_yearly != plan.price_yearly.amount
            || self.api_rate_limit != plan.api_rate_limit
            || self.features != plan.features
            || self.quotas != plan.quotas
            || self.overage_prices != plan.overage_prices
    }
}

/// Inserts version `version` of `family` (a new plan: `family` None, version 1).
pub async fn insert_version(
    conn: &mut PgConnection,
    family: Option<PlanId>,
    version: i32,
    def: &PlanDefinition,
) -> Result<Plan> {
    let id = PlanId(uuid::Uuid::now_v7());
    let sql = format!(
        "insert into subscription_plans (id, family, version, name, slug, description, currency, \
             price_monthly_minor, price_yearly_minor, api_rate_limit, features, quotas, overage_prices, \
             sort_order, is_active) \
         values ($1, coalesce($2, $1), $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
         returning {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(family)
        .bind(version)
        .bind(&def.name)
        .bind(&def.slug)
        .bind(&def.description)
        .bind(def.currency.as_str())
        .bind(def.price_monthly)
        .bind(def.price_yearly)
        .bind(def.api_rate_limit)
        .bind(&def.features)
        .bind(&def.quotas)
        .bind(&def.overage_prices)
        .bind(def.sort_order)
        .bind(def.is_active)
        .fetch_one(&mut *conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.constraint() == Some("subscription_plans_slug_current_key") => {
                Error::Conflict { code: "PLAN_SLUG_TAKEN", message: "a plan with this slug exists".into() }
            }
            _ => Error::Database(err),
        })
}

/// Marks `id` superseded (before its successor is inserted, so the slug is free for it).
pub async fn supersede(conn: &mut PgConnection, id: PlanId) -> Result<()> {
    sqlx::query("update subscription_plans set superseded_at = now(), updated_at = now() where id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Changes what does not alter a tenant's terms — name, description, order, availability — on
/// the current version.
pub async fn update_in_place(conn: &mut PgConnection, id: PlanId, def: &PlanDefinition) -> Result<Plan> {
    let sql = format!(
        "update subscription_plans set name = $2, description = $3, sort_order = $4, is_active = $5, \
             updated_at = now() where id = $1 returning {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(&def.name)
        .bind(&def.description)
        .bind(def.sort_order)
        .bind(def.is_active)
        .fetch_one(conn)
        .await?)
}
