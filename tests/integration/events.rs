//! Events through the outbox: exactly one stream entry per change, nothing lost while Redis is
//! down, nothing for a rolled-back change; deliveries to the audit service with retries.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tenant_domain::TenantStatus;
use tenant_domain::tenants::Tenant;
use tenant_tests::TestApp;
use tenant_tests::http_peer::HttpPeer;
use tenant_tests::redis_server::RedisServer;

/// Stream entries of `tenant` (any type), as `{id, type, data}`.
async fn entries(app: &TestApp, tenant: &Tenant) -> Vec<Value> {
    let mut conn = app.state.redis.clone();
    let reply: redis::RedisResult<redis::streams::StreamRangeReply> =
        redis::cmd("XRANGE").arg(&app.env["EVENTS_STREAM"]).arg("-").arg("+").query_async(&mut conn).await;
    let Ok(reply) = reply else { return Vec::new() };
    reply
        .ids
        .iter()
        .filter(|e| e.get::<String>("tenantId") == Some(tenant.id.to_string()))
        .map(|e| {
            json!({
                "id": e.get::<String>("id"),
                "type": e.get::<String>("type"),
                "occurredAt": e.get::<String>("occurredAt"),
                "data": serde_json::from_str::<Value>(&e.get::<String>("data").unwrap_or_default()).unwrap_or(Value::Null),
            })
        })
        .collect()
}

async fn wait_for(app: &TestApp, tenant: &Tenant, event_type: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Value> =
            entries(app, tenant).await.into_iter().filter(|e| e["type"] == json!(event_type)).collect();
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{event_type} ×{n} not published; have {found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rename(app: &TestApp, tenant: &Tenant, name: &str) -> StatusCode {
    app.call(
        Method::PUT,
        &format!("/api/v1/tenants/{}", tenant.id),
        Some(&app.admin_token()),
        Some(json!({ "name": name })),
    )
    .await
    .0
}

#[tokio::test]
async fn a_change_produces_exactly_one_stream_entry_and_a_failed_one_none() {
    let app = TestApp::spawn().await;
    let _worker = app.spawn_worker();
    let t = app.insert_tenant("Evented", "evented", "pro", TenantStatus::Active).await;
    let other = app.insert_tenant("Other", "other-co", "pro", TenantStatus::Active).await;

    // rolled back: a domain that is taken (409), an invalid config (400)
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{}", t.id),
            Some(&app.admin_token()),
            Some(json!({ "name": "Nope", "domain": other.domain })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{}/config", t.id),
            Some(&app.admin_token()),
            Some(json!({ "branding": { "primaryColor": "x" } })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(rename(&app, &t, "Evented Two").await, StatusCode::OK);
    let found = wait_for(&app, &t, "tenant.updated", 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // several relay passes
    let all = entries(&app, &t).await;
    assert_eq!(all.len(), 1, "exactly one entry, nothing for the failed changes: {all:?}");
    assert_eq!(found[0]["data"]["name"], json!("Evented Two"));
    let (id, published): (uuid::Uuid, bool) =
        sqlx::query_as("select id, published_at is not null from outbox_events where tenant_id = $1")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("row");
    assert!(published);
    assert_eq!(found[0]["id"], json!(id.to_string()), "the entry carries the event id for deduplication");
    assert!(found[0]["occurredAt"].as_str().is_some_and(|s| s.ends_with('Z')));
}

#[tokio::test]
async fn an_event_written_while_redis_is_down_is_published_when_it_returns() {
    let mut redis = RedisServer::start().await.expect("redis-server");
    let url = redis.url();
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("REDIS_RESPONSE_TIMEOUT_MS".into(), "300".into());
    })
    .await;
    let _worker = app.spawn_worker();
    let t = app.insert_tenant("Patient", "patient", "pro", TenantStatus::Active).await;
    // The worker checks Redis as it starts (and refuses to run without it): let it start and
    // relay one event before Redis goes.
    assert_eq!(rename(&app, &t, "Patient One").await, StatusCode::OK);
    assert_eq!(wait_for(&app, &t, "tenant.updated", 1).await[0]["data"]["name"], json!("Patient One"));
    redis.kill().await.expect("killed");

    assert_eq!(rename(&app, &t, "Patient Two").await, StatusCode::OK, "the change itself needs no Redis");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let pending: i64 =
        sqlx::query_scalar("select count(*) from outbox_events where tenant_id = $1 and published_at is null")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("q");
    assert_eq!(pending, 1, "held in the outbox");

    redis.restart().await.expect("restarted"); // empty: the first event went with the old server
    let found = wait_for(&app, &t, "tenant.updated", 1).await;
    assert_eq!(found[0]["data"]["name"], json!("Patient Two"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(entries(&app, &t).await.len(), 1, "published once");
}

#[tokio::test]
async fn events_reach_the_audit_service_with_retries_and_backoff() {
    // The audit service fails twice, then accepts.
    let peer = HttpPeer::start(vec![503, 503, 200]).await.expect("peer");
    let url = peer.url("/internal/audit/events");
    let app = TestApp::spawn_with(|env| {
        env.insert("AUDIT_SERVICE_URL".into(), url);
        env.insert("JOB_BACKOFF_BASE_MS".into(), "200".into());
    })
    .await;
    let _worker = app.spawn_worker();
    let t = app.insert_tenant("Told", "told", "pro", TenantStatus::Active).await;
    assert_eq!(rename(&app, &t, "Told Two").await, StatusCode::OK);

    let deadline = Instant::now() + Duration::from_secs(20);
    while peer.received().len() < 3 {
        assert!(Instant::now() < deadline, "got {:?}", peer.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = peer.received();
    assert!(calls.iter().all(|c| c.method == "POST" && c.path == "/internal/audit/events"));
    assert!(
        calls.iter().all(|c| c.headers.get("x-service-token").map(String::as_str) == Some(tenant_tests::SERVICE_TOKEN)
            || c.headers.get("x-service-token").is_some_and(|t| t == "rotated-out-token-0123456789"))
    );
    let event: Value = serde_json::from_str(&calls[0].body).expect("json");
    assert_eq!((event["type"].clone(), event["tenantId"].clone()), (json!("tenant.updated"), json!(t.id)));
    assert!(calls.iter().all(|c| c.headers.get("idempotency-key") == event["id"].as_str().map(str::to_owned).as_ref()));
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[0] >= Duration::from_millis(150) && gaps[1] >= Duration::from_millis(350),
        "backoff 200 ms, 400 ms: {gaps:?}"
    );

    // The worker records the job's end just after the third call's answer: wait for it.
    let job: uuid::Uuid =
        sqlx::query_scalar("select id from jobs where kind = 'deliver_event'").fetch_one(&app.db).await.expect("job");
    let job = app.wait_job(&job.to_string(), Duration::from_secs(10)).await;
    assert_eq!((job["status"].clone(), job["attempts"].clone()), (json!("succeeded"), json!(3)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(peer.received().len(), 3, "no more calls after success");
}
