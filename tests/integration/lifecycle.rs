//! Tenant lifecycle jobs, end to end: the real API, real workers, real PostgreSQL and Redis, and
//! lettre talking SMTP to a local sink.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tenant_tests::TestApp;
use tenant_tests::smtp_sink::{Slow, SmtpSink};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

pub async fn app_with_sink(slow: Slow) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start(slow).await.expect("smtp sink");
    let port = sink.port.to_string();
    let app = TestApp::spawn_with(|env| {
        env.insert("SMTP_HOST".into(), "127.0.0.1".into());
        env.insert("SMTP_PORT".into(), port);
        env.insert("SMTP_TLS".into(), "none".into());
    })
    .await;
    (app, sink)
}

pub fn create_body(slug: &str, plan: &str) -> Value {
    json!({
        "name": format!("Tenant {slug}"),
        "slug": slug,
        "domain": format!("{slug}.example.com"),
        "planId": plan,
        "ownerId": Uuid::new_v4(),
        "ownerEmail": format!("owner@{slug}.example.com"),
    })
}

/// POSTs a tenant; returns (tenant id, job id).
pub async fn create(app: &TestApp, slug: &str, plan: &str) -> (String, String) {
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants", Some(&app.admin_token()), Some(create_body(slug, plan))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let tenant = body["data"]["tenant"]["id"].as_str().expect("tenant id").to_owned();
    let job = body["data"]["job"]["id"].as_str().expect("job id").to_owned();
    (tenant, job)
}

/// The backup's object key, SHA-256 and size, as recorded.
async fn backup_row(app: &TestApp, backup_id: &str) -> (String, String, i64) {
    sqlx::query_as("select object_key, sha256, size_bytes from tenant_backups where id = $1")
        .bind(Uuid::parse_str(backup_id).expect("uuid"))
        .fetch_one(&app.db)
        .await
        .expect("backup row")
}

async fn count(app: &TestApp, sql: &str, tenant: &str) -> i64 {
    sqlx::query_scalar(sql).bind(Uuid::parse_str(tenant).expect("uuid")).fetch_one(&app.db).await.expect(sql)
}

async fn schema_exists(app: &TestApp, tenant: &str) -> bool {
    sqlx::query_scalar("select exists (select from pg_namespace where nspname = $1)")
        .bind(format!("tenant_{}", tenant.replace('-', "")))
        .fetch_one(&app.db)
        .await
        .expect("q")
}

