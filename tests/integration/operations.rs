//! Health, metrics and the API description.

use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};
use tenant_tests::TestApp;
use tenant_tests::redis_server::RedisServer;

#[tokio::test]
async fn health_checks_both_dependencies_and_turns_503_when_redis_is_gone() {
    let mut redis = RedisServer::start().await.expect("redis-server");
    let url = redis.url();
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), url);
        env.insert("REDIS_RESPONSE_TIMEOUT_MS".into(), "500".into());
    })
    .await;

    for path in ["/health", "/api/v1/health"] {
        let (status, body) = app.call(reqwest::Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["status"], json!("healthy"));
        assert_eq!(body["data"]["dependencies"]["database"], json!(true));
        assert_eq!(body["data"]["dependencies"]["redis"], json!(true));
        assert_eq!(body["data"]["metrics"]["queueDepth"], json!(0));
    }

    redis.kill().await.expect("killed");
    let started = Instant::now();
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "health answered in {:?}", started.elapsed());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], json!("DEPENDENCY_UNAVAILABLE"));
    assert_eq!(body["error"]["details"]["dependencies"]["redis"], json!(false));
    assert_eq!(body["error"]["details"]["dependencies"]["database"], json!(true));
}

#[tokio::test]
async fn health_checks_a_separate_quota_store_and_turns_503_when_it_is_gone() {
    let mut quota_redis = RedisServer::start().await.expect("redis-server");
    let url = quota_redis.url();
    let app = TestApp::spawn_with(|env| {
        env.insert("QUOTA_REDIS_URL".into(), url);
        env.insert("REDIS_RESPONSE_TIMEOUT_MS".into(), "500".into());
    })
    .await;
    // the worker (rollups, plan changes, the tombstones of deletions) uses the quota store too
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let _worker = app.spawn_worker_with(|env| {
        env.insert("WORKER_METRICS_PORT".into(), port.to_string());
        env.insert("SERVICE_HOST".into(), "127.0.0.1".into());
    });
    let worker_health = |app: &TestApp| {
        let req = app.client.get(format!("http://127.0.0.1:{port}/health"));
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match req.try_clone().expect("clone").send().await {
                    Ok(res) => return (res.status(), res.json::<serde_json::Value>().await.expect("json")),
                    Err(e) => assert!(Instant::now() < deadline, "worker health: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["dependencies"]["quotaStore"], json!(true));
    let (status, body) = worker_health(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["dependencies"]["quotaStore"], json!(true), "{body}");

    quota_redis.kill().await.expect("killed");
    let (status, body) = worker_health(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["data"]["dependencies"]["quotaStore"], json!(false), "{body}");
    assert_eq!(body["data"]["dependencies"]["redis"], json!(true), "{body}");
    let started = Instant::now();
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "health answered in {:?}", started.elapsed());
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["details"]["dependencies"]["quotaStore"], json!(false));
    assert_eq!(body["error"]["details"]["dependencies"]["redis"], json!(true), "the jobs Redis is still up");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("quota store")), "{body}");
}

#[tokio::test]
async fn health_turns_503_when_postgres_is_unreachable() {
    let app = TestApp::spawn_with(|env| {
        // nothing listens on port 1
        env.insert("DATABASE_URL".into(), "postgres://postgres@127.0.0.1:1/nothing".into());
        env.insert("TENANT_DB_TIMEOUT".into(), "500".into());
    })
    .await;
    let (status, body) = app.call(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["details"]["dependencies"]["database"], json!(false));
    assert_eq!(body["error"]["details"]["dependencies"]["redis"], json!(true));
}

#[tokio::test]
async fn metrics_are_labelled_by_route_template() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    for _ in 0..3 {
        app.get(&format!("/api/v1/tenants/{}", uuid::Uuid::new_v4()), &token).await;
    }
    let text = app.client.get(app.url("/metrics")).send().await.expect("sent").text().await.expect("text");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total")
                && l.contains("route=\"/api/v1/tenants/{id}\"")
                && l.contains("status=\"404\"")
        })
        .unwrap_or_else(|| panic!("no templated line in:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(!text.contains("/api/v1/tenants/0"), "raw ids leaked into labels");
    assert!(text.contains("tenant_errors_total{code=\"TENANT_NOT_FOUND\"} 3"), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("tenant_active_count"));
}

#[tokio::test]
async fn openapi_document_and_offline_docs_page() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.call(reqwest::Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/api/v1/tenants",
        "/api/v1/tenants/{id}",
        "/api/v1/tenants/{id}/status",
        "/api/v1/plans",
        "/internal/tenants/validate",
        "/health",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the document");
    }
    let res = app.client.get(app.url("/docs/")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    // assets are served by the binary, not a CDN
    assert!(!html.contains("https://"), "docs page loads remote assets");
    let res = app.client.get(app.url("/docs/swagger-ui-bundle.js")).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
}
