//! Row-level security, seen from the application role itself.

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tenant_domain::{TenantId, TenantStatus, db};
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

/// Every table of the public schema that holds tenant rows: `tenants` and every table with a
/// `tenant_id` column, read from the catalog so a new table is covered without editing a test.
async fn tenant_scoped_tables(db: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where n.nspname = 'public' and c.relkind in ('r', 'p') \
           and (c.relname = 'tenants' or exists (select from pg_attribute a where a.attrelid = c.oid \
                and a.attname = 'tenant_id' and not a.attisdropped)) order by 1",
    )
    .fetch_all(db)
    .await
    .expect("catalog")
}

#[tokio::test]
async fn every_tenant_scoped_table_has_forced_row_level_security_and_both_policies() {
    let app = TestApp::spawn().await;
    let tables = tenant_scoped_tables(&app.db).await;
    assert!(tables.len() >= 14, "the catalog query finds the tenant tables: {tables:?}");
    for table in &tables {
        let (enabled, forced): (bool, bool) =
            sqlx::query_as("select relrowsecurity, relforcerowsecurity from pg_class where oid = $1::regclass")
                .bind(table)
                .fetch_one(&app.db)
                .await
                .expect("catalog");
        assert!(enabled, "{table}: row-level security is not enabled");
        assert!(forced, "{table}: row-level security is not forced (the owner would bypass it)");
        let policies: Vec<(String, Vec<String>)> = sqlx::query_as(
            "select policyname::text, roles::text[] from pg_policies where schemaname = 'public' and tablename = $1 \
             order by 1",
        )
        .bind(table)
        .fetch_all(&app.db)
        .await
        .expect("policies");
        let names: Vec<&str> = policies.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["platform_access", "tenant_isolation"], "{table}");
        assert_eq!(policies[0].1, ["tenant_platform"], "{table}: the see-all policy is for the platform role only");
    }
    // Neither role the service runs as can bypass the policies.
    let bypass: i64 = sqlx::query_scalar(
        "select count(*) from pg_roles where rolname in ('tenant_app', 'tenant_platform') and (rolbypassrls or rolsuper)",
    )
    .fetch_one(&app.db)
    .await
    .expect("roles");
    assert_eq!(bypass, 0);
    // The service's pool runs as the platform role, never as the owner.
    let role: String = sqlx::query_scalar("select current_user::text").fetch_one(&app.db).await.expect("role");
    assert_eq!(role, "tenant_platform");
}

