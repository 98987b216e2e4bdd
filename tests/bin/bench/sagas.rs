//! What the job benchmarks (provisioning, plan changes) share: the service's production timings,
//! waiting for a kind of job, its latencies, job rows inserted as the API would, the in-process
//! reference run, and the result table.

use crate::stats::{Summary, ms, summarize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenant_domain::jobs::NewJob;
use tenant_domain::{Config, JobId, TenantId, jobs};
use tenant_jobs::{JobContext, JobKind, Queue};
use tokio::sync::Semaphore;

/// Drops the tests' short job timings from `env`, so the service runs with its defaults.
pub fn production_timings(env: &mut HashMap<String, String>) {
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
}

/// Waits until `n` jobs of `kind` succeeded; any failed or compensated one is an error.
pub async fn wait_succeeded(db: &sqlx::PgPool, kind: JobKind, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (done, bad): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'succeeded'), \
                    count(*) filter (where status in ('failed', 'compensated')) from jobs where kind = $1",
        )
        .bind(kind.name())
        .fetch_one(db)
        .await?;
        anyhow::ensure!(bad == 0, "{bad} {} jobs failed", kind.name());
        if done as usize >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {done} of {n} {} jobs done", kind.name());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Created → finished of every succeeded job of `kind` (server clocks).
pub async fn latencies(db: &sqlx::PgPool, kind: JobKind) -> anyhow::Result<Summary> {
    let secs: Vec<f64> = sqlx::query_scalar(
        "select extract(epoch from finished_at - created_at)::float8 from jobs where kind = $1 and status = 'succeeded'",
    )
    .bind(kind.name())
    .fetch_all(db)
    .await?;
    Ok(summarize(secs.into_iter().map(Duration::from_secs_f64).collect()))
}

/// A job row as the API writes it (in the caller's transaction); its id.
pub async fn insert_job(
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

/// The reference: runs the jobs `ids` of `kind` with the engine in this process, `concurrency`
/// at a time; the wall time and each job's time from the start.
pub async fn run_in_process(
    ctx: Arc<JobContext>,
    kind: JobKind,
    ids: Vec<JobId>,
    concurrency: usize,
) -> anyhow::Result<(Duration, Summary)> {
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let (ctx, permits) = (ctx.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let outcome = tenant_jobs::run(&ctx, kind, id).await?;
            anyhow::ensure!(outcome == tenant_jobs::Outcome::Succeeded, "reference job ended {outcome:?}");
            // Like the service's figure: from the moment all jobs exist to this one's end.
            Ok(started.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok((started.elapsed(), summarize(latencies)))
}

/// The two rows of a job benchmark — the service, then the reference — and their ratio.
pub fn print_table(jobs: usize, service: (&str, Duration, &Summary), reference: (&str, Duration, &Summary)) {
    let rate = |d: Duration| jobs as f64 / d.as_secs_f64();
    println!();
    println!("{:<48} {:>9} {:>9} {:>11} {:>11} {:>11}", "", "wall", "jobs/s", "p50", "p99", "max");
    for (label, wall, s) in [service, reference] {
        println!(
            "{:<48} {:>9} {:>9.1} {:>11} {:>11} {:>11}",
            label,
            format!("{:.2} s", wall.as_secs_f64()),
            rate(wall),
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    println!();
    println!("latency = job created → job succeeded (server clocks); {} samples", service.2.count);
    println!("ratio service/reference jobs/s: {:.2}", rate(service.1) / rate(reference.1));
}

/// The reference's own database and job context (the worker's, built in this process).
pub async fn reference_context() -> anyhow::Result<(Arc<JobContext>, tokio::sync::watch::Sender<bool>)> {
    let database_url = tenant_tests::fresh_database().await?;
    let mut env = tenant_tests::test_env(&database_url);
    env.insert("RUST_LOG".into(), "error".into());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    let config = Arc::new(Config::from_lookup(|k| env.get(k).cloned())?);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    Ok((Arc::new(tenant_worker::context(config, stop_rx).await?), stop))
}

/// Tenant `i` of the reference, on `plan`, waiting for its provisioning job (also inserted).
pub async fn insert_provisioning(
    ctx: &JobContext,
    plan: tenant_domain::PlanId,
    i: usize,
) -> anyhow::Result<(TenantId, JobId)> {
    use tenant_domain::tenants::{self, NewTenant};
    let mut tx = ctx.db.begin().await?;
    let tenant = tenants::insert(
        &mut *tx,
        &NewTenant {
            id: TenantId::new_v7(),
            name: format!("Ref {i}"),
            slug: format!("ref-{i:03}"),
            domain: None,
            status: tenant_domain::TenantStatus::Provisioning,
            plan_id: plan,
            owner_id: uuid::Uuid::new_v4(),
            owner_email: Some(format!("owner{i}@ref.example.com")),
            settings: serde_json::json!({}),
            features: serde_json::json!({}),
        },
    )
    .await?;
    let payload = serde_json::to_value(tenant_jobs::provision::ProvisionPayload { tenant_id: tenant.id })?;
    let job = insert_job(&mut tx, &ctx.config, JobKind::ProvisionTenant, tenant.id, payload).await?;
    tx.commit().await?;
    Ok((tenant.id, job))
}
