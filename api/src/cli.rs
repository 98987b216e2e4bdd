//! The `tenant-api` program: `tenant-api [serve | migrate | dev-token …]`.

use crate::AppState;
use crate::http::auth::{Claims, TokenVerifier};
use anyhow::Context;
use std::process::ExitCode;
use tenant_domain::telemetry::{self, shutdown_signal};
use tenant_domain::{Config, db};

const USAGE: &str = "usage: tenant-api [serve | migrate | dev-token [--role platform_admin|tenant_admin|tenant_member] [--tenant UUID] [--ttl-secs N]]";

/// The whole program, as `tenant-api`'s `main` runs it.
pub fn main_entry() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("tenant-api: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(config).await,
        Some("migrate") => migrate(&config).await,
        Some("dev-token") => dev_token(&config, &args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "tenant-api failed");
            eprintln!("tenant-api: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    db::migrate(config).await.context("running migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.migrate_on_start {
        migrate(&config).await?;
    }
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    let migrated = config.migrate_on_start;
    let state = AppState::new(config)?;
    // The migrations checked the owner already; otherwise once PostgreSQL answers (the API starts
    // without it and reports it in /health).
    let db = state.db.clone();
    if !migrated {
        tokio::spawn(async move {
            while db::check_owner(&db).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
    }
    tracing::info!(%addr, "tenant-api listening");
    crate::serve(state, listener, shutdown_signal()).await?;
    tracing::info!("tenant-api stopped");
    Ok(())
}

fn dev_token(config: &Config, args: &[String]) -> anyhow::Result<()> {
    let mut role = "platform_admin".to_owned();
    let mut tenant = None;
    let mut ttl: i64 = 24 * 3600;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--role" => role = value.clone(),
            "--tenant" => tenant = Some(value.parse().context("--tenant must be a UUID")?),
            "--ttl-secs" => ttl = value.parse().context("--ttl-secs must be a number")?,
            other => anyhow::bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    let claims = Claims {
        sub: "dev-admin".into(),
        tenant_id: tenant,
        roles: vec![role],
        exp: chrono::Utc::now().timestamp() + ttl,
    };
    println!("{}", TokenVerifier::new(config).sign(&claims)?);
    Ok(())
}