/// Everything the tenant owns, as comparable JSON: scoped rows and every row of its schema.
async fn snapshot(app: &TestApp, tenant: &str) -> Value {
    let id = Uuid::parse_str(tenant).expect("uuid");
    let schema = format!("tenant_{}", tenant.replace('-', ""));
    let mut out = serde_json::Map::new();
    for table in ["tenant_configs", "tenant_quotas"] {
        let rows: Vec<Value> =
            sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t where tenant_id = $1 order by id"))
                .bind(id)
                .fetch_all(&app.db)
                .await
                .expect("rows");
        out.insert(table.into(), Value::Array(rows));
    }
    // A restored tenant keeps its customer, plan and anchor but is subscribed afresh (the old
    // subscription was canceled at deletion), in a period that starts at the restore: the time it
    // spent deleted is not billed.
    let billing: Vec<Value> = sqlx::query_scalar(
        "select to_jsonb(t) - 'updated_at' - 'status' - 'canceled_at' - 'subscription_ref' \
             - 'current_period_start' - 'current_period_end' - 'invoiced_through' \
         from billing_accounts t where tenant_id = $1",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await
    .expect("rows");
    out.insert("billing_accounts".into(), Value::Array(billing));
    for table in ["users", "documents", "settings"] {
        let rows: Vec<Value> = sqlx::query_scalar(&format!("select to_jsonb(t) from {schema}.{table} t order by 1"))
            .fetch_all(&app.owner_db)
            .await
            .expect("schema rows");
        out.insert(format!("{schema}.{table}"), Value::Array(rows));
    }
    let tenant_row: Value = sqlx::query_scalar(
        "select jsonb_build_object('name', name, 'slug', slug, 'domain', domain, 'planId', plan_id, 'ownerId', owner_id, \
         'ownerEmail', owner_email, 'settings', settings, 'features', features, 'createdAt', created_at) from tenants where id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("tenant");
    out.insert("tenant".into(), tenant_row);
    Value::Object(out)
}

#[tokio::test]
async fn create_delete_and_restore_round_trip() {
    let (app, sink) = app_with_sink(Slow::No).await;
    let _worker = app.spawn_worker();
    let token = app.admin_token();

    // create → 202 with the job to poll
    let request = create_body("acme", "pro");
    let res = app
        .client
        .post(app.url("/api/v1/tenants"))
        .bearer_auth(&token)
        .header("idempotency-key", "create-acme-1")
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers().get("location").expect("Location").to_str().expect("ascii").to_owned();
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"]["tenant"]["status"], json!("provisioning"));
    let tenant = body["data"]["tenant"]["id"].as_str().expect("id").to_owned();
    let job_id = body["data"]["job"]["id"].as_str().expect("id").to_owned();
    assert_eq!(location, format!("/api/v1/jobs/{job_id}"));
    assert_eq!(body["data"]["job"]["kind"], json!("provision_tenant"));

    // the same key again: the same answer, nothing done twice
    let res = app
        .client
        .post(app.url("/api/v1/tenants"))
        .bearer_auth(&token)
        .header("idempotency-key", "create-acme-1")
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.headers().get("idempotent-replayed").map(|v| v.to_str().ok()), Some(Some("true")));
    assert_eq!(res.headers().get("location").map(|v| v.to_str().ok()), Some(Some(location.as_str())));
    let replay: Value = res.json().await.expect("json");
    assert_eq!(replay["data"]["job"]["id"], json!(job_id));
    // …and the same key for a different request is refused
    let res = app
        .client
        .post(app.url("/api/v1/tenants"))
        .bearer_auth(&token)
        .header("idempotency-key", "create-acme-1")
        .json(&create_body("acme-two", "pro"))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let job = app.wait_job(&job_id, DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let steps: Vec<(&str, &str)> = job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["name"].as_str().unwrap_or(""), s["status"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(steps.len(), 6);
    assert!(steps.iter().all(|(_, status)| *status == "succeeded"), "{steps:?}");
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &token).await;
    assert_eq!(body["data"]["status"], json!("active"));
    assert_eq!(body["data"]["quotas"].as_array().map(Vec::len), Some(8));
    assert!(schema_exists(&app, &tenant).await);
    assert_eq!(count(&app, "select count(*) from tenants where slug = 'acme' and id <> $1", &tenant).await, 0);
    let default_rows: usize = tenant_domain::tenant_config::schema::CATEGORIES
        .iter()
        .map(|c| tenant_domain::tenant_config::schema::leaves(c).len())
        .sum();
    let rows = count(&app, "select count(*) from tenant_configs where tenant_id = $1", &tenant).await;
    assert_eq!(rows, i64::try_from(default_rows + 1).expect("small"), "every default, and initializedAt");
    assert_eq!(
        count(&app, "select count(*) from billing_accounts where tenant_id = $1 and status = 'active'", &tenant).await,
        1
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, ["owner@acme.example.com"]);
    assert_eq!(mails[0].message_id.as_deref(), Some(format!("<welcome.{job_id}@tenant-service>").as_str()));
    let created: i64 = count(
        &app,
        "select count(*) from outbox_events where tenant_id = $1 and event_type = 'tenant.created'",
        &tenant,
    )
    .await;
    assert_eq!(created, 1);

    // the tenant gets data of its own
    let schema = format!("tenant_{}", tenant.replace('-', ""));
    sqlx::raw_sql(&format!(
        "insert into {schema}.users (email, display_name) values ('a@acme.test', 'Ann'), ('b@acme.test', 'Bob'); \
         insert into {schema}.documents (title, body, created_by) select 'Plan', '{{\"k\": [1, 2]}}', id from {schema}.users; \
         insert into {schema}.settings (key, value) values ('theme', '\"dark\"')"
    ))
    .execute(&app.owner_db)
    .await
    .expect("tenant data");
    sqlx::query("update tenant_quotas set used_value = 42 where tenant_id = $1 and resource_type = 'users'")
        .bind(Uuid::parse_str(&tenant).expect("uuid"))
        .execute(&app.db)
        .await
        .expect("usage");
    let before = snapshot(&app, &tenant).await;

    // delete → backup verified, then everything gone
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["tenant"]["status"], json!("deleting"));
    // from now on its quota checks are denied
    let res = app
        .client
        .post(app.url(&format!("/internal/tenants/{tenant}/quota-check")))
        .header("x-service-token", tenant_tests::SERVICE_TOKEN)
        .json(&json!({ "resource": "api_calls" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("id"), DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let backup_id = job["result"]["backupId"].as_str().expect("backupId").to_owned();

    let (object_key, sha256, size) = backup_row(&app, &backup_id).await;
    let file = std::fs::read(std::path::Path::new(&app.env["BACKUP_DIR"]).join(&object_key)).expect("archive file");
    assert_eq!(hex::encode(Sha256::digest(&file)), sha256);
    assert_eq!(i64::try_from(file.len()).expect("len"), size);
    assert!(!file.windows(8).any(|w| w == b"a@acme.t"), "archive is not encrypted");

    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &token).await;
    assert_eq!(body["data"]["status"], json!("deleted"));
    assert!(!schema_exists(&app, &tenant).await);
    for table in ["tenant_configs", "tenant_quotas", "billing_accounts"] {
        assert_eq!(
            count(&app, &format!("select count(*) from {table} where tenant_id = $1"), &tenant).await,
            0,
            "{table}"
        );
    }
    assert_eq!(sink.mails().len(), 2, "deletion notice");

    // restore → every row as it was
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants/restore", Some(&token), Some(json!({ "backupId": backup_id }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("id"), DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &token).await;
    assert_eq!(body["data"]["status"], json!("active"));
    let after = snapshot(&app, &tenant).await;
    assert_eq!(before, after);
    let (status, subscription): (String, Option<String>) =
        sqlx::query_as("select status, subscription_ref from billing_accounts where tenant_id = $1")
            .bind(Uuid::parse_str(&tenant).expect("uuid"))
            .fetch_one(&app.db)
            .await
            .expect("account");
    assert_eq!(status, "active");
    assert!(subscription.is_some_and(|s| s.starts_with("sub_")), "subscribed again");

    // the tenant's jobs, newest first
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &token).await;
    let kinds: Vec<&str> = body["data"].as_array().expect("jobs").iter().filter_map(|j| j["kind"].as_str()).collect();
    assert_eq!(kinds, ["restore_tenant", "delete_tenant", "provision_tenant"]);
}

#[tokio::test]
async fn a_permanent_billing_failure_compensates_and_leaves_the_tenant_failed() {
    let (app, sink) = app_with_sink(Slow::No).await;
    // A plan priced in a currency billing can't charge: the billing step refuses for good.
    sqlx::query("update subscription_plans set currency = 'zzz' where slug = 'basic'")
        .execute(&app.db)
        .await
        .expect("q");
    let _worker = app.spawn_worker();
    let (tenant, job_id) = create(&app, "doomed", "basic").await;

    let job = app.wait_job(&job_id, DEADLINE).await;
    assert_eq!(job["status"], json!("compensated"), "{job}");
    assert_eq!(job["error"]["step"], json!("billing_account"));
    let reason = job["error"]["message"].as_str().expect("reason");
    assert!(reason.contains("unsupported currency"), "{reason}");
    let statuses: Vec<&str> =
        job["steps"].as_array().expect("steps").iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["compensated", "compensated", "compensated", "compensated", "pending", "pending"]);
    assert_eq!(job["steps"][3]["error"].as_str(), Some(reason));

    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
    assert_eq!(body["data"]["status"], json!("failed"));
    assert_eq!(body["data"]["statusReason"].as_str(), Some(reason));
    assert!(!schema_exists(&app, &tenant).await, "schema dropped");
    for table in ["tenant_configs", "tenant_quotas", "billing_accounts"] {
        assert_eq!(
            count(&app, &format!("select count(*) from {table} where tenant_id = $1"), &tenant).await,
            0,
            "{table}"
        );
    }
    assert!(sink.mails().is_empty(), "no welcome mail for a failed tenant");
    assert_eq!(
        count(
            &app,
            "select count(*) from outbox_events where tenant_id = $1 and event_type = 'tenant.created'",
            &tenant
        )
        .await,
        0
    );

    // a failed tenant can be deleted (its backup holds what little there is)
    let (status, _) =
        app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&app.admin_token()), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn lifecycle_requests_are_validated_and_guarded() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    for (body, field) in [
        (json!({ "name": "X", "slug": "Bad_Slug", "planId": "pro", "ownerId": Uuid::new_v4() }), "slug"),
        (json!({ "name": "X", "slug": "ok-slug", "planId": "platinum", "ownerId": Uuid::new_v4() }), "planId"),
        (
            json!({ "name": "X", "slug": "ok-slug", "planId": "pro", "ownerId": Uuid::new_v4(), "ownerEmail": "nope" }),
            "ownerEmail",
        ),
        (
            json!({ "name": "X", "slug": "ok-slug", "planId": "pro", "ownerId": Uuid::new_v4(), "features": { "teleport": true } }),
            "features.teleport",
        ),
        (json!({ "name": "X", "slug": "ok-slug", "planId": "pro", "ownerId": "not-a-uuid" }), ""),
        (json!({ "slug": "ok-slug", "planId": "pro", "ownerId": Uuid::new_v4() }), ""),
    ] {
        let (status, res) = app.call(Method::POST, "/api/v1/tenants", Some(&token), Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {res}");
        assert_eq!(res["error"]["code"], json!("VALIDATION_FAILED"));
        if !field.is_empty() {
            assert_eq!(res["error"]["details"]["field"], json!(field), "{res}");
        }
    }
    let jobs: i64 = sqlx::query_scalar("select count(*) from jobs").fetch_one(&app.db).await.expect("q");
    assert_eq!(jobs, 0, "refused requests leave nothing behind");

    // only platform staff create and delete
    let (tenant, _) = create(&app, "guarded", "free").await;
    let tenant_admin = app.token(&["tenant_admin"], Some(tenant.parse().expect("uuid")));
    let (status, _) =
        app.call(Method::POST, "/api/v1/tenants", Some(&tenant_admin), Some(create_body("sneaky", "free"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&tenant_admin), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // slugs are unique; a provisioning tenant can't be deleted; jobs are scoped to their tenant
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants", Some(&token), Some(create_body("guarded", "free"))).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("TENANT_SLUG_TAKEN")));
    let (status, body) = app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&token), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("INVALID_STATE")));
    let other = app.token(&["tenant_admin"], Some(tenant_domain::TenantId::new_v7()));
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}/jobs"), &token).await;
    let job_id = body["data"][0]["id"].as_str().expect("job").to_owned();
    let (status, body) = app.get(&format!("/api/v1/jobs/{job_id}"), &other).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("CROSS_TENANT_ACCESS_DENIED")));
    assert_eq!(app.get(&format!("/api/v1/jobs/{job_id}"), &tenant_admin).await.0, StatusCode::OK);
    let (status, body) = app.get(&format!("/api/v1/jobs/{}", Uuid::new_v4()), &token).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("JOB_NOT_FOUND")));
    let (status, body) = app
        .call(Method::POST, "/api/v1/tenants/restore", Some(&token), Some(json!({ "backupId": Uuid::new_v4() })))
        .await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("BACKUP_NOT_FOUND")));
}

