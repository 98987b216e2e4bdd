//! The release binaries under test, started as processes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// `name` next to this executable (scripts/bench builds them all into one target directory).
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?.parent().map(PathBuf::from).ok_or_else(|| anyhow::anyhow!("no exe dir"))?;
    let path = dir.join(name);
    anyhow::ensure!(path.exists(), "{} not built (scripts/bench builds it)", path.display());
    Ok(path)
}

pub fn spawn(name: &str, args: &[&str], env: &HashMap<String, String>) -> anyhow::Result<Child> {
    start(name, args, env, Stdio::null(), Stdio::inherit())
}

/// Like [`spawn`], with the process's log — stdout, where the service writes it, and stderr —
/// appended to `log` instead of going to the terminal.
pub fn spawn_logged(
    name: &str,
    args: &[&str],
    env: &HashMap<String, String>,
    log: &std::path::Path,
) -> anyhow::Result<Child> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    start(name, args, env, Stdio::from(file.try_clone()?), Stdio::from(file))
}

fn start(name: &str, args: &[&str], env: &HashMap<String, String>, out: Stdio, err: Stdio) -> anyhow::Result<Child> {
    Ok(Command::new(binary(name)?)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()?)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `GET url` answers 200.
pub async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} did not become ready")
}

/// A fresh database, and the environment of an API process for it on a free local port, with
/// Compose's log settings.
pub async fn api_env() -> anyhow::Result<(String, HashMap<String, String>, u16)> {
    let database_url = tenant_tests::fresh_database().await?;
    let mut env = tenant_tests::test_env(&database_url);
    let port = free_port()?;
    for (k, v) in [
        ("SERVICE_HOST", "127.0.0.1".to_string()),
        ("SERVICE_PORT", port.to_string()),
        // What Compose runs the service with (docker-compose.yml): the figures are what users get.
        ("RUST_LOG", "info".to_string()),
        ("LOG_FORMAT", "json".to_string()),
    ] {
        env.insert(k.into(), v);
    }
    Ok((database_url, env, port))
}

/// `n` active tenants on `plan` with its quotas (and, with `with_config`, the default
/// configuration rows), inserted directly.
pub async fn seed_tenants(
    db: &sqlx::PgPool,
    plan: &str,
    n: usize,
    label: &str,
    with_config: bool,
) -> anyhow::Result<Vec<tenant_domain::TenantId>> {
    use tenant_domain::{TenantId, TenantStatus, plans, quota, tenant_config, tenants};
    let plan = plans::find(db, plan).await?;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let slug = format!("{label}-{i:03}");
        let tenant = tenants::insert(
            db,
            &tenants::NewTenant {
                id: TenantId::new_v7(),
                name: format!("{label} {i}"),
                domain: Some(format!("{slug}.example.com")),
                slug,
                status: TenantStatus::Active,
                plan_id: plan.id,
                owner_id: uuid::Uuid::new_v4(),
                owner_email: None,
                settings: serde_json::json!({}),
                features: serde_json::json!({}),
            },
        )
        .await?;
        quota::store::insert_from_plan(db, tenant.id, &plan).await?;
        if with_config {
            tenant_config::insert_defaults(db, tenant.id).await?;
        }
        ids.push(tenant.id);
    }
    Ok(ids)
}

/// The peak resident memory (`VmHWM`) of a running process, in bytes.
pub fn peak_memory(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>();
    kb.ok().map(|kb| kb * 1024)
}

/// Prints the processes' peak memory against the SPEC's budget of 1.2 GB each.
pub fn print_peak_memory(processes: &[(&str, Option<u64>)]) {
    let shown: Vec<String> = processes
        .iter()
        .map(|(name, bytes)| match bytes {
            Some(b) => format!("{name} {:.1} MiB", *b as f64 / (1024.0 * 1024.0)),
            None => format!("{name} ?"),
        })
        .collect();
    println!("peak resident memory: {}  (budget: 1.2 GB each)", shown.join(", "));
}

/// The value of the sample `name` (no labels) in `{base}/metrics`.
pub async fn metric(base: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let text = reqwest::get(format!("{base}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok()))
}
