//! Writing plans: the one place a plan's fields are checked ([`PlanDraft::build`]), for a new
//! plan and for a change alike.

use super::{OveragePrice, Plan, PlanDefinition};
use crate::features::FLAGS;
use crate::money::Currency;
use crate::quota::{Period, Resource};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::{Map, json};
use std::collections::BTreeMap;

/// The largest price, in minor units (10^12).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;

/// One resource's quota as a plan states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaTerms {
    /// 0 or more `unit`s.
    #[schema(minimum = 0)]
    pub limit: i64,
    /// What `limit` counts: `count`, `bytes`, `requests`, `hours`…
    #[schema(min_length = 1, max_length = 20, pattern = "^\\S+$", example = "count")]
    pub unit: String,
    /// `none` for the gauges (users, storage, databases); `hourly`, `daily`, `weekly` or
    /// `monthly` for the counters.
    #[schema(pattern = "^(none|hourly|daily|weekly|monthly)$", example = "daily")]
    pub reset_period: String,
}

/// A plan as a platform admin writes it, every field optional: a new plan gives at least the
/// required ones, a change only what changes. [`PlanDraft::build`] checks it.
#[derive(Debug, Clone, Default)]
pub struct PlanDraft {
    pub name: Option<String>,
    pub slug: Option<String>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    pub currency: Option<String>,
    pub price_monthly: Option<i64>,
    pub price_yearly: Option<i64>,
    pub api_rate_limit: Option<i64>,
    /// The flags named; on a new plan the others are off, on a change they keep their value.
    pub features: Option<BTreeMap<String, bool>>,
    /// The terms of each resource named; a new plan names every resource.
    pub quotas: Option<BTreeMap<String, QuotaTerms>>,
    /// The price of each counter named; `None` removes that counter's price.
    pub overage_prices: Option<BTreeMap<String, Option<OveragePrice>>>,
    pub sort_order: Option<i32>,
    pub is_active: Option<bool>,
}

impl PlanDraft {
    /// The definition of a new plan (`base` None) or of `base` changed by this draft. Anything
    /// invalid, or missing from a new plan, is refused naming its field (`quotas.users.limit`).
    pub fn build(self, base: Option<&PlanDefinition>) -> Result<PlanDefinition> {
        let slug = match (self.slug, base) {
            (Some(slug), None) => checked_slug(slug)?,
            (Some(slug), Some(base)) if slug == base.slug => slug,
            (Some(_), Some(_)) => return Err(Error::validation("slug", "cannot be changed")),
            (None, Some(base)) => base.slug.clone(),
            (None, None) => return Err(required("slug")),
        };
        let name = self.name.as_deref().map(checked_name).transpose()?;
        let description = match self.description {
            Some(given) => given.as_deref().map(checked_description).transpose()?.flatten(),
            None => base.and_then(|b| b.description.clone()),
        };
        let currency = self.currency.as_deref().map(checked_currency).transpose()?;
        let price_monthly = self.price_monthly.map(|p| checked_price(p, "priceMonthly")).transpose()?;
        let price_yearly = self.price_yearly.map(|p| checked_price(p, "priceYearly")).transpose()?;
        let api_rate_limit = self.api_rate_limit.map(checked_rate_limit).transpose()?;
        let features = match (self.features, base) {
            (Some(given), base) => checked_features(given, base.map(|b| &b.features))?,
            (None, Some(base)) => base.features.clone(),
            (None, None) => return Err(required("features")),
        };
        let quotas = match (self.quotas, base) {
            (Some(given), base) => checked_quotas(given, base.map(|b| &b.quotas))?,
            (None, Some(base)) => base.quotas.clone(),
            (None, None) => return Err(required("quotas")),
        };
        let overage_prices = match self.overage_prices {
            Some(given) => checked_overage_prices(given, base.map(|b| &b.overage_prices))?,
            None => base.map_or_else(|| json!({}), |b| b.overage_prices.clone()),
        };
        Ok(PlanDefinition {
            name: or_base(name, base.map(|b| &b.name), "name")?,
            slug,
            description,
            currency: or_base(currency, base.map(|b| &b.currency), "currency")?,
            price_monthly: or_base(price_monthly, base.map(|b| &b.price_monthly), "priceMonthly")?,
            price_yearly: or_base(price_yearly, base.map(|b| &b.price_yearly), "priceYearly")?,
            api_rate_limit: or_base(api_rate_limit, base.map(|b| &b.api_rate_limit), "apiRateLimit")?,
            features,
            quotas,
            overage_prices,
            sort_order: self.sort_order.or(base.map(|b| b.sort_order)).unwrap_or(0),
            is_active: self.is_active.or(base.map(|b| b.is_active)).unwrap_or(true),
        })
    }
}

impl PlanDefinition {
    /// Whether `self` is exactly `plan` (so a change would write nothing).
    pub fn same_as(&self, plan: &Plan) -> bool {
        !self.changes_terms_of(plan)
            && self.name == plan.name
            && self.slug == plan.slug
            && self.description == plan.description
            && self.sort_order == plan.sort_order
            && self.is_active == plan.is_active
    }
}

