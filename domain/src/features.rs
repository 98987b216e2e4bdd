//! Feature flags: the plan gives each of the eight flags a default and decides which are
//! included; a tenant may switch flags off, and on only within its plan; a platform admin may
//! switch anything, recorded as an override. Overrides live in `tenants.features`.

use crate::audit::{self, Actor};
use crate::db::TenantTx;
use crate::{Error, Result, events, plans, tenants};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;

pub const FLAGS: [&str; 8] = [
    "userManagement",
    "fileStorage",
    "realTimeChat",
    "advancedAnalytics",
    "customBranding",
    "apiAccess",
    "ssoIntegration",
    "auditLogs",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlagView {
    pub name: &'static str,
    pub enabled: bool,
    /// `plan` (the plan's default) or `override`.
    pub source: &'static str,
    /// Whether the plan includes the feature.
    pub in_plan: bool,
}

fn in_plan(plan_features: &Value, flag: &str) -> bool {
    plan_features.get(flag).and_then(Value::as_bool).unwrap_or(false)
}

/// Every flag with its value and where the value comes from.
pub fn view(plan_features: &Value, overrides: &Value) -> Vec<FlagView> {
    FLAGS
        .iter()
        .map(|flag| {
            let plan = in_plan(plan_features, flag);
            match overrides.get(*flag).and_then(Value::as_bool) {
                Some(on) => FlagView { name: flag, enabled: on, source: "override", in_plan: plan },
                None => FlagView { name: flag, enabled: plan, source: "plan", in_plan: plan },
            }
        })
        .collect()
}

/// `{flag: enabled}` for every flag.
pub fn effective(plan_features: &Value, overrides: &Value) -> Map<String, Value> {
    view(plan_features, overrides).into_iter().map(|f| (f.name.to_owned(), json!(f.enabled))).collect()
}

/// Applies `changes` (`{flag: true | false | null}`; null drops the override) in the caller's
/// transaction. A non-platform caller enabling a flag outside the plan gets
/// `FEATURE_NOT_IN_PLAN`.
pub async fn patch(
    tx: &mut TenantTx,
    changes: &Map<String, Value>,
    platform_admin: bool,
    actor: &Actor,
    request_id: Option<&str>,
) -> Result<Vec<FlagView>> {
    let tenant = tx.tenant();
    let conn: &mut PgConnection = tx;
    let current = tenants::get_for_update(conn, tenant).await?;
    let plan = plans::find(&mut *conn, &current.plan_id.to_string()).await?;
    let mut overrides = current.features.as_object().cloned().unwrap_or_default();
    let before = view(&plan.features, &current.features);
    for (flag, value) in changes {
        if !FLAGS.contains(&flag.as_str()) {
            return Err(Error::validation(flag.clone(), "unknown feature flag"));
        }
        let included = in_plan(&plan.features, flag);
        match value {
            Value::Null => {
                overrides.remove(flag);
            }
            Value::Bool(on) => {
                if *on && !included && !platform_admin {
                    return Err(Error::Forbidden {
                        code: "FEATURE_NOT_IN_PLAN",
                        message: format!("{flag} is not part of the {} plan", plan.slug).into(),
                    });
                }
                // A tenant choosing the plan's own default needs no override.
                if *on == included && !platform_admin {
                    overrides.remove(flag);
                } else {
                    overrides.insert(flag.clone(), json!(on));
                }
            }
            _ => return Err(Error::validation(flag.clone(), "expected true, false or null")),
        }
    }
    let overrides = Value::Object(overrides);
    let after = view(&plan.features, &overrides);
    if after != before || overrides != current.features {
        sqlx::query("update tenants set features = $2, updated_at = now() where id = $1")
            .bind(tenant)
            .bind(&overrides)
            .execute(&mut *conn)
            .await?;
        let old = effective(&plan.features, &current.features);
        let new = effective(&plan.features, &overrides);
        audit::record(
            &mut *conn,
            audit::Entry {
                tenant: Some(tenant),
                actor,
                action: "tenant.features.update",
                resource: Some(format!("tenants/{tenant}/features")),
                old_value: Some(json!({ "effective": old, "overrides": current.features })),
                new_value: Some(json!({ "effective": new, "overrides": overrides })),
                request_id,
            },
        )
        .await?;
        events::record(
            &mut *conn,
            tenant,
            events::TENANT_FEATURES_UPDATED,
            json!({ "features": new, "overrides": overrides }),
        )
        .await?;
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_say_where_their_value_comes_from() {
        let plan = json!({ "apiAccess": true, "realTimeChat": false });
        let flags = view(&plan, &json!({ "realTimeChat": true, "apiAccess": false }));
        let get = |n: &str| flags.iter().find(|f| f.name == n).cloned().expect("flag");
        assert_eq!(
            get("realTimeChat"),
            FlagView { name: "realTimeChat", enabled: true, source: "override", in_plan: false }
        );
        assert_eq!(get("apiAccess"), FlagView { name: "apiAccess", enabled: false, source: "override", in_plan: true });
        assert_eq!(get("auditLogs"), FlagView { name: "auditLogs", enabled: false, source: "plan", in_plan: false });
        assert_eq!(flags.len(), 8);
    }
}