/// Deletes `tenant` and waits; returns the backup id.
pub async fn delete_and_wait(app: &TestApp, tenant: &str) -> String {
    let (status, body) =
        app.call(Method::DELETE, &format!("/api/v1/tenants/{tenant}"), Some(&app.admin_token()), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("id"), DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    job["result"]["backupId"].as_str().expect("backupId").to_owned()
}

#[tokio::test]
async fn restore_refuses_a_taken_slug_and_a_tampered_archive() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let token = app.admin_token();

    let (first, job) = create(&app, "phoenix", "basic").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let backup = delete_and_wait(&app, &first).await;
    // the slug is free again, and someone takes it
    let (second, job) = create(&app, "phoenix", "basic").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants/restore", Some(&token), Some(json!({ "backupId": backup }))).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("TENANT_SLUG_TAKEN")), "{body}");
    let (_, body) = app.get(&format!("/api/v1/tenants/{first}"), &token).await;
    assert_eq!(body["data"]["status"], json!("deleted"), "refused restore changed nothing");

    // a restore of an active tenant's backup is refused too
    let (status, _) = app.call(Method::DELETE, &format!("/api/v1/tenants/{second}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // an archive changed in the store fails its hash check; nothing is restored
    let (third, job) = create(&app, "tamper", "basic").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let backup = delete_and_wait(&app, &third).await;
    let object_key: String = sqlx::query_scalar("select object_key from tenant_backups where id = $1")
        .bind(Uuid::parse_str(&backup).expect("uuid"))
        .fetch_one(&app.db)
        .await
        .expect("row");
    let path = std::path::Path::new(&app.env["BACKUP_DIR"]).join(object_key);
    let mut bytes = std::fs::read(&path).expect("archive");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).expect("tampered");
    let (status, body) =
        app.call(Method::POST, "/api/v1/tenants/restore", Some(&token), Some(json!({ "backupId": backup }))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("id"), DEADLINE).await;
    assert_eq!(job["status"], json!("compensated"), "{job}");
    assert!(job["error"]["message"].as_str().is_some_and(|m| m.contains("hash mismatch")), "{job}");
    let (_, body) = app.get(&format!("/api/v1/tenants/{third}"), &token).await;
    assert_eq!(body["data"]["status"], json!("deleted"));
    assert!(!schema_exists(&app, &third).await);
}

#[tokio::test]
async fn finished_deliveries_are_vacuumed_from_redis() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(create(&app, &format!("swept-{i}"), "free").await.1);
    }
    for job in &jobs {
        assert_eq!(app.wait_job(job, DEADLINE).await["status"], json!("succeeded"));
    }
    let config = app.state.queue.config(tenant_jobs::JobKind::ProvisionTenant);
    let mut conn = app.state.redis.clone();
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        // apalis acknowledges right after the handler returns
        let done: u64 = redis::cmd("SCARD").arg(config.done_jobs_set()).query_async(&mut conn).await.expect("scard");
        if done >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "deliveries not acknowledged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let ctx = tenant_worker::context(std::sync::Arc::new(app.config.clone()), stop_rx).await.expect("ctx");
    let removed = tenant_worker::scheduler::vacuum_once(&ctx, Duration::ZERO).await.expect("vacuum");
    assert!(removed.is_some_and(|n| n >= 3), "{removed:?}");
    assert_eq!(
        tenant_worker::scheduler::vacuum_once(&ctx, Duration::ZERO).await.expect("vacuum"),
        None,
        "one worker per period"
    );
    let done: u64 = redis::cmd("SCARD").arg(config.done_jobs_set()).query_async(&mut conn).await.expect("scard");
    let data: u64 = redis::cmd("HLEN").arg(config.job_data_hash()).query_async(&mut conn).await.expect("hlen");
    assert_eq!((done, data), (0, 0));
    // the job rows keep the history, and nothing is re-run
    tokio::time::sleep(Duration::from_millis(800)).await;
    for job in &jobs {
        let (_, body) = app.get(&format!("/api/v1/jobs/{job}"), &app.admin_token()).await;
        assert_eq!((body["data"]["status"].clone(), body["data"]["attempts"].clone()), (json!("succeeded"), json!(1)));
    }
}

