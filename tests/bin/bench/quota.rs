//! Quota checks: `POST /internal/tenants/{id}/quota-check` with `consume:true` over 100 tenants
//! at 64 connections, with wrk, against a release `tenant-api` process; in the same run and with
//! the same settings the same server's cheapest route (`GET /livez`, touches nothing) and Redis
//! itself (`redis-benchmark` running the same EVALSHA).

use crate::processes::{self, spawn};
use serde_json::json;
use tenant_domain::{Config, TenantId, quota};
use tenant_tests::SERVICE_TOKEN;
use tokio::process::Command;

const TENANTS: usize = 100;
const CONNECTIONS: usize = 64;

/// One load run's figures.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    println!("quota check: {TENANTS} tenants, {CONNECTIONS} connections, {seconds} s per run, wrk -t2");
    let (database_url, mut env, port) = processes::api_env().await?;
    // Settings of the API under test may be varied from the bench's own environment.
    for k in ["REDIS_CONNECTION_POOL_SIZE", "QUOTA_LEASE_CHUNK"] {
        if let Ok(v) = std::env::var(k) {
            println!("{k}={v}");
            env.insert(k.into(), v);
        }
    }
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = sqlx::PgPool::connect(&database_url).await?;
    let ids = processes::seed_tenants(&db, "enterprise", TENANTS, "load", false).await?;
    // Far from the limit: every check is allowed and counted.
    sqlx::query("update tenant_quotas set limit_value = 1000000000000 where resource_type = 'api_calls'")
        .execute(&db)
        .await?;
    let _api = spawn("tenant-api", &["serve"], &env)?;
    let _api = KillOnDrop(_api);
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;
    // Warm: each tenant's state is loaded into Redis once.
    let client = reqwest::Client::new();
    for id in &ids {
        let res = client
            .post(format!("{base}/internal/tenants/{id}/quota-check"))
            .header("x-service-token", SERVICE_TOKEN)
            .json(&json!({ "resource": "api_calls", "consume": true }))
            .send()
            .await?;
        anyhow::ensure!(res.status().is_success(), "warm-up check answered {}", res.status());
    }

    let script = wrk_script(&ids)?;
    let quota = wrk(&base, &script, seconds).await?;
    let livez = wrk_get(&format!("{base}/livez"), seconds).await?;
    let redis = redis_benchmark(&config, ids[0], seconds).await?;
    let exact_memory = processes::peak_memory(&_api.0);
    drop(_api);

    // The stretch: the same load on an API process that leases api_calls budget.
    let mut leased_env = env.clone();
    let leased_port = processes::free_port()?;
    leased_env.insert("SERVICE_PORT".into(), leased_port.to_string());
    leased_env.insert("QUOTA_LEASE_RESOURCES".into(), "api_calls".into());
    leased_env.insert("QUOTA_LEASE_CHUNK".into(), "100".into());
    let _leased_api = spawn("tenant-api", &["serve"], &leased_env)?;
    let leased_base = format!("http://127.0.0.1:{leased_port}");
    processes::wait_ready(&format!("{leased_base}/health")).await?;
    let leased = wrk(&leased_base, &script, seconds).await?;
    let leased_memory = processes::peak_memory(&_leased_api);
    let leased_share = processes::metric(&leased_base, "tenant_quota_leased_checks_total")
        .await?
        .map_or(0.0, |n| n / (leased.rps * seconds as f64));

    println!();
    println!("{:<44} {:>12} {:>10} {:>10} {:>10}", "", "requests/s", "p50", "p99", "p99.9");
    for (name, l) in [
        ("POST /internal/tenants/{id}/quota-check", quota),
        ("  the same, api_calls leased (chunks of 100)", leased),
        ("GET /livez (static route, reference)", livez),
        ("redis-benchmark EVALSHA (same script)", redis),
    ] {
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
    println!();
    println!("quota-check / static route throughput: {:.2}  (bar: ≥ 0.40)", quota.rps / livez.rps);
    println!("quota-check / redis EVALSHA throughput: {:.2}", quota.rps / redis.rps);
    println!(
        "leased quota-check / static route throughput: {:.2}  (stretch: ≥ 0.80); {:.0} % of checks served in-process",
        leased.rps / livez.rps,
        leased_share * 100.0
    );
    println!("quota-check p99: {:.2} ms  (bar: ≤ 10 ms)", quota.p99_ms);
    processes::print_peak_memory(&[("tenant-api", exact_memory), ("leased tenant-api", leased_memory)]);
    let counted: i64 = {
        let engine = tenant_domain::quota::engine::QuotaEngine::connect(&config)?;
        let now = chrono::Utc::now();
        let mut total = 0;
        for id in &ids {
            let used = engine.usage(*id, &[("api_calls".into(), quota::Period::Daily, now)]).await?;
            total += used.first().copied().unwrap_or(0);
        }
        total
    };
    println!("api_calls counted in Redis over all tenants: {counted}");
    Ok(())
}

