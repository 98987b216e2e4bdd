//! Billing end to end: the real API and workers, PostgreSQL and Redis, and the billing provider
//! — local billing (no key) and Stripe (async-stripe against localstripe) run the same flows:
//! provisioning opens one account, a plan change (previewed first) moves the subscription and the
//! quotas, the period close issues one invoice with overage from the rollups, payments settle it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tenant_tests::localstripe::LocalStripe;
use tenant_tests::{SERVICE_TOKEN, TestApp};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Local,
    Stripe,
}

/// An API (and what the mode needs) whose workers close billing periods every second.
pub struct BillingApp {
    pub app: TestApp,
    pub stripe: Option<LocalStripe>,
}

impl BillingApp {
    pub async fn start(mode: Mode) -> Self {
        Self::start_with(mode, |_| {}).await
    }

    pub async fn start_with(
        mode: Mode,
        customize: impl FnOnce(&mut std::collections::HashMap<String, String>),
    ) -> Self {
        let stripe = match mode {
            Mode::Local => None,
            Mode::Stripe => Some(LocalStripe::start().await.expect("localstripe starts")),
        };
        let base = stripe.as_ref().map(|s| s.url());
        let app = TestApp::spawn_with(|env| {
            env.insert("BILLING_CLOSE_INTERVAL_SECS".into(), "1".into());
            if let Some(base) = base {
                env.insert("STRIPE_SECRET_KEY".into(), "sk_test_localstripe".into());
                env.insert("STRIPE_API_BASE".into(), base);
            }
            customize(env);
        })
        .await;
        BillingApp { app, stripe }
    }

    /// Creates a tenant through the API; returns its id once provisioned (a worker must run).
    pub async fn active_tenant(&self, slug: &str, plan: &str) -> String {
        let (tenant, job) = crate::lifecycle::create(&self.app, slug, plan).await;
        let job = self.app.wait_job(&job, DEADLINE).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
        tenant
    }

