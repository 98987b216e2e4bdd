//! Context reads: `GET /internal/tenants/{id}/context` over 100 tenants at 64 connections, with
//! wrk, against a release `tenant-api` process — served from the two-level cache — and, in the
//! same run with the same settings, the same server's static `GET /livez`.

use crate::processes::{self, spawn_logged};
use crate::quota::{Load, cycling_script, run_wrk, wrk_get};
use tenant_tests::SERVICE_TOKEN;

const TENANTS: usize = 100;

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    println!("context read: {TENANTS} tenants, 64 connections, {seconds} s per run, wrk -t2");
    let (_, env, port) = processes::api_env().await?;
    let config = tenant_domain::Config::from_lookup(|k| env.get(k).cloned())?;
    let db = tenant_domain::db::pool(&config)?;
    let ids = processes::seed_tenants(&db, "pro", TENANTS, "ctx", true).await?;
    let log = std::env::temp_dir().join(format!("tenant-bench-context-{}.log", uuid::Uuid::new_v4().simple()));
    println!(
        "API settings: RUST_LOG={} LOG_FORMAT={} (as Compose), log in {}",
        env["RUST_LOG"],
        env["LOG_FORMAT"],
        log.display()
    );
    let _api = spawn_logged("tenant-api", &["serve"], &env, &log)?;
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;

    let paths: Vec<String> = ids.iter().map(|id| format!("/internal/tenants/{id}/context")).collect();
    // Warm: each context is built from PostgreSQL once, so the run measures the steady state.
    let client = reqwest::Client::new();
    for path in &paths {
        let res = client.get(format!("{base}{path}")).header("x-service-token", SERVICE_TOKEN).send().await?;
        anyhow::ensure!(res.status().is_success(), "warm-up read answered {}", res.status());
    }
    let script = cycling_script("GET", &[("X-Service-Token", SERVICE_TOKEN)], None, &paths)?;
    // Rounds of the two back to back; each round's ratio compares like with like.
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let mut runs: Vec<(Load, Load)> = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let context = run_wrk(&base, &script, seconds).await?;
        let livez = wrk_get(&format!("{base}/livez"), seconds).await?;
        runs.push((context, livez));
    }
    let hit_rate = processes::metric(&base, "tenant_config_cache_hit_rate")
        .await?
        .map_or_else(|| "?".to_owned(), |r| format!("{r:.4}"));
    let mut ratios: Vec<f64> = runs.iter().map(|(c, l)| c.rps / l.rps).collect();
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    // The round whose ratio is the median is the one shown.
    let (context, livez) = runs.iter().copied().find(|(c, l)| c.rps / l.rps == median).unwrap_or(runs[0]);

    println!();
    println!("{rounds} rounds; the round with the median ratio:");
    println!("{:<44} {:>12} {:>10} {:>10} {:>10}", "", "requests/s", "p50", "p99", "p99.9");
    for (name, l) in [("GET /internal/tenants/{id}/context", context), ("GET /livez (static route, reference)", livez)]
    {
        print_row(name, l);
    }
    println!();
    let shown = ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" ");
    println!("context / static route throughput: {median:.2}  (bar: ≥ 0.70; rounds {shown})");
    println!("cache hit rate after the run: {hit_rate}");
    processes::print_peak_memory(&[("tenant-api", processes::peak_memory(&_api))]);
    Ok(())
}

fn print_row(name: &str, l: Load) {
    println!(
        "{:<44} {:>12.0} {:>7.2} ms {:>7.2} ms {:>7.2} ms{}",
        name,
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        if l.errors > 0 { format!("  ({} errors)", l.errors) } else { String::new() }
    );
}
