//! Configuration from the environment (a `.env` file is honoured), loaded once at start and
//! validated: a bad value fails start with one line naming the variable. Secret values are kept
//! in [`Secret`] so `Debug` can't print them, and are never echoed in an error.

mod auth;
mod quota_redis;
mod redis_tls;

pub use auth::{DEFAULT_SERVICE_NAME, JwksSettings, JwtSettings, PublicKey, ServiceToken};
pub use quota_redis::QuotaRedis;
pub use redis_tls::RedisTls;

use crate::secret::Secret;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service_name: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub database_url: Secret<String>,
    pub db_pool_size: u32,
    pub db_acquire_timeout: Duration,
    pub redis_url: Secret<String>,
    /// Prefix of every Redis key this service writes, so several deployments (or tests) can
    /// share one Redis.
    pub redis_key_prefix: String,
    pub redis_response_timeout: Duration,
    /// Certificates for `rediss://` connections (`REDIS_TLS_*`).
    pub redis_tls: RedisTls,
    pub tenant_config_ttl: Duration,
    /// The HS256 secret: signs dev tokens, and verifies tokens unless `JWT_HS256_ENABLED=false`.
    pub jwt_secret: Secret<String>,
    /// Public keys, JWKS, issuer and audience of bearer tokens.
    pub jwt: JwtSettings,
    /// The tokens accepted in `X-Service-Token`, each with the name of the service it identifies.
    pub service_tokens: Vec<ServiceToken>,
    pub log_format: LogFormat,
    pub migrate_on_start: bool,
    pub prometheus_enabled: bool,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// A hot-path request slower than this is logged (at warn) although its access log is at
    /// debug level.
    pub slow_request: Duration,
    pub shutdown_timeout: Duration,
    pub jobs: JobSettings,
    pub mail: MailSettings,
    pub backup: BackupSettings,
    pub quota: QuotaSettings,
    /// The Redis Stream events are published to (`tenant-events`).
    pub events_stream: String,
    pub events_stream_maxlen: u64,
    /// `CONFIG_ENCRYPTION_KEY` first (it encrypts), then `CONFIG_ENCRYPTION_OLD_KEYS`.
    pub config_keys: Vec<(String, Secret<[u8; 32]>)>,
    pub region: String,
    pub cache: CacheSettings,
    pub outbound: OutboundSettings,
    /// Where `tenant-worker` serves its `/metrics` and `/health` (unset: not served).
    pub worker_metrics_port: Option<u16>,
    pub billing: BillingSettings,
    pub retention: RetentionSettings,
}

/// How long finished bookkeeping is kept; a scheduled `retention` job deletes what is older.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// How often the workers run it (one job per tick across replicas).
    pub interval: Duration,
    /// Stored answers of `Idempotency-Key` (the contract promises 24 h).
    pub idempotency: Duration,
    /// Outbox events already published to the stream.
    pub published_events: Duration,
    /// Finished periodic and delivery jobs (`quota_rollup`, `billing_cycle`, `deliver_event`,
    /// `retention`).
    pub periodic_jobs: Duration,
    /// Finished tenant jobs (provisioning, deletion, restore, plan changes): the tenant's history.
    pub tenant_jobs: Duration,
    /// How long Redis keeps a deleted (or failed) tenant's quota state, which answers its checks
    /// with `TENANT_NOT_ACTIVE` without asking PostgreSQL.
    pub tombstone: Duration,
    /// Rows deleted per statement, so no delete holds locks for long.
    pub batch: i64,
}

/// Billing: the provider, the billing cycle, overage billing and dunning.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// Stripe when `STRIPE_SECRET_KEY` is set; local billing otherwise.
    pub stripe: Option<StripeSettings>,
    /// Verifies `Stripe-Signature` on webhooks (`STRIPE_WEBHOOK_SECRET`); unset: webhooks are refused.
    pub webhook_secret: Option<Secret<String>>,
    /// Webhook timestamps older (or newer) than this are refused.
    pub webhook_tolerance: Duration,
    /// Day of the month (1–28, UTC) new accounts' periods are anchored on.
    pub cycle_day: u32,
    /// Whether period close bills usage beyond the limits (`USAGE_BILLING_ENABLED`).
    pub usage_billing: bool,
    /// How long an account may stay unpaid after a failed payment before its tenant is suspended.
    pub grace: Duration,
    /// How often the workers look for periods to close and accounts past their grace.
    pub close_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub secret_key: Secret<String>,
    /// `STRIPE_API_BASE`: another Stripe-compatible endpoint (a local fake in tests).
    pub api_base: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// How long an API replica keeps a tenant context in memory (invalidations drop it sooner).
    pub local_ttl: Duration,
    pub local_capacity: u64,
}

