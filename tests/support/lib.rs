#![forbid(unsafe_code)]
//! Test support: starts the real API (its `serve` function) on port 0 against a database of its
//! own and a Redis key prefix of its own, so tests run in parallel and again without cleanup.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names a database
//! whose user may create databases and roles; `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`) a Redis. `scripts/test` sets both.

pub mod http_peer;
pub mod jwks_peer;
pub mod jwt_keys;
pub mod localstripe;
pub mod pg_server;
pub mod redis_cluster;
pub mod redis_server;
pub mod s3_peer;
pub mod smtp_sink;
pub mod workers;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use std::collections::HashMap;
use std::net::SocketAddr;
use tenant_api::AppState;
use tenant_api::http::auth::{Claims, TokenVerifier};
use tenant_domain::tenants::{self, NewTenant, Tenant};
use tenant_domain::{Config, TenantId, TenantStatus, db, plans};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const SERVICE_TOKEN: &str = "test-service-token-0123456789";

pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` with its user replaced by `user` (no password: the test cluster trusts local users).
pub fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// A fresh, migrated database; databases left by runs older than two hours are dropped.
pub async fn fresh_database() -> anyhow::Result<String> {
    let admin_url = admin_database_url();
    let mut admin = PgConnection::connect(&admin_url).await.context("connecting to TEST_DATABASE_URL")?;
    let now = chrono::Utc::now().timestamp();
    let stale: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'tt\\_%'").fetch_all(&mut admin).await?;
    for name in stale {
        let born = name.split('_').nth(1).and_then(|t| t.parse::<i64>().ok());
        if born.is_some_and(|t| now - t > 7200) {
            let _ = admin.execute(format!("drop database if exists \"{name}\" with (force)").as_str()).await;
        }
    }
    // Create the shared roles up front, so parallel migrations don't race to create them.
    for role in ["tenant_app login", "tenant_platform nologin"] {
        let (name, login) = role.split_once(' ').unwrap_or((role, ""));
        let _ = admin
            .execute(
                format!(
                    "do $$ begin if not exists (select from pg_roles where rolname = '{name}') then \
                     create role {name} {login} nosuperuser nobypassrls; end if; \
                     exception when duplicate_object or unique_violation then null; end $$"
                )
                .as_str(),
            )
            .await;
    }
    let name = format!("tt_{now}_{}", Uuid::new_v4().simple());
    admin.execute(format!("create database \"{name}\"").as_str()).await?;
    admin.close().await?;
    let url = with_database(&admin_url, &name);
    let mut owner = PgConnection::connect(&url).await?;
    db::migrate_on(&mut owner).await.context("migrating the test database")?;
    owner.close().await?;
    Ok(url)
}

/// Environment for a test instance; tests may change any variable before spawning.
pub fn test_env(database_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("REDIS_URL".into(), redis_url()),
        ("REDIS_KEY_PREFIX".into(), format!("test:{}:", Uuid::new_v4().simple())),
        ("EVENTS_STREAM".into(), format!("test-events:{}", Uuid::new_v4().simple())),
        ("JWT_SECRET".into(), format!("test-jwt-secret-{}", Uuid::new_v4())),
        ("SERVICE_TOKENS".into(), format!("rotated-out-token-0123456789,{SERVICE_TOKEN}")),
        ("TENANT_DB_POOL_SIZE".into(), "10".into()),
        ("MIGRATE_ON_START".into(), "false".into()),
        ("BACKUP_ENCRYPTION_KEY".into(), random_key()),
        ("CONFIG_ENCRYPTION_KEY".into(), random_key()),
        ("BACKUP_DIR".into(), scratch_dir("backups")),
        ("MAIL_DIR".into(), scratch_dir("mail")),
        // Short timings, so recovery paths run in seconds.
        ("JOB_LEASE_SECS".into(), "2".into()),
        ("JOB_BACKOFF_BASE_MS".into(), "100".into()),
        ("JOB_BACKOFF_MAX_MS".into(), "1000".into()),
        ("QUEUE_HEARTBEAT_SECS".into(), "1".into()),
        ("QUEUE_MISSED_HEARTBEATS".into(), "2".into()),
        ("QUEUE_POLL_MS".into(), "50".into()),
        ("RECONCILE_INTERVAL_MS".into(), "300".into()),
        ("RECONCILE_STALE_MS".into(), "1500".into()),
        ("SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
        ("RUST_LOG".into(), "warn".into()),
    ])
}

fn random_key() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = Uuid::new_v4().as_bytes().iter().chain(Uuid::new_v4().as_bytes()).copied().collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A fresh directory under the system temp dir.
pub fn scratch_dir(what: &str) -> String {
    let dir = std::env::temp_dir().join("tenant-tests").join(format!("{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.to_string_lossy().into_owned()
}

/// A running API.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The environment the API was started with (workers started for it get the same).
    pub env: HashMap<String, String>,
    pub config: Config,
    pub state: AppState,
    /// The service's own platform pool on this test's database (role `tenant_platform`: every
    /// tenant's rows; see `tenant_domain::db`).
    pub db: PgPool,
    /// The owner's connection (the `DATABASE_URL` user), for what only the owner may do: DDL,
    /// the tenant schemas. It sees no tenant row (forced row-level security) unless it is a
    /// superuser, as the test cluster's `postgres` is.
    pub owner_db: PgPool,
    pub database_url: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        Self::try_spawn(customize).await.expect("test app starts")
    }

    async fn try_spawn(customize: impl FnOnce(&mut HashMap<String, String>)) -> anyhow::Result<Self> {
        let database_url = fresh_database().await?;
        let mut env = test_env(&database_url);
        customize(&mut env);
        Self::start(env).await
    }

    /// Starts an API on an existing database (a second replica, say).
    pub async fn start(env: HashMap<String, String>) -> anyhow::Result<Self> {
        let config = Config::from_lookup(|k| env.get(k).cloned())?;
        let env_copy = env.clone();
        let state = AppState::new(config.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let server_state = state.clone();
        tokio::spawn(async move {
            let _ = tenant_api::serve(server_state, listener, async move {
                let _ = rx.await;
            })
            .await;
        });
        let database_url = config.database_url.expose().clone();
        Ok(TestApp {
            addr,
            env: env_copy,
            db: db::pool(&config)?,
            owner_db: PgPool::connect_lazy(&database_url)?,
            database_url,
            config,
            state,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn token(&self, roles: &[&str], tenant: Option<TenantId>) -> String {
        self.token_expiring(roles, tenant, 3600)
    }

    pub fn token_expiring(&self, roles: &[&str], tenant: Option<TenantId>, ttl_secs: i64) -> String {
        let claims = Claims {
            sub: format!("user-{}", Uuid::new_v4().simple()),
            tenant_id: tenant.map(|t| t.0),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            exp: chrono::Utc::now().timestamp() + ttl_secs,
        };
        TokenVerifier::new(&self.config).sign(&claims).expect("sign")
    }

    pub fn admin_token(&self) -> String {
        self.token(&["platform_admin"], None)
    }

    /// Sends a request; returns the status and the JSON body (`Value::Null` if not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body read");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Inserts a tenant directly (the lifecycle jobs are not involved).
    pub async fn insert_tenant(&self, name: &str, slug: &str, plan: &str, status: TenantStatus) -> Tenant {
        let plan = plans::find(&self.db, plan).await.expect("plan exists");
        tenants::insert(
            &self.db,
            &NewTenant {
                id: TenantId::new_v7(),
                name: name.into(),
                slug: slug.into(),
                domain: Some(format!("{slug}.example.com")),
                status,
                plan_id: plan.id,
                owner_id: Uuid::new_v4(),
                owner_email: Some(format!("owner@{slug}.example.com")),
                settings: serde_json::json!({}),
                features: serde_json::json!({}),
            },
        )
        .await
        .expect("tenant inserted")
    }

    /// Inserts quota rows for `tenant` from its plan.
    pub async fn insert_quotas_from_plan(&self, tenant: &Tenant) {
        sqlx::query(
            "insert into tenant_quotas (tenant_id, resource_type, limit_value, unit, reset_period) \
             select $1, q.key, (q.value->>'limit')::bigint, q.value->>'unit', \
                    (q.value->>'resetPeriod')::quota_reset_period_enum \
             from subscription_plans p, jsonb_each(p.quotas) q where p.id = $2",
        )
        .bind(tenant.id)
        .bind(tenant.plan_id)
        .execute(&self.db)
        .await
        .expect("quotas inserted");
    }

    /// The value of a Prometheus sample in `/metrics` whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text = self.client.get(self.url("/metrics")).send().await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }
}

impl TestApp {
    /// Begins the server's graceful shutdown, as SIGTERM does for the binary.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}