    pub async fn billing(&self, tenant: &str) -> Value {
        let (status, body) = self.app.get(&format!("/api/v1/tenants/{tenant}/billing"), &self.app.admin_token()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    pub async fn change_plan(&self, tenant: &str, body: Value, preview: bool) -> (StatusCode, Value) {
        let path = format!("/api/v1/tenants/{tenant}/billing/plans{}", if preview { "?preview=true" } else { "" });
        self.app.call(Method::POST, &path, Some(&self.app.admin_token()), Some(body)).await
    }
}

async fn quota_check(app: &TestApp, tenant: &str, resource: &str, amount: i64) -> (StatusCode, Value) {
    let res = app
        .client
        .post(app.url(&format!("/internal/tenants/{tenant}/quota-check")))
        .header("X-Service-Token", SERVICE_TOKEN)
        .json(&json!({ "resource": resource, "amount": amount }))
        .send()
        .await
        .expect("sent");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The Stripe plan id of the subscription's item.
async fn subscription_plan(stripe: &LocalStripe, subscription: &str) -> String {
    let sub = stripe.get(&format!("/v1/subscriptions/{subscription}")).await.expect("subscription");
    sub["items"]["data"][0]["plan"]["id"].as_str().unwrap_or_default().to_owned()
}

async fn scalar(app: &TestApp, sql: &str, tenant: &str) -> i64 {
    sqlx::query_scalar(sql).bind(Uuid::parse_str(tenant).expect("uuid")).fetch_one(&app.db).await.expect(sql)
}

async fn provisioning_opens_one_account(mode: Mode) {
    let b = BillingApp::start(mode).await;
    let _worker = b.app.spawn_worker();
    let tenant = b.active_tenant("acme-billing", "basic").await;
    let view = b.billing(&tenant).await;
    assert_eq!(view["plan"]["slug"], json!("basic"), "{view}");
    assert_eq!(view["plan"]["version"], json!(1));
    assert_eq!(view["interval"], json!("month"));
    assert_eq!(view["status"], json!("active"));
    assert_eq!(view["balance"], json!({ "amount": 0, "currency": "usd" }));
    let provider = match mode {
        Mode::Local => "local",
        Mode::Stripe => "stripe",
    };
    assert_eq!(view["provider"], json!(provider));
    // The estimate: the (partial) first period now, the next period in advance, no overage yet.
    let lines = view["upcomingInvoice"]["lines"].as_array().expect("lines");
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["subscription", "subscription"], "{view}");
    assert_eq!(lines[1]["amount"], json!({ "amount": 2900, "currency": "usd" }));
    let first = lines[0]["amount"]["amount"].as_i64().expect("amount");
    assert!((0..=2900).contains(&first), "{first}");
    assert_eq!(view["upcomingInvoice"]["total"]["amount"].as_i64(), Some(first + 2900));
    let refs: (String, Option<String>) =
        sqlx::query_as("select customer_ref, subscription_ref from billing_accounts where tenant_id = $1")
            .bind(Uuid::parse_str(&tenant).expect("uuid"))
            .fetch_one(&b.app.db)
            .await
            .expect("account");
    if let Some(stripe) = &b.stripe {
        let id = tenant.parse().expect("tenant id");
        let customers = stripe.customers_of(id).await.expect("customers");
        let customers: Vec<&str> = customers.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(customers, vec![refs.0.as_str()], "exactly one Stripe customer");
        let subscriptions = stripe.subscriptions_of(id).await.expect("subscriptions");
        let subscriptions: Vec<&str> = subscriptions.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(subscriptions, vec![refs.1.as_deref().unwrap_or("-")], "exactly one subscription");
    }
}

#[tokio::test]
async fn local_provisioning_opens_one_account() {
    provisioning_opens_one_account(Mode::Local).await;
}

#[tokio::test]
async fn stripe_provisioning_opens_one_account() {
    provisioning_opens_one_account(Mode::Stripe).await;
}

async fn a_plan_change_moves_subscription_and_quotas(mode: Mode) {
    let b = BillingApp::start(mode).await;
    let _worker = b.app.spawn_worker();
    let tenant = b.active_tenant("acme-upgrade", "basic").await;

    // Basic allows 10 000 api calls a day: 20 000 at once is refused.
    let (status, body) = quota_check(&b.app, &tenant, "api_calls", 20_000).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, preview) = b.change_plan(&tenant, json!({ "planId": "pro", "interval": "month" }), true).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let preview = preview["data"].clone();
    let lines = preview["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "{preview}");
    let credit = lines[0]["amount"]["amount"].as_i64().expect("credit");
    let charge = lines[1]["amount"]["amount"].as_i64().expect("charge");
    assert!(credit < 0 && charge > 0, "{preview}");
    assert_eq!(preview["total"]["amount"].as_i64(), Some(credit + charge));
    // Nothing changed yet.
    assert_eq!(b.billing(&tenant).await["plan"]["slug"], json!("basic"));
    assert_eq!(
        scalar(&b.app, "select count(*) from jobs where tenant_id = $1 and kind = 'change_plan'", &tenant).await,
        0
    );

    // Confirm at the preview's date: the job records exactly the previewed amounts.
    let body = json!({ "planId": "pro", "interval": "month", "prorationDate": preview["prorationDate"] });
    let (status, accepted) = b.change_plan(&tenant, body, false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job_id = accepted["data"]["job"]["id"].as_str().expect("job").to_owned();
    let job = b.app.wait_job(&job_id, DEADLINE).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    assert_eq!(job["result"]["total"], preview["total"], "{job}");
    assert_eq!(job["result"]["lines"], preview["lines"]);

    // The next quota check sees Pro's 100 000.
    let (status, body) = quota_check(&b.app, &tenant, "api_calls", 20_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["limit"], json!(100_000));

    let view = b.billing(&tenant).await;
    assert_eq!(view["plan"]["slug"], json!("pro"));
    let pending: Vec<i64> = view["upcomingInvoice"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["kind"] == json!("proration"))
        .filter_map(|l| l["amount"]["amount"].as_i64())
        .collect();
    assert_eq!(pending, vec![credit, charge]);
    let (_, t) = b.app.get(&format!("/api/v1/tenants/{tenant}/features"), &b.app.admin_token()).await;
    let chat = t["data"].as_array().expect("flags").iter().find(|f| f["name"] == json!("realTimeChat")).cloned();
    assert_eq!(chat.expect("flag")["enabled"], json!(true), "Pro's features apply");
    assert_eq!(
        scalar(
            &b.app,
            "select count(*) from outbox_events where tenant_id = $1 and event_type = 'tenant.plan_changed'",
            &tenant
        )
        .await,
        1
    );
    if let Some(stripe) = &b.stripe {
        let sub: String = sqlx::query_scalar("select subscription_ref from billing_accounts where tenant_id = $1")
            .bind(Uuid::parse_str(&tenant).expect("uuid"))
            .fetch_one(&b.app.db)
            .await
            .expect("sub");
        let plan = subscription_plan(stripe, &sub).await;
        let pro: Uuid =
            sqlx::query_scalar("select id from subscription_plans where slug = 'pro' and superseded_at is null")
                .fetch_one(&b.app.db)
                .await
                .expect("pro");
        assert!(plan.contains(&pro.simple().to_string()), "the Stripe subscription is on Pro: {plan}");
    }

    // Refused before any job: the same plan again, an unknown plan, a suspended tenant.
    let (status, body) = b.change_plan(&tenant, json!({ "planId": "pro", "interval": "month" }), false).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("PLAN_UNCHANGED")));
    let (status, body) = b.change_plan(&tenant, json!({ "planId": "platinum", "interval": "month" }), false).await;
    assert_eq!((status, body["error"]["details"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("planId")));
    let (status, _) = b
        .app
        .call(
            Method::PATCH,
            &format!("/api/v1/tenants/{tenant}/status"),
            Some(&b.app.admin_token()),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = b.change_plan(&tenant, json!({ "planId": "basic", "interval": "year" }), false).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::CONFLICT, json!("INVALID_STATE")), "{body}");
    assert_eq!(
        scalar(&b.app, "select count(*) from jobs where tenant_id = $1 and kind = 'change_plan'", &tenant).await,
        1
    );
}

#[tokio::test]
async fn local_plan_change_moves_subscription_and_quotas() {
    a_plan_change_moves_subscription_and_quotas(Mode::Local).await;
}

#[tokio::test]
async fn stripe_plan_change_moves_subscription_and_quotas() {
    a_plan_change_moves_subscription_and_quotas(Mode::Stripe).await;
}

/// Puts the tenant's account at the end of a period that began 30 days ago, with two days of
/// `api_calls` usage over Basic's 10 000 a day (2 500 and 500 beyond) in the rollups.
async fn end_period_with_overage(app: &TestApp, tenant: &str) -> chrono::DateTime<chrono::Utc> {
    let id = Uuid::parse_str(tenant).expect("uuid");
    let start: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "update billing_accounts set billing_anchor = date_trunc('day', now()) - interval '30 days', \
             current_period_start = date_trunc('day', now()) - interval '30 days', \
             invoiced_through = date_trunc('day', now()) - interval '30 days', \
             current_period_end = now() + interval '2 seconds' \
         where tenant_id = $1 returning current_period_start",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .expect("period moved");
    // Two daily windows: final counts 12 500 and 10 500 (hourly snapshots, the last one counts).
    for (day, hour, used) in [(3, 10, 9_000), (3, 23, 12_500), (4, 23, 10_500), (5, 23, 400)] {
        let window = start + chrono::Duration::days(day);
        sqlx::query(
            "insert into usage_history (tenant_id, resource_type, bucket_start, window_start, used) \
             values ($1, 'api_calls', $2, $3, $4)",
        )
        .bind(id)
        .bind(window + chrono::Duration::hours(hour))
        .bind(window)
        .bind(used)
        .execute(&app.db)
        .await
        .expect("usage");
    }
    start
}

async fn period_close_issues_one_invoice_and_payments_settle_it(mode: Mode) {
    let b = BillingApp::start(mode).await;
    let _worker = b.app.spawn_worker();
    let tenant = b.active_tenant("acme-close", "basic").await;
    let start = end_period_with_overage(&b.app, &tenant).await;

    // The close runs every second: wait for the invoice, then for two more runs.
    let token = b.app.admin_token();
    let until = Instant::now() + DEADLINE;
    let invoice = loop {
        let (status, body) = b.app.get(&format!("/api/v1/tenants/{tenant}/invoices"), &token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(invoice) = body["data"].as_array().and_then(|a| a.first()) {
            break invoice.clone();
        }
        assert!(Instant::now() < until, "no invoice issued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let issued_at = chrono::Utc::now();
    let until = Instant::now() + DEADLINE;
    loop {
        let runs: i64 = sqlx::query_scalar(
            "select count(*) from jobs where kind = 'billing_cycle' and status = 'succeeded' and created_at > $1",
        )
        .bind(issued_at)
        .fetch_one(&b.app.db)
        .await
        .expect("runs");
        if runs >= 2 {
            break;
        }
        assert!(Instant::now() < until, "the close did not run again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(scalar(&b.app, "select count(*) from invoices where tenant_id = $1", &tenant).await, 1);
    assert_eq!(
        scalar(
            &b.app,
            "select count(*) from outbox_events where tenant_id = $1 and event_type = 'invoice.issued'",
            &tenant
        )
        .await,
        1
    );

    assert_eq!(
        invoice["periodStart"].as_str().map(|s| s.parse::<chrono::DateTime<chrono::Utc>>().ok()),
        Some(Some(start))
    );
    let lines = invoice["lines"].as_array().expect("lines");
    let overage = lines.iter().find(|l| l["kind"] == json!("overage")).expect("an overage line");
    // 2 500 + 500 = 3 000 calls beyond, at 0.50 per 1 000 = 1.50
    assert_eq!(overage["resource"], json!("api_calls"));
    assert_eq!(overage["quantity"], json!(3000));
    assert_eq!(overage["amount"], json!(150));
    let subscription: Vec<&Value> = lines.iter().filter(|l| l["kind"] == json!("subscription")).collect();
    assert!(subscription.iter().any(|l| l["amount"] == json!(2900)), "next period in advance: {invoice}");
    let total: i64 = lines.iter().filter_map(|l| l["amount"].as_i64()).sum();
    assert_eq!(invoice["total"].as_i64(), Some(total));
    assert_eq!(invoice["status"], json!("open"));
    let view = b.billing(&tenant).await;
    assert_eq!(view["balance"]["amount"].as_i64(), Some(total));

    // Payments: too much is refused; a partial one leaves it open; a repeated key pays once.
    let invoice_id = invoice["id"].as_str().expect("id").to_owned();
    let card = match &b.stripe {
        Some(stripe) => Some(stripe.card("4242424242424242").await.expect("card")),
        None => None,
    };
    let pay = |amount: i64, key: &str| {
        let mut body = json!({ "invoiceId": invoice_id, "amount": amount });
        if let Some(card) = &card {
            body["paymentMethodId"] = json!(card);
        }
        b.app
            .client
            .post(b.app.url(&format!("/api/v1/tenants/{tenant}/payments")))
            .bearer_auth(&token)
            .header("Idempotency-Key", key.to_owned())
            .json(&body)
            .send()
    };
    let res = pay(total + 1, "too-much").await.expect("sent");
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = pay(1000, "first-part").await.expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"]["invoice"]["status"], json!("open"), "{body}");
    assert_eq!(body["data"]["invoice"]["amountPaid"], json!(1000));
    for _ in 0..2 {
        let res = pay(total - 1000, "the-rest").await.expect("sent");
        assert!(res.status().is_success(), "{}", res.status());
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["data"]["invoice"]["status"], json!("paid"), "{body}");
        assert_eq!(body["data"]["invoice"]["amountPaid"].as_i64(), Some(total));
    }
    assert_eq!(
        scalar(&b.app, "select count(*) from payments where tenant_id = $1 and status = 'succeeded'", &tenant).await,
        2
    );
    let res = pay(1, "after-paid").await.expect("sent");
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(b.billing(&tenant).await["balance"]["amount"], json!(0));
}

#[tokio::test]
async fn local_period_close_issues_one_invoice_and_payments_settle_it() {
    period_close_issues_one_invoice_and_payments_settle_it(Mode::Local).await;
}

#[tokio::test]
async fn stripe_period_close_issues_one_invoice_and_payments_settle_it() {
    period_close_issues_one_invoice_and_payments_settle_it(Mode::Stripe).await;
}

/// A step after the subscription moved keeps failing: the saga gives up and moves everything
/// back — the subscription at the provider, the plan, the quotas — and withdraws the lines.
async fn a_failed_plan_change_moves_the_subscription_back(mode: Mode) {
    let b = BillingApp::start_with(mode, |env| {
        env.insert("JOB_MAX_ATTEMPTS".into(), "2".into());
    })
    .await;
    let _worker = b.app.spawn_worker();
    let tenant = b.active_tenant("acme-undo", "basic").await;
    let id = Uuid::parse_str(&tenant).expect("uuid");
    let basic: Uuid = sqlx::query_scalar("select plan_id from tenants where id = $1")
        .bind(id)
        .fetch_one(&b.app.db)
        .await
        .expect("plan");
    // Recording the proration lines fails every time (as a database fault would).
    sqlx::raw_sql(&format!(
        "create function refuse_lines() returns trigger language plpgsql as $$ begin \
             if new.kind = 'proration' then raise exception using errcode = 'disk_full', message = 'disk full'; \
             end if; return new; end $$; \
         create trigger refuse_lines before insert on invoice_lines for each row \
             when (new.tenant_id = '{id}') execute function refuse_lines();"
    ))
    .execute(&b.app.owner_db)
    .await
    .expect("trigger");

    let (status, accepted) = b.change_plan(&tenant, json!({ "planId": "pro", "interval": "year" }), false).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let job = b.app.wait_job(accepted["data"]["job"]["id"].as_str().expect("job"), DEADLINE).await;
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["error"]["step"], json!("record_invoice_lines"));
    // A full disk is worth retrying: both attempts were made before giving up.
    assert_eq!((job["attempts"].clone(), job["error"]["code"].clone()), (json!(2), json!("ATTEMPTS_EXHAUSTED")));
    let statuses: Vec<&str> =
        job["steps"].as_array().expect("steps").iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["compensated", "compensated", "compensated", "compensated", "pending", "pending"]);

    // Everything as before: plan, interval, quotas (the next check sees Basic's limit), lines.
    let view = b.billing(&tenant).await;
    assert_eq!((view["plan"]["slug"].clone(), view["interval"].clone()), (json!("basic"), json!("month")));
    let plan: Uuid =
        sqlx::query_scalar("select plan_id from tenants where id = $1").bind(id).fetch_one(&b.app.db).await.expect("p");
    assert_eq!(plan, basic);
    let (status, body) = quota_check(&b.app, &tenant, "api_calls", 20_000).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        scalar(&b.app, "select count(*) from invoice_lines where tenant_id = $1 and kind = 'proration'", &tenant).await,
        0
    );
    assert_eq!(
        scalar(
            &b.app,
            "select count(*) from outbox_events where tenant_id = $1 and event_type = 'tenant.plan_changed'",
            &tenant
        )
        .await,
        0
    );
    // …and at the provider, the subscription is back on Basic monthly.
    match &b.stripe {
        Some(stripe) => {
            let sub: String = sqlx::query_scalar("select subscription_ref from billing_accounts where tenant_id = $1")
                .bind(id)
                .fetch_one(&b.app.db)
                .await
                .expect("sub");
            let plan = subscription_plan(stripe, &sub).await;
            assert!(plan.contains(&basic.simple().to_string()) && plan.ends_with("month"), "{plan}");
        }
        None => {
            let moves: Vec<Value> = sqlx::query_scalar(
                "select response from local_billing_requests where operation = 'change_subscription' \
                 and idempotency_key like 'job:' || $1 || ':%' order by created_at",
            )
            .bind(job["id"].as_str().expect("id"))
            .fetch_all(&b.app.db)
            .await
            .expect("ledger");
            assert_eq!(moves.len(), 2, "moved, then moved back: {moves:?}");
            assert_eq!(moves[1]["plan"], json!(basic));
            assert_eq!(moves[1]["interval"], json!("month"));
        }
    }
}

#[tokio::test]
async fn local_failed_plan_change_moves_the_subscription_back() {
    a_failed_plan_change_moves_the_subscription_back(Mode::Local).await;
}

#[tokio::test]
async fn stripe_failed_plan_change_moves_the_subscription_back() {
    a_failed_plan_change_moves_the_subscription_back(Mode::Stripe).await;
}

/// A TCP proxy that holds every chunk a client sends for `delay` before relaying it, so each
/// Stripe call (even on a kept-alive connection) takes at least that long and a kill can land
/// between two calls of the billing step.
async fn slow_proxy(upstream: u16, delay: Duration) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                let (mut in_read, mut in_write) = inbound.into_split();
                let (mut out_read, mut out_write) = outbound.into_split();
                let forward = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = in_read.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if out_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = out_write.shutdown().await;
                };
                let back = async move {
                    let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                };
                tokio::join!(forward, back);
            });
        }
    });
    port
}