/// Calls to the platform's audit and notification services, made by jobs.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    pub audit_url: Option<String>,
    pub notification_url: Option<String>,
    /// Sent as `X-Service-Token`; defaults to the first of `SERVICE_TOKENS`.
    pub token: Secret<String>,
    pub timeout: Duration,
    pub outbox_poll: Duration,
}

#[derive(Debug, Clone)]
pub struct QuotaSettings {
    /// Where the counters live (`QUOTA_REDIS_URL`): `REDIS_URL`, another Redis or a Redis Cluster.
    pub redis: QuotaRedis,
    /// Redis connections the quota engine spreads its calls over.
    pub connections: usize,
    /// A quota call waiting longer on Redis answers 503 (or allows, for fail-open resources).
    pub timeout: Duration,
    /// Resources allowed (and flagged as degraded) while Redis is unreachable.
    pub fail_open: Vec<String>,
    pub rollup_interval: Duration,
    /// How long a window's counters outlive the window, so a late rollup can still read them.
    pub window_grace: Duration,
    /// Counter resources whose consumes may be served from leased budget (see `quota::lease`).
    pub lease_resources: Vec<String>,
    pub lease_chunk: i64,
    pub lease_ttl: Duration,
}

/// How jobs are delivered, leased, retried and reconciled.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Jobs of one kind a worker process runs at once.
    pub concurrency: usize,
    /// Attempts before a transient failure counts as permanent (and the saga compensates).
    pub max_attempts: i32,
    /// How long a worker's claim on a job row lasts without renewal.
    pub lease: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// apalis-redis heartbeat; a worker silent for `heartbeat × missed_heartbeats` has its
    /// deliveries handed to others.
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    /// How often an idle worker polls Redis for new deliveries.
    pub poll_interval: Duration,
    pub reconcile_interval: Duration,
    /// A queued job whose delivery Redis no longer holds is re-pushed once it is this old.
    pub reconcile_stale_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    None,
    StartTls,
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `None`: mails are written as `.eml` files under `dir` instead of being sent.
    pub smtp: Option<SmtpSettings>,
    pub from: String,
    pub dir: String,
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// Local directory of the backup store (when no S3 bucket is configured).
    pub dir: String,
    /// S3-compatible bucket (the worker is built with the `s3` feature).
    pub s3_bucket: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Credentials for the bucket; when unset, the usual `AWS_*` variables (and instance
    /// credentials) apply.
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<Secret<String>>,
    /// AES-256-GCM key of the archives.
    pub key: Secret<[u8; 32]>,
    /// Stored with every archive, so keys can rotate.
    pub key_id: String,
}

