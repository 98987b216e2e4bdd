//! Recovery: workers killed mid-saga, and Redis losing its queue.

use crate::lifecycle::{app_with_sink, create};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tenant_tests::TestApp;
use tenant_tests::redis_server::RedisServer;
use tenant_tests::smtp_sink::Slow;
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

#[tokio::test]
async fn killed_workers_leave_every_tenant_provisioned_exactly_once() {
    // A mail server slow to accept recipients keeps sagas in flight long enough to be killed
    // mid-way (a mail interrupted there was never received).
    let (app, sink) = app_with_sink(Slow::Recipients(Duration::from_millis(150))).await;
    let mut workers = vec![app.spawn_worker_process(WORKER), app.spawn_worker_process(WORKER)];
    let mut jobs = Vec::new();
    for i in 0..20 {
        jobs.push(create(&app, &format!("crash-{i:02}"), "basic").await);
    }
    // Three times: kill -9 a worker while jobs run, and start a fresh one.
    let mut kills = 0;
    let mut running_at_kill = Vec::new();
    while kills < 3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let running: i64 = sqlx::query_scalar("select count(*) from jobs where status = 'running'")
            .fetch_one(&app.db)
            .await
            .expect("q");
        running_at_kill.push(running);
        let mut victim = workers.remove(0);
        victim.kill().await;
        kills += 1;
        workers.push(app.spawn_worker_process(WORKER));
    }
    assert!(running_at_kill.iter().any(|n| *n > 0), "no job was running when workers were killed: {running_at_kill:?}");

    for (_, job) in &jobs {
        let job = app.wait_job(job, Duration::from_secs(90)).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
    }
    let ids: Vec<Uuid> = jobs.iter().map(|(t, _)| Uuid::parse_str(t).expect("uuid")).collect();
    let per_tenant = |sql: &'static str| {
        let db = app.db.clone();
        let ids = ids.clone();
        async move {
            let rows: Vec<(Uuid, i64)> = sqlx::query_as(sql).bind(&ids).fetch_all(&db).await.expect(sql);
            rows.into_iter().collect::<HashMap<_, _>>()
        }
    };
    let active =
        per_tenant("select id, count(*) from tenants where id = any($1) and status = 'active' group by id").await;
    let billing =
        per_tenant("select tenant_id, count(*) from billing_accounts where tenant_id = any($1) group by tenant_id")
            .await;
    let mails = per_tenant(
        "select tenant_id, count(*) from sent_emails where tenant_id = any($1) and kind = 'welcome' and status = 'sent' group by tenant_id",
    )
    .await;
    let created = per_tenant(
        "select tenant_id, count(*) from outbox_events where tenant_id = any($1) and event_type = 'tenant.created' group by tenant_id",
    )
    .await;
    for id in &ids {
        assert_eq!(active.get(id), Some(&1), "tenant {id} active");
        assert_eq!(billing.get(id), Some(&1), "tenant {id}: one billing account");
        assert_eq!(mails.get(id), Some(&1), "tenant {id}: one welcome mail record");
        assert_eq!(created.get(id), Some(&1), "tenant {id}: one tenant.created event");
    }
    let schemas: i64 = sqlx::query_scalar("select count(*) from pg_namespace where nspname = any($1)")
        .bind(ids.iter().map(|id| format!("tenant_{}", id.simple())).collect::<Vec<_>>())
        .fetch_one(&app.db)
        .await
        .expect("q");
    assert_eq!(schemas, 20);
    // One welcome mail per tenant: one Message-ID each. A kill in the instant between the
    // server's "250" and the worker's "sent" record makes the retry deliver the same message
    // again, under the same Message-ID (receivers drop such repeats) — SMTP allows no better.
    let received = sink.mails();
    let welcome: Vec<_> =
        received.iter().filter(|m| m.subject.as_deref().is_some_and(|s| s.starts_with("Welcome"))).collect();
    let mut by_id: HashMap<String, Vec<_>> = HashMap::new();
    for m in &welcome {
        by_id.entry(m.message_id.clone().unwrap_or_default()).or_default().push(m);
    }
    assert_eq!(by_id.len(), 20, "distinct welcome Message-IDs");
    for (id, copies) in &by_id {
        assert!(copies.iter().all(|c| c.to == copies[0].to), "{id}: one recipient");
    }
    let recipients: HashSet<_> = welcome.iter().flat_map(|m| m.to.clone()).collect();
    assert_eq!(recipients.len(), 20);
    eprintln!("welcome deliveries: {} for 20 tenants", welcome.len());
    // The kills did interrupt sagas: some jobs needed more than one attempt.
    let resumed: i64 =
        sqlx::query_scalar("select count(*) from jobs where attempts > 1").fetch_one(&app.db).await.expect("q");
    assert!(resumed > 0, "no job was interrupted by the kills");
    eprintln!("jobs resumed after a kill: {resumed}");
    let open: i64 = sqlx::query_scalar("select count(*) from jobs where status not in ('succeeded')")
        .fetch_one(&app.db)
        .await
        .expect("q");
    assert_eq!(open, 0, "no job left running or queued");
}