#[tokio::test]
async fn provisioning_killed_during_the_stripe_step_creates_one_customer_and_one_subscription() {
    const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");
    let stripe = LocalStripe::start().await.expect("localstripe");
    let proxy = slow_proxy(stripe.port, Duration::from_millis(250)).await;
    let app = TestApp::spawn_with(|env| {
        env.insert("STRIPE_SECRET_KEY".into(), tenant_tests::localstripe::SECRET_KEY.into());
        env.insert("STRIPE_API_BASE".into(), format!("http://127.0.0.1:{proxy}"));
    })
    .await;
    let mut worker = app.spawn_worker_process(WORKER);
    let mut created = Vec::new();
    for i in 0..4 {
        created.push(crate::lifecycle::create(&app, &format!("killed-{i}"), "basic").await);
    }
    // Each time Stripe holds a customer that no account records yet (a billing step is between
    // its calls), kill -9 the worker and start another: the retried step must find what the
    // killed one made.
    let mut kills = 0;
    let until = Instant::now() + Duration::from_secs(60);
    while kills < 3 && Instant::now() < until {
        let recorded: i64 =
            sqlx::query_scalar("select count(*) from billing_accounts").fetch_one(&app.db).await.expect("accounts");
        let made = stripe.list("/v1/customers").await.expect("customers").len();
        if made as i64 > recorded {
            worker.kill().await;
            kills += 1;
            worker = app.spawn_worker_process(WORKER);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kills, 3, "no kill landed inside a billing step");
    for (tenant, job) in &created {
        let job = app.wait_job(job, Duration::from_secs(90)).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
        let id: tenant_domain::TenantId = tenant.parse().expect("tenant id");
        let (customer, subscription): (String, Option<String>) =
            sqlx::query_as("select customer_ref, subscription_ref from billing_accounts where tenant_id = $1")
                .bind(id)
                .fetch_one(&app.db)
                .await
                .expect("account");
        let customers = stripe.customers_of(id).await.expect("customers");
        let customers: Vec<&str> = customers.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(customers, vec![customer.as_str()], "one customer for {tenant}");
        let subscriptions = stripe.subscriptions_of(id).await.expect("subscriptions");
        let subscriptions: Vec<&str> = subscriptions.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(subscriptions, vec![subscription.as_deref().unwrap_or("-")], "one subscription for {tenant}");
    }
    drop(worker);
}

#[tokio::test]
async fn health_reports_stripe_from_a_real_check() {
    let stripe_of = |body: &Value| body["data"]["dependencies"]["stripe"].clone();
    let local = BillingApp::start(Mode::Local).await;
    let (status, body) = local.app.get("/health", "-").await;
    assert_eq!((status, stripe_of(&body)), (StatusCode::OK, json!("not_configured")), "{body}");

    let up = BillingApp::start(Mode::Stripe).await;
    let (status, body) = up.app.get("/health", "-").await;
    assert_eq!((status, stripe_of(&body)), (StatusCode::OK, json!("up")), "{body}");

    // Nothing listens there: Stripe is down, which billing needs but reads and quota checks don't.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let down = TestApp::spawn_with(|env| {
        env.insert("STRIPE_SECRET_KEY".into(), tenant_tests::localstripe::SECRET_KEY.into());
        env.insert("STRIPE_API_BASE".into(), format!("http://127.0.0.1:{closed}"));
    })
    .await;
    let (status, body) = down.get("/health", "-").await;
    assert_eq!((status, stripe_of(&body)), (StatusCode::OK, json!("down")), "{body}");
}

