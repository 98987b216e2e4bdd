//! The job engine under faults: a step that kills its worker every time ends after exactly
//! `JOB_MAX_ATTEMPTS` attempts and is compensated; a store error in the request itself (a
//! constraint) is not retried; what PostgreSQL said never reaches a job or tenant clients read.

use crate::lifecycle::create;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tenant_tests::TestApp;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

async fn job_when_done(app: &TestApp, job: &str) -> Option<Value> {
    let (status, body) = app.get(&format!("/api/v1/jobs/{job}"), &app.admin_token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    matches!(body["data"]["status"].as_str(), Some("succeeded" | "failed" | "compensated"))
        .then(|| body["data"].clone())
}

#[tokio::test]
async fn a_step_that_kills_its_worker_fails_after_max_attempts_and_is_compensated() {
    let app = TestApp::spawn_with(|env| {
        env.insert("JOB_MAX_ATTEMPTS".into(), "3".into());
        // The worker program aborts as this step starts (a test-only hook, see engine::test_hooks).
        env.insert("JOB_TEST_CRASH_AT".into(), "provision_tenant:welcome_email".into());
    })
    .await;
    let (tenant, job_id) = create(&app, "poison", "basic").await;
    let mut worker = app.spawn_worker_process(WORKER);
    let mut deaths = 0;
    let until = Instant::now() + Duration::from_secs(90);
    let job = loop {
        if let Some(job) = job_when_done(&app, &job_id).await {
            break job;
        }
        if worker.child.try_wait().expect("worker status").is_some() {
            deaths += 1;
            worker = app.spawn_worker_process(WORKER);
        }
        assert!(Instant::now() < until, "the poison job never ended ({deaths} worker deaths)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(deaths, 3, "one death per attempt, then no more: {job}");
    assert_eq!(job["status"], json!("failed"), "{job}");
    assert_eq!(job["attempts"], json!(3));
    assert_eq!(job["error"]["code"], json!("ATTEMPTS_EXHAUSTED"));
    let statuses: Vec<&str> =
        job["steps"].as_array().expect("steps").iter().filter_map(|s| s["status"].as_str()).collect();
    assert_eq!(statuses, ["compensated", "compensated", "compensated", "compensated", "compensated", "pending"]);
    let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
    assert_eq!(body["data"]["status"], json!("failed"), "{body}");
    let schema: bool = sqlx::query_scalar("select exists (select from pg_namespace where nspname = $1)")
        .bind(format!("tenant_{}", tenant.replace('-', "")))
        .fetch_one(&app.db)
        .await
        .expect("schema");
    assert!(!schema, "compensation dropped the schema");
    // Backoff between the deaths' re-deliveries, not a tight loop: at most one claim per death
    // and one for the compensation.
    let claims: i32 = sqlx::query_scalar("select claims from jobs where id = $1::uuid")
        .bind(&job_id)
        .fetch_one(&app.db)
        .await
        .expect("claims");
    assert_eq!(claims, 4);
}

#[tokio::test]
async fn a_constraint_violation_is_not_retried_and_its_text_stays_in_the_log() {
    let app = TestApp::spawn().await;
    // The default configuration of every new tenant collides with a (made-up) unique index.
    sqlx::raw_sql(
        "create function collide() returns trigger language plpgsql as $$ begin \
             raise exception using errcode = 'unique_violation', \
                 message = 'duplicate key value violates unique constraint \"internal_secret_idx\"'; \
         end $$; \
         create trigger collide before insert on tenant_configs for each row execute function collide();",
    )
    .execute(&app.owner_db)
    .await
    .expect("trigger");
    let _worker = app.spawn_worker();
    let (tenant, job_id) = create(&app, "collide", "basic").await;
    let job = app.wait_job(&job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], json!("compensated"), "{job}");
    assert_eq!(job["attempts"], json!(1), "a constraint violation is not worth a retry");
    assert_eq!(
        (job["error"]["code"].clone(), job["error"]["step"].clone()),
        (json!("STEP_FAILED"), json!("default_config"))
    );

    // A member of the tenant reads the job and the tenant: nothing PostgreSQL said is there.
    let member = app.token(&["tenant_member"], Some(tenant.parse().expect("tenant id")));
    let (status, job) = app.get(&format!("/api/v1/jobs/{job_id}"), &member).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let (status, tenant_view) = app.get(&format!("/api/v1/tenants/{tenant}"), &member).await;
    assert_eq!(status, StatusCode::OK, "{tenant_view}");
    assert_eq!(tenant_view["data"]["status"], json!("failed"));
    for text in [job.to_string(), tenant_view.to_string()] {
        for leak in ["internal_secret_idx", "duplicate key", "unique constraint", "error returned from database"] {
            assert!(!text.contains(leak), "{leak:?} reached a client: {text}");
        }
    }
    assert!(tenant_view["data"]["statusReason"].as_str().is_some_and(|r| r.contains("refused")), "{tenant_view}");
}

#[tokio::test]
async fn a_worker_whose_lease_is_taken_over_cancels_its_running_step() {
    use tenant_tests::smtp_sink::Slow;
    // The mail server takes the welcome mail but holds its "250" for 6 s.
    let (app, sink) = crate::lifecycle::app_with_sink(Slow::Confirm(Duration::from_secs(6))).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let _worker = app.spawn_worker_with(|env| {
        env.insert("WORKER_METRICS_PORT".into(), port.to_string());
        env.insert("SERVICE_HOST".into(), "127.0.0.1".into());
    });
    let (_, job_id) = create(&app, "stolen", "free").await;
    let until = Instant::now() + Duration::from_secs(20);
    while sink.mails().is_empty() {
        assert!(Instant::now() < until, "the welcome mail never reached the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another worker takes the job over while the step waits on the mail server.
    sqlx::query(
        "update jobs set lease_owner = 'another-worker', lease_expires_at = now() + interval '1 minute' \
         where id = $1::uuid",
    )
    .bind(&job_id)
    .execute(&app.db)
    .await
    .expect("lease taken");
    let taken = Instant::now();
    // The step is cancelled within a renewal period (a third of the 2 s lease), long before the
    // mail server would have answered.
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    loop {
        let text = match app.client.get(&metrics).send().await {
            Ok(res) => res.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(r#"tenant_jobs_total{kind="provision_tenant",outcome="lease_lost"} 1"#) {
            break;
        }
        assert!(taken.elapsed() < Duration::from_secs(3), "the step ran on after its lease was taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing was written for the job after the takeover: the new holder owns it as it found it.
    let (owner, step): (Option<String>, Value) =
        sqlx::query_as("select lease_owner, steps -> 4 from jobs where id = $1::uuid")
            .bind(&job_id)
            .fetch_one(&app.db)
            .await
            .expect("job");
    assert_eq!(owner.as_deref(), Some("another-worker"));
    assert_eq!(step["status"], json!("running"), "{step}");
}

#[tokio::test]
async fn twenty_thousand_jobs_due_at_once_all_run_and_no_worker_dies() {
    const JOBS: i64 = 20_000;
    let app = TestApp::spawn_with(|env| {
        env.insert("WORKER_CONCURRENCY".into(), "8".into());
        env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
        // The production heartbeat (5 s × 3), not the tests' 1 s × 2: under this load a starved
        // worker can miss two 1-second heartbeats, be taken for dead and restart — a test of
        // heartbeat tuning, not of what this one is about.
        env.insert("QUEUE_HEARTBEAT_SECS".into(), "5".into());
        env.insert("QUEUE_MISSED_HEARTBEATS".into(), "3".into());
    })
    .await;
    // 20,000 retries that all fell due at the same moment, as after an outage (cheap jobs: a
    // rollup of no tenants).
    sqlx::query(
        "insert into jobs (id, kind, status, payload, steps, attempts, max_attempts, next_attempt_at, dispatched_at) \
         select gen_random_uuid(), 'quota_rollup', 'retrying', jsonb_build_object('at', now()), \
             '[{\"name\": \"rollup\", \"status\": \"pending\", \"startedAt\": null, \"finishedAt\": null, \"error\": null}]', \
             1, 8, now(), now() - interval '1 minute' \
         from generate_series(1, $1)",
    )
    .bind(JOBS)
    .execute(&app.db)
    .await
    .expect("jobs");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let _first = app.spawn_worker_with(|env| {
        env.insert("WORKER_METRICS_PORT".into(), port.to_string());
        env.insert("SERVICE_HOST".into(), "127.0.0.1".into());
    });
    let _second = app.spawn_worker();
    let queue = tenant_jobs::Queue::new(app.state.redis.clone(), &app.config.redis_key_prefix, app.config.jobs.clone());
    let scheduled = queue.config(tenant_jobs::JobKind::QuotaRollup).scheduled_jobs_set().to_owned();
    let mut redis = app.state.redis.clone();
    let until = Instant::now() + Duration::from_secs(600);
    let mut most_scheduled = 0i64;
    loop {
        let done: i64 =
            sqlx::query_scalar("select count(*) from jobs where kind = 'quota_rollup' and status = 'succeeded'")
                .fetch_one(&app.db)
                .await
                .expect("count");
        let in_set: i64 = redis::cmd("ZCARD").arg(&scheduled).query_async(&mut redis).await.expect("zcard");
        most_scheduled = most_scheduled.max(in_set);
        if done >= JOBS {
            break;
        }
        assert!(Instant::now() < until, "only {done} of {JOBS} jobs ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed: i64 = sqlx::query_scalar("select count(*) from jobs where status in ('failed', 'compensated')")
        .fetch_one(&app.db)
        .await
        .expect("failed");
    assert_eq!(failed, 0);
    // Due jobs are pushed when due, never parked in apalis's scheduled set (whose promotion fails
    // for every worker past ~8,000 due at once): only apalis's own re-tries of deliveries whose
    // bookkeeping failed under this load (a database connection not had in time) wait there —
    // a few dozen when this test runs alone, about a hundred on a machine busy with other work,
    // never near the thousands. No queue worker died.
    assert!(most_scheduled < 1000, "{most_scheduled} deliveries waited in the scheduled set");
    let text = app.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("metrics");
    let text = text.text().await.expect("text");
    let health = app.client.get(format!("http://127.0.0.1:{port}/health")).send().await.expect("health");
    let health = health.text().await.expect("text");
    assert!(text.contains("tenant_worker_restarts_total 0"), "a queue worker died: {health}");
}

#[tokio::test]
async fn a_redis_restart_under_load_loses_no_job_and_runs_none_twice() {
    use tenant_tests::redis_server::RedisServer;
    let mut redis = RedisServer::start().await.expect("redis-server");
    let url = redis.url();
    let app = TestApp::spawn_with(|env| {
        env.insert("REDIS_URL".into(), url);
    })
    .await;
    let _workers = [app.spawn_worker_process(WORKER), app.spawn_worker_process(WORKER)];
    let mut created = Vec::new();
    for i in 0..10 {
        created.push(create(&app, &format!("outage-{i:02}"), "basic").await);
    }
    // Redis dies with jobs queued and running, and comes back empty (no persistence): every
    // delivery in it is gone.
    redis.kill().await.expect("killed");
    // Meanwhile the hot path answers at once that it can't decide…
    let started = Instant::now();
    let res = app
        .client
        .post(app.url(&format!("/internal/tenants/{}/quota-check", created[0].0)))
        .header("X-Service-Token", tenant_tests::SERVICE_TOKEN)
        .json(&json!({ "resource": "api_calls" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_secs(2), "answered in {:?}", started.elapsed());
    // …and tenants are still accepted: their jobs wait in PostgreSQL for Redis to return.
    for i in 10..20 {
        created.push(create(&app, &format!("outage-{i:02}"), "basic").await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart().await.expect("restarted");

    for (tenant, job) in &created {
        let job = app.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
        let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
        assert_eq!(body["data"]["status"], json!("active"), "{body}");
    }
    let per_tenant = |sql: &'static str| {
        let db = app.db.clone();
        async move {
            let counts: Vec<i64> = sqlx::query_scalar(sql).fetch_all(&db).await.expect(sql);
            counts
        }
    };
    // Each tenant exactly once: one schema, one `tenant.created`, one welcome mail, one account.
    let schemas = per_tenant(
        "select count(n.nspname) from tenants t left join pg_namespace n \
         on n.nspname = 'tenant_' || replace(t.id::text, '-', '') group by t.id",
    )
    .await;
    assert_eq!(schemas, vec![1; 20]);
    let created_events = per_tenant(
        "select count(e.id) from tenants t left join outbox_events e \
         on e.tenant_id = t.id and e.event_type = 'tenant.created' group by t.id",
    )
    .await;
    assert_eq!(created_events, vec![1; 20]);
    let mails = per_tenant(
        "select count(m.idempotency_key) from tenants t left join sent_emails m \
         on m.tenant_id = t.id and m.kind = 'welcome' and m.status = 'sent' group by t.id",
    )
    .await;
    assert_eq!(mails, vec![1; 20]);
    let accounts = per_tenant(
        "select count(a.tenant_id) from tenants t left join billing_accounts a on a.tenant_id = t.id group by t.id",
    )
    .await;
    assert_eq!(accounts, vec![1; 20]);
    let open: i64 = sqlx::query_scalar(
        "select count(*) from jobs where status in ('queued', 'running', 'retrying') and kind = 'provision_tenant'",
    )
    .fetch_one(&app.db)
    .await
    .expect("open");
    assert_eq!(open, 0);
}

#[tokio::test]
async fn a_postgres_restart_under_load_loses_no_job_and_runs_none_twice() {
    use sqlx::{Connection, Executor};
    use tenant_tests::pg_server::PgServer;
    let pg = PgServer::start().await.expect("private PostgreSQL");
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres")).await.expect("admin");
    admin.execute("create database service").await.expect("database");
    let url = pg.url("service");
    let mut owner = sqlx::PgConnection::connect(&url).await.expect("owner");
    tenant_domain::db::migrate_on(&mut owner).await.expect("migrated");
    owner.close().await.expect("closed");
    let app = TestApp::start(tenant_tests::test_env(&url)).await.expect("app");
    let _workers = [app.spawn_worker_process(WORKER), app.spawn_worker_process(WORKER)];
    // One tenant is active (its quota state is in Redis); then 19 more are created and
    // PostgreSQL goes down at once, while their jobs run.
    let mut created = vec![create(&app, "pg-outage-00", "basic").await];
    let first = app.wait_job(&created[0].1, Duration::from_secs(30)).await;
    assert_eq!(first["status"], json!("succeeded"), "{first}");
    for i in 1..20 {
        created.push(create(&app, &format!("pg-outage-{i:02}"), "basic").await);
    }
    let unfinished: i64 = sqlx::query_scalar("select count(*) from jobs where status <> 'succeeded'")
        .fetch_one(&app.db)
        .await
        .expect("n");
    assert!(unfinished > 0, "every job had finished before PostgreSQL went down");
    pg.stop().await.expect("stopped");
    // While PostgreSQL is down: the hot path still answers (it asks only Redis)…
    let check = || {
        app.client
            .post(app.url(&format!("/internal/tenants/{}/quota-check", created[0].0)))
            .header("X-Service-Token", tenant_tests::SERVICE_TOKEN)
            .json(&json!({ "resource": "api_calls" }))
            .send()
    };
    for _ in 0..20 {
        assert_eq!(check().await.expect("sent").status(), StatusCode::OK);
    }
    // …and what needs the database says so quickly, in the envelope.
    let started = Instant::now();
    let (status, body) = app.get(&format!("/api/v1/tenants/{}", created[1].0), &app.admin_token()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("DEPENDENCY_UNAVAILABLE"))
    );
    assert!(started.elapsed() < Duration::from_secs(4), "answered in {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart().await.expect("restarted");

    // It recovers by itself: every tenant ends active, each exactly once.
    for (tenant, job) in &created {
        let job = app.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(job["status"], json!("succeeded"), "{job}");
        let (_, body) = app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin_token()).await;
        assert_eq!(body["data"]["status"], json!("active"), "{body}");
    }
    for (what, sql) in [
        (
            "schema",
            "select count(n.nspname) from tenants t left join pg_namespace n \
             on n.nspname = 'tenant_' || replace(t.id::text, '-', '') group by t.id",
        ),
        (
            "tenant.created",
            "select count(e.id) from tenants t left join outbox_events e \
             on e.tenant_id = t.id and e.event_type = 'tenant.created' group by t.id",
        ),
        (
            "welcome mail",
            "select count(m.idempotency_key) from tenants t left join sent_emails m \
             on m.tenant_id = t.id and m.kind = 'welcome' and m.status = 'sent' group by t.id",
        ),
    ] {
        let counts: Vec<i64> = sqlx::query_scalar(sql).fetch_all(&app.db).await.expect(what);
        assert_eq!(counts, vec![1; 20], "{what}");
    }
}