#[tokio::test]
async fn the_worker_reports_its_jobs_in_prometheus_text() {
    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let _worker = app.spawn_worker_with(|env| {
        env.insert("WORKER_METRICS_PORT".into(), port.to_string());
        env.insert("SERVICE_HOST".into(), "127.0.0.1".into());
    });
    let (_, job) = create(&app, "measured", "free").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + DEADLINE;
    let text = loop {
        if let Ok(res) = app.client.get(format!("{url}/metrics")).send().await {
            let text = res.text().await.expect("text");
            if text.contains(r#"tenant_jobs_total{kind="provision_tenant",outcome="succeeded"} 1"#) {
                break text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "worker metrics never showed the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("tenant_job_duration_seconds_bucket{kind=\"provision_tenant\""), "{text}");
    assert!(text.contains("tenant_jobs_open{status=\"running\"} 0"), "{text}");
    assert!(text.contains("tenant_queue_depth 0"), "{text}");
    assert!(text.contains("tenant_outbox_unpublished"), "{text}");
    assert!(text.contains("tenant_worker_restarts_total 0"), "{text}");
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert!(text.contains("process_cpu_seconds_total "), "{text}");
    assert!(text.contains("tenant_service_cpu_usage_percent "), "{text}");
    let res = app.client.get(format!("{url}/health")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let health: Value = res.json().await.expect("json");
    assert_eq!(health["data"]["queueWorkerRestarts"], json!(0), "{health}");
}

/// One server-sent event: its `event`, `id` and `data` (parsed as JSON).
#[derive(Debug)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// Reads events from a `text/event-stream` response; `None` when the server ended the stream.
pub struct SseReader {
    res: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Sse { event, id, data: serde_json::from_str(&data).expect("event data is JSON") });
            }
            let chunk = tokio::time::timeout(DEADLINE, self.res.chunk()).await.expect("stream went quiet");
            self.buf.push_str(std::str::from_utf8(&chunk.expect("chunk")?).expect("utf-8"));
        }
    }
}

