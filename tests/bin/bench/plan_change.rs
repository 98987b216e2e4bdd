//! Plan changes: 100 active tenants (provisioned through the service first, not timed) change
//! plan at once — 100 concurrent `POST /api/v1/tenants/{id}/billing/plans` against the API with
//! 2 worker processes — until every `change_plan` job succeeded; jobs/s and request→done latency
//! percentiles. Reference, same run: the same 100 sagas run by the engine in-process with the same
//! total concurrency, without HTTP, Redis delivery or a second process. The service runs with the
//! settings Compose uses (`RUST_LOG=info`, `LOG_FORMAT=json`; its log goes to a file) and local
//! billing (no Stripe key).

use crate::processes::{self, spawn_logged};
use crate::stats::{ms, summarize};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenant_domain::jobs::NewJob;
use tenant_domain::tenants::NewTenant;
use tenant_domain::{Config, JobId, TenantId, TenantStatus, jobs, plans, tenants};
use tenant_jobs::change_plan::ChangePlanPayload;
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
        "plan change: {TENANTS} tenants change basic → pro at once, {WORKERS} tenant-worker processes × concurrency {concurrency}"
    );
    let (database_url, mut env, port) = processes::api_env().await?;
    env.insert("WORKER_CONCURRENCY".into(), concurrency.to_string());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    env.insert("RUST_LOG".into(), "info".into());
    env.insert("LOG_FORMAT".into(), "json".into());
    let log = std::path::Path::new(&tenant_tests::scratch_dir("bench")).join("service.log");
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
    let api = spawn_logged("tenant-api", &["serve"], &env, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;
    let workers: Vec<_> =
        (0..WORKERS).map(|_| spawn_logged("tenant-worker", &[], &env, &log)).collect::<Result<_, _>>()?;
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = sqlx::PgPool::connect(&database_url).await?;
    let token = crate::provision::admin_token(&config)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(TENANTS).build()?;

    // Setup (not timed): 100 tenants provisioned through the service.
    let mut ids = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let body = json!({ "name": format!("Plan {i}"), "slug": format!("plan-{i:03}"), "planId": "basic",
                           "ownerId": Uuid::new_v4(), "ownerEmail": format!("owner{i}@plan.example.com") });
        let res = client.post(format!("{base}/api/v1/tenants")).bearer_auth(&token).json(&body).send().await?;
        anyhow::ensure!(res.status() == reqwest::StatusCode::ACCEPTED, "POST answered {}", res.status());
        let body: serde_json::Value = res.json().await?;
        ids.push(body["data"]["tenant"]["id"].as_str().unwrap_or_default().to_owned());
    }
    wait_succeeded(&db, "provision_tenant", TENANTS).await?;

    let started = Instant::now();
    let mut posts = Vec::with_capacity(TENANTS);
    for id in ids {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        posts.push(tokio::spawn(async move {
            let res = client
                .post(format!("{base}/api/v1/tenants/{id}/billing/plans"))
                .bearer_auth(token)
                .json(&json!({ "planId": "pro", "interval": "month" }))
                .send()
                .await?;
            anyhow::ensure!(res.status() == reqwest::StatusCode::ACCEPTED, "plan change answered {}", res.status());
            Ok(())
        }));
    }
    for post in posts {
        post.await??;
    }
    let accepted_after = started.elapsed();
    wait_succeeded(&db, "change_plan", TENANTS).await?;
    let wall = started.elapsed();
    let on_pro: i64 = sqlx::query_scalar(
        "select count(*) from tenants t join subscription_plans p on p.id = t.plan_id where p.slug = 'pro'",
    )
    .fetch_one(&db)
    .await?;
    anyhow::ensure!(on_pro == TENANTS as i64, "{on_pro} of {TENANTS} tenants on pro");
    let latencies: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from finished_at - created_at)::float8 from jobs \
         where kind = 'change_plan' and status = 'succeeded'",
    )
    .fetch_all(&db)
    .await?;
    let service = summarize(latencies.into_iter().map(Duration::from_secs_f64).collect());
    let mut memory = vec![("tenant-api".to_owned(), processes::peak_memory(&api))];
    for (i, worker) in workers.iter().enumerate() {
        memory.push((format!("tenant-worker {}", i + 1), processes::peak_memory(worker)));
    }

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
    println!("all {TENANTS} plan changes answered 202 within {}; all {TENANTS} jobs succeeded", ms(accepted_after));
    println!("latency = job created → job succeeded (server clocks); {} samples", service.count);
    println!("ratio service/reference jobs/s: {:.2}", rate(TENANTS, wall) / rate(TENANTS, reference.0));
    println!("service settings: RUST_LOG=info LOG_FORMAT=json (as Compose), log in {}", log.display());
    processes::print_peak_memory(&memory.iter().map(|(n, b)| (n.as_str(), *b)).collect::<Vec<_>>());
    Ok(())
}

