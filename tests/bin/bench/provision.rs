//! Provisioning: 100 concurrent `POST /api/v1/tenants` against the API with 2 worker processes;
//! time until all are active, create-to-active latency percentiles, jobs/s. Reference, same run:
//! the same 100 sagas run by the engine in-process with the same total concurrency, without
//! HTTP, Redis delivery or a second process — the cost of the work itself.

use crate::processes::{self, spawn_logged};
use crate::sagas;
use crate::stats::ms;
use serde_json::json;
use std::time::{Duration, Instant};
use tenant_domain::{Config, plans};
use tenant_jobs::JobKind;
use uuid::Uuid;

const TENANTS: usize = 100;
const WORKERS: usize = 2;

pub async fn run() -> anyhow::Result<()> {
    let concurrency: usize = 4;
    println!(
        "provisioning: {TENANTS} concurrent POST /api/v1/tenants, {WORKERS} tenant-worker processes × concurrency {concurrency}"
    );

    // ---- the service, as deployed: API process + worker processes
    let (_, mut env, port) = processes::api_env().await?;
    env.insert("WORKER_CONCURRENCY".into(), concurrency.to_string());
    env.insert("TENANT_DB_POOL_SIZE".into(), "20".into());
    sagas::production_timings(&mut env);
    let log = std::env::temp_dir().join(format!("tenant-bench-provision-{}.log", uuid::Uuid::new_v4().simple()));
    println!("service settings: RUST_LOG=info LOG_FORMAT=json (as Compose), log in {}", log.display());
    let _api = spawn_logged("tenant-api", &["serve"], &env, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;
    let _workers: Vec<_> =
        (0..WORKERS).map(|_| spawn_logged("tenant-worker", &[], &env, &log)).collect::<Result<_, _>>()?;
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = tenant_domain::db::pool(&config)?;
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
    sagas::wait_succeeded(&db, JobKind::ProvisionTenant, TENANTS).await?;
    let wall = started.elapsed();
    let service = sagas::latencies(&db, JobKind::ProvisionTenant).await?;
    let active: i64 = sqlx::query_scalar("select count(*) from tenants where status = 'active'").fetch_one(&db).await?;
    anyhow::ensure!(active == TENANTS as i64, "{active} of {TENANTS} tenants active");
    let mut memory = vec![("tenant-api".to_owned(), processes::peak_memory(&_api))];
    for (i, worker) in _workers.iter().enumerate() {
        memory.push((format!("tenant-worker {}", i + 1), processes::peak_memory(worker)));
    }

    // ---- reference: the same sagas, run in-process by the engine
    let reference = reference_run(concurrency * WORKERS).await?;

    let reference_label = format!("reference: engine in-process, concurrency {}", concurrency * WORKERS);
    sagas::print_table(
        TENANTS,
        ("API + Redis + 2 worker processes", wall, &service),
        (&reference_label, reference.0, &reference.1),
    );
    println!("all {TENANTS} POSTs answered 202 within {}", ms(accepted_after));
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

/// Inserts the tenants and job rows as the API would, then runs each saga directly.
async fn reference_run(concurrency: usize) -> anyhow::Result<(Duration, crate::stats::Summary)> {
    let (ctx, _stop) = sagas::reference_context().await?;
    let plan = plans::find(&ctx.db, "basic").await?;
    let mut ids = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        ids.push(sagas::insert_provisioning(&ctx, plan.id, i).await?.1);
    }
    sagas::run_in_process(ctx, JobKind::ProvisionTenant, ids, concurrency).await
}
