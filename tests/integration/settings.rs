//! Layered configuration, secrets, feature flags, the context cache across replicas, the audit
//! log.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenant_domain::tenant_config::secrets::ConfigCipher;
use tenant_domain::tenants::Tenant;
use tenant_domain::{Secret, TenantStatus};
use tenant_tests::{SERVICE_TOKEN, TestApp};

const API: &str = env!("CARGO_BIN_EXE_api-under-test");
const SLACK_KEY: &str = "xoxb-super-secret-value-9876";
const SSO_SECRET: &str = "sso-client-secret-abcdefgh";

async fn tenant(app: &TestApp, slug: &str, plan: &str) -> Tenant {
    let t = app.insert_tenant(&format!("Tenant {slug}"), slug, plan, TenantStatus::Active).await;
    app.insert_quotas_from_plan(&t).await;
    t
}

async fn put_config(app: &TestApp, token: &str, t: &Tenant, body: Value) -> (StatusCode, Value) {
    app.call(Method::PUT, &format!("/api/v1/tenants/{}/config", t.id), Some(token), Some(body)).await
}

async fn internal_get(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, Value) {
    let res = client.get(format!("{base}{path}")).header("x-service-token", SERVICE_TOKEN).send().await.expect("sent");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_masked_in_every_answer_and_record() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "vault", "pro").await;
    let admin = app.token(&["tenant_admin"], Some(t.id));
    let (status, body) = put_config(
        &app,
        &admin,
        &t,
        json!({
            "integrations": { "slack": { "enabled": true, "apiKey": SLACK_KEY, "webhookUrl": "https://hooks.example.com/x" } },
            "security": { "ssoClientSecret": SSO_SECRET, "sessionTimeoutMinutes": 30 },
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let layer = &body["data"]["tenant"];
    assert_eq!(layer["integrations"]["slack"]["apiKey"], json!("****9876"));
    assert_eq!(layer["integrations"]["slack"]["webhookUrl"], json!("https://hooks.example.com/x"));
    assert_eq!(layer["security"]["ssoClientSecret"], json!("****efgh"));
    assert_eq!(layer["security"]["sessionTimeoutMinutes"], json!(30));
    assert_eq!(body["data"]["plan"]["slug"], json!("pro"));
    assert_eq!(body["data"]["system"]["region"], json!("local"));
    assert!(!body.to_string().contains("super-secret") && !body.to_string().contains("client-secret-abc"));

    // nowhere in PostgreSQL in plaintext
    for (table, column) in [
        ("tenant_configs", "value"),
        ("audit_log", "old_value"),
        ("audit_log", "new_value"),
        ("outbox_events", "payload"),
    ] {
        let found: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where {column}::text like '%super-secret%' or {column}::text like '%client-secret-abc%'"
        ))
        .fetch_one(&app.db)
        .await
        .expect("q");
        assert_eq!(found, 0, "plaintext secret in {table}.{column}");
    }
    let (stored, encrypted): (Value, bool) = sqlx::query_as(
        "select value, is_encrypted from tenant_configs where tenant_id = $1 and category = 'integrations' and key = 'slack.apiKey'",
    )
    .bind(t.id)
    .fetch_one(&app.db)
    .await
    .expect("row");
    assert!(encrypted);
    let stored = stored.as_str().expect("string").to_owned();
    assert!(stored.starts_with("enc:v1:k1:"), "{stored}");
    // …yet it is the secret, encrypted under this tenant's place
    let key: [u8; 32] = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&app.env["CONFIG_ENCRYPTION_KEY"])
            .expect("b64")
            .try_into()
            .expect("32")
    };
    let cipher = ConfigCipher::new(vec![("k1".into(), Secret::new(key))]);
    assert_eq!(cipher.decrypt(t.id, "integrations", "slack.apiKey", &stored).as_deref(), Ok(SLACK_KEY));

    // the internal context and the audit log mask it too
    let (status, ctx) = internal_get(&app.client, &app.url(""), &format!("/internal/tenants/{}/context", t.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctx["data"]["config"]["integrations"]["slack"]["apiKey"], json!("****9876"));
    let (status, audit) = app.get(&format!("/api/v1/tenants/{}/audit", t.id), &admin).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entry =
        audit["data"].as_array().expect("list").iter().find(|e| e["action"] == json!("tenant.config.update")).cloned();
    let entry = entry.expect("config audit entry");
    assert_eq!(entry["newValue"]["integrations.slack.apiKey"], json!("****9876"));
    assert!(entry["actorId"].as_str().is_some_and(|a| a.starts_with("user-")));
}

