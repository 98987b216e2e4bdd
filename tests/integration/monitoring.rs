//! Monitoring as JSON: service and tenant metrics, every tenant's usage for the monitoring
//! service, and a tenant's health, against real PostgreSQL and Redis (and a real worker for a
//! tenant that is fully provisioned).

use crate::lifecycle::{create, delete_and_wait};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tenant_domain::TenantStatus;
use tenant_domain::tenants::Tenant;
use tenant_tests::{SERVICE_TOKEN, TestApp};
use uuid::Uuid;

async fn active(app: &TestApp, slug: &str, plan: &str) -> Tenant {
    let t = app.insert_tenant(slug, slug, plan, TenantStatus::Active).await;
    app.insert_quotas_from_plan(&t).await;
    t
}

async fn service_get(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = app.client.get(app.url(path));
    if let Some(token) = token {
        req = req.header("x-service-token", token);
    }
    let res = req.send().await.expect("sent");
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

async fn consume(app: &TestApp, tenant: impl std::fmt::Display, amount: i64) {
    let res = app
        .client
        .post(app.url(&format!("/internal/tenants/{tenant}/quota-check")))
        .header("x-service-token", SERVICE_TOKEN)
        .json(&json!({ "resource": "api_calls", "amount": amount, "consume": true }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}

async fn set_api_calls_limit(app: &TestApp, tenant: impl std::fmt::Display, limit: i64) {
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{tenant}/quotas"),
            Some(&app.admin_token()),
            Some(json!({ "limits": { "api_calls": limit } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn service_and_tenant_metrics_report_live_figures() {
    let app = TestApp::spawn().await;
    let a = active(&app, "metrics-a", "basic").await;
    active(&app, "metrics-b", "basic").await;
    active(&app, "metrics-c", "free").await;
    app.insert_tenant("metrics-d", "metrics-d", "pro", TenantStatus::Suspended).await;
    let admin = app.admin_token();

    let (status, first) = app.get("/api/v1/metrics", &admin).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let m = &first["data"];
    assert_eq!(m["tenants"]["total"], json!(4));
    assert_eq!(m["tenants"]["byStatus"], json!({ "active": 3, "suspended": 1 }));
    assert_eq!(m["tenants"]["activeByPlan"], json!({ "basic": 2, "free": 1 }));
    assert_eq!(m["tenants"]["createdLast30Days"], json!(4));
    assert_eq!(m["jobs"]["open"], json!({}));
    assert_eq!(m["queueDepth"], json!(0));
    assert!(m["process"]["residentMemoryBytes"].as_u64().expect("rss") > 1 << 20, "{m}");
    let rss = app.metric("tenant_service_memory_usage_bytes ").await.expect("memory exported");
    assert!(rss > f64::from(1 << 20), "{rss}");
    // The process collector and the CPU gauge (set from the second scrape on).
    let _ = app.metric("process_cpu_seconds_total ").await.expect("process collector");
    let cpu = app.metric("tenant_service_cpu_usage_percent ").await.expect("cpu gauge exported");
    assert!((0.0..=200.0 * 16.0).contains(&cpu), "{cpu}");
    let open_fds = app.metric("process_open_fds ").await.expect("open fds");
    assert!(open_fds > 0.0, "{open_fds}");
    // Counts are exported as counters.
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    for counter in ["tenant_quota_state_loads_total", "tenant_quota_leased_checks_total", "tenant_config_cache_lookups"]
    {
        assert!(text.contains(&format!("# TYPE {counter} counter")), "{counter} is not a counter");
    }
    let requests = m["process"]["httpRequests"].as_u64().expect("requests");
    let (_, second) = app.get("/api/v1/metrics", &admin).await;
    assert!(second["data"]["process"]["httpRequests"].as_u64().expect("requests") > requests);
    // platform-wide figures are for platform admins
    let tenant_admin = app.token(&["tenant_admin"], Some(a.id));
    assert_eq!(app.get("/api/v1/metrics", &tenant_admin).await.0, StatusCode::FORBIDDEN);

    // A tenant's own metrics: live usage from Redis, in percent of the limit.
    set_api_calls_limit(&app, a.id, 400).await;
    consume(&app, a.id, 7).await;
    consume(&app, a.id, 30).await;
    let (status, body) = app.get(&format!("/api/v1/tenants/{}/metrics", a.id), &tenant_admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = &body["data"];
    assert_eq!((t["status"].clone(), t["plan"].clone()), (json!("active"), json!("basic")));
    let api_calls = t["quotas"].as_array().expect("quotas").iter().find(|q| q["resource"] == json!("api_calls"));
    let api_calls = api_calls.expect("api_calls listed");
    assert_eq!((api_calls["used"].clone(), api_calls["limit"].clone()), (json!(37), json!(400)));
    assert_eq!(api_calls["percent"], json!(9.25));
    assert!(t["highestUsagePercent"].as_f64().expect("highest") >= 9.25);
    // another tenant's admin may not read it
    let other = app.token(&["tenant_admin"], Some(Uuid::new_v4().into()));
    assert_eq!(app.get(&format!("/api/v1/tenants/{}/metrics", a.id), &other).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_tenants_usage_is_listed_busiest_first_from_the_rollups() {
    let app = TestApp::spawn().await;
    let busy = active(&app, "usage-busy", "basic").await;
    let calm = active(&app, "usage-calm", "basic").await;
    let idle = active(&app, "usage-idle", "basic").await;
    app.insert_tenant("usage-paused", "usage-paused", "basic", TenantStatus::Suspended).await;
    sqlx::query("update tenant_quotas set limit_value = 200 where resource_type = 'api_calls'")
        .execute(&app.db)
        .await
        .expect("limits");
    consume(&app, calm.id, 50).await;
    consume(&app, busy.id, 160).await;
    // Prometheus follows the live counters at once (no rollup needed): 160 of 200 is 80 %.
    let busy_series = format!("tenant_quota_usage_percent{{resource=\"api_calls\",tenant_id=\"{}\"}}", busy.id);
    assert_eq!(app.metric(&format!("{busy_series} ")).await, Some(80.0));
    // Before a rollup, nothing is known in PostgreSQL.
    let (status, body) = service_get(&app, "/internal/tenants/metrics?status=active", Some(SERVICE_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["data"].as_array().expect("list").iter().all(|t| t["highestUsagePercent"] == json!(0.0)));

    tenant_domain::quota::rollup::run(&app.db, &app.state.quota, chrono::Utc::now()).await.expect("rollup");
    let (status, body) = service_get(&app, "/internal/tenants/metrics?status=active", Some(SERVICE_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["meta"]["total"], json!(3));
    let list = body["data"].as_array().expect("list");
    let order: Vec<_> = list.iter().map(|t| t["tenantId"].as_str().expect("id").to_owned()).collect();
    assert_eq!(order, [busy.id, calm.id, idle.id].map(|id| id.to_string()));
    assert_eq!(list[0]["quotas"]["api_calls"], json!({ "used": 160, "limit": 200, "percent": 80.0 }));
    assert_eq!(list[0]["highestUsagePercent"], json!(80.0));
    assert_eq!(list[1]["quotas"]["api_calls"]["percent"], json!(25.0));
    assert!(list[0]["asOf"].is_string());
    // Prometheus gets the tenant resources at 75 % and more, labelled by tenant
    assert_eq!(app.metric(&format!("{busy_series} ")).await, Some(80.0));
    assert_eq!(
        app.metric(&format!("tenant_quota_usage_percent{{resource=\"api_calls\",tenant_id=\"{}\"}}", calm.id)).await,
        None
    );

    // paging and filters; suspended tenants are listed under their status
    let (_, page2) = service_get(&app, "/internal/tenants/metrics?limit=2&page=2", Some(SERVICE_TOKEN)).await;
    assert_eq!((page2["meta"]["total"].clone(), page2["data"].as_array().map(Vec::len)), (json!(4), Some(2)));
    let (_, suspended) = service_get(&app, "/internal/tenants/metrics?status=suspended", Some(SERVICE_TOKEN)).await;
    assert_eq!(suspended["data"][0]["slug"], json!("usage-paused"));
    assert_eq!(
        service_get(&app, "/internal/tenants/metrics?limit=0", Some(SERVICE_TOKEN)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(service_get(&app, "/internal/tenants/metrics", None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tenant_health_names_what_is_wrong() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let (tenant, job) = create(&app, "health-check", "basic").await;
    let job = app.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let path = format!("/internal/tenants/{tenant}/health");

    // Provisioned: every check passes.
    let (status, body) = service_get(&app, &path, Some(SERVICE_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["healthy"], json!(true), "{body}");
    let checks = body["data"]["checks"].as_object().expect("checks");
    let names: Vec<_> = checks.keys().map(String::as_str).collect();
    assert_eq!(names, ["billing", "jobs", "quotaHeadroom", "quotaState", "schema", "status"]);
    assert!(checks.values().all(|c| c["ok"] == json!(true)), "{body}");

    // Near a limit: headroom fails and says which resource.
    set_api_calls_limit(&app, &tenant, 100).await;
    consume(&app, &tenant, 96).await;
    let (_, body) = service_get(&app, &path, Some(SERVICE_TOKEN)).await;
    assert_eq!(body["data"]["healthy"], json!(false));
    assert_eq!(body["data"]["checks"]["quotaHeadroom"], json!({ "ok": false, "detail": "api_calls at 96%" }));
    assert_eq!(body["data"]["checks"]["quotaState"]["ok"], json!(true));

    // The hot path's mirror disagreeing with PostgreSQL (a status written behind the service's
    // back) and a schema gone missing are both caught.
    let id = Uuid::parse_str(&tenant).expect("uuid");
    sqlx::query("update tenants set status = 'suspended' where id = $1").bind(id).execute(&app.db).await.expect("q");
    sqlx::query(&format!("drop schema tenant_{} cascade", tenant.replace('-', "")))
        .execute(&app.owner_db)
        .await
        .expect("drop");
    let (_, body) = service_get(&app, &path, Some(SERVICE_TOKEN)).await;
    let checks = &body["data"]["checks"];
    assert_eq!(checks["status"], json!({ "ok": false, "detail": "suspended" }));
    assert_eq!(checks["quotaState"], json!({ "ok": false, "detail": "Redis says active, PostgreSQL says suspended" }));
    assert_eq!(checks["schema"], json!({ "ok": false, "detail": "missing" }));
    assert_eq!(checks["billing"]["ok"], json!(true));

    // A deleted tenant is not healthy (it is not active), but nothing of it is left over.
    let (gone, job) = create(&app, "health-gone", "basic").await;
    assert_eq!(app.wait_job(&job, Duration::from_secs(30)).await["status"], json!("succeeded"));
    delete_and_wait(&app, &gone).await;
    let (_, body) = service_get(&app, &format!("/internal/tenants/{gone}/health"), Some(SERVICE_TOKEN)).await;
    let checks = &body["data"]["checks"];
    assert_eq!(body["data"]["healthy"], json!(false));
    assert_eq!(checks["status"], json!({ "ok": false, "detail": "deleted" }));
    assert_eq!(checks["schema"], json!({ "ok": true, "detail": "none, as expected" }));
    assert_eq!(checks["billing"], json!({ "ok": true, "detail": "no account" }));

    let (status, body) =
        service_get(&app, &format!("/internal/tenants/{}/health", Uuid::new_v4()), Some(SERVICE_TOKEN)).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("TENANT_NOT_FOUND")));
    assert_eq!(service_get(&app, &path, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
}
