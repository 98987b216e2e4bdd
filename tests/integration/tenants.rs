//! The synchronous tenant API: listing, search, reading, updating, the lifecycle.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenant_domain::TenantStatus;
use tenant_tests::TestApp;

#[tokio::test]
async fn list_pages_and_filters() {
    let app = TestApp::spawn().await;
    for i in 0..25 {
        let status = if i % 5 == 0 { TenantStatus::Suspended } else { TenantStatus::Active };
        let plan = if i < 10 { "basic" } else { "pro" };
        app.insert_tenant(&format!("Company {i:02}"), &format!("company-{i:02}"), plan, status).await;
    }
    let token = app.admin_token();

    let (status, page1) = app.get("/api/v1/tenants?limit=10", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page1["meta"], json!({ "total": 25, "page": 1, "limit": 10 }));
    assert_eq!(page1["data"].as_array().map(Vec::len), Some(10));
    let (_, page3) = app.get("/api/v1/tenants?limit=10&page=3", &token).await;
    assert_eq!(page3["data"].as_array().map(Vec::len), Some(5));
    // newest first, and the pages don't overlap
    assert_eq!(page1["data"][0]["slug"], json!("company-24"));
    assert_eq!(page3["data"][4]["slug"], json!("company-00"));

    let (_, suspended) = app.get("/api/v1/tenants?status=suspended", &token).await;
    assert_eq!(suspended["meta"]["total"], json!(5));
    assert!(suspended["data"].as_array().expect("list").iter().all(|t| t["status"] == json!("suspended")));

    let (_, basic) = app.get("/api/v1/tenants?planId=basic&limit=100", &token).await;
    assert_eq!(basic["meta"]["total"], json!(10));
    let (status, _) = app.get("/api/v1/tenants?planId=platinum", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn full_text_search_matches_name_slug_and_domain() {
    let app = TestApp::spawn().await;
    app.insert_tenant("Acme Rockets", "acme-rockets", "basic", TenantStatus::Active).await;
    app.insert_tenant("Globex Corporation", "globex", "basic", TenantStatus::Active).await;
    app.insert_tenant("Initech", "initech", "pro", TenantStatus::Active).await;
    let token = app.admin_token();
    let search = |q: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let (status, body) = app.get(&format!("/api/v1/tenants?q={q}"), &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let mut slugs: Vec<String> = body["data"]
                .as_array()
                .expect("list")
                .iter()
                .map(|t| t["slug"].as_str().unwrap_or("").to_owned())
                .collect();
            slugs.sort();
            slugs
        }
    };
    assert_eq!(search("rocket").await, ["acme-rockets"]); // prefix of a name word
    assert_eq!(search("GLOBEX%20corp").await, ["globex"]); // every word, any case
    assert_eq!(search("initech.example").await, ["initech"]); // domain parts
    assert_eq!(search("acme-rockets").await, ["acme-rockets"]); // the slug itself
    assert!(search("umbrella").await.is_empty());
    // tsquery syntax in the input is inert
    assert_eq!(search("acme%20%7C%20globex").await, Vec::<String>::new());
}

#[tokio::test]
async fn get_returns_plan_quotas_and_effective_features() {
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Hooli", "hooli", "basic", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&t).await;
    sqlx::query("update tenants set features = '{\"realTimeChat\": true}' where id = $1")
        .bind(t.id)
        .execute(&app.db)
        .await
        .expect("q");
    let (status, body) = app.get(&format!("/api/v1/tenants/{}", t.id), &app.admin_token()).await;
    assert_eq!(status, StatusCode::OK);
    let data = &body["data"];
    assert_eq!(data["slug"], json!("hooli"));
    assert_eq!(data["plan"]["slug"], json!("basic"));
    assert_eq!(data["quotas"].as_array().map(Vec::len), Some(8));
    let users = data["quotas"].as_array().expect("list").iter().find(|q| q["resourceType"] == json!("users")).cloned();
    assert_eq!(users.expect("users quota")["limitValue"], json!(25));
    assert_eq!(data["effectiveFeatures"]["realTimeChat"], json!(true)); // override
    assert_eq!(data["effectiveFeatures"]["apiAccess"], json!(true)); // plan
    assert_eq!(data["effectiveFeatures"]["ssoIntegration"], json!(false));

    let (status, body) = app.get(&format!("/api/v1/tenants/{}", uuid::Uuid::new_v4()), &app.admin_token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], json!("TENANT_NOT_FOUND"));
}