/// A configuration variable that is missing or malformed.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl Config {
    /// Reads the process environment, after loading `.env` if there is one.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests can build one without touching the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let service_tokens = auth::service_tokens(&env)?;
        let jwt_secret = env.required_secret("JWT_SECRET")?;
        if jwt_secret.expose().len() < 32 {
            return Err(ConfigError::new("JWT_SECRET", "must be at least 32 characters"));
        }
        let jwt = auth::jwt_settings(&env)?;
        let db_pool_size: u32 = env.parse_in("TENANT_DB_POOL_SIZE", 20, 1..=1000)?;
        let db_max: u32 = env.parse_in("TENANT_DB_MAX_CONNECTIONS", 50, 1..=10_000)?;
        if db_pool_size > db_max {
            return Err(ConfigError::new(
                "TENANT_DB_POOL_SIZE",
                format!("{db_pool_size} exceeds TENANT_DB_MAX_CONNECTIONS ({db_max})"),
            ));
        }
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            None | Some("pretty") | Some("text") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new("LOG_FORMAT", format!("expected `json` or `pretty`, got {other:?}")));
            }
        };
        let database_url = env.required_secret("DATABASE_URL")?;
        if !database_url.expose().starts_with("postgres://") && !database_url.expose().starts_with("postgresql://") {
            return Err(ConfigError::new("DATABASE_URL", "must be a postgres:// or postgresql:// URL"));
        }
        let redis_url = env.required_secret("REDIS_URL")?;
        if !redis_url.expose().starts_with("redis://") && !redis_url.expose().starts_with("rediss://") {
            return Err(ConfigError::new("REDIS_URL", "must be a redis:// or rediss:// URL"));
        }
        let redis_key_prefix = env.get("REDIS_KEY_PREFIX").unwrap_or_else(|| "tenant:".into());
        let quota_redis_url = env.get("QUOTA_REDIS_URL");
        let quota_redis = quota_redis::parse(quota_redis_url.as_deref(), redis_url.expose(), &redis_key_prefix)?;
        let redis_tls = redis_tls::parse(&env, &[redis_url.expose(), quota_redis_url.as_deref().unwrap_or_default()])?;
        if let Some(tz) = env.get("USAGE_CALCULATION_TIMEZONE")
            && tz != "UTC"
        {
            return Err(ConfigError::new("USAGE_CALCULATION_TIMEZONE", format!("only UTC is supported, got {tz:?}")));
        }
        let outbound_token =
            env.get("OUTBOUND_SERVICE_TOKEN").map(Secret::new).unwrap_or_else(|| service_tokens[0].token.clone());
        Ok(Config {
            service_name: env.get("SERVICE_NAME").unwrap_or_else(|| "tenant-management-service".into()),
            environment: env.get("APP_ENV").or_else(|| env.get("NODE_ENV")).unwrap_or_else(|| "development".into()),
            host: env.get("SERVICE_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: env.parse_in("SERVICE_PORT", 3004, 0..=65535)?,
            database_url,
            db_pool_size,
            db_acquire_timeout: Duration::from_millis(env.parse_in("TENANT_DB_TIMEOUT", 2000, 1..=600_000)?),
            redis_url,
            redis_key_prefix,
            redis_response_timeout: Duration::from_millis(env.parse_in(
                "REDIS_RESPONSE_TIMEOUT_MS",
                2000,
                1..=600_000,
            )?),
            redis_tls,
            tenant_config_ttl: Duration::from_secs(env.parse_in("REDIS_TENANT_CONFIG_TTL", 1800, 1..=31_536_000)?),
            jwt_secret,
            jwt,
            service_tokens,
            log_format,
            migrate_on_start: env.parse_bool("MIGRATE_ON_START", true)?,
            prometheus_enabled: env.parse_bool("PROMETHEUS_ENABLED", true)?,
            body_limit_bytes: 1024 * 1024,
            request_timeout: Duration::from_millis(env.parse_in("HTTP_REQUEST_TIMEOUT_MS", 30_000, 1..=600_000)?),
            slow_request: Duration::from_millis(env.parse_in("HTTP_SLOW_REQUEST_MS", 100, 1..=600_000)?),
            shutdown_timeout: Duration::from_secs(env.parse_in("SHUTDOWN_TIMEOUT_SECS", 30, 0..=3600)?),
            jobs: JobSettings {
                concurrency: env.parse_in("WORKER_CONCURRENCY", 4, 1..=256)?,
                max_attempts: env.parse_in("JOB_MAX_ATTEMPTS", 8, 1..=100)?,
                lease: Duration::from_secs(env.parse_in("JOB_LEASE_SECS", 30, 2..=3600)?),
                backoff_base: Duration::from_millis(env.parse_in("JOB_BACKOFF_BASE_MS", 1000, 1..=3_600_000)?),
                backoff_max: Duration::from_millis(env.parse_in("JOB_BACKOFF_MAX_MS", 60_000, 1..=86_400_000)?),
                heartbeat: Duration::from_secs(env.parse_in("QUEUE_HEARTBEAT_SECS", 5, 1..=300)?),
                missed_heartbeats: env.parse_in("QUEUE_MISSED_HEARTBEATS", 3, 1..=100)?,
                poll_interval: Duration::from_millis(env.parse_in("QUEUE_POLL_MS", 200, 10..=60_000)?),
                reconcile_interval: Duration::from_millis(env.parse_in(
                    "RECONCILE_INTERVAL_MS",
                    10_000,
                    100..=3_600_000,
                )?),
                reconcile_stale_after: Duration::from_millis(env.parse_in(
                    "RECONCILE_STALE_MS",
                    30_000,
                    100..=86_400_000,
                )?),
            },
            mail: MailSettings {
                smtp: match env.get("SMTP_HOST") {
                    None => None,
                    Some(host) => Some(SmtpSettings {
                        host,
                        port: env.parse_in("SMTP_PORT", 587, 1..=65535)?,
                        tls: match env.get("SMTP_TLS").as_deref() {
                            None | Some("starttls") => SmtpTls::StartTls,
                            Some("tls") => SmtpTls::Tls,
                            Some("none") => SmtpTls::None,
                            Some(other) => {
                                return Err(ConfigError::new(
                                    "SMTP_TLS",
                                    format!("expected starttls, tls or none, got {other:?}"),
                                ));
                            }
                        },
                        username: env.get("SMTP_USERNAME"),
                        password: env.get("SMTP_PASSWORD").map(Secret::new),
                    }),
                },
                from: env.get("SMTP_FROM").unwrap_or_else(|| "Tenant Service <no-reply@tenant-service.local>".into()),
                dir: env.get("MAIL_DIR").unwrap_or_else(|| "data/mail".into()),
            },
            quota: QuotaSettings {
                redis: quota_redis,
                connections: env.parse_in("REDIS_CONNECTION_POOL_SIZE", 1, 1..=64)?,
                timeout: Duration::from_millis(env.parse_in("QUOTA_TIMEOUT_MS", 500, 1..=60_000)?),
                fail_open: env.list("QUOTA_FAIL_OPEN", crate::quota::Resource::ALL.map(|r| r.as_str()).as_slice())?,
                rollup_interval: Duration::from_secs(env.parse_in("ROLLUP_INTERVAL_SECS", 300, 1..=86_400)?),
                window_grace: Duration::from_secs(7200),
                lease_resources: env.list(
                    "QUOTA_LEASE_RESOURCES",
                    &["api_calls", "bandwidth", "compute_hours", "file_uploads", "email_sends"],
                )?,
                lease_chunk: env.parse_in("QUOTA_LEASE_CHUNK", 100, 1..=1_000_000)?,
                lease_ttl: Duration::from_millis(env.parse_in("QUOTA_LEASE_MS", 1000, 10..=60_000)?),
            },
            config_keys: {
                let mut keys = vec![(
                    env.get("CONFIG_ENCRYPTION_KEY_ID").unwrap_or_else(|| "k1".into()),
                    env.key32("CONFIG_ENCRYPTION_KEY")?,
                )];
                for item in env
                    .get("CONFIG_ENCRYPTION_OLD_KEYS")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|i| !i.trim().is_empty())
                {
                    let (id, key) = item.trim().split_once(':').ok_or_else(|| {
                        ConfigError::new("CONFIG_ENCRYPTION_OLD_KEYS", "expected comma-separated <key id>:<base64 key>")
                    })?;
                    keys.push((id.to_owned(), decode_key32("CONFIG_ENCRYPTION_OLD_KEYS", key)?));
                }
                keys
            },
            region: env.get("REGION").unwrap_or_else(|| "local".into()),
            worker_metrics_port: match env.get("WORKER_METRICS_PORT") {
                None => None,
                Some(_) => Some(env.parse_in("WORKER_METRICS_PORT", 9465, 1..=65535)?),
            },
            cache: CacheSettings {
                local_ttl: Duration::from_secs(env.parse_in("CACHE_LOCAL_TTL_SECS", 300, 1..=86_400)?),
                local_capacity: env.parse_in("CACHE_LOCAL_CAPACITY", 10_000, 10..=10_000_000)?,
            },
            outbound: OutboundSettings {
                audit_url: env.url("AUDIT_SERVICE_URL")?,
                notification_url: env.url("NOTIFICATION_SERVICE_URL")?,
                token: outbound_token,
                timeout: Duration::from_millis(env.parse_in("INTERNAL_API_TIMEOUT", 5000, 1..=600_000)?),
                outbox_poll: Duration::from_millis(env.parse_in("OUTBOX_POLL_MS", 200, 10..=60_000)?),
            },
            events_stream: env.get("EVENTS_STREAM").unwrap_or_else(|| "tenant-events".into()),
            events_stream_maxlen: env.parse_in("EVENTS_STREAM_MAXLEN", 1_000_000, 1000..=1_000_000_000)?,
            retention: RetentionSettings {
                interval: Duration::from_secs(env.parse_in("RETENTION_INTERVAL_SECS", 3600, 1..=86_400)?),
                idempotency: Duration::from_secs(3600 * env.parse_in("RETENTION_IDEMPOTENCY_HOURS", 24u64, 24..=8760)?),
                published_events: Duration::from_secs(86_400 * env.parse_in("RETENTION_EVENTS_DAYS", 7u64, 1..=3650)?),
                periodic_jobs: Duration::from_secs(
                    86_400 * env.parse_in("RETENTION_PERIODIC_JOBS_DAYS", 7u64, 1..=3650)?,
                ),
                tenant_jobs: Duration::from_secs(
                    86_400 * env.parse_in("RETENTION_TENANT_JOBS_DAYS", 365u64, 1..=36_500)?,
                ),
                tombstone: Duration::from_secs(env.parse_in("TENANT_TOMBSTONE_TTL_SECS", 86_400, 60..=31_536_000)?),
                batch: env.parse_in("RETENTION_BATCH", 1000, 10..=100_000)?,
            },
            billing: BillingSettings {
                stripe: match env.get("STRIPE_SECRET_KEY") {
                    None => None,
                    Some(key) => {
                        Some(StripeSettings { secret_key: Secret::new(key), api_base: env.url("STRIPE_API_BASE")? })
                    }
                },
                webhook_secret: env.get("STRIPE_WEBHOOK_SECRET").map(Secret::new),
                webhook_tolerance: Duration::from_secs(300),
                cycle_day: env.parse_in("BILLING_CYCLE_DAY", 1, 1..=28)?,
                usage_billing: env.parse_bool("USAGE_BILLING_ENABLED", true)?,
                grace: Duration::from_secs(86_400 * env.parse_in("BILLING_GRACE_DAYS", 7u64, 0..=365)?),
                close_interval: Duration::from_secs(env.parse_in("BILLING_CLOSE_INTERVAL_SECS", 3600, 1..=86_400)?),
            },
            backup: BackupSettings {
                dir: env.get("BACKUP_DIR").unwrap_or_else(|| "data/backups".into()),
                s3_bucket: env.get("BACKUP_S3_BUCKET"),
                s3_endpoint: env.get("BACKUP_S3_ENDPOINT"),
                s3_region: env.get("BACKUP_S3_REGION"),
                s3_access_key_id: env.get("BACKUP_S3_ACCESS_KEY_ID"),
                s3_secret_access_key: env.get("BACKUP_S3_SECRET_ACCESS_KEY").map(Secret::new),
                key: env.key32("BACKUP_ENCRYPTION_KEY")?,
                key_id: env.get("BACKUP_ENCRYPTION_KEY_ID").unwrap_or_else(|| "k1".into()),
            },
        })
    }
}

