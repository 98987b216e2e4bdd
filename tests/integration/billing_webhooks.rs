//! Stripe webhooks, end to end: the real API (and, for dunning, a real worker) receiving events
//! in Stripe's current shape, signed here as Stripe signs them (HMAC-SHA256 over `"{t}.{body}"`
//! keyed with the whole `whsec_…` secret).

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::{Duration, Instant};
use tenant_domain::TenantStatus;
use tenant_domain::tenants::Tenant;
use tenant_tests::{SERVICE_TOKEN, TestApp};
use uuid::Uuid;

const SECRET: &str = "whsec_test_5b2f0c1e9a7d4e3f8c6b";
const WEBHOOK: &str = "/api/v1/billing/stripe/webhook";

async fn app() -> TestApp {
    TestApp::spawn_with(|env| {
        env.insert("STRIPE_WEBHOOK_SECRET".into(), SECRET.into());
    })
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A tenant with quotas and a Stripe billing account.
struct Billed {
    tenant: Tenant,
    customer: String,
    subscription: String,
}

async fn billed_tenant(app: &TestApp, slug: &str) -> Billed {
    let tenant = app.insert_tenant(&format!("Tenant {slug}"), slug, "basic", TenantStatus::Active).await;
    app.insert_quotas_from_plan(&tenant).await;
    let customer = format!("cus_{}", &Uuid::new_v4().simple().to_string()[..14]);
    let subscription = format!("sub_{}", &Uuid::new_v4().simple().to_string()[..14]);
    sqlx::query(
        "insert into billing_accounts (tenant_id, provider, customer_ref, subscription_ref, plan_id, billing_anchor, \
             current_period_start, current_period_end, invoiced_through) \
         values ($1, 'stripe', $2, $3, $4, now() - interval '3 days', now() - interval '3 days', \
             now() + interval '27 days', now() - interval '3 days')",
    )
    .bind(tenant.id)
    .bind(&customer)
    .bind(&subscription)
    .bind(tenant.plan_id)
    .execute(&app.db)
    .await
    .expect("billing account");
    Billed { tenant, customer, subscription }
}

fn sign(payload: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{payload}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2025-09-30.clover", "created": created, "type": kind,
        "data": { "object": object }, "livemode": false, "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
    })
    .to_string()
}

fn invoice(id: &str, customer: &str, subscription: &str, amount: i64, paid_at: Option<i64>) -> Value {
    let created = now() - 3600;
    json!({
        "id": id, "object": "invoice", "customer": customer, "status": if paid_at.is_some() { "paid" } else { "open" },
        "parent": { "type": "subscription_details", "quote_details": null,
                    "subscription_details": { "metadata": {}, "subscription": subscription } },
        "amount_due": amount, "amount_overpaid": 0, "amount_paid": if paid_at.is_some() { amount } else { 0 },
        "amount_remaining": if paid_at.is_some() { 0 } else { amount }, "amount_shipping": 0,
        "attempt_count": 1, "attempted": true, "automatic_tax": { "enabled": false, "liability": null, "status": null },
        "collection_method": "charge_automatically", "created": created, "currency": "usd", "default_tax_rates": [],
        "discounts": [], "issuer": { "type": "self" },
        "lines": { "object": "list", "data": [], "has_more": false, "url": format!("/v1/invoices/{id}/lines") },
        "livemode": false, "payment_settings": { "default_mandate": null, "payment_method_options": null,
                                                 "payment_method_types": null },
        "period_end": created, "period_start": created - 30 * 86_400, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "starting_balance": 0,
        "status_transitions": { "finalized_at": created, "marked_uncollectible_at": null, "paid_at": paid_at,
                                "voided_at": null },
        "subtotal": amount, "total": amount,
    })
}

