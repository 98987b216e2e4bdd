//! Provisioning: 100 concurrent `POST /api/v1/tenants` against the API with 2 worker processes;
//! time until all are active, create-to-active latency percentiles, jobs/s. Reference, same run:
//! the same 100 sagas run by the engine in-process with the same total concurrency, without
//! HTTP, Redis delivery or a second process — the cost of the work itself.

use crate::processes::{self, spawn};
use crate::stats::{ms, summarize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenant_domain::jobs::NewJob;
use tenant_domain::tenants::NewTenant;
use tenant_domain::{Config, JobId, TenantId, TenantStatus, jobs, plans, tenants};
use tenant_jobs::provision::ProvisionPayload;
use tenant_jobs::{JobKind, Queue, engine};
use tenant_tests::{fresh_database, test_env};
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

const TENANTS: usize = 100;
const WORKERS: usize = 2;

pub async fn run() -> anyhow::Result<()> {
    let concurrency: usize = 4;
    println!(
        "provisioning: {TENANTS} concurrent POST /api/v1/tenants, {WORKERS} tenant-worker processes × concurrency {concurrency}"
    );

    // ---- the service, as deployed: API process + worker processes
    let (database_url, mut env, port) = processes::api_env().await?;
    env.insert("WORKER_CONCURRENCY".into(), concurrency.to_string());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    // Production timings, not the tests' short ones.
    for k in [
        "JOB_LEASE_SECS",
        "JOB_BACKOFF_BASE_MS",
        "JOB_BACKOFF_MAX_MS",
        "QUEUE_HEARTBEAT_SECS",
        "QUEUE_MISSED_HEARTBEATS",
        "RECONCILE_INTERVAL_MS",
        "RECONCILE_STALE_MS",
    ] {
        env.remove(k);
    }
    let _api = spawn("tenant-api", &["serve"], &env)?;
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;
    let _workers: Vec<_> = (0..WORKERS).map(|_| spawn("tenant-worker", &[], &env)).collect::<Result<_, _>>()?;
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = sqlx::PgPool::connect(&database_url).await?;
    let token = admin_token(&config)?;

    let client = reqwest::Client::builder().pool_max_idle_per_host(TENANTS).build()?;
    let started = Instant::now();
    let mut posts = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        posts.push(tokio::spawn(async move {
            let body = json!({ "name": format!("Bench {i}"), "slug": format!("bench-{i:03}"), "planId": "basic",
                               "ownerId": Uuid::new_v4(), "ownerEmail": format!("owner{i}@bench.example.com") });
            let res = client.post(format!("{base}/api/v1/tenants")).bearer_auth(token).json(&body).send().await?;
            anyhow::ensure!(res.status() == reqwest::StatusCode::ACCEPTED, "POST answered {}", res.status());
            Ok(())
        }));
    }
    for post in posts {
        post.await??;
    }
    let accepted_after = started.elapsed();
    wait_all_succeeded(&db, TENANTS).await?;
    let wall = started.elapsed();
    let latencies = job_latencies(&db).await?;
    let active: i64 = sqlx::query_scalar("select count(*) from tenants where status = 'active'").fetch_one(&db).await?;
    anyhow::ensure!(active == TENANTS as i64, "{active} of {TENANTS} tenants active");
    let service = summarize(latencies);
    let mut memory = vec![("tenant-api".to_owned(), processes::peak_memory(&_api))];
    for (i, worker) in _workers.iter().enumerate() {
        memory.push((format!("tenant-worker {}", i + 1), processes::peak_memory(worker)));
    }

    // ---- reference: the same sagas, run in-process by the engine
    let reference = reference_run(concurrency * WORKERS).await?;

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!();
    println!("{:<48} {:>9} {:>9} {:>11} {:>11} {:>11}", "", "wall", "jobs/s", "p50", "p99", "max");
    println!(
        "{:<48} {:>9} {:>9.1} {:>11} {:>11} {:>11}",
        "API + Redis + 2 worker processes",
        format!("{:.2} s", wall.as_secs_f64()),
        rate(TENANTS, wall),
        ms(service.p50),
        ms(service.p99),
        ms(service.max)
    );
    println!(
        "{:<48} {:>9} {:>9.1} {:>11} {:>11} {:>11}",
        format!("reference: engine in-process, concurrency {}", concurrency * WORKERS),
        format!("{:.2} s", reference.0.as_secs_f64()),
        rate(TENANTS, reference.0),
        ms(reference.1.p50),
        ms(reference.1.p99),
        ms(reference.1.max)
    );
    println!();
    println!("all {TENANTS} POSTs answered 202 within {}", ms(accepted_after));
    println!("latency = job created → job succeeded (server clocks); {} samples", service.count);
    println!("ratio service/reference jobs/s: {:.2}", rate(TENANTS, wall) / rate(TENANTS, reference.0));
    processes::print_peak_memory(&memory.iter().map(|(n, b)| (n.as_str(), *b)).collect::<Vec<_>>());
    Ok(())
}