#[tokio::test]
async fn invalid_configuration_is_refused_naming_the_path() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "strict", "basic").await;
    let token = app.admin_token();
    for (body, path) in [
        (json!({ "branding": { "primaryColor": "not-a-colour" } }), "branding.primaryColor"),
        (json!({ "security": { "sessionTimeoutMinutes": -5 } }), "security.sessionTimeoutMinutes"),
        (json!({ "notifications": { "emailEnabled": "yes" } }), "notifications.emailEnabled"),
        (json!({ "branding": { "unknownKey": 1 } }), "branding.unknownKey"),
        (json!({ "system": { "region": "mars" } }), "system"),
        (json!({ "integrations": { "slack": { "colour": "blue" } } }), "integrations.slack.colour"),
    ] {
        let (status, res) = put_config(&app, &token, &t, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(res["error"]["code"], json!("INVALID_CONFIG"));
        assert_eq!(res["error"]["details"]["path"], json!(path), "{res}");
    }
    let written: i64 = sqlx::query_scalar("select count(*) from tenant_configs where tenant_id = $1")
        .bind(t.id)
        .fetch_one(&app.db)
        .await
        .expect("q");
    assert_eq!(written, 0, "nothing written by refused changes");
    let events: i64 = sqlx::query_scalar("select count(*) from outbox_events where tenant_id = $1")
        .bind(t.id)
        .fetch_one(&app.db)
        .await
        .expect("q");
    assert_eq!(events, 0);

    // a good change is a partial merge; null and reset go back to defaults
    let (_, body) = put_config(&app, &token, &t, json!({ "branding": { "primaryColor": "#ABCDEF" } })).await;
    assert_eq!(body["data"]["tenant"]["branding"]["primaryColor"], json!("#abcdef"));
    assert_eq!(
        body["data"]["tenant"]["branding"]["secondaryColor"],
        json!("#0d1117"),
        "untouched keys keep their value"
    );
    let (_, body) = put_config(&app, &token, &t, json!({ "branding": { "primaryColor": null } })).await;
    assert_eq!(body["data"]["tenant"]["branding"]["primaryColor"], json!("#1f6feb"));
    put_config(&app, &token, &t, json!({ "security": { "mfaRequired": true } })).await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/config/reset", t.id),
            Some(&token),
            Some(json!({ "categories": ["security"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["tenant"]["security"]["mfaRequired"], json!(false));
    // members read, but don't write
    let member = app.token(&["tenant_member"], Some(t.id));
    assert_eq!(app.get(&format!("/api/v1/tenants/{}/config", t.id), &member).await.0, StatusCode::OK);
    assert_eq!(
        put_config(&app, &member, &t, json!({ "branding": { "primaryColor": "#fff" } })).await.0,
        StatusCode::FORBIDDEN
    );
}

fn flag<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["data"].as_array().and_then(|f| f.iter().find(|x| x["name"] == json!(name))).expect("flag")
}

#[tokio::test]
async fn features_outside_the_plan_are_for_platform_admins_only() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "featured", "basic").await; // basic: no realTimeChat, has apiAccess
    let path = format!("/api/v1/tenants/{}/features", t.id);
    let admin = app.token(&["tenant_admin"], Some(t.id));

    let (status, body) = app.call(Method::PATCH, &path, Some(&admin), Some(json!({ "realTimeChat": true }))).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("FEATURE_NOT_IN_PLAN")));
    let (status, body) =
        app.call(Method::PATCH, &path, Some(&app.admin_token()), Some(json!({ "realTimeChat": true }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        flag(&body, "realTimeChat"),
        &json!({ "name": "realTimeChat", "enabled": true, "source": "override", "inPlan": false })
    );

    // a tenant admin may switch a plan feature off, and back on (back to the plan's value)
    let (_, body) = app.call(Method::PATCH, &path, Some(&admin), Some(json!({ "apiAccess": false }))).await;
    assert_eq!(
        (flag(&body, "apiAccess")["enabled"].clone(), flag(&body, "apiAccess")["source"].clone()),
        (json!(false), json!("override"))
    );
    let (_, body) = app.call(Method::PATCH, &path, Some(&admin), Some(json!({ "apiAccess": true }))).await;
    assert_eq!(
        (flag(&body, "apiAccess")["enabled"].clone(), flag(&body, "apiAccess")["source"].clone()),
        (json!(true), json!("plan"))
    );
    let (_, body) = app.get(&path, &admin).await;
    assert_eq!(flag(&body, "realTimeChat")["source"], json!("override"));
    assert_eq!(flag(&body, "customBranding")["source"], json!("plan"));

    let (status, _) = app.call(Method::PATCH, &path, Some(&admin), Some(json!({ "teleport": true }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, internal) = internal_get(&app.client, &app.url(""), &format!("/internal/tenants/{}/features", t.id)).await;
    assert_eq!(internal["data"]["features"]["realTimeChat"], json!(true));
    assert_eq!(internal["data"]["features"]["ssoIntegration"], json!(false));
    let audited: i64 =
        sqlx::query_scalar("select count(*) from audit_log where tenant_id = $1 and action = 'tenant.features.update'")
            .bind(t.id)
            .fetch_one(&app.db)
            .await
            .expect("q");
    assert_eq!(audited, 3);
}

#[tokio::test]
async fn a_change_through_one_replica_is_seen_through_another_on_the_next_read() {
    let app = TestApp::spawn().await;
    let other = app.spawn_api_process(API).await;
    let t = tenant(&app, "replicated", "pro").await;
    let ctx_path = format!("/internal/tenants/{}/context", t.id);
    let token = app.admin_token();
    for round in 0..5 {
        // warm the other replica's caches
        for _ in 0..3 {
            assert_eq!(internal_get(&app.client, &other.base, &ctx_path).await.0, StatusCode::OK);
        }
        let colour = format!("#00000{round}");
        let (status, _) = put_config(&app, &token, &t, json!({ "branding": { "primaryColor": colour } })).await;
        assert_eq!(status, StatusCode::OK);
        let (_, ctx) = internal_get(&app.client, &other.base, &ctx_path).await;
        assert_eq!(ctx["data"]["config"]["branding"]["primaryColor"], json!(colour), "round {round}");
        // features and status too
        let enable = round % 2 == 0;
        app.call(
            Method::PATCH,
            &format!("/api/v1/tenants/{}/features", t.id),
            Some(&token),
            Some(json!({ "ssoIntegration": enable })),
        )
        .await;
        let (_, ctx) = internal_get(&app.client, &other.base, &ctx_path).await;
        assert_eq!(ctx["data"]["features"]["ssoIntegration"], json!(enable), "round {round}");
    }
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/tenants/{}/status", t.id),
            Some(&token),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, ctx) = internal_get(&app.client, &other.base, &ctx_path).await;
    assert_eq!(
        (ctx["data"]["tenant"]["status"].clone(), ctx["data"]["tenant"]["active"].clone()),
        (json!("suspended"), json!(false))
    );

    // a read-heavy loop is served from the caches
    for _ in 0..2000 {
        let (status, _) = internal_get(&app.client, &other.base, &ctx_path).await;
        assert_eq!(status, StatusCode::OK);
    }
    let metrics =
        app.client.get(format!("{}/metrics", other.base)).send().await.expect("sent").text().await.expect("text");
    let rate: f64 = metrics
        .lines()
        .find(|l| l.starts_with("tenant_config_cache_hit_rate "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("hit rate exported");
    assert!(rate >= 0.99, "hit rate {rate}");
    // and the health report carries the same figure
    let health: Value =
        app.client.get(format!("{}/health", other.base)).send().await.expect("sent").json().await.expect("json");
    let reported = health["data"]["metrics"]["cacheHitRate"].as_f64().expect("cacheHitRate");
    assert!((reported - rate).abs() < 1e-6, "health says {reported}, metrics {rate}");
}

/// The other replica's context cache lookups so far: (memory, redis, miss).
async fn lookups(client: &reqwest::Client, base: &str) -> (u64, u64, u64) {
    let metrics = client.get(format!("{base}/metrics")).send().await.expect("sent").text().await.expect("text");
    let count = |result: &str| {
        let series = format!("tenant_config_cache_lookups{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (count("memory"), count("redis"), count("miss"))
}

#[tokio::test]
async fn a_change_to_one_tenant_leaves_the_other_tenants_copies_in_memory() {
    let app = TestApp::spawn().await;
    let other = app.spawn_api_process(API).await;
    let token = app.admin_token();
    let changed = tenant(&app, "epoch-changed", "pro").await;
    let kept = tenant(&app, "epoch-kept", "pro").await;
    let kept_path = format!("/internal/tenants/{}/context", kept.id);
    let changed_path = format!("/internal/tenants/{}/context", changed.id);
    for path in [&kept_path, &changed_path, &kept_path] {
        assert_eq!(internal_get(&app.client, &other.base, path).await.0, StatusCode::OK);
    }
    let (memory, redis, miss) = lookups(&app.client, &other.base).await;
    assert!(memory >= 1, "the second read of a context is served from memory");

    let (status, _) = put_config(&app, &token, &changed, json!({ "branding": { "companyName": "Moved" } })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, ctx) = internal_get(&app.client, &other.base, &changed_path).await;
    assert_eq!(ctx["data"]["config"]["branding"]["companyName"], json!("Moved"));
    let before = lookups(&app.client, &other.base).await;
    let (_, ctx) = internal_get(&app.client, &other.base, &kept_path).await;
    assert_eq!(ctx["data"]["config"]["branding"]["companyName"], json!(""));
    let after = lookups(&app.client, &other.base).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1, after.2 - before.2),
        (1, 0, 0),
        "the unchanged tenant's copy is still served from memory (before the change: {memory} {redis} {miss})"
    );

    // and that copy, checked again under the new epoch, still gives way to its own change
    let (status, _) = put_config(&app, &token, &kept, json!({ "branding": { "companyName": "Kept" } })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, ctx) = internal_get(&app.client, &other.base, &kept_path).await;
    assert_eq!(ctx["data"]["config"]["branding"]["companyName"], json!("Kept"));
}

#[tokio::test]
async fn the_audit_log_is_the_tenants_own() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "audited-a", "pro").await;
    let b = tenant(&app, "audited-b", "pro").await;
    let admin_a = app.token(&["tenant_admin"], Some(a.id));
    put_config(&app, &admin_a, &a, json!({ "branding": { "companyName": "Alpha" } })).await;
    put_config(&app, &app.admin_token(), &b, json!({ "branding": { "companyName": "Beta" } })).await;
    let res = app
        .client
        .get(app.url(&format!("/api/v1/tenants/{}/audit?limit=10", a.id)))
        .bearer_auth(&admin_a)
        .header("x-request-id", "req-audit-1")
        .send()
        .await
        .expect("sent");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["meta"]["total"], json!(1), "{body}");
    assert_eq!(body["data"][0]["newValue"]["branding.companyName"], json!("Alpha"));
    assert_eq!(body["data"][0]["oldValue"]["branding.companyName"], json!(null));
    let (status, body) = app.get(&format!("/api/v1/tenants/{}/audit", b.id), &admin_a).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("CROSS_TENANT_ACCESS_DENIED")));
    let member = app.token(&["tenant_member"], Some(a.id));
    assert_eq!(app.get(&format!("/api/v1/tenants/{}/audit", a.id), &member).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn concurrent_reads_of_a_cold_context_build_it_once() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "herd", "pro").await;
    let path = format!("/internal/tenants/{}/context", t.id);
    let base = app.url("");
    let misses = || async { app.metric("tenant_config_cache_lookups{result=\"miss\"}").await.unwrap_or(0.0) };
    let burst = || async {
        let reads = (0..50).map(|_| internal_get(&app.client, &base, &path));
        let answers = futures::future::join_all(reads).await;
        assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
        assert!(answers.windows(2).all(|w| w[0].1 == w[1].1), "every reader got the same context");
        answers[0].1.clone()
    };

    // Cold: fifty readers at once, one build from PostgreSQL; the others wait for it.
    burst().await;
    assert_eq!(misses().await, 1.0);

    // An invalidation makes the next burst build it once more, and only once.
    let (status, body) =
        put_config(&app, &app.admin_token(), &t, json!({ "branding": { "primaryColor": "#123456" } })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = burst().await;
    assert_eq!(after["data"]["config"]["branding"]["primaryColor"], json!("#123456"), "{after}");
    assert_eq!(misses().await, 2.0);
}