pub async fn open_events(app: &TestApp, job: &str, token: &str) -> SseReader {
    let res =
        app.client.get(app.url(&format!("/api/v1/jobs/{job}/events"))).bearer_auth(token).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    SseReader { res, buf: String::new() }
}

fn step_states(job: &Value) -> Vec<String> {
    job["steps"].as_array().expect("steps").iter().map(|s| s["status"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn job_progress_streams_as_server_sent_events_until_the_job_finishes() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_tenant, job) = create(&app, "streamed", "basic").await;

    // No worker yet: the stream opens on the queued job.
    let mut events = open_events(&app, &job, &token).await;
    let first = events.next().await.expect("first event");
    assert_eq!((first.event.as_str(), first.data["status"].as_str()), ("progress", Some("queued")), "{first:?}");
    assert_eq!(first.data["id"], json!(job));
    assert!(step_states(&first.data).iter().all(|s| s == "pending"));

    // A worker runs it: changes arrive as they are committed (by notification, well before the
    // stream's 15 s fallback re-read), in order, and the last one says `finished`.
    let started = std::time::Instant::now();
    let _worker = app.spawn_worker();
    let mut seen = vec![first];
    while seen.last().is_some_and(|e| e.event == "progress") {
        seen.push(events.next().await.expect("the stream ends only after `finished`"));
    }
    assert!(started.elapsed() < Duration::from_secs(10), "finished arrived after {:?}", started.elapsed());
    let last = seen.last().expect("events");
    assert_eq!(last.event, "finished");
    assert_eq!(last.data["status"], json!("succeeded"));
    assert!(step_states(&last.data).iter().all(|s| s == "succeeded"), "{:?}", last.data);
    assert!(events.next().await.is_none(), "the stream ends after `finished`");
    // each event differs from the one before; ids (update times) never go back; steps only advance
    let rank = |s: &str| ["pending", "running", "succeeded"].iter().position(|r| *r == s).expect("a forward state");
    for pair in seen.windows(2) {
        assert_ne!(pair[0].data, pair[1].data);
        assert!(pair[0].id.parse::<i64>().expect("id") <= pair[1].id.parse::<i64>().expect("id"));
        for (a, b) in step_states(&pair[0].data).iter().zip(step_states(&pair[1].data).iter()) {
            assert!(rank(a) <= rank(b), "a step went from {a} to {b}");
        }
    }
    // the last event is what polling answers
    let (_, polled) = app.get(&format!("/api/v1/jobs/{job}"), &token).await;
    assert_eq!(last.data, polled["data"]);

    // A finished job streams its final state once and ends.
    let mut again = open_events(&app, &job, &token).await;
    let only = again.next().await.expect("one event");
    assert_eq!((only.event.as_str(), &only.data), ("finished", &polled["data"]));
    assert!(again.next().await.is_none());

    // Guarded like polling: another tenant's admin is refused, an unknown job is 404, in the envelope.
    let other = app.token(&["tenant_admin"], Some(Uuid::new_v4().into()));
    let (status, body) = app.call(Method::GET, &format!("/api/v1/jobs/{job}/events"), Some(&other), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) =
        app.call(Method::GET, &format!("/api/v1/jobs/{}/events", Uuid::new_v4()), Some(&token), None).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("JOB_NOT_FOUND")));
}