pub fn admin_token(config: &Config) -> anyhow::Result<String> {
    let claims = tenant_api::http::auth::Claims {
        sub: "bench".into(),
        tenant_id: None,
        roles: vec!["platform_admin".into()],
        exp: chrono::Utc::now().timestamp() + 3600,
    };
    tenant_api::http::auth::TokenVerifier::new(config).sign(&claims)
}

async fn wait_all_succeeded(db: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, bad): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'succeeded'), count(*) filter (where status in ('failed', 'compensated')) from jobs",
        )
        .fetch_one(db)
        .await?;
        anyhow::ensure!(bad == 0, "{bad} jobs failed");
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} jobs done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn job_latencies(db: &sqlx::PgPool) -> anyhow::Result<Vec<Duration>> {
    let secs: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from finished_at - created_at)::float8 from jobs where status = 'succeeded'",
    )
    .fetch_all(db)
    .await?;
    Ok(secs.into_iter().map(Duration::from_secs_f64).collect())
}

/// Inserts the tenants and job rows as the API would, then runs each saga directly.
async fn reference_run(concurrency: usize) -> anyhow::Result<(Duration, crate::stats::Summary)> {
    let database_url = fresh_database().await?;
    let mut env = test_env(&database_url);
    env.insert("RUST_LOG".into(), "error".into());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    let config = Arc::new(Config::from_lookup(|k| env.get(k).cloned())?);
    let (_stop, stop_rx) = watch::channel(false);
    let ctx = Arc::new(tenant_worker::context(config.clone(), stop_rx).await?);
    let plan = plans::find(&ctx.db, "basic").await?;
    let mut ids = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let mut tx = ctx.db.begin().await?;
        let tenant = tenants::insert(
            &mut *tx,
            &NewTenant {
                id: TenantId::new_v7(),
                name: format!("Ref {i}"),
                slug: format!("ref-{i:03}"),
                domain: None,
                status: TenantStatus::Provisioning,
                plan_id: plan.id,
                owner_id: Uuid::new_v4(),
                owner_email: Some(format!("owner{i}@ref.example.com")),
                settings: json!({}),
                features: json!({}),
            },
        )
        .await?;
        let job = jobs::insert(
            &mut *tx,
            NewJob {
                id: JobId::new_v7(),
                kind: JobKind::ProvisionTenant.name(),
                tenant: Some(tenant.id),
                payload: serde_json::to_value(ProvisionPayload { tenant_id: tenant.id })?,
                steps: tenant_jobs::steps(JobKind::ProvisionTenant),
                max_attempts: config.jobs.max_attempts,
                delivery_id: Queue::new_delivery_id(),
            },
        )
        .await?;
        tx.commit().await?;
        ids.push(job.id);
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TENANTS);
    for id in ids {
        let (ctx, permits) = (ctx.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let outcome = tenant_jobs::run(&ctx, JobKind::ProvisionTenant, id).await?;
            anyhow::ensure!(outcome == engine::Outcome::Succeeded, "reference job ended {outcome:?}");
            // Like the service's figure: from the moment all jobs exist to this one's end.
            Ok(started.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(TENANTS);
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok((started.elapsed(), summarize(latencies)))
}
