//! Row-level security, seen from the application role itself.

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tenant_domain::TenantStatus;
use tenant_tests::{TestApp, with_user};

#[tokio::test]
async fn the_application_role_sees_only_the_tenant_it_is_set_to() {
    let app = TestApp::spawn().await;
    let a = app.insert_tenant("Tenant A", "tenant-a", "basic", TenantStatus::Active).await;
    let b = app.insert_tenant("Tenant B", "tenant-b", "basic", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&a).await;
    app.insert_quotas_from_plan(&b).await;

    let mut conn =
        PgConnection::connect(&with_user(&app.database_url, "tenant_app")).await.expect("connect as tenant_app");
    let role: String = sqlx::query_scalar("select current_user::text").fetch_one(&mut conn).await.expect("q");
    assert_eq!(role, "tenant_app");

    // no tenant set: no tenant rows at all
    for table in ["tenants", "tenant_quotas", "tenant_configs", "audit_log", "jobs"] {
        let n: i64 =
            sqlx::query_scalar(&format!("select count(*) from {table}")).fetch_one(&mut conn).await.expect("q");
        assert_eq!(n, 0, "{table} visible without a tenant");
    }

    // tenant A set: only A's rows
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("select set_config('app.tenant_id', $1, true)")
        .bind(a.id.to_string())
        .execute(&mut *tx)
        .await
        .expect("set");
    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("select distinct tenant_id from tenant_quotas").fetch_all(&mut *tx).await.expect("q");
    assert_eq!(ids, [a.id.0]);
    let tenants: Vec<String> = sqlx::query_scalar("select slug from tenants").fetch_all(&mut *tx).await.expect("q");
    assert_eq!(tenants, ["tenant-a"]);

    // writing a row for B is refused by the policy
    let err = sqlx::query(
        "insert into tenant_configs (tenant_id, category, key, value, data_type) values ($1, 'branding', 'color', $2, 'string')",
    )
    .bind(b.id)
    .bind(json!("#ff0000"))
    .execute(&mut *tx)
    .await
    .expect_err("insert for B must fail");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.expect("rollback");

    // and B's rows can't be changed by a blind update either
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("select set_config('app.tenant_id', $1, true)")
        .bind(a.id.to_string())
        .execute(&mut *tx)
        .await
        .expect("set");
    let changed =
        sqlx::query("update tenant_quotas set limit_value = 0").execute(&mut *tx).await.expect("q").rows_affected();
    assert_eq!(changed, 8, "only A's eight quota rows");
    tx.rollback().await.expect("rollback");

    // the role has no way around the policies
    let bypass: bool = sqlx::query_scalar("select rolbypassrls or rolsuper from pg_roles where rolname = 'tenant_app'")
        .fetch_one(&mut conn)
        .await
        .expect("q");
    assert!(!bypass);
}

#[tokio::test]
async fn the_service_reads_tenant_scoped_rows_through_the_policy() {
    let app = TestApp::spawn().await;
    let a = app.insert_tenant("Scoped A", "scoped-a", "pro", TenantStatus::Active).await;
    let b = app.insert_tenant("Scoped B", "scoped-b", "free", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&a).await;
    app.insert_quotas_from_plan(&b).await;
    let rows = tenant_domain::quota::store::limits(&app.db, a.id).await.expect("quotas");
    assert_eq!(rows.len(), 8);
    let users = rows.iter().find(|r| r.resource_type == "users").expect("users");
    assert_eq!(users.limit_value, 100, "A is on pro, B on free");
}
