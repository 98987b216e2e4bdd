//! Every response wears the envelope: success, and each error status.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenant_domain::TenantStatus;
use tenant_tests::TestApp;

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn success_is_enveloped() {
    let app = TestApp::spawn().await;
    let (status, body) = app.get("/api/v1/plans", &app.admin_token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], json!(true));
    let slugs: Vec<&str> = body["data"].as_array().expect("list").iter().filter_map(|p| p["slug"].as_str()).collect();
    assert_eq!(slugs, ["free", "basic", "pro", "enterprise"]);
    assert_eq!(body["data"][1]["priceMonthly"], json!({ "amount": 2900, "currency": "usd" }));
    assert_eq!(body["data"][0]["quotas"]["users"]["limit"], json!(5));
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (status, body) = app.get("/api/v1/nothing-here", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "NOT_FOUND");

    let (status, body) = app.call(Method::DELETE, "/api/v1/plans", Some(&token), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn bad_input_is_400() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let tenant = app.insert_tenant("Acme", "acme", "basic", TenantStatus::Active).await;
    let path = format!("/api/v1/tenants/{}", tenant.id);

    // malformed JSON
    let res = app
        .client
        .put(app.url(&path))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_error(&res.json().await.expect("json"), "VALIDATION_FAILED");

    // wrong type, unknown field, unknown enum value, bad UUID in the path, bad paging
    for (method, path, body) in [
        (Method::PUT, path.clone(), Some(json!({ "name": 42 }))),
        (Method::PUT, path.clone(), Some(json!({ "nmae": "typo" }))),
        (Method::PUT, path.clone(), Some(json!({ "domain": "not a domain" }))),
        (Method::PUT, path.clone(), Some(json!({ "slug": "other-slug" }))),
        (Method::PATCH, format!("{path}/status"), Some(json!({ "status": "sleeping" }))),
        (Method::GET, "/api/v1/tenants/Not_A_Uuid".to_string(), None),
        (Method::GET, "/api/v1/tenants?limit=101".to_string(), None),
        (Method::GET, "/api/v1/tenants?status=sleeping".to_string(), None),
    ] {
        let (status, body) = app.call(method.clone(), &path, Some(&token), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
        assert_error(&body, "VALIDATION_FAILED");
    }
    // a document of the wrong shape names the offending field, nested paths included
    let (_, body) = app.call(Method::PUT, &path, Some(&token), Some(json!({ "name": 42 }))).await;
    assert_eq!(body["error"]["details"]["field"], json!("name"), "{body}");
    assert!(!body["error"]["message"].as_str().unwrap_or_default().contains("target type"), "{body}");
    let (_, body) = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&token),
            Some(json!({ "name": "N", "slug": "n-n", "planId": "free", "ownerId": "not-a-uuid" })),
        )
        .await;
    assert_eq!(body["error"]["details"]["field"], json!("ownerId"), "{body}");

    // nothing was written by the refused requests
    let (_, body) = app.get(&path, &token).await;
    assert_eq!(body["data"]["name"], json!("Acme"));
    assert_eq!(body["data"]["slug"], json!("acme"));
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let app = TestApp::spawn().await;
    let tenant = app.insert_tenant("Big", "big-body", "free", TenantStatus::Active).await;
    let huge = json!({ "settings": { "blob": "x".repeat(1024 * 1024 + 1) } });
    let (status, body) =
        app.call(Method::PUT, &format!("/api/v1/tenants/{}", tenant.id), Some(&app.admin_token()), Some(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_are_401() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/api/v1/plans", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "UNAUTHORIZED");

    let (status, body) = app.get("/api/v1/plans", "not.a.jwt").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "UNAUTHORIZED");

    let expired = app.token_expiring(&["platform_admin"], None, -3600);
    let (status, body) = app.get("/api/v1/plans", &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], json!("token expired"));

    // a token signed with another secret
    let other = TestApp::spawn().await;
    let (status, _) = app.get("/api/v1/plans", &other.admin_token()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A handler that panics answers a 500 in the envelope, with its request id, and is counted —
/// the guard layer catches it (a route of its own on the service's real state and layer).
#[tokio::test]
async fn a_panicking_handler_answers_500_in_the_envelope_and_is_counted() {
    use axum::body::Body;
    use tower::ServiceExt;
    async fn boom() -> &'static str {
        panic!("a handler bug")
    }
    let app = TestApp::spawn().await;
    let boom = axum::Router::new()
        .route("/boom", axum::routing::get(boom))
        .layer(tenant_api::http::guard::GuardLayer::new(app.state.clone()));
    let request = axum::http::Request::get("/boom").header("x-request-id", "req-boom").body(Body::empty());
    let res = boom.oneshot(request.expect("request")).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-request-id"], "req-boom");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16).await.expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_error(&body, "INTERNAL");
    assert_eq!(body["error"]["message"], json!("internal error"), "no panic text leaves: {body}");
    let m = &app.state.metrics;
    assert_eq!(m.http_requests.with_label_values(&["GET", "/boom", "500"]).get(), 1);
    assert_eq!(m.errors.with_label_values(&["INTERNAL"]).get(), 1);
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/livez")).send().await.expect("sent");
    let generated = res.headers().get("x-request-id").expect("generated id").to_str().expect("ascii");
    assert_eq!(generated.len(), 36);
    let res = app.client.get(app.url("/livez")).header("x-request-id", "req-123").send().await.expect("sent");
    assert_eq!(res.headers().get("x-request-id").expect("propagated"), "req-123");
}
