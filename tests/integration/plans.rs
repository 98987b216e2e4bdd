//! The plan catalogue: creating plans, refusing bad ones, and versions — a change of terms is a
//! new version that tenants on the old one do not see; a change of name is not.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenant_domain::TenantStatus;
use tenant_tests::TestApp;

fn team_plan() -> Value {
    json!({
        "name": "Team",
        "slug": "team",
        "description": "For teams.",
        "currency": "usd",
        "priceMonthly": 4900,
        "priceYearly": 49000,
        "apiRateLimit": 600,
        "features": { "apiAccess": true, "auditLogs": true },
        "quotas": {
            "users": { "limit": 50, "unit": "count", "resetPeriod": "none" },
            "storage": { "limit": 21474836480_i64, "unit": "bytes", "resetPeriod": "none" },
            "api_calls": { "limit": 50000, "unit": "requests", "resetPeriod": "daily" },
            "bandwidth": { "limit": 214748364800_i64, "unit": "bytes", "resetPeriod": "monthly" },
            "databases": { "limit": 5, "unit": "count", "resetPeriod": "none" },
            "compute_hours": { "limit": 200, "unit": "hours", "resetPeriod": "monthly" },
            "file_uploads": { "limit": 2000, "unit": "count", "resetPeriod": "daily" },
            "email_sends": { "limit": 2000, "unit": "count", "resetPeriod": "weekly" }
        },
        "overagePrices": { "api_calls": { "per": 1000, "unitAmount": 45 } },
        "sortOrder": 5
    })
}

/// Rows that plan writes leave behind: plan versions and platform audit entries.
async fn written(app: &TestApp) -> (i64, i64) {
    sqlx::query_as(
        "select (select count(*) from subscription_plans), \
                (select count(*) from audit_log where action like 'plan.%')",
    )
    .fetch_one(&app.db)
    .await
    .expect("counted")
}

#[tokio::test]
async fn a_platform_admin_creates_a_plan_and_it_is_listed() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (status, body) = app.call(Method::POST, "/api/v1/plans", Some(&token), Some(team_plan())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let plan = &body["data"];
    assert_eq!(plan["version"], json!(1));
    assert_eq!(plan["family"], plan["id"]);
    assert_eq!(plan["priceMonthly"], json!({ "amount": 4900, "currency": "usd" }));
    assert_eq!(plan["priceYearly"], json!({ "amount": 49000, "currency": "usd" }));
    assert_eq!(plan["features"].as_object().map(|f| f.len()), Some(8), "{plan}");
    assert_eq!(plan["features"]["auditLogs"], json!(true));
    assert_eq!(plan["features"]["ssoIntegration"], json!(false));
    assert_eq!(plan["quotas"]["email_sends"]["resetPeriod"], json!("weekly"));
    assert_eq!(plan["overagePrices"], json!({ "api_calls": { "per": 1000, "unitAmount": 45 } }));
    assert_eq!(plan["supersededAt"], Value::Null);
    assert_eq!(plan["isActive"], json!(true));

    let (status, list) = app.get("/api/v1/plans", &token).await;
    assert_eq!(status, StatusCode::OK);
    let slugs: Vec<&str> = list["data"].as_array().expect("list").iter().filter_map(|p| p["slug"].as_str()).collect();
    assert_eq!(slugs, ["free", "basic", "pro", "enterprise", "team"]);

    // by id and by slug, for any signed-in user
    let tenant = app.insert_tenant("Acme", "acme", "free", TenantStatus::Active).await;
    let member = app.token(&["tenant_member"], Some(tenant.id));
    for key in [plan["id"].as_str().expect("id"), "team"] {
        let (status, found) = app.get(&format!("/api/v1/plans/{key}"), &member).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["data"]["id"], plan["id"]);
    }
    for missing in ["nope", "00000000-0000-0000-0000-000000000000", "%00", "a%20b"] {
        let (status, body) = app.get(&format!("/api/v1/plans/{missing}"), &member).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert_eq!(body["error"]["code"], json!("PLAN_NOT_FOUND"));
    }

    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where action = 'plan.create' and tenant_id is null and resource = $1",
    )
    .bind(format!("plans/{}", plan["id"].as_str().expect("id")))
    .fetch_one(&app.db)
    .await
    .expect("counted");
    assert_eq!(audited, 1);

    // the slug names one plan
    let (status, body) = app.call(Method::POST, "/api/v1/plans", Some(&token), Some(team_plan())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], json!("PLAN_SLUG_TAKEN"));
    let mut basic = team_plan();
    basic["slug"] = json!("basic");
    let (status, body) = app.call(Method::POST, "/api/v1/plans", Some(&token), Some(basic)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(written(&app).await, (5, 1));
}

