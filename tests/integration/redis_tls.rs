//! TLS to Redis (`rediss://`): the whole service — job delivery, the job-progress pub/sub, the
//! quota counters, the context cache — over a `redis-server` that speaks only TLS, with a CA of
//! the test's own and a client certificate it requires.

use crate::lifecycle::{create, open_events};
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tenant_tests::redis_server::{RedisServer, TlsFiles};
use tenant_tests::{SERVICE_TOKEN, TestApp};

#[tokio::test]
async fn the_service_runs_over_tls_to_a_redis_that_requires_a_client_certificate() {
    let files = TlsFiles::make().expect("certificates");
    let redis = RedisServer::start_tls(&files, true).await.expect("redis-server with TLS");
    let url = redis.tls_url();
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("REDIS_TLS_CA_FILE".into(), files.ca.clone());
        env.insert("REDIS_TLS_CERT_FILE".into(), files.client_cert.clone());
        env.insert("REDIS_TLS_KEY_FILE".into(), files.client_key.clone());
    })
    .await;
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["dependencies"]["redis"], json!(true));

    // a provisioning delivered to a worker through the TLS Redis, its progress announced on the
    // pub/sub channel (a stream sees it finish well before its 15 s fallback re-read)
    let token = app.admin_token();
    let (tenant, job) = create(&app, "over-tls", "basic").await;
    let mut events = open_events(&app, &job, &token).await;
    let started = Instant::now();
    let _worker = app.spawn_worker();
    let mut last = events.next().await.expect("an event");
    while last.event == "progress" {
        last = events.next().await.expect("the stream ends only after `finished`");
    }
    assert_eq!(last.data["status"], json!("succeeded"), "{:?}", last.data);
    assert!(started.elapsed() < Duration::from_secs(10), "finished after {:?}", started.elapsed());

    // the quota counters and the context cache on the same TLS connection
    let check = |amount: i64| {
        app.client
            .post(app.url(&format!("/internal/tenants/{tenant}/quota-check")))
            .header("x-service-token", SERVICE_TOKEN)
            .json(&json!({ "resource": "api_calls", "amount": amount, "consume": true }))
            .send()
    };
    let first: serde_json::Value = check(5).await.expect("sent").json().await.expect("json");
    let second: serde_json::Value = check(5).await.expect("sent").json().await.expect("json");
    assert_eq!(first["data"]["allowed"], json!(true), "{first}");
    assert_eq!(
        second["data"]["used"].as_i64().expect("used") - first["data"]["used"].as_i64().expect("used"),
        5,
        "counted in Redis: {second}"
    );
    let res = app
        .client
        .get(app.url(&format!("/internal/tenants/{tenant}/context")))
        .header("x-service-token", SERVICE_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_redis_certificate_from_an_unknown_ca_or_a_missing_client_certificate_is_refused() {
    let files = TlsFiles::make().expect("certificates");
    let other = TlsFiles::make().expect("another CA");
    let redis = RedisServer::start_tls(&files, true).await.expect("redis-server with TLS");
    for (what, ca, client) in [
        ("the server's CA is not trusted", other.ca.clone(), Some((&files.client_cert, &files.client_key))),
        ("no client certificate", files.ca.clone(), None),
        ("a client certificate of another CA", files.ca.clone(), Some((&other.client_cert, &other.client_key))),
    ] {
        let url = redis.tls_url();
        let app = TestApp::spawn_with(|env| {
            env.insert("REDIS_URL".into(), url);
            env.insert("REDIS_TLS_CA_FILE".into(), ca);
            if let Some((cert, key)) = client {
                env.insert("REDIS_TLS_CERT_FILE".into(), cert.clone());
                env.insert("REDIS_TLS_KEY_FILE".into(), key.clone());
            }
            env.insert("REDIS_RESPONSE_TIMEOUT_MS".into(), "500".into());
        })
        .await;
        let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(body["error"]["details"]["dependencies"]["redis"], json!(false), "{what}: {body}");
        assert_eq!(body["error"]["details"]["dependencies"]["database"], json!(true), "{what}: {body}");
    }
}