/// Gives tenant `t` a row in the tables a tenant accumulates (beyond its quotas and config).
async fn give_rows(db: &sqlx::PgPool, t: TenantId) {
    for sql in [
        "insert into audit_log (tenant_id, actor_type, actor_id, action) values ($1, 'system', 'test', 'test.row')",
        "insert into outbox_events (id, tenant_id, event_type, payload) values (gen_random_uuid(), $1, 'test.row', '{}')",
        "insert into jobs (id, kind, tenant_id, payload) values (gen_random_uuid(), 'test', $1, '{}')",
        "insert into usage_history (tenant_id, resource_type, bucket_start, window_start, used) \
         values ($1, 'api_calls', date_trunc('hour', now()), date_trunc('hour', now()), 5)",
        "insert into sent_emails (tenant_id, idempotency_key, kind, recipient, message_id, status) \
         values ($1, gen_random_uuid()::text, 'test', 'x@example.com', 'm', 'sent')",
    ] {
        sqlx::query(sql).bind(t).execute(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[tokio::test]
async fn the_tenant_scoped_path_sees_and_writes_only_its_tenant_even_without_a_where_clause() {
    let app = TestApp::spawn().await;
    let a = app.insert_tenant("Scoped A", "scoped-a", "pro", TenantStatus::Active).await;
    let b = app.insert_tenant("Scoped B", "scoped-b", "free", TenantStatus::Active).await;
    for t in [&a, &b] {
        app.insert_quotas_from_plan(t).await;
        tenant_domain::tenant_config::insert_defaults(&app.db, t.id).await.expect("config");
        give_rows(&app.db, t.id).await;
    }
    let tables = tenant_scoped_tables(&app.db).await;
    let column = |table: &str| if table == "tenants" { "id" } else { "tenant_id" };

    // Through the service's own tenant-scoped transaction, with A's id: every table holds only
    // A's rows, and all of them, for queries that name no tenant at all.
    let mut tx = db::begin_tenant(&app.db, a.id).await.expect("tenant tx");
    let mut tables_with_b_rows = 0;
    for table in &tables {
        let col = column(table);
        let seen: Vec<Option<uuid::Uuid>> = sqlx::query_scalar(&format!("select {col} from {table}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert!(seen.iter().all(|t| *t == Some(a.id.0)), "{table}: another tenant's row seen as A");
        let (of_a, of_b): (i64, i64) = sqlx::query_as(&format!(
            "select count(*) filter (where {col} = $1), count(*) filter (where {col} = $2) from {table}"
        ))
        .bind(a.id)
        .bind(b.id)
        .fetch_one(&app.db)
        .await
        .expect("platform count");
        assert_eq!(seen.len() as i64, of_a, "{table}: A sees all its own rows");
        if of_b > 0 {
            tables_with_b_rows += 1;
        }
    }
    assert!(tables_with_b_rows >= 8, "the test gave B rows in most tables ({tables_with_b_rows})");

    // Writes: B's rows can't be changed, removed or created, whatever the query forgets.
    let changed = sqlx::query("update tenants set name = 'pwned'").execute(&mut *tx).await.expect("update");
    assert_eq!(changed.rows_affected(), 1, "only A's own row");
    let deleted = sqlx::query("delete from tenant_configs").execute(&mut *tx).await.expect("delete");
    let a_configs: i64 = sqlx::query_scalar("select count(*) from tenant_configs where tenant_id = $1")
        .bind(a.id)
        .fetch_one(&app.db)
        .await
        .expect("count");
    assert_eq!(deleted.rows_affected() as i64, a_configs, "only A's config rows");
    let err = sqlx::query(
        "insert into tenant_configs (tenant_id, category, key, value, data_type) values ($1, 'branding', 'x', '1', 'number')",
    )
    .bind(b.id)
    .execute(&mut *tx)
    .await
    .expect_err("a row for B is refused");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.expect("rollback");

    let mut tx = db::begin_tenant(&app.db, a.id).await.expect("tenant tx");
    let err = sqlx::query("update tenant_quotas set tenant_id = $1").bind(b.id).execute(&mut *tx).await;
    assert!(err.is_err_and(|e| e.to_string().contains("row-level security")), "moving A's rows to B is refused");
    tx.rollback().await.expect("rollback");

    // B is as it was.
    let name: String =
        sqlx::query_scalar("select name from tenants where id = $1").bind(b.id).fetch_one(&app.db).await.expect("q");
    assert_eq!(name, "Scoped B");

    // The store functions read through the same path.
    let mut tx = db::begin_tenant(&app.db, a.id).await.expect("tenant tx");
    let rows = tenant_domain::quota::store::limits(&mut tx).await.expect("quotas");
    assert_eq!(rows.len(), 8);
    let users = rows.iter().find(|r| r.resource_type == "users").expect("users");
    assert_eq!(users.limit_value, 100, "A is on pro, B on free");
}

#[tokio::test]
async fn a_tenant_schema_with_awkward_table_names_dumps_and_restores() {
    use sqlx::Executor;
    use tenant_domain::tenant_schema;
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Quoted", "quoted", "basic", TenantStatus::Active).await;
    tenant_schema::create(&app.db, t.id).await.expect("schema");
    let schema = tenant_schema::schema_name(t.id);
    // Names that only work quoted: mixed case, a space, a quote, a keyword.
    app.owner_db
        .execute(
            format!(
                r#"create table {schema}."Order Items" ("Qty" int primary key, "it""s" text);
                   insert into {schema}."Order Items" values (1, 'one'), (2, 'two');
                   create table {schema}."select" (id int primary key references {schema}."Order Items" ("Qty"));
                   insert into {schema}."select" values (2);"#
            )
            .as_str(),
        )
        .await
        .expect("awkward tables");
    let mut tx = db::begin_owner(&app.db).await.expect("owner tx");
    let dump = tenant_schema::dump(&mut tx, t.id).await.expect("dump");
    tx.rollback().await.expect("rollback");
    let names: Vec<&str> = dump.tables.iter().map(|t| t.name.as_str()).collect();
    assert!(names.contains(&"Order Items") && names.contains(&"select"), "{names:?}");

    tenant_schema::drop(&app.db, t.id).await.expect("drop");
    let mut tx = db::begin_owner(&app.db).await.expect("owner tx");
    tenant_schema::restore(&mut tx, t.id, &dump).await.expect("restore");
    tx.commit().await.expect("commit");
    let rows: Vec<(i32, String)> =
        sqlx::query_as(&format!(r#"select "Qty", "it""s" from {schema}."Order Items" order by 1"#))
            .fetch_all(&app.owner_db)
            .await
            .expect("rows back");
    assert_eq!(rows, [(1, "one".to_owned()), (2, "two".to_owned())]);
    let mut tx = db::begin_owner(&app.db).await.expect("owner tx");
    let again = tenant_schema::dump(&mut tx, t.id).await.expect("dump again");
    tx.rollback().await.expect("rollback");
    assert_eq!(again, dump, "the restored schema dumps the same");
}

/// The owner Compose and `scripts/dev` set up (`deploy/postgres/owner.sql`): an ordinary role
/// that owns the database. The service migrates and runs the whole lifecycle as it — the
/// migrations, the tenant schemas' DDL, a backup's dump, a restore — and yet its own connection
/// sees no tenant row and writes none, because row-level security is forced on it.
#[tokio::test]
async fn an_ordinary_owner_migrates_and_runs_the_service_and_sees_no_tenant_row() {
    use reqwest::Method;
    use sqlx::Executor;
    use std::time::Duration;
    const OWNER: &str = "tt_ordinary_owner";

    let admin_url = tenant_tests::admin_database_url();
    let mut admin = PgConnection::connect(&admin_url).await.expect("admin");
    let name = format!("tt_{}_{}", chrono::Utc::now().timestamp(), uuid::Uuid::new_v4().simple());
    admin.execute(format!("create database \"{name}\"").as_str()).await.expect("create database");
    admin.close().await.expect("close");
    let database_url = tenant_tests::with_database(&admin_url, &name);

    // the set-up, as the superuser, in the new database
    let mut setup = PgConnection::connect(&database_url).await.expect("superuser in the new database");
    assert!(db::check_owner(&mut setup).await.expect("check"), "the service warns about a superuser owner");
    sqlx::query("select set_config('tenant_setup.owner', $1, false), set_config('tenant_setup.password', '', false)")
        .bind(OWNER)
        .execute(&mut setup)
        .await
        .expect("settings");
    sqlx::raw_sql(include_str!("../../deploy/postgres/owner.sql")).execute(&mut setup).await.expect("owner.sql");
    setup.close().await.expect("close");

    let owner_url = with_user(&database_url, OWNER);
    let mut owner = PgConnection::connect(&owner_url).await.expect("connect as the owner");
    let (superuser, bypass, createrole, createdb): (bool, bool, bool, bool) = sqlx::query_as(
        "select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb from pg_roles where rolname = current_user",
    )
    .fetch_one(&mut owner)
    .await
    .expect("role");
    assert!(!superuser && !bypass && !createrole && !createdb, "an ordinary role");
    assert!(!db::check_owner(&mut owner).await.expect("check"), "the service would not warn about it");
    db::migrate_on(&mut owner).await.expect("the migrations run as the ordinary owner");

    let app = TestApp::start(tenant_tests::test_env(&owner_url)).await.expect("api");
    let _worker = app.spawn_worker();
    let token = app.admin_token();
    let (tenant, job) = crate::lifecycle::create(&app, "ordinary", "basic").await;
    let done = app.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(done["status"], json!("succeeded"), "provisioning as the ordinary owner: {done}");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{tenant}/config"),
            Some(&token),
            Some(json!({ "branding": { "companyName": "Ordinary" } })),
        )
        .await;
    assert!(status.is_success(), "{body}");

    // the platform pool sees the tenant; the owner's own connection sees none of its rows
    let id = uuid::Uuid::parse_str(&tenant).expect("uuid");
    for table in ["tenants", "tenant_quotas", "tenant_configs", "audit_log", "jobs", "billing_accounts"] {
        let column = if table == "tenants" { "id" } else { "tenant_id" };
        let sql = format!("select count(*) from {table} where {column} = $1");
        let platform: i64 = sqlx::query_scalar(&sql).bind(id).fetch_one(&app.db).await.expect("platform");
        assert!(platform > 0, "{table}: the platform pool sees the tenant's rows");
        let seen: i64 = sqlx::query_scalar(&sql).bind(id).fetch_one(&mut owner).await.expect("owner");
        assert_eq!(seen, 0, "{table}: the owner sees the tenant's rows");
    }
    let write = sqlx::query(
        "insert into tenant_configs (tenant_id, category, key, value, data_type) values ($1, 'x', 'x', '1', 'number')",
    )
    .bind(id)
    .execute(&mut owner)
    .await
    .expect_err("the owner writes a tenant row");
    assert!(write.to_string().contains("row-level security"), "{write}");

    // deletion (dump, verify, drop the schema) and restore, all as the owner
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&token), None).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("job"), Duration::from_secs(30)).await;
    assert_eq!(job["status"], json!("succeeded"), "deletion: {job}");
    let backup = job["result"]["backupId"].as_str().expect("backupId").to_owned();
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants/restore", Some(&token), Some(json!({ "backupId": backup }))).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("job"), Duration::from_secs(30)).await;
    assert_eq!(job["status"], json!("succeeded"), "restore: {job}");
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}/config"), &token).await;
    assert_eq!(body["data"]["tenant"]["branding"]["companyName"], json!("Ordinary"), "{body}");
}
