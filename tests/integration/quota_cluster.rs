//! The quota engine on a real Redis Cluster (three masters started by the test, named by
//! `QUOTA_REDIS_URL`), through the real API: consumes stay exact under racing requests, every key
//! of a tenant lives in one slot, views, metrics reads and rollups read the counters, thresholds
//! fire exactly once and reach the events stream on `REDIS_URL`, leased budget goes back exactly,
//! and a flushed script cache is loaded again.

use crate::quotas::{active_tenant, check, consume_across, internal, set_limit, threshold_events};
use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tenant_domain::quota::Period;
use tenant_tests::redis_cluster::RedisCluster;
use tenant_tests::smtp_sink::{Slow, SmtpSink};
use tenant_tests::{SERVICE_TOKEN, TestApp};

async fn app_on(cluster: &RedisCluster, extra: &[(&str, &str)]) -> TestApp {
    let url = cluster.url();
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let app = TestApp::spawn_with(move |env| {
        env.insert("QUOTA_REDIS_URL".into(), url);
        // These tests are about exactness, not latency: with hundreds of requests in flight on a
        // loaded 2-core machine (three cluster nodes beside the service), calls queued for the
        // cluster past the default 500 ms.
        env.insert("QUOTA_TIMEOUT_MS".into(), "10000".into());
        env.extend(extra);
    })
    .await;
    assert!(app.state.quota.is_cluster());
    app
}

/// The tenant id in a quota key (`…t:{<tenant>}:…`).
fn tenant_of(key: &str) -> Option<&str> {
    let start = key.find("t:{")? + 3;
    let len = key[start..].find('}')?;
    Some(&key[start..start + len])
}

#[tokio::test]
async fn consumes_on_a_cluster_are_exact_and_each_tenants_keys_share_one_slot() {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let app = app_on(&cluster, &[]).await;
    let (a, b, c) = (
        active_tenant(&app, "cluster-a").await,
        active_tenant(&app, "cluster-b").await,
        active_tenant(&app, "cluster-c").await,
    );
    set_limit(&app, &a, "api_calls", 150).await;
    set_limit(&app, &b, "api_calls", 250).await;

    // 400 racing consumes for each of two tenants, all in flight together
    let base = app.url("");
    let bases = [base.as_str()];
    let (for_a, for_b) = tokio::join!(
        consume_across(&app.client, &bases, &a, "api_calls", 400),
        consume_across(&app.client, &bases, &b, "api_calls", 400)
    );
    assert_eq!((for_a[0], for_b[0]), (150, 250));

    // a gauge, usage sent twice with one idempotency key, another tenant's counter
    let usage = format!("{base}/internal/tenants/{}/usage", a.id);
    for _ in 0..2 {
        let res = app
            .client
            .post(&usage)
            .header("x-service-token", SERVICE_TOKEN)
            .header("idempotency-key", "upload-1")
            .json(&json!({ "resource": "users", "amount": 3 }))
            .send()
            .await
            .expect("sent");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["data"]["used"], json!(3), "{body}");
    }
    assert_eq!(check(&app, &c, "file_uploads", 2, true).await.0, StatusCode::OK);

    // Every key the engine wrote, found on the nodes: each tenant's keys in one slot — the slot
    // of its id, the hash tag.
    let prefix = &app.env["REDIS_KEY_PREFIX"];
    let found = cluster.scan(&format!("{prefix}*")).await.expect("scan");
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, key) in &found {
        let tenant = tenant_of(key).unwrap_or_else(|| panic!("a quota key without a tenant hash tag: {key}"));
        by_tenant.entry(tenant.to_owned()).or_default().push(key.clone());
    }
    assert_eq!(by_tenant.len(), 3, "{found:?}");
    for (tenant, keys) in &by_tenant {
        let slot = cluster.keyslot(&format!("{{{tenant}}}")).await.expect("keyslot");
        for key in keys {
            assert_eq!(cluster.keyslot(key).await.expect("keyslot"), slot, "{key} is not in {tenant}'s slot");
        }
    }
    let mut kinds: Vec<String> = by_tenant[&a.id.to_string()]
        .iter()
        .map(|k| k.split("}:").nth(1).unwrap_or_default().split(':').take(2).collect::<Vec<_>>().join(":"))
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["idem:upload-1", "state", "u:api_calls", "u:users"], "{:?}", by_tenant[&a.id.to_string()]);
    assert!(
        by_tenant[&a.id.to_string()].iter().any(|k| k.ends_with(":th")),
        "thresholds crossed at the limit are recorded in the tenant's slot"
    );

    // the views, the metrics' reads and the rollup read the counters
    let (_, body) = app.get(&format!("/api/v1/tenants/{}/quotas", a.id), &app.admin_token()).await;
    let calls = body["data"].as_array().expect("list").iter().find(|q| q["resource"] == json!("api_calls")).cloned();
    assert_eq!(calls.expect("api_calls")["used"], json!(150));
    let many = app
        .state
        .quota
        .usage_many(&[
            (b.id, "api_calls".into(), Period::Daily),
            (a.id, "users".into(), Period::None),
            (a.id, "api_calls".into(), Period::Daily),
            (c.id, "file_uploads".into(), Period::Daily),
        ])
        .await
        .expect("usage_many");
    assert_eq!(many, [250, 3, 150, 2]);
    let report = tenant_domain::quota::rollup::run(&app.db, &app.state.quota, Utc::now()).await.expect("rollup");
    assert_eq!(report.tenants, 3);
    let used: Vec<(String, i64)> = sqlx::query_as(
        "select resource_type, used_value from tenant_quotas where tenant_id = $1 \
         and resource_type in ('api_calls', 'users') order by resource_type",
    )
    .bind(a.id)
    .fetch_all(&app.db)
    .await
    .expect("q");
    assert_eq!(used, [("api_calls".to_owned(), 150), ("users".to_owned(), 3)]);

    // a deleted tenant's keys are all cleared on the node that owns its slot, no one else's
    let removed = app.state.quota.clear_tenant(a.id).await.expect("clear");
    assert_eq!(removed, by_tenant[&a.id.to_string()].len() as u64);
    let left = cluster.scan(&format!("{prefix}*")).await.expect("scan");
    assert!(left.iter().all(|(_, k)| tenant_of(k) != Some(a.id.to_string().as_str())), "{left:?}");
    assert_eq!(left.len(), found.len() - by_tenant[&a.id.to_string()].len(), "other tenants' keys stay");

    // the nodes lose their scripts: the next check loads the script again (on every node)
    cluster.on_every_node(redis::cmd("SCRIPT").arg("FLUSH")).await.expect("flush");
    let (status, body) = check(&app, &c, "file_uploads", 1, true).await;
    assert_eq!((status, body["data"]["used"].clone()), (StatusCode::OK, json!(3)));
}