fn subscription(b: &Billed, status: &str) -> Value {
    let start = now() - 3 * 86_400;
    json!({
        "id": b.subscription, "object": "subscription", "customer": b.customer, "status": status,
        "automatic_tax": { "enabled": false, "liability": null }, "billing_cycle_anchor": start,
        "billing_mode": { "type": "classic" }, "billing_schedules": [], "cancel_at_period_end": false,
        "collection_method": "charge_automatically", "created": start, "currency": "usd", "discounts": [],
        "invoice_settings": { "issuer": { "type": "self" } },
        "items": { "object": "list", "data": [], "has_more": false,
                   "url": format!("/v1/subscription_items?subscription={}", b.subscription) },
        "livemode": false, "metadata": {}, "start_date": start,
    })
}

/// Posts `payload` as Stripe does, with `signature` as `Stripe-Signature` if given.
async fn deliver(app: &TestApp, payload: &str, signature: Option<&str>) -> (StatusCode, Value) {
    let mut request =
        app.client.post(app.url(WEBHOOK)).header("content-type", "application/json").body(payload.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.expect("sent");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Delivers `payload` signed now; expects 200 and returns the receipt.
async fn deliver_signed(app: &TestApp, payload: &str) -> Value {
    let (status, body) = deliver(app, payload, Some(&sign(payload, now()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((&body["success"], &body["data"]["received"]), (&json!(true), &json!(true)), "{body}");
    body["data"].clone()
}

/// The account row as JSON, its Stripe-ordered times in Unix seconds.
async fn account(app: &TestApp, b: &Billed) -> Value {
    sqlx::query_scalar(
        "select to_jsonb(a) || jsonb_build_object('past_due_since', extract(epoch from past_due_since)::bigint, \
             'provider_synced_at', extract(epoch from provider_synced_at)::bigint, \
             'canceled_at', extract(epoch from canceled_at)::bigint) \
         from billing_accounts a where tenant_id = $1",
    )
    .bind(b.tenant.id)
    .fetch_one(&app.db)
    .await
    .expect("account")
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql).bind(bind).fetch_one(&app.db).await.expect(sql)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn deliveries_without_a_good_recent_signature_are_refused() {
    let app = app().await;
    let b = billed_tenant(&app, "unsigned").await;
    let payload =
        event("evt_refused_1", "invoice.payment_failed", now(), invoice("in_r1", &b.customer, "sub_x", 900, None));

    let (status, body) = deliver(&app, &payload, None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID"), "{body}");
    assert_eq!(body["success"], json!(false));

    let forged = sign(&payload.replace("900", "1"), now());
    let (status, body) = deliver(&app, &payload, Some(&forged)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID"), "{body}");
    let (status, body) = deliver(&app, &payload, Some("t=abc,v1=zz")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID"), "{body}");

    let stale = sign(&payload, now() - 301);
    let (status, body) = deliver(&app, &payload, Some(&stale)).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "WEBHOOK_SIGNATURE_INVALID"), "{body}");

    let not_an_event = r#"{"hello":"world"}"#;
    let (status, body) = deliver(&app, not_an_event, Some(&sign(not_an_event, now()))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"), "{body}");

    assert_eq!(count(&app, "select count(*) from stripe_events where id like $1", "evt_%").await, 0);
    assert_eq!(account(&app, &b).await["status"], json!("active"), "nothing was applied");
}

#[tokio::test]
async fn without_a_webhook_secret_webhooks_are_not_found() {
    let app = TestApp::spawn().await;
    let payload = event("evt_unconfigured", "charge.succeeded", now(), json!({ "id": "ch_1" }));
    let (status, body) = deliver(&app, &payload, Some(&sign(&payload, now()))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "WEBHOOKS_NOT_CONFIGURED"), "{body}");
}

#[tokio::test]
async fn a_database_that_is_down_answers_503_so_stripe_retries() {
    let app = TestApp::spawn_with(|env| {
        env.insert("STRIPE_WEBHOOK_SECRET".into(), SECRET.into());
        // nothing listens on port 1
        env.insert("DATABASE_URL".into(), "postgres://postgres@127.0.0.1:1/nothing".into());
        env.insert("TENANT_DB_TIMEOUT".into(), "500".into());
    })
    .await;
    let payload = event("evt_db_down", "charge.succeeded", now(), json!({ "id": "ch_1" }));
    let (status, body) = deliver(&app, &payload, Some(&sign(&payload, now()))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "DEPENDENCY_UNAVAILABLE"), "{body}");
}

#[tokio::test]
async fn an_event_delivered_twice_is_applied_once() {
    let app = app().await;
    let b = billed_tenant(&app, "twice").await;
    let created = now() - 30;
    let payload = event(
        "evt_twice_1",
        "invoice.payment_failed",
        created,
        invoice("in_t1", &b.customer, &b.subscription, 2900, None),
    );

    let counted = r#"tenant_billing_events_total{type="stripe.invoice.payment_failed"}"#;
    let before = app.metric(counted).await.unwrap_or(0.0);
    let first = deliver_signed(&app, &payload).await;
    assert_eq!(first, json!({ "received": true, "duplicate": false, "applied": true }));
    let after_first = account(&app, &b).await;
    assert_eq!((&after_first["status"], &after_first["past_due_since"]), (&json!("past_due"), &json!(created)));

    let second = deliver_signed(&app, &payload).await;
    assert_eq!(second, json!({ "received": true, "duplicate": true, "applied": false }));
    assert_eq!(account(&app, &b).await, after_first, "the second delivery changed nothing");
    assert_eq!(count(&app, "select count(*) from stripe_events where id = $1", "evt_twice_1").await, 1);
    let failed_events =
        "select count(*) from outbox_events where event_type = 'payment.failed' and tenant_id::text = $1";
    assert_eq!(count(&app, failed_events, &b.tenant.id.to_string()).await, 1);

    // a type we don't act on is acknowledged and recorded, and changes nothing
    let other = event("evt_twice_2", "charge.succeeded", now(), json!({ "id": "ch_1", "object": "charge" }));
    assert_eq!(deliver_signed(&app, &other).await, json!({ "received": true, "duplicate": false, "applied": false }));
    assert_eq!(count(&app, "select count(*) from stripe_events where id = $1", "evt_twice_2").await, 1);

    assert_eq!(app.metric(counted).await, Some(before + 1.0), "counted once");
    assert!(app.metric(r#"tenant_billing_events_total{type="stripe.ignored"}"#).await.is_some_and(|v| v >= 1.0));
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_apply_it_once() {
    let app = app().await;
    let b = billed_tenant(&app, "racing").await;
    let failed = invoice("in_race_1", &b.customer, &b.subscription, 2900, None);
    let payload = event("evt_race_1", "invoice.payment_failed", now() - 5, failed);
    let receipts = futures::future::join_all((0..8).map(|_| deliver_signed(&app, &payload))).await;
    let applied = receipts.iter().filter(|r| r["applied"] == json!(true)).count();
    let duplicates = receipts.iter().filter(|r| r["duplicate"] == json!(true)).count();
    assert_eq!((applied, duplicates), (1, 7), "{receipts:?}");
    let failed_events =
        "select count(*) from outbox_events where event_type = 'payment.failed' and tenant_id::text = $1";
    assert_eq!(count(&app, failed_events, &b.tenant.id.to_string()).await, 1);
}

#[tokio::test]
async fn an_older_subscription_report_does_not_roll_back_a_newer_one() {
    let app = app().await;
    let b = billed_tenant(&app, "ordered").await;
    let newer = now() - 10;
    let payload = event("evt_order_new", "customer.subscription.updated", newer, subscription(&b, "active"));
    assert_eq!(deliver_signed(&app, &payload).await["applied"], json!(true));

    let older = event("evt_order_old", "customer.subscription.updated", newer - 60, subscription(&b, "past_due"));
    assert_eq!(deliver_signed(&app, &older).await, json!({ "received": true, "duplicate": false, "applied": false }));
    let row = account(&app, &b).await;
    assert_eq!(
        (&row["provider_status"], &row["provider_synced_at"], &row["status"]),
        (&json!("active"), &json!(newer), &json!("active"))
    );
    assert_eq!(count(&app, "select count(*) from stripe_events where id = $1", "evt_order_old").await, 1);

    // a newer report moves the account on
    let later = event("evt_order_later", "customer.subscription.updated", newer + 1, subscription(&b, "past_due"));
    assert_eq!(deliver_signed(&app, &later).await["applied"], json!(true));
    let row = account(&app, &b).await;
    assert_eq!((&row["provider_status"], &row["status"]), (&json!("past_due"), &json!("past_due")));
}

#[tokio::test]
async fn a_deleted_subscription_cancels_the_account_and_unknown_customers_are_ignored() {
    let app = app().await;
    let b = billed_tenant(&app, "deleted").await;
    let at = now() - 5;
    let payload = event("evt_deleted_1", "customer.subscription.deleted", at, subscription(&b, "canceled"));
    assert_eq!(deliver_signed(&app, &payload).await["applied"], json!(true));
    let row = account(&app, &b).await;
    assert_eq!(
        (&row["status"], &row["canceled_at"], &row["provider_status"]),
        (&json!("canceled"), &json!(at), &json!("canceled"))
    );
    // an older update arriving late does not revive it
    let late = event("evt_deleted_2", "customer.subscription.updated", at - 30, subscription(&b, "active"));
    assert_eq!(deliver_signed(&app, &late).await["applied"], json!(false));
    assert_eq!(account(&app, &b).await["status"], json!("canceled"));

    let stranger = Billed { customer: "cus_nobody".into(), ..b };
    let payload = event("evt_deleted_3", "customer.subscription.deleted", now(), subscription(&stranger, "canceled"));
    assert_eq!(deliver_signed(&app, &payload).await, json!({ "received": true, "duplicate": false, "applied": false }));
    assert_eq!(count(&app, "select count(*) from stripe_events where id = $1", "evt_deleted_3").await, 1);
}

#[tokio::test]
async fn a_failure_arriving_after_its_payment_changes_nothing() {
    let app = app().await;
    let b = billed_tenant(&app, "late").await;
    insert_invoice(&app, &b, "INV-LATE-1", "in_late_1").await;
    let paid = invoice("in_late_1", &b.customer, &b.subscription, 2900, Some(now() - 10));
    assert_eq!(
        deliver_signed(&app, &event("evt_late_2", "invoice.paid", now() - 10, paid)).await["applied"],
        json!(true)
    );

    let failed = invoice("in_late_1", &b.customer, &b.subscription, 2900, None);
    let receipt = deliver_signed(&app, &event("evt_late_1", "invoice.payment_failed", now() - 70, failed)).await;
    assert_eq!(receipt, json!({ "received": true, "duplicate": false, "applied": false }));
    let row = account(&app, &b).await;
    assert_eq!((&row["status"], &row["past_due_since"]), (&json!("active"), &Value::Null));
    let failed_events =
        "select count(*) from outbox_events where event_type = 'payment.failed' and tenant_id::text = $1";
    assert_eq!(count(&app, failed_events, &b.tenant.id.to_string()).await, 0);
}

/// One of our invoices, open, that Stripe knows as `provider_ref`.
async fn insert_invoice(app: &TestApp, b: &Billed, number: &str, provider_ref: &str) {
    sqlx::query(
        "insert into invoices (id, tenant_id, number, status, currency, period_start, period_end, total_minor, \
             provider_ref) values ($1, $2, $3, 'open', 'USD', now() - interval '33 days', now() - interval '3 days', \
             2900, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(b.tenant.id)
    .bind(number)
    .bind(provider_ref)
    .execute(&app.db)
    .await
    .expect("invoice");
}

/// Polls the tenant until its status is `want`.
async fn wait_status(app: &TestApp, tenant: &Tenant, want: &str, deadline: Duration) {
    let token = app.admin_token();
    let until = Instant::now() + deadline;
    loop {
        let (status, body) = app.get(&format!("/api/v1/tenants/{}", tenant.id), &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["data"]["status"] == json!(want) {
            return;
        }
        assert!(Instant::now() < until, "tenant not {want} within {deadline:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failed_payment_suspends_after_the_grace_and_a_payment_reactivates_at_once() {
    let app = app().await;
    let b = billed_tenant(&app, "dunned").await;
    insert_invoice(&app, &b, "INV-DUNNED-1", "in_dunned_1").await;
    let _worker = app.spawn_worker_with(|env| {
        env.insert("BILLING_GRACE_DAYS".into(), "0".into());
        env.insert("BILLING_CLOSE_INTERVAL_SECS".into(), "1".into());
    });

    let failed = invoice("in_dunned_1", &b.customer, &b.subscription, 2900, None);
    deliver_signed(&app, &event("evt_dunned_1", "invoice.payment_failed", now() - 1, failed)).await;
    wait_status(&app, &b.tenant, "suspended", Duration::from_secs(20)).await;
    assert!(account(&app, &b).await["dunning_suspended_at"].is_string(), "dunning marked its suspension");

    let paid = invoice("in_dunned_1", &b.customer, &b.subscription, 2900, Some(now()));
    let receipt = deliver_signed(&app, &event("evt_dunned_2", "invoice.paid", now(), paid)).await;
    assert_eq!(receipt, json!({ "received": true, "duplicate": false, "applied": true }));
    let (status, body) = app.get(&format!("/api/v1/tenants/{}", b.tenant.id), &app.admin_token()).await;
    assert_eq!((status, &body["data"]["status"]), (StatusCode::OK, &json!("active")), "{body}");

    let check = app
        .client
        .post(app.url(&format!("/internal/tenants/{}/quota-check", b.tenant.id)))
        .header("x-service-token", SERVICE_TOKEN)
        .json(&json!({ "resource": "api_calls" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(check.status(), StatusCode::OK, "{}", check.text().await.unwrap_or_default());

    let row = account(&app, &b).await;
    assert_eq!(
        (&row["status"], &row["past_due_since"], &row["dunning_suspended_at"]),
        (&json!("active"), &Value::Null, &Value::Null)
    );
    let (status, paid, paid_at): (String, i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select status, amount_paid_minor, paid_at from invoices where provider_ref = 'in_dunned_1'")
            .fetch_one(&app.db)
            .await
            .expect("invoice");
    assert_eq!((status.as_str(), paid, paid_at.is_some()), ("paid", 2900, true));
    let succeeded =
        "select count(*) from outbox_events where event_type = 'payment.succeeded' and tenant_id::text = $1";
    assert_eq!(count(&app, succeeded, &b.tenant.id.to_string()).await, 1);
    assert!(app.metric(r#"tenant_billing_events_total{type="stripe.invoice.paid"}"#).await.is_some_and(|v| v >= 1.0));
}

#[tokio::test]
async fn the_webhook_is_documented() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.call(reqwest::Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let operation = &doc["paths"][WEBHOOK]["post"];
    for status in ["200", "400", "404", "413", "503"] {
        assert!(operation["responses"][status].is_object(), "{status} undocumented");
    }
    assert!(operation["security"].as_array().is_none_or(Vec::is_empty), "no token: {operation}");
    let text = operation.to_string();
    assert!(text.contains("\"duplicate\"") || doc["components"]["schemas"]["WebhookReceipt"].is_object());
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(doc["components"]["schemas"][name].is_object(), "{name} referred to but missing");
    }
}
