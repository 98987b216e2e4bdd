//! Leased quota budget, exact in both directions: what a process no longer holds goes back to
//! Redis by exactly the unused rest (on a limit change, here and in another process; when a lease
//! expires idle), and two leasing API processes racing for one limit — also while the limit is
//! rewritten — allow exactly the limit in force.

use crate::quotas::{active_tenant, check, internal, race, set_limit};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tenant_domain::tenants::Tenant;
use tenant_tests::TestApp;

const API: &str = env!("CARGO_BIN_EXE_api-under-test");

async fn leasing_app(chunk: &str, lease_ms: &str) -> TestApp {
    let (chunk, lease_ms) = (chunk.to_owned(), lease_ms.to_owned());
    TestApp::spawn_with(move |env| {
        env.insert("QUOTA_LEASE_RESOURCES".into(), "api_calls".into());
        env.insert("QUOTA_LEASE_CHUNK".into(), chunk);
        env.insert("QUOTA_LEASE_MS".into(), lease_ms);
        // Exactness is the point here, not latency (a loaded machine queues 500 requests longer
        // than the default 500 ms).
        env.insert("QUOTA_TIMEOUT_MS".into(), "10000".into());
    })
    .await
}

/// `n` consumes, one after another, through `base`; all must be allowed.
async fn consume_in_turn(app: &TestApp, base: &str, tenant: &Tenant, n: usize) {
    for i in 0..n {
        let path = format!("/internal/tenants/{}/quota-check", tenant.id);
        let (status, body) =
            internal(&app.client, base, &path, json!({ "resource": "api_calls", "consume": true })).await;
        assert_eq!(status, StatusCode::OK, "consume {i}: {body}");
    }
}

/// The count in Redis, leased budget included (a check that consumes nothing).
async fn counted(app: &TestApp, tenant: &Tenant) -> i64 {
    let (_, body) = check(app, tenant, "api_calls", 1, false).await;
    let figures = if body["data"].is_null() { &body["error"]["details"] } else { &body["data"] };
    figures["used"].as_i64().unwrap_or_else(|| panic!("no figures: {body}"))
}

