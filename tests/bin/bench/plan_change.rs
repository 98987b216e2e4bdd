//! Plan changes: 100 active tenants (provisioned through the service first, not timed) change
//! plan at once — 100 concurrent `POST /api/v1/tenants/{id}/billing/plans` against the API with
//! 2 worker processes — until every `change_plan` job succeeded; jobs/s and request→done latency
//! percentiles. Reference, same run: the same 100 sagas run by the engine in-process with the same
//! total concurrency, without HTTP, Redis delivery or a second process. The service runs with the
//! settings Compose uses (`RUST_LOG=info`, `LOG_FORMAT=json`; its log goes to a file) and local
//! billing (no Stripe key).

use crate::processes::{self, spawn_logged};
use crate::sagas;
use crate::stats::ms;
use serde_json::json;
use std::time::{Duration, Instant};
use tenant_domain::billing::period::Interval;
use tenant_domain::{Config, plans};
use tenant_jobs::JobKind;
use tenant_jobs::change_plan::ChangePlanPayload;
use uuid::Uuid;

const TENANTS: usize = 100;
const WORKERS: usize = 2;

pub async fn run() -> anyhow::Result<()> {
    let concurrency: usize = 4;
    println!(
        "plan change: {TENANTS} tenants change basic → pro at once, {WORKERS} tenant-worker processes × concurrency {concurrency}"
    );
    let (_, mut env, port) = processes::api_env().await?;
    env.insert("WORKER_CONCURRENCY".into(), concurrency.to_string());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    let log = std::path::Path::new(&tenant_tests::scratch_dir("bench")).join("service.log");
    sagas::production_timings(&mut env);
    let api = spawn_logged("tenant-api", &["serve"], &env, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;
    let workers: Vec<_> =
        (0..WORKERS).map(|_| spawn_logged("tenant-worker", &[], &env, &log)).collect::<Result<_, _>>()?;
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = tenant_domain::db::pool(&config)?;
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
    sagas::wait_succeeded(&db, JobKind::ProvisionTenant, TENANTS).await?;

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
    sagas::wait_succeeded(&db, JobKind::ChangePlan, TENANTS).await?;
    let wall = started.elapsed();
    let on_pro: i64 = sqlx::query_scalar(
        "select count(*) from tenants t join subscription_plans p on p.id = t.plan_id where p.slug = 'pro'",
    )
    .fetch_one(&db)
    .await?;
    anyhow::ensure!(on_pro == TENANTS as i64, "{on_pro} of {TENANTS} tenants on pro");
    let service = sagas::latencies(&db, JobKind::ChangePlan).await?;
    let mut memory = vec![("tenant-api".to_owned(), processes::peak_memory(&api))];
    for (i, worker) in workers.iter().enumerate() {
        memory.push((format!("tenant-worker {}", i + 1), processes::peak_memory(worker)));
    }

    let reference = reference_run(concurrency * WORKERS).await?;
    let reference_label = format!("reference: engine in-process, concurrency {}", concurrency * WORKERS);
    sagas::print_table(
        TENANTS,
        ("API + Redis + 2 worker processes", wall, &service),
        (&reference_label, reference.0, &reference.1),
    );
    println!("all {TENANTS} plan changes answered 202 within {}; all {TENANTS} jobs succeeded", ms(accepted_after));
    println!("service settings: RUST_LOG=info LOG_FORMAT=json (as Compose), log in {}", log.display());
    processes::print_peak_memory(&memory.iter().map(|(n, b)| (n.as_str(), *b)).collect::<Vec<_>>());
    Ok(())
}

/// Provisions the tenants in-process (not timed), then runs the 100 plan-change sagas directly.
async fn reference_run(concurrency: usize) -> anyhow::Result<(Duration, crate::stats::Summary)> {
    let (ctx, _stop) = sagas::reference_context().await?;
    let basic = plans::find(&ctx.db, "basic").await?;
    let pro = plans::find(&ctx.db, "pro").await?;
    let mut tenants = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let (tenant, provision) = sagas::insert_provisioning(&ctx, basic.id, i).await?;
        let outcome = tenant_jobs::run(&ctx, JobKind::ProvisionTenant, provision).await?;
        anyhow::ensure!(outcome == tenant_jobs::Outcome::Succeeded, "reference provisioning ended {outcome:?}");
        tenants.push(tenant);
    }
    // After every account opened: the change falls inside their current periods.
    let at = chrono::Utc::now();
    let at = chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    let mut ids = Vec::with_capacity(TENANTS);
    for tenant in tenants {
        let payload =
            ChangePlanPayload { tenant_id: tenant, plan_id: pro.id, interval: Interval::Month, proration_date: at };
        let mut tx = ctx.db.begin().await?;
        ids.push(
            sagas::insert_job(&mut tx, &ctx.config, JobKind::ChangePlan, tenant, serde_json::to_value(payload)?)
                .await?,
        );
        tx.commit().await?;
    }
    sagas::run_in_process(ctx, JobKind::ChangePlan, ids, concurrency).await
}