#[tokio::test]
async fn a_negative_total_is_carried_to_the_next_invoice() {
    let b = BillingApp::start(Mode::Local).await;
    let _worker = b.app.spawn_worker();
    let tenant = b.active_tenant("acme-credit", "basic").await;
    let id = Uuid::parse_str(&tenant).expect("uuid");
    end_period_with_overage(&b.app, &tenant).await;
    // A credit larger than everything else on the invoice (a big downgrade, say).
    sqlx::query(
        "insert into invoice_lines (id, tenant_id, kind, description, amount_minor, currency, period_start, \
             period_end, source_key) \
         values (gen_random_uuid(), $1, 'proration', 'Unused time on Enterprise', -100000, 'usd', now(), now(), 'test')",
    )
    .bind(id)
    .execute(&b.app.db)
    .await
    .expect("credit");
    let until = Instant::now() + DEADLINE;
    let invoice = loop {
        let (_, body) = b.app.get(&format!("/api/v1/tenants/{tenant}/invoices"), &b.app.admin_token()).await;
        if let Some(invoice) = body["data"].as_array().and_then(|a| a.first()) {
            break invoice.clone();
        }
        assert!(Instant::now() < until, "no invoice issued");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((invoice["total"].clone(), invoice["status"].clone()), (json!(0), json!("paid")), "{invoice}");
    let lines = invoice["lines"].as_array().expect("lines");
    let charged: i64 = lines.iter().filter(|l| l["kind"] != json!("credit")).filter_map(|l| l["amount"].as_i64()).sum();
    assert!(charged < 0, "{invoice}");
    let carried: Vec<i64> =
        lines.iter().filter(|l| l["kind"] == json!("credit")).filter_map(|l| l["amount"].as_i64()).collect();
    assert_eq!(carried, vec![-charged]);
    // The next invoice starts with the credit.
    let upcoming = b.billing(&tenant).await["upcomingInvoice"].clone();
    let credit = upcoming["lines"].as_array().expect("lines").iter().find(|l| l["kind"] == json!("credit")).cloned();
    assert_eq!(credit.expect("carried credit")["amount"]["amount"].as_i64(), Some(charged), "{upcoming}");
}