#[tokio::test]
async fn a_limit_change_gives_back_exactly_the_unused_budget_of_every_process() {
    // Leases that would not expire during the test: only the change can end them.
    let app = leasing_app("50", "60000").await;
    let other = app.spawn_api_process(API).await;
    let t = active_tenant(&app, "give-back").await;
    set_limit(&app, &t, "api_calls", 1000).await;

    // the real process serves 10 (one round trip that leases 50 more, then 9 from the lease),
    // this one 5 (1 + 4): Redis counts what was served plus what both still hold
    consume_in_turn(&app, &other.base, &t, 10).await;
    consume_in_turn(&app, &app.url(""), &t, 5).await;
    assert_eq!(counted(&app, &t).await, 15 + 41 + 46);
    assert_eq!(app.state.quota.leased_budget_held(), 46);

    // The limit is rewritten through the real process: it gives its 41 back before answering;
    // this process hears of the change on the invalidation channel and gives back its 46.
    let (status, body) = app
        .client
        .put(format!("{}/api/v1/tenants/{}/quotas", other.base, t.id))
        .bearer_auth(app.admin_token())
        .json(&json!({ "limits": { "api_calls": 1000 } }))
        .send()
        .await
        .map(|r| (r.status(), r))
        .expect("sent");
    assert_eq!(status, StatusCode::OK, "{:?}", body.text().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.quota.lease_given_back.load(Ordering::Relaxed) < 46 {
        assert!(Instant::now() < deadline, "the invalidation did not give the lease back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.quota.lease_given_back.load(Ordering::Relaxed), 46, "given back once");
    assert_eq!(app.state.quota.leased_budget_held(), 0);
    assert_eq!(counted(&app, &t).await, 15, "exactly what was served");

    // and the count goes on from there
    consume_in_turn(&app, &app.url(""), &t, 1).await;
    let leased = app.state.quota.leased_budget_held();
    assert_eq!(counted(&app, &t).await, 16 + leased);
}

#[tokio::test]
async fn an_idle_lease_gives_its_budget_back_once_it_expires() {
    let app = leasing_app("50", "1000").await;
    let t = active_tenant(&app, "idle-lease").await;
    set_limit(&app, &t, "api_calls", 1000).await;
    consume_in_turn(&app, &app.url(""), &t, 3).await;
    assert_eq!(counted(&app, &t).await, 51, "3 served, 48 of the lease unused");
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted(&app, &t).await != 3 {
        assert!(Instant::now() < deadline, "the expired lease's budget did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.state.quota.lease_given_back.load(Ordering::Relaxed), 48);
}

/// Both processes lease; `n` consumes alternate between them, `in_flight` at a time. Returns how
/// many were allowed in all.
async fn two_process_race(app: &TestApp, other_base: &str, t: &Tenant, n: usize, in_flight: usize) -> usize {
    let base = app.url("");
    race(&app.client, &[&base, other_base], t, "api_calls", n, in_flight, None).await.iter().sum()
}

#[tokio::test]
async fn two_leasing_processes_allow_exactly_the_limit() {
    let app = leasing_app("20", "1000").await;
    let other = app.spawn_api_process(API).await;
    let t = active_tenant(&app, "two-leasing").await;
    set_limit(&app, &t, "api_calls", 500).await;
    let allowed = two_process_race(&app, &other.base, &t, 1000, 1000).await;
    assert_eq!(allowed, 500);
    assert_eq!(counted(&app, &t).await, 500, "nothing left leased, nothing lost");
    assert!(app.state.quota.leased_hits.load(Ordering::Relaxed) > 0, "leases served some");
}

/// 1,000 consumes over two leasing processes, 20 in flight at a time; once 150 have their
/// answer, a platform admin rewrites the limit from `from` to `to` (through the in-process one;
/// the other learns it from the invalidation). Chunks of 50 and few requests in flight keep
/// leased budget in both processes when the rewrite drops it. The count must end exactly at
/// `to`: nothing dropped is lost, nothing granted before the change is kept after it.
async fn rewritten_mid_race(slug: &str, from: i64, to: i64) {
    let app = leasing_app("50", "1000").await;
    let other = app.spawn_api_process(API).await;
    let t = active_tenant(&app, slug).await;
    set_limit(&app, &t, "api_calls", from).await;
    let (answered_tx, mut answered) = tokio::sync::watch::channel(0_usize);
    let base = app.url("");
    let bases = [base.as_str(), other.base.as_str()];
    let racing = race(&app.client, &bases, &t, "api_calls", 1000, 20, Some(answered_tx));
    let rewrite = async {
        answered.wait_for(|n| *n >= 150).await.expect("race running");
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{}/quotas", t.id),
                Some(&app.admin_token()),
                Some(json!({ "limits": { "api_calls": to } })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        *answered.borrow()
    };
    let (allowed, answered_when_rewritten) = tokio::join!(racing, rewrite);
    assert!(answered_when_rewritten < 900, "the rewrite landed after the race ({answered_when_rewritten} answered)");
    let allowed: usize = allowed.iter().sum();
    assert_eq!(allowed as i64, to, "{from} → {to}: allowed {allowed}");
    assert_eq!(counted(&app, &t).await, to);
    let (_, body) = app.get(&format!("/api/v1/tenants/{}/quotas", t.id), &app.admin_token()).await;
    let calls: Vec<Value> = body["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|q| q["resource"] == json!("api_calls"))
        .cloned()
        .collect();
    assert_eq!((calls[0]["limit"].clone(), calls[0]["used"].clone()), (json!(to), json!(to)));
}

#[tokio::test]
async fn a_limit_raised_mid_race_ends_exactly_at_the_new_limit() {
    rewritten_mid_race("raised-mid-race", 400, 500).await;
}

#[tokio::test]
async fn a_limit_rewritten_unchanged_mid_race_ends_exactly_at_it() {
    rewritten_mid_race("rewritten-mid-race", 500, 500).await;
}

#[tokio::test]
async fn a_replica_that_stops_gives_its_leased_budget_back() {
    let app = leasing_app("50", "60000").await;
    let t = active_tenant(&app, "stop-lease").await;
    set_limit(&app, &t, "api_calls", 1000).await;
    // A second replica on the same database and Redis serves 4 and holds the rest of its lease.
    let mut replica = TestApp::start(app.env.clone()).await.expect("second replica");
    consume_in_turn(&app, &replica.url(""), &t, 4).await;
    let held = replica.state.quota.leased_budget_held();
    assert!(held > 0, "the replica leased budget");
    assert_eq!(counted(&app, &t).await, 4 + held, "4 served, the rest of the lease held by the replica");
    replica.begin_shutdown();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted(&app, &t).await != 4 {
        assert!(Instant::now() < deadline, "the stopped replica kept its lease counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replica.state.quota.leased_budget_held(), 0);
}