#[tokio::test]
async fn an_open_job_stream_ends_when_the_api_shuts_down() {
    let mut app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_tenant, job) = create(&app, "stream-stop", "free").await;
    // No worker: the job stays queued and the stream would stay open.
    let mut events = open_events(&app, &job, &token).await;
    assert_eq!(events.next().await.expect("first event").data["status"], json!("queued"));
    let asked = std::time::Instant::now();
    app.begin_shutdown();
    let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(matches!(end, Ok(None)), "the stream must end so the server can stop: {end:?}");
    assert!(asked.elapsed() < Duration::from_secs(5), "ended after {:?}", asked.elapsed());
    // and the server did stop: new connections are refused
    let mut refused = false;
    for _ in 0..50 {
        if app.client.get(app.url("/livez")).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the server still answers after its shutdown");
}

#[tokio::test]
async fn backups_go_to_s3_compatible_storage_and_restore_from_it() {
    use object_store::ObjectStoreExt;
    use tenant_tests::s3_peer::{self, S3Peer};
    let s3 = S3Peer::start().await.expect("moto S3 server");
    let app = TestApp::spawn_with(|env| {
        for (k, v) in s3.env() {
            env.insert(k.into(), v);
        }
    })
    .await;
    let _worker = app.spawn_worker();
    let (tenant, job) = create(&app, "s3-held", "basic").await;
    assert_eq!(app.wait_job(&job, DEADLINE).await["status"], json!("succeeded"));
    let schema = format!("tenant_{}", tenant.replace('-', ""));
    sqlx::raw_sql(&format!("insert into {schema}.users (email, display_name) values ('c@s3.test', 'Cy')"))
        .execute(&app.owner_db)
        .await
        .expect("tenant data");
    let before = snapshot(&app, &tenant).await;

    let backup_id = delete_and_wait(&app, &tenant).await;
    let (object_key, sha256, size) = backup_row(&app, &backup_id).await;
    // Not on local disk: in the bucket, as read by a client of its own.
    assert!(!std::path::Path::new(&app.env["BACKUP_DIR"]).join(&object_key).exists());
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(s3_peer::BUCKET)
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_region(s3_peer::REGION)
        .with_access_key_id(s3_peer::ACCESS_KEY_ID)
        .with_secret_access_key(s3_peer::SECRET_ACCESS_KEY)
        .build()
        .expect("client");
    let object = bucket.get(&object_store::path::Path::from(object_key.as_str())).await.expect("archive in the bucket");
    let bytes = object.bytes().await.expect("bytes");
    assert_eq!(hex::encode(Sha256::digest(&bytes)), sha256);
    assert_eq!(i64::try_from(bytes.len()).expect("len"), size);
    assert!(!bytes.windows(8).any(|w| w == b"c@s3.tes"), "archive is not encrypted");

    // Restored from the bucket, every row as it was.
    let (status, body) = app
        .call(Method::POST, "/api/v1/tenants/restore", Some(&app.admin_token()), Some(json!({ "backupId": backup_id })))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app.wait_job(body["data"]["job"]["id"].as_str().expect("id"), DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    assert_eq!(snapshot(&app, &tenant).await, before);
}