fn required(field: &str) -> Error {
    Error::validation(field, "is required")
}

fn or_base<T: Clone>(given: Option<T>, base: Option<&T>, field: &str) -> Result<T> {
    given.or_else(|| base.cloned()).ok_or_else(|| required(field))
}

fn checked_slug(slug: String) -> Result<String> {
    if crate::tenants::is_valid_slug(&slug) {
        Ok(slug)
    } else {
        Err(Error::validation("slug", "must match ^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$"))
    }
}

fn checked_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err(Error::validation("name", "must not be empty")),
        n if n > 100 => Err(Error::validation("name", "at most 100 characters")),
        _ if name.chars().any(char::is_control) => Err(Error::validation("name", "no control characters")),
        _ => Ok(name.to_owned()),
    }
}

/// An empty description is none.
fn checked_description(raw: &str) -> Result<Option<String>> {
    let text = raw.trim();
    if text.chars().count() > 2000 {
        return Err(Error::validation("description", "at most 2000 characters"));
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(Error::validation("description", "no control characters but line breaks and tabs"));
    }
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn checked_currency(raw: &str) -> Result<Currency> {
    Currency::parse(raw).map_err(|_| {
        Error::validation("currency", format!("unsupported; one of {}", crate::money::SUPPORTED.join(", ")))
    })
}

fn checked_price(minor: i64, field: &str) -> Result<i64> {
    if (0..=MAX_PRICE_MINOR).contains(&minor) {
        Ok(minor)
    } else {
        Err(Error::validation(field, "must be from 0 to 1000000000000 (minor units)"))
    }
}

fn checked_rate_limit(per_minute: i64) -> Result<i32> {
    i32::try_from(per_minute)
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| Error::validation("apiRateLimit", "must be from 1 to 2147483647 (requests per minute)"))
}

/// All eight flags: the given ones, the others from `base` (off on a new plan).
fn checked_features(given: BTreeMap<String, bool>, base: Option<&Value>) -> Result<Value> {
    let mut features = Map::new();
    for flag in FLAGS {
        let on = base.and_then(|b| b.get(flag)).and_then(Value::as_bool).unwrap_or(false);
        features.insert(flag.to_owned(), Value::Bool(on));
    }
    for (flag, on) in given {
        if !FLAGS.contains(&flag.as_str()) {
            return Err(Error::validation(format!("features.{flag}"), "unknown feature flag"));
        }
        features.insert(flag, Value::Bool(on));
    }
    Ok(Value::Object(features))
}

/// The given resources' terms over `base`'s; every resource must end up with a quota.
fn checked_quotas(given: BTreeMap<String, QuotaTerms>, base: Option<&Value>) -> Result<Value> {
    let mut quotas = base.and_then(Value::as_object).cloned().unwrap_or_default();
    for (key, terms) in given {
        let field = format!("quotas.{key}");
        let resource = Resource::parse(&key).ok_or_else(|| Error::validation(&field, "unknown resource"))?;
        if terms.limit < 0 {
            return Err(Error::validation(format!("{field}.limit"), "must be 0 or more"));
        }
        let unit = terms.unit.trim();
        if unit.is_empty() || unit.chars().count() > 20 || unit.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::validation(format!("{field}.unit"), "1 to 20 characters, no spaces"));
        }
        let period = Period::parse(&terms.reset_period);
        match (resource.is_gauge(), period) {
            (true, Some(Period::None))
            | (false, Some(Period::Hourly | Period::Daily | Period::Weekly | Period::Monthly)) => {}
            (true, _) => {
                return Err(Error::validation(
                    format!("{field}.resetPeriod"),
                    format!("{key} is a gauge: must be none"),
                ));
            }
            (false, _) => {
                let message = format!("{key} is a counter: must be hourly, daily, weekly or monthly");
                return Err(Error::validation(format!("{field}.resetPeriod"), message));
            }
        }
        quotas.insert(key, json!({ "limit": terms.limit, "unit": unit, "resetPeriod": terms.reset_period }));
    }
    if let Some(missing) = Resource::ALL.iter().find(|r| !quotas.contains_key(r.as_str())) {
        return Err(Error::validation(format!("quotas.{}", missing.as_str()), "every resource needs a quota"));
    }
    Ok(Value::Object(quotas))
}