async fn wait_succeeded(db: &sqlx::PgPool, kind: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, bad): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'succeeded'), \
                    count(*) filter (where status in ('failed', 'compensated')) from jobs where kind = $1",
        )
        .bind(kind)
        .fetch_one(db)
        .await?;
        anyhow::ensure!(bad == 0, "{bad} {kind} jobs failed");
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} {kind} jobs done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Provisions the tenants in-process (not timed), then runs the 100 plan-change sagas directly.
async fn reference_run(concurrency: usize) -> anyhow::Result<(Duration, crate::stats::Summary)> {
    let database_url = fresh_database().await?;
    let mut env = test_env(&database_url);
    env.insert("RUST_LOG".into(), "error".into());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    let config = Arc::new(Config::from_lookup(|k| env.get(k).cloned())?);
    let (_stop, stop_rx) = watch::channel(false);
    let ctx = Arc::new(tenant_worker::context(config.clone(), stop_rx).await?);
    let basic = plans::find(&ctx.db, "basic").await?;
    let pro = plans::find(&ctx.db, "pro").await?;
    let mut tenants_ids = Vec::with_capacity(TENANTS);
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
                plan_id: basic.id,
                owner_id: Uuid::new_v4(),
                owner_email: Some(format!("owner{i}@ref.example.com")),
                settings: json!({}),
                features: json!({}),
            },
        )
        .await?;
        let job = insert_job(
            &mut tx,
            &config,
            JobKind::ProvisionTenant,
            tenant.id,
            serde_json::to_value(ProvisionPayload { tenant_id: tenant.id })?,
        )
        .await?;
        tx.commit().await?;
        let outcome = tenant_jobs::run(&ctx, JobKind::ProvisionTenant, job).await?;
        anyhow::ensure!(outcome == engine::Outcome::Succeeded, "reference provisioning ended {outcome:?}");
        tenants_ids.push(tenant.id);
    }
    let mut ids = Vec::with_capacity(TENANTS);
    let at = chrono::Utc::now();
    let at = chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    for tenant in tenants_ids {
        let payload = ChangePlanPayload {
            tenant_id: tenant,
            plan_id: pro.id,
            interval: tenant_domain::billing::period::Interval::Month,
            proration_date: at,
        };
        let mut tx = ctx.db.begin().await?;
        ids.push(insert_job(&mut tx, &config, JobKind::ChangePlan, tenant, serde_json::to_value(payload)?).await?);
        tx.commit().await?;
    }
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(TENANTS);
    for id in ids {
        let (ctx, permits) = (ctx.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let outcome = tenant_jobs::run(&ctx, JobKind::ChangePlan, id).await?;
            anyhow::ensure!(outcome == engine::Outcome::Succeeded, "reference plan change ended {outcome:?}");
            Ok(started.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(TENANTS);
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok((started.elapsed(), summarize(latencies)))
}

async fn insert_job(
    tx: &mut sqlx::PgConnection,
    config: &Config,
    kind: JobKind,
    tenant: TenantId,
    payload: serde_json::Value,
) -> anyhow::Result<JobId> {
    let job = jobs::insert(
        &mut *tx,
        NewJob {
            id: JobId::new_v7(),
            kind: kind.name(),
            tenant: Some(tenant),
            payload,
            steps: tenant_jobs::steps(kind),
            max_attempts: config.jobs.max_attempts,
            delivery_id: Queue::new_delivery_id(),
        },
    )
    .await?;
    Ok(job.id)
}