/// The one window SMTP leaves open: the server has the mail but the worker dies before it hears
/// "250". The retry sends it again under the same Message-ID, which receivers deduplicate on.
#[tokio::test]
async fn a_mail_interrupted_after_the_server_took_it_is_resent_with_the_same_message_id() {
    let (app, sink) = app_with_sink(Slow::Confirm(Duration::from_secs(3))).await;
    let mut worker = app.spawn_worker_process(WORKER);
    let (tenant, job) = create(&app, "resend", "free").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sink.mails().is_empty() {
        assert!(Instant::now() < deadline, "the mail never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.kill().await; // before the server's "250"
    let _replacement = app.spawn_worker_process(WORKER);
    let job = app.wait_job(&job, Duration::from_secs(30)).await;
    assert_eq!(job["status"], json!("succeeded"), "{job}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "sent again after the crash");
    assert_eq!(mails[0].message_id, mails[1].message_id);
    let (attempts, status): (i32, String) =
        sqlx::query_as("select attempts, status from sent_emails where tenant_id = $1 and kind = 'welcome'")
            .bind(Uuid::parse_str(&tenant).expect("uuid"))
            .fetch_one(&app.db)
            .await
            .expect("record");
    assert_eq!((attempts, status.as_str()), (2, "sent"));
}

#[tokio::test]
async fn jobs_survive_redis_losing_everything() {
    let redis = RedisServer::start().await.expect("redis-server");
    let url = redis.url();
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), url);
    })
    .await;
    // Jobs are enqueued while no worker runs…
    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(create(&app, &format!("flushed-{i}"), "free").await);
    }
    let mut conn = app.state.redis.clone();
    let depth: u64 = app.state.queue.depth().await.expect("depth");
    assert_eq!(depth, 5, "five deliveries queued");
    // …then Redis loses them all.
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.expect("flushall");
    assert_eq!(app.state.queue.depth().await.expect("depth"), 0);

    let started = Instant::now();
    let _worker = app.spawn_worker();
    for (tenant, job) in &jobs {
        let job = app.wait_job(job, Duration::from_secs(30)).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
        let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
        assert_eq!(body["data"]["status"], json!("active"));
    }
    eprintln!("re-delivered and finished in {:?}", started.elapsed());
}

#[tokio::test]
async fn sigterm_hands_running_jobs_back_and_exits_cleanly() {
    let (app, _sink) = app_with_sink(Slow::Recipients(Duration::from_millis(700))).await;
    let mut worker = app.spawn_worker_process(WORKER);
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(create(&app, &format!("graceful-{i}"), "free").await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running: i64 = sqlx::query_scalar("select count(*) from jobs where status = 'running'")
            .fetch_one(&app.db)
            .await
            .expect("q");
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.child.id().expect("pid").to_string();
    let term = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill");
    assert!(term.success());
    let exit =
        tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await.expect("exits in time").expect("wait");
    assert!(exit.success(), "worker exit status {exit:?}");
    let running: i64 =
        sqlx::query_scalar("select count(*) from jobs where status = 'running'").fetch_one(&app.db).await.expect("q");
    assert_eq!(running, 0, "a stopped worker holds no job");
    let released: i64 =
        sqlx::query_scalar("select count(*) from jobs where status = 'retrying' and lease_owner is null")
            .fetch_one(&app.db)
            .await
            .expect("q");
    let succeeded: i64 =
        sqlx::query_scalar("select count(*) from jobs where status = 'succeeded'").fetch_one(&app.db).await.expect("q");
    assert!(released + succeeded > 0, "in-flight jobs were finished or handed back");

    let _next = app.spawn_worker_process(WORKER);
    for (_, job) in &jobs {
        assert_eq!(app.wait_job(job, Duration::from_secs(30)).await["status"], json!("succeeded"));
    }
}