#[tokio::test]
async fn update_changes_fields_audits_and_emits_an_event() {
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Pied Piper", "pied-piper", "pro", TenantStatus::Active).await;
    let other = app.insert_tenant("Raviga", "raviga", "pro", TenantStatus::Active).await;
    let path = format!("/api/v1/tenants/{}", t.id);
    let token = app.admin_token();

    let (status, body) = app
        .call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({ "name": "  Pied Piper Inc ", "domain": "piedpiper.com", "settings": { "locale": "en" }, "slug": "pied-piper" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["name"], json!("Pied Piper Inc"));
    assert_eq!(body["data"]["domain"], json!("piedpiper.com"));
    assert_eq!(body["data"]["settings"], json!({ "locale": "en" }));

    let (action, old, new): (String, serde_json::Value, serde_json::Value) =
        sqlx::query_as("select action, old_value, new_value from audit_log where tenant_id = $1")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("one audit row");
    assert_eq!(action, "tenant.update");
    assert_eq!(old["name"], json!("Pied Piper"));
    assert_eq!(new["name"], json!("Pied Piper Inc"));
    let events: i64 =
        sqlx::query_scalar("select count(*) from outbox_events where tenant_id = $1 and event_type = 'tenant.updated'")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("q");
    assert_eq!(events, 1);

    // null clears the domain; another tenant's domain is taken
    let (status, body) = app.call(Method::PUT, &path, Some(&token), Some(json!({ "domain": null }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["domain"], json!(null));
    let (status, body) = app
        .call(Method::PUT, &path, Some(&token), Some(json!({ "domain": other.domain.clone().expect("domain") })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], json!("TENANT_DOMAIN_TAKEN"));
}

#[tokio::test]
async fn status_moves_follow_the_lifecycle() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let active = app.insert_tenant("Active", "active-co", "free", TenantStatus::Active).await;
    let path = format!("/api/v1/tenants/{}/status", active.id);

    let (status, body) =
        app.call(Method::PATCH, &path, Some(&token), Some(json!({ "status": "suspended", "reason": "unpaid" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], json!("suspended"));
    assert_eq!(body["data"]["statusReason"], json!("unpaid"));
    assert!(body["data"]["suspendedAt"].is_string());

    let (status, body) = app.call(Method::PATCH, &path, Some(&token), Some(json!({ "status": "active" }))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["suspendedAt"], json!(null));

    let events: Vec<String> = sqlx::query_scalar(
        "select payload->'data'->>'to' from outbox_events where tenant_id = $1 and event_type = 'tenant.status_changed' order by id",
    )
    .bind(active.id)
    .fetch_all(&app.db)
    .await
    .expect("q");
    assert_eq!(events, ["suspended", "active"]);

    // moves outside the state machine (or reserved to the lifecycle jobs) are 409
    let provisioning = app.insert_tenant("Prov", "prov-co", "free", TenantStatus::Provisioning).await;
    let deleting = app.insert_tenant("Del", "del-co", "free", TenantStatus::Deleting).await;
    for (tenant, to) in [
        (&provisioning, "suspended"),
        (&provisioning, "active"),
        (&deleting, "suspended"),
        (&deleting, "active"),
        (&active, "deleted"),
        (&active, "provisioning"),
    ] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/tenants/{}/status", tenant.id),
                Some(&token),
                Some(json!({ "status": to })),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{} -> {to}", tenant.slug);
        assert_eq!(body["error"]["code"], json!("INVALID_STATE"));
    }
    let still: String = sqlx::query_scalar("select status::text from tenants where id = $1")
        .bind(deleting.id)
        .fetch_one(&app.db)
        .await
        .expect("q");
    assert_eq!(still, "deleting");

    // a deleting tenant cannot be edited either
    let (status, _) = app
        .call(Method::PUT, &format!("/api/v1/tenants/{}", deleting.id), Some(&token), Some(json!({ "name": "X" })))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn every_mutation_honours_an_idempotency_key() {
    let app = TestApp::spawn().await;
    let t = app.insert_tenant("Once", "once-co", "pro", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&t).await;
    let token = app.admin_token();
    let send = |method: Method, path: String, key: &'static str, body: serde_json::Value| {
        let req =
            app.client.request(method, app.url(&path)).bearer_auth(&token).header("idempotency-key", key).json(&body);
        async move { req.send().await.expect("sent") }
    };
    let quotas = format!("/api/v1/tenants/{}/quotas", t.id);
    let first = send(Method::PUT, quotas.clone(), "limits-1", json!({ "limits": { "users": 42 } })).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: serde_json::Value = first.json().await.expect("json");
    let again = send(Method::PUT, quotas.clone(), "limits-1", json!({ "limits": { "users": 42 } })).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers().get("idempotent-replayed").map(|v| v.to_str().ok()), Some(Some("true")));
    assert_eq!(again.json::<serde_json::Value>().await.expect("json"), first);
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where tenant_id = $1 and action = 'tenant.quotas.update'")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("q");
    assert_eq!(audited, 1, "done once");
    let other = send(Method::PUT, quotas, "limits-1", json!({ "limits": { "users": 43 } })).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // a refused request's answer is replayed too; without a key nothing is remembered
    let status_path = format!("/api/v1/tenants/{}/status", t.id);
    let bad = send(Method::PATCH, status_path.clone(), "status-1", json!({ "status": "deleted" })).await;
    assert_eq!(bad.status(), StatusCode::CONFLICT);
    let bad_again = send(Method::PATCH, status_path, "status-1", json!({ "status": "deleted" })).await;
    assert_eq!(
        (bad_again.status(), bad_again.headers().contains_key("idempotent-replayed")),
        (StatusCode::CONFLICT, true)
    );
    let (status, _) = app
        .call(Method::PUT, &format!("/api/v1/tenants/{}", t.id), Some(&token), Some(json!({ "name": "Twice" })))
        .await;
    assert_eq!(status, StatusCode::OK);
}
