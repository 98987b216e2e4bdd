//! Retention: a scheduled job deletes what is past its age — stored idempotency answers,
//! published events, finished periodic jobs — and keeps everything recent, unpublished or still
//! open; a deleted tenant's quota tombstone in Redis expires.

use std::time::{Duration, Instant};
use tenant_domain::TenantStatus;
use tenant_tests::TestApp;
use uuid::Uuid;

async fn exists(app: &TestApp, table: &str, id_column: &str, id: &str) -> bool {
    sqlx::query_scalar(&format!("select exists (select from {table} where {id_column}::text = $1)"))
        .bind(id)
        .fetch_one(&app.db)
        .await
        .expect("exists")
}

#[tokio::test]
async fn retention_removes_what_is_past_its_age_and_keeps_the_rest() {
    let app = TestApp::spawn_with(|env| {
        env.insert("RETENTION_INTERVAL_SECS".into(), "1".into());
    })
    .await;
    for (key, age) in [("old-key", "2 days"), ("new-key", "1 hour")] {
        sqlx::query(
            "insert into idempotency_keys (scope, key, method, path, request_hash, status_code, response_body, created_at) \
             values ('user-1', $1, 'POST', '/api/v1/tenants', '\\x00', 202, '{}', now() - $2::interval)",
        )
        .bind(key)
        .bind(age)
        .execute(&app.db)
        .await
        .expect("key");
    }
    let events =
        [("published 10 days ago", Some("10 days")), ("published now", Some("0 days")), ("never published", None)];
    let mut event_ids = Vec::new();
    for (_, published) in events {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into outbox_events (id, event_type, payload, occurred_at, published_at) \
             values ($1, 'tenant.updated', '{}', now() - interval '11 days', now() - $2::interval)",
        )
        .bind(id)
        .bind(published)
        .execute(&app.db)
        .await
        .expect("event");
        event_ids.push(id.to_string());
    }
    let jobs = [
        ("quota_rollup", "succeeded", Some("10 days")),
        ("quota_rollup", "succeeded", Some("1 day")),
        ("quota_rollup", "running", None),
        ("provision_tenant", "succeeded", Some("10 days")),
    ];
    let mut job_ids = Vec::new();
    for (kind, status, finished) in jobs {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into jobs (id, kind, status, payload, created_at, finished_at) \
             values ($1, $2, $3::job_status_enum, '{}', now() - interval '11 days', now() - $4::interval)",
        )
        .bind(id)
        .bind(kind)
        .bind(status)
        .bind(finished)
        .execute(&app.db)
        .await
        .expect("job");
        job_ids.push(id.to_string());
    }

    let _worker = app.spawn_worker();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let done: i64 =
            sqlx::query_scalar("select count(*) from jobs where kind = 'retention' and status = 'succeeded'")
                .fetch_one(&app.db)
                .await
                .expect("runs");
        if done > 0 {
            break;
        }
        assert!(Instant::now() < until, "no retention run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exists(&app, "idempotency_keys", "key", "old-key").await, "a key older than 24 h is gone");
    assert!(exists(&app, "idempotency_keys", "key", "new-key").await);
    assert!(!exists(&app, "outbox_events", "id", &event_ids[0]).await, "published 10 days ago: gone");
    assert!(exists(&app, "outbox_events", "id", &event_ids[1]).await, "published now: kept");
    assert!(exists(&app, "outbox_events", "id", &event_ids[2]).await, "never published: kept however old");
    assert!(!exists(&app, "jobs", "id", &job_ids[0]).await, "a rollup finished 10 days ago: gone");
    assert!(exists(&app, "jobs", "id", &job_ids[1]).await, "a rollup finished yesterday: kept");
    assert!(exists(&app, "jobs", "id", &job_ids[2]).await, "an open job: kept");
    assert!(exists(&app, "jobs", "id", &job_ids[3]).await, "a tenant's job: kept a year");
}

#[tokio::test]
async fn a_deleted_tenants_quota_tombstone_expires() {
    let app = TestApp::spawn_with(|env| {
        env.insert("TENANT_TOMBSTONE_TTL_SECS".into(), "600".into());
    })
    .await;
    let gone = app.insert_tenant("Gone", "gone", "basic", TenantStatus::Deleted).await;
    let live = app.insert_tenant("Live", "live", "basic", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&live).await;
    for tenant in [&gone, &live] {
        app.state.quota.sync(&app.db, tenant.id).await.expect("mirrored");
    }
    let client = redis::Client::open(tenant_tests::redis_url()).expect("redis");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");
    let mut ttl = async |key: String| redis::cmd("TTL").arg(key).query_async::<i64>(&mut conn).await.expect("ttl");
    let tombstone = ttl(app.state.quota.state_key(gone.id)).await;
    assert!((1..=600).contains(&tombstone), "the tombstone expires: TTL {tombstone}");
    assert_eq!(ttl(app.state.quota.state_key(live.id)).await, -1, "a live tenant's state does not");
}
