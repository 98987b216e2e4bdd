//! What "B unchanged" and "each denial counted and audited" are measured against: B's state as a
//! platform admin reads it through the API and as its rows lie in PostgreSQL, and the denial
//! counter and audit rows before and after an attack.

use super::probe::{Body, Ledger, send};
use super::world::World;
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// B's state: every read a platform admin has of it, and its rows in every tenant-scoped table
/// (with its archived sibling's rows and backup, and the stored `Idempotency-Key` answers of B's
/// admin).
pub async fn of_b(world: &World) -> Value {
    let mut state = Map::new();
    let b = &world.b.id;
    for tail in ["", "/config", "/features", "/quotas", "/usage", "/billing", "/invoices", "/jobs", "/metrics"] {
        let path = format!("/api/v1/tenants/{b}{tail}");
        let reply = send(&world.app, Method::GET, &path, &world.platform.token, Body::None, None).await;
        assert!(reply.status.is_success(), "the platform admin reads {path}: {}", reply.summary());
        state.insert(format!("GET {path}"), json!({ "status": reply.status.as_u16(), "body": reply.json() }));
    }
    let tables = [
        ("tenants", "id"),
        ("tenant_configs", "tenant_id"),
        ("tenant_quotas", "tenant_id"),
        ("billing_accounts", "tenant_id"),
        ("invoices", "tenant_id"),
        ("invoice_lines", "tenant_id"),
        ("payments", "tenant_id"),
        ("plan_changes", "tenant_id"),
        ("jobs", "tenant_id"),
        ("outbox_events", "tenant_id"),
        ("usage_history", "tenant_id"),
        ("tenant_backups", "tenant_id"),
    ];
    for tenant in [b, &world.archived.id] {
        for (table, column) in tables {
            let rows = rows(world, &format!("select * from {table} where {column}::text = $1"), tenant).await;
            let populated = if tenant == b { &POPULATED_OF_B[..] } else { &POPULATED_OF_ARCHIVED[..] };
            if populated.contains(&table) {
                assert!(rows.as_array().is_some_and(|r| !r.is_empty()), "{table} holds rows of {tenant}");
            }
            state.insert(format!("{table} of {tenant}"), rows);
        }
    }
    let keys = rows(
        world,
        "select scope, key, method, path, status_code, response_body from idempotency_keys where scope = $1",
        &world.b.admin.sub,
    )
    .await;
    state.insert("idempotency keys of B's admin".into(), keys);
    Value::Object(state)
}

/// The tables that must hold rows of B, and of its archived sibling, for the comparison to mean
/// something.
const POPULATED_OF_B: [&str; 8] = [
    "tenants",
    "tenant_configs",
    "tenant_quotas",
    "billing_accounts",
    "invoices",
    "invoice_lines",
    "jobs",
    "outbox_events",
];
const POPULATED_OF_ARCHIVED: [&str; 3] = ["tenants", "jobs", "tenant_backups"];

async fn rows(world: &World, select: &str, bind: &str) -> Value {
    let sql = format!("select coalesce(jsonb_agg(to_jsonb(r) order by r::text), '[]'::jsonb) from ({select}) r");
    sqlx::query_scalar(&sql).bind(bind).fetch_one(&world.app.db).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Ends an attack: B must look exactly as `before`, and every denial in `ledger` must be
/// accounted for; then every failure the attack found is reported at once.
pub async fn conclude(world: &World, ledger: &mut Ledger, before: &Value, denials: &Denials, attackers: &[&str]) {
    denials.check_accounted(world, ledger, attackers).await;
    let after = of_b(world).await;
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else { panic!("snapshots are objects") };
    for (part, value) in before {
        ledger.check(after.get(part) == Some(value), || {
            format!("B changed under the attack: {part}\n    before {value}\n    after  {}", after[part])
        });
    }
    ledger.assert_clean();
}

/// The denial counter and the audit log, to compare before and after an attack.
pub struct Denials {
    metric: f64,
    last_audit_id: i64,
}

impl Denials {
    pub async fn read(world: &World) -> Denials {
        let metric = world.app.metric("tenant_cross_tenant_denials_total").await.unwrap_or(0.0);
        let last_audit_id: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from audit_log")
            .fetch_one(&world.app.db)
            .await
            .expect("audit log");
        Denials { metric, last_audit_id }
    }

    /// Every denial the ledger saw was counted once in the metric and audited once against B's
    /// side (B or its archived sibling), naming A as the token's tenant and one of `attackers`
    /// (user ids) as the actor, and nothing else was.
    async fn check_accounted(&self, world: &World, ledger: &mut Ledger, attackers: &[&str]) {
        let denied = ledger.denials;
        let counted = world.app.metric("tenant_cross_tenant_denials_total").await.unwrap_or(0.0) - self.metric;
        ledger.check(counted == denied as f64, || {
            format!("{denied} cross-tenant denials answered, {counted} counted in tenant_cross_tenant_denials_total")
        });
        let audited: Vec<(Option<Uuid>, String, Option<Value>)> = sqlx::query_as(
            "select tenant_id, actor_id, new_value from audit_log \
             where id > $1 and action = 'access.cross_tenant_denied' order by id",
        )
        .bind(self.last_audit_id)
        .fetch_all(&world.app.db)
        .await
        .expect("audit rows");
        ledger.check(audited.len() as u64 == denied, || {
            format!("{denied} cross-tenant denials answered, {} audited as access.cross_tenant_denied", audited.len())
        });
        let victims = [world.b.id.as_str(), world.archived.id.as_str()];
        let anonymous = audited.iter().filter(|(tenant, _, _)| tenant.is_none()).count() as u64;
        let expected = ledger.anonymous_denials;
        ledger.check(anonymous == expected, || {
            format!("{expected} denials of unknown slugs, {anonymous} audited without a tenant")
        });
        for (tenant, actor, new_value) in audited {
            let Some(tenant) = tenant.map(|t| t.to_string()) else { continue };
            let token_tenant = new_value.map(|v| v["tokenTenantId"].clone()).unwrap_or_default();
            let right = victims.contains(&tenant.as_str())
                && attackers.contains(&actor.as_str())
                && token_tenant == json!(world.a.id);
            ledger.check(right, || {
                format!("a denial audited against {tenant} for {actor} holding a token of {token_tenant}")
            });
        }
    }
}
