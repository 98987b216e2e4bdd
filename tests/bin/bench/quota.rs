//! Quota checks: `POST /internal/tenants/{id}/quota-check` with `consume:true` over 100 tenants
//! at 64 connections, with wrk, against a release `tenant-api` process started with the settings
//! Compose runs it with (`RUST_LOG=info`, `LOG_FORMAT=json`, the log written to a file) — once
//! exact, once leasing `api_calls`. In the same run, interleaved round by round: the bare
//! reference server (`tenant-bench-reference`: same route, same token check, one `EVALSHA` of the
//! same script on one multiplexed connection) and the API's own static `GET /livez`.

use crate::processes::{self, spawn, spawn_logged};
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

/// The runs of one variant: the median run (by throughput) and the spread.
struct Runs(Vec<Load>);

impl Runs {
    fn median(&self) -> Load {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        v[v.len() / 2]
    }

    fn spread(&self) -> (f64, f64) {
        let rps = self.0.iter().map(|l| l.rps);
        (rps.clone().fold(f64::INFINITY, f64::min), rps.fold(0.0, f64::max))
    }

    fn worst_p99(&self) -> f64 {
        self.0.iter().map(|l| l.p99_ms).fold(0.0, f64::max)
    }
}

pub async fn run(seconds: u64) -> anyhow::Result<()> {
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    println!(
        "quota check: {TENANTS} tenants, {CONNECTIONS} connections, wrk -t2, {seconds} s per run, {rounds} rounds \
         (variants interleaved in each round)"
    );
    let (database_url, mut env, port) = processes::api_env().await?;
    // Settings of the API under test may be varied from the bench's own environment.
    for k in ["REDIS_CONNECTION_POOL_SIZE", "QUOTA_LEASE_CHUNK"] {
        if let Ok(v) = std::env::var(k) {
            println!("{k}={v}");
            env.insert(k.into(), v);
        }
    }
    println!(
        "API settings: RUST_LOG={} LOG_FORMAT={} (as Compose), log written to a file",
        env["RUST_LOG"], env["LOG_FORMAT"]
    );
    let config = Config::from_lookup(|k| env.get(k).cloned())?;
    let db = tenant_domain::db::pool(&config)?;
    let ids = processes::seed_tenants(&db, "enterprise", TENANTS, "load", false).await?;
    let _ = database_url;
    // Far from the limit: every check is allowed and counted.
    sqlx::query("update tenant_quotas set limit_value = 1000000000000 where resource_type = 'api_calls'")
        .execute(&db)
        .await?;
    let log_dir = std::env::temp_dir().join(format!("tenant-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&log_dir)?;
    let api = KillOnDrop(spawn_logged("tenant-api", &["serve"], &env, &log_dir.join("api-exact.log"))?);
    let base = format!("http://127.0.0.1:{port}");
    processes::wait_ready(&format!("{base}/health")).await?;

    let mut leased_env = env.clone();
    let leased_port = processes::free_port()?;
    leased_env.insert("SERVICE_PORT".into(), leased_port.to_string());
    leased_env.insert("QUOTA_LEASE_RESOURCES".into(), "api_calls".into());
    leased_env.entry("QUOTA_LEASE_CHUNK".into()).or_insert_with(|| "100".into());
    let leased_api = KillOnDrop(spawn_logged("tenant-api", &["serve"], &leased_env, &log_dir.join("api-leased.log"))?);
    let leased_base = format!("http://127.0.0.1:{leased_port}");
    processes::wait_ready(&format!("{leased_base}/health")).await?;

    let mut reference_env = env.clone();
    let reference_port = processes::free_port()?;
    reference_env.insert("SERVICE_PORT".into(), reference_port.to_string());
    let reference = KillOnDrop(spawn("tenant-bench-reference", &[], &reference_env)?);
    let reference_base = format!("http://127.0.0.1:{reference_port}");
    processes::wait_ready(&format!("{reference_base}/livez")).await?;

    // Warm: each tenant's state is loaded into Redis once (the reference reads the same keys).
    let client = reqwest::Client::new();
    for b in [&base, &leased_base, &reference_base] {
        for id in &ids {
            let res = client
                .post(format!("{b}/internal/tenants/{id}/quota-check"))
                .header("x-service-token", SERVICE_TOKEN)
                .json(&json!({ "resource": "api_calls", "consume": true }))
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "warm-up check at {b} answered {}", res.status());
        }
    }

    let script = wrk_script(&ids)?;
    let (mut exact, mut leased, mut refs, mut livez) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        refs.push(run_wrk(&reference_base, &script, seconds).await?);
        exact.push(run_wrk(&base, &script, seconds).await?);
        leased.push(run_wrk(&leased_base, &script, seconds).await?);
        livez.push(wrk_get(&format!("{base}/livez"), seconds).await?);
    }
    let (exact, leased, refs, livez) = (Runs(exact), Runs(leased), Runs(refs), Runs(livez));
    let exact_memory = processes::peak_memory(&api.0);
    let leased_memory = processes::peak_memory(&leased_api.0);
    let leased_share = processes::metric(&leased_base, "tenant_quota_leased_checks_total")
        .await?
        .map_or(0.0, |n| n / (leased.0.iter().map(|l| l.rps).sum::<f64>() * seconds as f64));
    drop((api, leased_api, reference));
    let log_lines: usize = ["api-exact.log", "api-leased.log"]
        .iter()
        .map(|f| std::fs::read_to_string(log_dir.join(f)).map_or(0, |t| t.lines().count()))
        .sum();

    println!();
    println!(
        "{:<50} {:>11} {:>17} {:>10} {:>10} {:>10}",
        "median of the rounds", "requests/s", "min–max", "p50", "p99", "p99.9"
    );
    for (name, runs) in [
        ("reference: bare axum + one EVALSHA (same script)", &refs),
        ("tenant-api POST …/quota-check, exact", &exact),
        ("tenant-api POST …/quota-check, leased (chunk 100)", &leased),
        ("tenant-api GET /livez (static route)", &livez),
    ] {
        let l = runs.median();
        let (lo, hi) = runs.spread();
        println!(
            "{:<50} {:>11.0} {:>8.0}–{:<8.0} {:>7.2} ms {:>7.2} ms {:>7.2} ms{}",
            name,
            l.rps,
            lo,
            hi,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            if l.errors > 0 { format!("  ({} errors)", l.errors) } else { String::new() }
        );
    }
    let (e, l, z) = (exact.median(), leased.median(), livez.median());
    // Each round's variants ran back to back, so a round's ratio compares like with like; the
    // median of the rounds' ratios is the figure.
    let ratios = |runs: &Runs| {
        let mut v: Vec<f64> = runs.0.iter().zip(&refs.0).map(|(a, b)| a.rps / b.rps).collect();
        v.sort_by(f64::total_cmp);
        let shown = v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
        (v[v.len() / 2], shown)
    };
    let (exact_ratio, exact_rounds) = ratios(&exact);
    let (leased_ratio, leased_rounds) = ratios(&leased);
    println!();
    println!("exact / reference throughput:  {exact_ratio:.2}  (bar: ≥ 0.85; rounds {exact_rounds})");
    println!(
        "leased / reference throughput: {leased_ratio:.2}  (bar: ≥ 1.30; rounds {leased_rounds}); {:.0} % of checks served in-process",
        leased_share * 100.0
    );
    println!("exact / static route:          {:.2}", e.rps / z.rps);
    println!(
        "p99 exact {:.2} ms, leased {:.2} ms  (bar: ≤ 5 ms; worst round {:.2} / {:.2} ms)",
        e.p99_ms,
        l.p99_ms,
        exact.worst_p99(),
        leased.worst_p99()
    );
    println!("access-log lines written by the two API processes during the runs: {log_lines}");
    processes::print_peak_memory(&[("tenant-api exact", exact_memory), ("tenant-api leased", leased_memory)]);
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
    let _ = std::fs::remove_dir_all(&log_dir);
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