fn wrk_script(ids: &[TenantId]) -> anyhow::Result<tempfile_path::Path> {
    let paths: Vec<String> = ids.iter().map(|id| format!("/internal/tenants/{id}/quota-check")).collect();
    cycling_script(
        "POST",
        &[("Content-Type", "application/json"), ("X-Service-Token", SERVICE_TOKEN)],
        Some(r#"{"resource":"api_calls","consume":true}"#),
        &paths,
    )
}

/// A wrk script cycling through `paths`. The requests are formatted once per wrk thread (in
/// `init`), so the load generator spends no more per request than with its built-in request and
/// leaves the cores to the server under test as fairly as the static reference run does.
pub fn cycling_script(
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    paths: &[String],
) -> anyhow::Result<tempfile_path::Path> {
    let list = paths.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>().join(",");
    let headers = headers.iter().map(|(k, v)| format!("wrk.headers[{k:?}] = {v:?}\n")).collect::<String>();
    let body = body.map_or_else(String::new, |b| format!("wrk.body = {b:?}\n"));
    tempfile_path::write(&format!(
        r#"local paths = {{{list}}}
local requests, n, i = {{}}, 0, 0
wrk.method = "{method}"
{headers}{body}init = function(args)
  for k, path in ipairs(paths) do requests[k] = wrk.format(nil, path) end
  n = #requests
end
request = function()
  i = i + 1
  if i > n then i = 1 end
  return requests[i]
end
{DONE}"#
    ))
}

pub const DONE: &str = r#"done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %f %f %f %f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, errors))
end"#;

pub async fn wrk_get(url: &str, seconds: u64) -> anyhow::Result<Load> {
    let script = tempfile_path::write(DONE)?;
    run_wrk(url, &script, seconds).await
}

async fn wrk(base: &str, script: &tempfile_path::Path, seconds: u64) -> anyhow::Result<Load> {
    run_wrk(base, script, seconds).await
}

pub async fn run_wrk(url: &str, script: &tempfile_path::Path, seconds: u64) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--timeout", "5s", "-s"])
        .arg(&script.0)
        .arg(url)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("wrk: {e} (install it: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .ok_or_else(|| anyhow::anyhow!("wrk printed no result:\n{text}"))?;
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    anyhow::ensure!(v.len() == 5, "bad wrk result line {line}");
    Ok(Load { rps: v[0], p50_ms: v[1], p99_ms: v[2], p999_ms: v[3], errors: v[4] as u64 })
}

/// `redis-benchmark` running the quota script itself for one tenant, at the same concurrency.
async fn redis_benchmark(config: &Config, tenant: TenantId, seconds: u64) -> anyhow::Result<Load> {
    let url = config.redis_url.expose().trim_start_matches("redis://").trim_end_matches('/').to_owned();
    let (host, port) =
        url.rsplit_once(':').map_or((url.as_str(), "6379"), |(h, p)| (h, p.split('/').next().unwrap_or(p)));
    let mut conn = redis::Client::open(config.redis_url.expose().as_str())?.get_multiplexed_async_connection().await?;
    let source = tenant_domain::quota::engine::script_source(config);
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(source).query_async(&mut conn).await?;
    let now = chrono::Utc::now();
    let month = quota::window(quota::Period::Monthly, now).ok_or_else(|| anyhow::anyhow!("window"))?;
    let args: Vec<String> = vec![
        format!("{}t:{tenant}:", config.redis_key_prefix),
        "api_calls".into(),
        "1".into(),
        "consume".into(),
        now.timestamp().to_string(),
        month.start.timestamp().to_string(),
        month.end.timestamp().to_string(),
    ];
    // Calibrate the request count to about `seconds` of load.
    let requests = 40_000 * seconds;
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-c",
            &CONNECTIONS.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
            "EVALSHA",
            &sha,
            "0",
        ])
        .args(&args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("redis-benchmark: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text.lines().last().ok_or_else(|| anyhow::anyhow!("redis-benchmark printed nothing: {text}"))?;
    let cols: Vec<f64> = row.split(',').skip(1).filter_map(|c| c.trim_matches('"').parse().ok()).collect();
    anyhow::ensure!(cols.len() >= 7, "unexpected redis-benchmark output: {text}");
    Ok(Load { rps: cols[0], p50_ms: cols[3], p99_ms: cols[5], p999_ms: cols[6], errors: 0 })
}

/// Stops a process when dropped (tokio's `kill_on_drop` only acts when the handle is dropped).
struct KillOnDrop(tokio::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Temporary script files.
pub mod tempfile_path {
    pub struct Path(pub std::path::PathBuf);

    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(content: &str) -> anyhow::Result<Path> {
        let path = std::env::temp_dir().join(format!("tenant-bench-{}.lua", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, content)?;
        Ok(Path(path))
    }
}