#[tokio::test]
async fn only_platform_admins_write_plans() {
    let app = TestApp::spawn().await;
    let tenant = app.insert_tenant("Acme", "acme", "basic", TenantStatus::Active).await;
    let tenant_admin = app.token(&["tenant_admin"], Some(tenant.id));
    let (status, body) = app.call(Method::POST, "/api/v1/plans", Some(&tenant_admin), Some(team_plan())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], json!("FORBIDDEN"));
    // refused before the body is even read
    let (status, _) = app.call(Method::POST, "/api/v1/plans", Some(&tenant_admin), Some(json!({ "x": 1 }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        app.call(Method::PUT, "/api/v1/plans/basic", Some(&tenant_admin), Some(json!({ "priceMonthly": 1 }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.call(Method::POST, "/api/v1/plans", None, Some(team_plan())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(written(&app).await, (4, 0));
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field_and_write_nothing() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    type Spoil = fn(&mut Value);
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "unknown resource",
            |p| p["quotas"]["widgets"] = json!({ "limit": 1, "unit": "count", "resetPeriod": "none" }),
            "quotas.widgets",
        ),
        (
            "gauge with a reset period",
            |p| p["quotas"]["users"]["resetPeriod"] = json!("daily"),
            "quotas.users.resetPeriod",
        ),
        (
            "counter without one",
            |p| p["quotas"]["api_calls"]["resetPeriod"] = json!("none"),
            "quotas.api_calls.resetPeriod",
        ),
        ("missing resource", |p| drop(p["quotas"].as_object_mut().map(|q| q.remove("storage"))), "quotas.storage"),
        ("negative limit", |p| p["quotas"]["databases"]["limit"] = json!(-1), "quotas.databases.limit"),
        ("negative price", |p| p["priceMonthly"] = json!(-100), "priceMonthly"),
        ("price too high", |p| p["priceYearly"] = json!(1_000_000_000_001_i64), "priceYearly"),
        ("fractional price", |p| p["priceMonthly"] = json!(49.5), "priceMonthly"),
        ("unknown flag", |p| p["features"]["teleport"] = json!(true), "features.teleport"),
        ("unsupported currency", |p| p["currency"] = json!("xyz"), "currency"),
        ("zero rate limit", |p| p["apiRateLimit"] = json!(0), "apiRateLimit"),
        ("bad slug", |p| p["slug"] = json!("Team!"), "slug"),
        (
            "gauge with an overage price",
            |p| p["overagePrices"]["users"] = json!({ "per": 1, "unitAmount": 1 }),
            "overagePrices.users",
        ),
        ("overage per 0", |p| p["overagePrices"]["api_calls"]["per"] = json!(0), "overagePrices.api_calls.per"),
        ("unknown field", |p| p["colour"] = json!("blue"), "colour"),
        ("unknown nested field", |p| p["quotas"]["users"]["soft"] = json!(true), "quotas.users.soft"),
        ("missing field", |p| drop(p.as_object_mut().map(|o| o.remove("currency"))), "currency"),
        ("control character", |p| p["name"] = json!("Te\u{0}am"), "name"),
    ];
    for (what, spoil, field) in cases {
        let mut body = team_plan();
        spoil(&mut body);
        let (status, answer) = app.call(Method::POST, "/api/v1/plans", Some(&token), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], json!("VALIDATION_FAILED"), "{what}: {answer}");
        assert_eq!(answer["error"]["details"]["field"], json!(field), "{what}: {answer}");
    }
    // the same checks guard a change
    for (body, field) in [
        (json!({ "slug": "other" }), "slug"),
        (
            json!({ "quotas": { "storage": { "limit": 1, "unit": "bytes", "resetPeriod": "monthly" } } }),
            "quotas.storage.resetPeriod",
        ),
        (json!({ "features": { "teleport": true } }), "features.teleport"),
        (json!({ "currency": "zzz" }), "currency"),
        (json!({ "priceMonthly": -1 }), "priceMonthly"),
    ] {
        let (status, answer) = app.call(Method::PUT, "/api/v1/plans/basic", Some(&token), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], json!(field), "{answer}");
    }
    let (status, _) = app.call(Method::PUT, "/api/v1/plans/nope", Some(&token), Some(json!({ "name": "X" }))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(written(&app).await, (4, 0));
}

#[tokio::test]
async fn a_change_of_terms_is_a_new_version_and_tenants_keep_theirs() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_, v1) = app.get("/api/v1/plans/basic", &token).await;
    let v1 = v1["data"].clone();
    let v1_id = v1["id"].as_str().expect("id").to_owned();
    let tenant = app.insert_tenant("Acme", "acme", &v1_id, TenantStatus::Active).await;
    app.insert_quotas_from_plan(&tenant).await;

    let change = json!({ "priceMonthly": 3900, "quotas": {
        "api_calls": { "limit": 20000, "unit": "requests", "resetPeriod": "daily" } } });
    let (status, body) = app.call(Method::PUT, &format!("/api/v1/plans/{v1_id}"), Some(&token), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v2 = body["data"].clone();
    assert_ne!(v2["id"], v1["id"]);
    assert_eq!(v2["family"], v1["family"]);
    assert_eq!((v2["version"].clone(), v2["slug"].clone()), (json!(2), json!("basic")));
    assert_eq!(v2["priceMonthly"], json!({ "amount": 3900, "currency": "usd" }));
    assert_eq!(v2["priceYearly"], v1["priceYearly"]);
    assert_eq!(v2["quotas"]["api_calls"]["limit"], json!(20000));
    assert_eq!(v2["quotas"]["users"], v1["quotas"]["users"]);
    assert_eq!(v2["features"], v1["features"]);
    assert_eq!(v2["supersededAt"], Value::Null);

    // the list and the slug show v2; v1's id still shows v1, superseded
    let (_, list) = app.get("/api/v1/plans", &token).await;
    let basic: Vec<&Value> = list["data"].as_array().expect("list").iter().filter(|p| p["slug"] == "basic").collect();
    assert_eq!(basic.len(), 1);
    assert_eq!(basic[0]["id"], v2["id"]);
    let (_, by_slug) = app.get("/api/v1/plans/basic", &token).await;
    assert_eq!(by_slug["data"]["id"], v2["id"]);
    let (status, old) = app.get(&format!("/api/v1/plans/{v1_id}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(old["data"]["version"], json!(1));
    assert_eq!(old["data"]["priceMonthly"], json!({ "amount": 2900, "currency": "usd" }));
    assert!(old["data"]["supersededAt"].is_string(), "{old}");

    // the tenant still has v1 and v1's quotas
    let (status, detail) = app.get(&format!("/api/v1/tenants/{}", tenant.id), &token).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(detail["data"]["planId"], json!(v1_id));
    assert_eq!(detail["data"]["plan"]["id"], json!(v1_id));
    let (status, quotas) = app.get(&format!("/api/v1/tenants/{}/quotas", tenant.id), &token).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    let api_calls = quotas["data"].as_array().expect("quotas").iter().find(|q| q["resource"] == "api_calls").cloned();
    assert_eq!(api_calls.expect("api_calls")["limit"], json!(10000));

    // naming any version changes the current one: v3, from v2
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/v1/plans/{v1_id}"),
            Some(&token),
            Some(json!({ "features": { "auditLogs": true } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["version"], json!(3));
    assert_eq!(body["data"]["priceMonthly"]["amount"], json!(3900));
    assert_eq!(body["data"]["features"]["auditLogs"], json!(true));
    let versions: i64 = sqlx::query_scalar("select count(*) from audit_log where action = 'plan.version'")
        .fetch_one(&app.db)
        .await
        .expect("counted");
    assert_eq!(versions, 2);
}

#[tokio::test]
async fn concurrent_changes_each_make_a_version() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let changes = (1..=6).map(|i| {
        let (app, token) = (&app, &token);
        async move {
            let body = json!({ "priceMonthly": 3000 + i });
            app.call(Method::PUT, "/api/v1/plans/basic", Some(token), Some(body)).await
        }
    });
    for (status, body) in futures::future::join_all(changes).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let versions: Vec<(i32, bool)> = sqlx::query_as(
        "select version, superseded_at is null from subscription_plans where slug = 'basic' order by version",
    )
    .fetch_all(&app.db)
    .await
    .expect("versions");
    let expected: Vec<(i32, bool)> = (1..=7).map(|v| (v, v == 7)).collect();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn a_change_of_name_is_made_in_place_and_no_change_writes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.admin_token();
    let (_, before) = app.get("/api/v1/plans/pro", &token).await;
    let before = before["data"].clone();

    let rename = json!({ "name": "Professional", "description": "Renamed.", "sortOrder": 7 });
    let (status, body) = app.call(Method::PUT, "/api/v1/plans/pro", Some(&token), Some(rename)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["id"], before["id"]);
    assert_eq!(body["data"]["version"], json!(1));
    assert_eq!(body["data"]["name"], json!("Professional"));
    assert_eq!(body["data"]["description"], json!("Renamed."));
    assert_eq!(body["data"]["sortOrder"], json!(7));
    assert_eq!(written(&app).await, (4, 1));
    let renamed = body["data"].clone();

    // the same terms again, and the same name: nothing to write
    let same = json!({ "name": "Professional", "priceMonthly": 9900, "features": { "auditLogs": true } });
    let (status, body) = app.call(Method::PUT, "/api/v1/plans/pro", Some(&token), Some(same)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], renamed);
    assert_eq!(written(&app).await, (4, 1));

    // deactivating hides it from the list but not from its id
    let (status, _) =
        app.call(Method::PUT, "/api/v1/plans/pro", Some(&token), Some(json!({ "isActive": false }))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = app.get("/api/v1/plans", &token).await;
    assert!(list["data"].as_array().expect("list").iter().all(|p| p["slug"] != "pro"));
    let (status, _) = app.get(&format!("/api/v1/plans/{}", before["id"].as_str().expect("id")), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(written(&app).await, (4, 2));
}

#[tokio::test]
async fn the_plan_operations_are_documented() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for (path, method, statuses) in [
        ("/api/v1/plans", "get", &["200", "401"][..]),
        ("/api/v1/plans/{id}", "get", &["200", "401", "404"][..]),
        ("/api/v1/plans", "post", &["201", "400", "401", "403", "409", "422"][..]),
        ("/api/v1/plans/{id}", "put", &["200", "400", "401", "403", "404", "409", "422"][..]),
    ] {
        let responses = &doc["paths"][path][method]["responses"];
        for status in statuses {
            assert!(responses[status].is_object(), "{method} {path}: {status} undocumented");
        }
    }
    // every schema the plan operations refer to is in the document
    let text = doc["paths"].to_string();
    for name in ["CreatePlanRequest", "UpdatePlanRequest", "QuotaTerms", "OveragePrice", "Price"] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name} missing");
    }
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(doc["components"]["schemas"][name].is_object(), "{name} referred to but missing");
    }
}