/// The given counters' prices over `base`'s (a `None` removes one).
fn checked_overage_prices(given: BTreeMap<String, Option<OveragePrice>>, base: Option<&Value>) -> Result<Value> {
    let mut prices = base.and_then(Value::as_object).cloned().unwrap_or_default();
    for (key, price) in given {
        let field = format!("overagePrices.{key}");
        let resource = Resource::parse(&key).ok_or_else(|| Error::validation(&field, "unknown resource"))?;
        if resource.is_gauge() {
            return Err(Error::validation(&field, format!("{key} is a gauge: only counters have overage prices")));
        }
        let Some(price) = price else {
            prices.remove(&key);
            continue;
        };
        if price.per <= 0 {
            return Err(Error::validation(format!("{field}.per"), "must be 1 or more"));
        }
        checked_price(price.unit_amount, &format!("{field}.unitAmount"))?;
        prices.insert(key, json!(price));
    }
    Ok(Value::Object(prices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(limit: i64, period: &str) -> QuotaTerms {
        QuotaTerms { limit, unit: "count".into(), reset_period: period.into() }
    }

    fn new_plan() -> PlanDraft {
        let quotas = Resource::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), terms(10, if r.is_gauge() { "none" } else { "daily" })))
            .collect();
        PlanDraft {
            name: Some(" Team ".into()),
            slug: Some("team".into()),
            currency: Some("USD".into()),
            price_monthly: Some(4900),
            price_yearly: Some(49_000),
            api_rate_limit: Some(600),
            features: Some(BTreeMap::from([("apiAccess".to_owned(), true)])),
            quotas: Some(quotas),
            ..PlanDraft::default()
        }
    }

    fn quotas(draft: &mut PlanDraft) -> &mut BTreeMap<String, QuotaTerms> {
        draft.quotas.get_or_insert_default()
    }

    fn field_of(err: Error) -> String {
        match err {
            Error::Validation { field: Some(field), .. } => field,
            other => panic!("not a field error: {other:?}"),
        }
    }

    #[test]
    fn a_new_plan_gets_every_flag_and_its_defaults() {
        let def = new_plan().build(None).expect("valid");
        assert_eq!(def.name, "Team");
        assert_eq!(def.currency.as_str(), "usd");
        assert_eq!(def.features.as_object().map(Map::len), Some(8));
        assert_eq!(def.features["apiAccess"], json!(true));
        assert_eq!(def.features["auditLogs"], json!(false));
        assert_eq!(def.overage_prices, json!({}));
        assert!(def.is_active);
    }

    #[test]
    fn bad_fields_are_named() {
        type Spoil = fn(&mut PlanDraft);
        let cases: [(Spoil, &str); 11] = [
            (|d| d.price_monthly = Some(-1), "priceMonthly"),
            (|d| d.price_yearly = Some(MAX_PRICE_MINOR + 1), "priceYearly"),
            (|d| d.currency = Some("xyz".into()), "currency"),
            (|d| d.api_rate_limit = Some(0), "apiRateLimit"),
            (|d| d.slug = Some("-bad".into()), "slug"),
            (|d| d.features = Some(BTreeMap::from([("teleport".to_owned(), true)])), "features.teleport"),
            (|d| drop(quotas(d).insert("users".into(), terms(5, "daily"))), "quotas.users.resetPeriod"),
            (|d| drop(quotas(d).insert("api_calls".into(), terms(5, "none"))), "quotas.api_calls.resetPeriod"),
            (|d| drop(quotas(d).insert("api_rate".into(), terms(5, "minute"))), "quotas.api_rate"),
            (|d| drop(quotas(d).remove("storage")), "quotas.storage"),
            (|d| d.overage_prices = Some(BTreeMap::from([("users".to_owned(), None)])), "overagePrices.users"),
        ];
        for (spoil, field) in cases {
            let mut draft = new_plan();
            spoil(&mut draft);
            assert_eq!(field_of(draft.build(None).expect_err(field)), field);
        }
        assert_eq!(field_of(PlanDraft { name: None, ..new_plan() }.build(None).expect_err("name")), "name");
    }

    #[test]
    fn a_change_merges_onto_the_current_definition() {
        let base = new_plan().build(None).expect("valid");
        let change = PlanDraft {
            features: Some(BTreeMap::from([("auditLogs".to_owned(), true)])),
            quotas: Some(BTreeMap::from([("api_calls".to_owned(), terms(99, "hourly"))])),
            overage_prices: Some(BTreeMap::from([(
                "api_calls".to_owned(),
                Some(OveragePrice { per: 1000, unit_amount: 50 }),
            )])),
            description: Some(Some("  ".into())),
            ..PlanDraft::default()
        };
        let def = change.build(Some(&base)).expect("valid");
        assert_eq!(def.features["apiAccess"], json!(true));
        assert_eq!(def.features["auditLogs"], json!(true));
        assert_eq!(def.quotas["api_calls"], json!({ "limit": 99, "unit": "count", "resetPeriod": "hourly" }));
        assert_eq!(def.quotas["users"], base.quotas["users"]);
        assert_eq!(def.overage_prices, json!({ "api_calls": { "per": 1000, "unitAmount": 50 } }));
        assert_eq!(def.description, None);
        assert_eq!((def.name.as_str(), def.price_monthly), ("Team", 4900));
        let removed = PlanDraft {
            overage_prices: Some(BTreeMap::from([("api_calls".to_owned(), None)])),
            ..PlanDraft::default()
        };
        assert_eq!(removed.build(Some(&def)).expect("valid").overage_prices, json!({}));
        let renamed = PlanDraft { slug: Some("other".into()), ..PlanDraft::default() };
        assert_eq!(field_of(renamed.build(Some(&def)).expect_err("slug")), "slug");
    }
}
