//! Roles, the cross-tenant guard and service tokens.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenant_domain::TenantStatus;
use tenant_tests::{SERVICE_TOKEN, TestApp};

#[tokio::test]
async fn a_tenant_admin_reading_another_tenant_is_refused_counted_and_audited() {
    let app = TestApp::spawn().await;
    let a = app.insert_tenant("Alpha", "alpha", "basic", TenantStatus::Active).await;
    let b = app.insert_tenant("Beta", "beta", "basic", TenantStatus::Active).await;
    let token = app.token(&["tenant_admin"], Some(a.id));

    let (status, _) = app.get(&format!("/api/v1/tenants/{}", a.id), &token).await;
    assert_eq!(status, StatusCode::OK);

    let before = app.metric("tenant_cross_tenant_denials_total").await.unwrap_or(0.0);
    let (status, body) = app.get(&format!("/api/v1/tenants/{}", b.id), &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], json!("CROSS_TENANT_ACCESS_DENIED"));
    let (status, body) = app
        .call(Method::PUT, &format!("/api/v1/tenants/{}", b.id), Some(&token), Some(json!({ "name": "Pwned" })))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], json!("CROSS_TENANT_ACCESS_DENIED"));
    let after = app.metric("tenant_cross_tenant_denials_total").await.expect("metric exported");
    assert_eq!(after - before, 2.0);

    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and action = 'access.cross_tenant_denied'",
    )
    .bind(b.id)
    .fetch_one(&app.db)
    .await
    .expect("query");
    assert_eq!(audited, 2);
    let name: String =
        sqlx::query_scalar("select name from tenants where id = $1").bind(b.id).fetch_one(&app.db).await.expect("q");
    assert_eq!(name, "Beta");

    // the list shows a tenant user only their own tenant
    let (_, body) = app.get("/api/v1/tenants", &token).await;
    assert_eq!(body["meta"]["total"], json!(1));
    assert_eq!(body["data"][0]["id"], json!(a.id));
}

#[tokio::test]
async fn roles_decide_what_a_tenant_user_may_do() {
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Gamma", "gamma", "pro", TenantStatus::Active).await;
    let path = format!("/api/v1/tenants/{}", t.id);
    let member = app.token(&["tenant_member"], Some(t.id));
    let admin = app.token(&["tenant_admin"], Some(t.id));

    assert_eq!(app.get(&path, &member).await.0, StatusCode::OK);
    let (status, body) = app.call(Method::PUT, &path, Some(&member), Some(json!({ "name": "Nope" }))).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("FORBIDDEN")));

    let (status, body) = app.call(Method::PUT, &path, Some(&admin), Some(json!({ "name": "Gamma Two" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["name"], json!("Gamma Two"));

    // suspending is for platform staff
    let (status, body) =
        app.call(Method::PATCH, &format!("{path}/status"), Some(&admin), Some(json!({ "status": "suspended" }))).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("FORBIDDEN")));

    // a token with no known role can't read
    let nobody = app.token(&["something_else"], Some(t.id));
    assert_eq!(app.get(&path, &nobody).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn internal_routes_need_a_configured_service_token() {
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Delta", "delta", "free", TenantStatus::Active).await;
    let url = app.url("/internal/tenants/validate");
    let body = json!({ "slug": "delta" });

    let res = app.client.post(&url).json(&body).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app
        .client
        .post(&url)
        .header("x-service-token", "wrong-token-0123456789")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let err: serde_json::Value = res.json().await.expect("json");
    assert_eq!(err["error"]["code"], json!("UNAUTHORIZED"));
    // a user's bearer token is no service token
    let res = app.client.post(&url).bearer_auth(app.admin_token()).json(&body).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // both configured tokens work (rotation)
    for token in [SERVICE_TOKEN, "rotated-out-token-0123456789"] {
        let res = app.client.post(&url).header("x-service-token", token).json(&body).send().await.expect("sent");
        assert_eq!(res.status(), StatusCode::OK);
        let v: serde_json::Value = res.json().await.expect("json");
        assert_eq!(v["data"]["valid"], json!(true));
        assert_eq!(v["data"]["tenant"]["id"], json!(t.id));
    }

    let call =
        |body: serde_json::Value| app.client.post(&url).header("x-service-token", SERVICE_TOKEN).json(&body).send();
    let v: serde_json::Value =
        call(json!({ "domain": "DELTA.example.com" })).await.expect("sent").json().await.expect("json");
    assert_eq!(v["data"]["tenant"]["slug"], json!("delta"));
    let v: serde_json::Value = call(json!({ "tenantId": t.id })).await.expect("sent").json().await.expect("json");
    assert_eq!(v["data"]["tenant"]["slug"], json!("delta"));
    let res = call(json!({ "slug": "nobody-here" })).await.expect("sent");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = call(json!({ "slug": "delta", "domain": "delta.example.com" })).await.expect("sent");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // a suspended tenant validates as not valid
    sqlx::query("update tenants set status = 'suspended' where id = $1").bind(t.id).execute(&app.db).await.expect("q");
    let v: serde_json::Value = call(json!({ "slug": "delta" })).await.expect("sent").json().await.expect("json");
    assert_eq!(v["data"]["valid"], json!(false));
    assert_eq!(v["data"]["tenant"]["status"], json!("suspended"));
}