impl ConfigError {
    fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self { var, message: message.into() }
    }
}

fn decode_key32(name: &'static str, raw: &str) -> Result<Secret<[u8; 32]>, ConfigError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim().as_bytes())
        .map_err(|_| ConfigError::new(name, "not valid base64"))?;
    let key: [u8; 32] = bytes.try_into().map_err(|_| ConfigError::new(name, "must decode to exactly 32 bytes"))?;
    Ok(Secret::new(key))
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required_secret(&self, name: &'static str) -> Result<Secret<String>, ConfigError> {
        self.get(name).map(Secret::new).ok_or_else(|| ConfigError::new(name, "required but not set"))
    }

    fn parse_in<T>(&self, name: &'static str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(name) else { return Ok(default) };
        match raw.parse::<T>() {
            Ok(v) if range.contains(&v) => Ok(v),
            _ => Err(ConfigError::new(
                name,
                format!("expected a whole number from {} to {}, got {raw:?}", range.start(), range.end()),
            )),
        }
    }

    /// A comma-separated list whose items must be among `allowed`.
    fn list(&self, name: &'static str, allowed: &[&str]) -> Result<Vec<String>, ConfigError> {
        let items: Vec<String> = self
            .get(name)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = items.iter().find(|i| !allowed.contains(&i.as_str())) {
            return Err(ConfigError::new(
                name,
                format!("unknown item {bad:?}; expected some of {}", allowed.join(", ")),
            ));
        }
        Ok(items)
    }

    /// A required 32-byte key, given as base64.
    fn key32(&self, name: &'static str) -> Result<Secret<[u8; 32]>, ConfigError> {
        let raw = self.get(name).ok_or_else(|| {
            ConfigError::new(name, "required: 32 random bytes as base64 (e.g. `openssl rand -base64 32`)")
        })?;
        decode_key32(name, &raw)
    }

    /// An optional http(s) URL.
    fn url(&self, name: &'static str) -> Result<Option<String>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(Some(u)),
            Some(_) => Err(ConfigError::new(name, "must be an http:// or https:// URL")),
        }
    }

    fn parse_bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(name, format!("expected true or false, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, String> {
        HashMap::from([
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/x".to_string()),
            ("REDIS_URL", "redis://127.0.0.1:6379/".to_string()),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret".to_string()),
            ("SERVICE_TOKENS", "token-one-0123456789, token-two-0123456789".to_string()),
            ("BACKUP_ENCRYPTION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_string()),
            ("CONFIG_ENCRYPTION_KEY", "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=".to_string()),
        ])
    }

    fn load(vars: &HashMap<&'static str, String>) -> Result<Config, ConfigError> {
        Config::from_lookup(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_apply_and_tokens_split() {
        let c = load(&base()).expect("valid");
        assert_eq!(c.port, 3004);
        assert_eq!(c.service_tokens.len(), 2);
        assert_eq!(c.service_tokens[1].token.expose(), "token-two-0123456789");
        assert_eq!(c.service_tokens[1].name, DEFAULT_SERVICE_NAME);
        assert_eq!(c.tenant_config_ttl, Duration::from_secs(1800));
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert!(c.migrate_on_start);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let mut vars = base();
        vars.insert("SERVICE_PORT", "abc".into());
        let err = load(&vars).expect_err("port is bad").to_string();
        assert!(err.contains("SERVICE_PORT") && err.contains("\"abc\""), "{err}");

        let mut vars = base();
        vars.insert("MIGRATE_ON_START", "maybe".into());
        assert_eq!(load(&vars).expect_err("bool is bad").var, "MIGRATE_ON_START");

        let mut vars = base();
        vars.insert("BACKUP_ENCRYPTION_KEY", "c2hvcnQ=".into());
        let err = load(&vars).expect_err("key too short");
        assert_eq!(err.var, "BACKUP_ENCRYPTION_KEY");
        assert!(err.message.contains("32 bytes"), "{err}");

        let mut vars = base();
        vars.remove("REDIS_URL");
        assert_eq!(load(&vars).expect_err("missing").var, "REDIS_URL");
    }

    #[test]
    fn secrets_are_not_echoed_in_errors_or_debug() {
        let mut vars = base();
        vars.insert("JWT_SECRET", "short-secret-xyz".into());
        let err = load(&vars).expect_err("too short").to_string();
        assert!(err.contains("JWT_SECRET") && !err.contains("short-secret-xyz"), "{err}");

        let c = load(&base()).expect("valid");
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret") && !debug.contains("token-one"), "{debug}");
    }

    #[test]
    fn redis_tls_files_are_read_checked_and_only_taken_with_a_tls_url() {
        let dir = std::env::temp_dir().join(format!("redis-tls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
        let key = dir.join("key.pem");
        std::fs::write(&key, "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n").expect("write");
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();

        let mut vars = base();
        vars.insert("REDIS_URL", "rediss://redis.internal:6380/".into());
        assert!(load(&vars).expect("system roots").redis_tls.certificates().is_none());
        vars.insert("REDIS_TLS_CA_FILE", path(&cert));
        vars.insert("REDIS_TLS_CERT_FILE", path(&cert));
        vars.insert("REDIS_TLS_KEY_FILE", path(&key));
        let tls = load(&vars).expect("valid").redis_tls;
        let certs = tls.certificates().expect("certificates");
        assert!(certs.root_cert.is_some() && certs.client_tls.is_some());
        let key_bytes = format!("{:?}", std::fs::read(&key).expect("key"));
        let debug = format!("{tls:?}");
        assert!(!debug.contains(&key_bytes[1..key_bytes.len() - 1]) && debug.contains("****"), "{debug}");

        let mut no_key = vars.clone();
        no_key.remove("REDIS_TLS_KEY_FILE");
        assert_eq!(load(&no_key).expect_err("key missing").var, "REDIS_TLS_KEY_FILE");
        let mut not_a_cert = vars.clone();
        not_a_cert.insert("REDIS_TLS_CA_FILE", path(&key));
        assert_eq!(load(&not_a_cert).expect_err("a key is no CA").var, "REDIS_TLS_CA_FILE");
        let mut missing = vars.clone();
        missing.insert("REDIS_TLS_CA_FILE", path(&dir.join("nope.pem")));
        assert_eq!(load(&missing).expect_err("no file").var, "REDIS_TLS_CA_FILE");
        let mut plain = vars.clone();
        plain.insert("REDIS_URL", "redis://127.0.0.1:6379/".into());
        let err = load(&plain).expect_err("no TLS URL");
        assert!(err.var == "REDIS_TLS_CA_FILE" && err.message.contains("rediss://"), "{err}");
        plain.insert("QUOTA_REDIS_URL", "rediss+cluster://a:7000,b:7000".into());
        let loaded = load(&plain);
        assert!(loaded.is_ok(), "a TLS cluster for the quota counters takes them: {:?}", loaded.err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