#[tokio::test]
async fn thresholds_on_a_cluster_fire_exactly_once_and_reach_the_stream() {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let sink = SmtpSink::start(Slow::No).await.expect("smtp sink");
    let port = sink.port.to_string();
    let app = app_on(&cluster, &[("SMTP_HOST", "127.0.0.1"), ("SMTP_PORT", &port), ("SMTP_TLS", "none")]).await;
    let _worker = app.spawn_worker();
    let t = active_tenant(&app, "cluster-alerts").await;
    set_limit(&app, &t, "email_sends", 100).await;
    let allowed = consume_across(&app.client, &[&app.url("")], &t, "email_sends", 300).await;
    assert_eq!(allowed[0], 100);

    // relayed to the stream on REDIS_URL by the calls that crossed them, before they answered
    // (concurrent calls relay in whatever order they finish)
    let events = threshold_events(&app, &t).await;
    let mut thresholds: Vec<i64> = events.iter().filter_map(|e| e["threshold"].as_i64()).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, [75, 90, 95], "{events:?}");
    assert!(events.iter().all(|e| e["resource"] == json!("email_sends") && e["limit"] == json!(100)));
    let queued = app.state.quota.keys().pending_events(t.id);
    assert!(cluster.scan(&queued).await.expect("scan").is_empty(), "nothing left queued");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.mails().len() < 2 {
        assert!(Instant::now() < deadline, "alert mails not sent: {:?}", sink.mails());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An event whose relay failed (the process died between the script and the stream) waits in
    // the tenant's slot; the next rollup relays it, and leaves younger ones to their own call.
    let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect();
    let mut conn = redis::cluster::ClusterClient::new(nodes)
        .expect("client")
        .get_async_connection()
        .await
        .expect("cluster connection");
    let queued_event = |id: &str, at: i64| {
        json!({ "id": id, "type": "quota.threshold_crossed", "tenantId": t.id.to_string(),
                "occurredAt": "2026-11-27T10:00:00Z", "at": at,
                "data": json!({ "resource": "email_sends", "threshold": 50, "used": 50, "limit": 100 }).to_string() })
        .to_string()
    };
    let now = Utc::now().timestamp();
    for (id, at) in [("quota:stuck", now - 120), ("quota:in-flight", now)] {
        redis::cmd("RPUSH").arg(&queued).arg(queued_event(id, at)).query_async::<()>(&mut conn).await.expect("rpush");
    }
    let report = tenant_domain::quota::rollup::run(&app.db, &app.state.quota, Utc::now()).await.expect("rollup");
    assert_eq!(report.events_relayed, 1);
    let ids: Vec<String> =
        threshold_events(&app, &t).await.iter().filter_map(|e| e["id"].as_str().map(str::to_owned)).collect();
    assert_eq!(ids.iter().filter(|id| *id == "quota:stuck").count(), 1, "{ids:?}");
    assert!(!ids.iter().any(|id| id == "quota:in-flight"), "{ids:?}");
    let left: Vec<String> =
        redis::cmd("LRANGE").arg(&queued).arg(0).arg(-1).query_async(&mut conn).await.expect("lrange");
    assert_eq!(left.len(), 1);
    assert!(left[0].contains("quota:in-flight"));
    assert_eq!(sink.mails().len(), 2, "{:?}", sink.mails());
}

#[tokio::test]
async fn leased_budget_on_a_cluster_goes_back_exactly() {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let app = app_on(
        &cluster,
        &[("QUOTA_LEASE_RESOURCES", "api_calls"), ("QUOTA_LEASE_CHUNK", "50"), ("QUOTA_LEASE_MS", "60000")],
    )
    .await;
    let t = active_tenant(&app, "cluster-leases").await;
    set_limit(&app, &t, "api_calls", 1000).await;
    let path = format!("/internal/tenants/{}/quota-check", t.id);
    for _ in 0..5 {
        let (status, _) =
            internal(&app.client, &app.url(""), &path, json!({ "resource": "api_calls", "consume": true })).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(app.state.quota.leased_hits.load(Ordering::Relaxed) >= 4);
    assert_eq!(check(&app, &t, "api_calls", 1, false).await.1["data"]["used"], json!(51), "5 served, 46 leased");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/tenants/{}/quotas", t.id),
            Some(&app.admin_token()),
            Some(json!({ "limits": { "api_calls": 1000 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        check(&app, &t, "api_calls", 1, false).await.1["data"]["used"],
        json!(5),
        "given back before the answer"
    );
}
