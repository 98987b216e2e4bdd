//! The hot path: quota checks answered from Redis in one round trip.
//!
//! One Lua script (loaded once, then `EVALSHA`) reads the tenant's status, the resource's limit
//! and period and the current window's counter, decides, increments only when allowed, and
//! detects threshold crossings — all atomically, so no concurrency can overrun a limit or fire a
//! threshold twice. PostgreSQL is not touched, except when the tenant's state is missing from
//! Redis: then one read repopulates it ([`QuotaEngine::load_into_redis`]), never a silent allow.
//!
//! Keys (under `REDIS_KEY_PREFIX`): `t:<tenant>:state` (hash: `status`, `l:<resource>`,
//! `p:<resource>`), `t:<tenant>:u:<resource>` (gauges) and `t:<tenant>:u:<resource>:<window
//! start>` (counters, expiring after their window plus a grace period for the rollups).

use super::lease::Leases;
use super::{Period, Resource, window};
use crate::config::Config;
use crate::{Result, TenantId, TenantStatus};
use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const SCRIPT: &str = include_str!("check.lua");
/// How long "no such tenant" is remembered in Redis, so unknown ids can't hammer PostgreSQL.
const UNKNOWN_TTL_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide only.
    Check,
    /// Decide and, if allowed, count the amount — atomically.
    Consume,
    /// Count usage that already happened (may exceed the limit; gauges may go down).
    Record,
    /// Consume, and take `chunk` more as leased budget if far from the limit, after giving back
    /// `give_back` left over from an earlier lease in this window.
    Lease { chunk: i64, give_back: i64 },
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Consume => "consume",
            Mode::Record => "record",
            Mode::Lease { .. } => "lease",
        }
    }
}

/// The figures of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: i64,
    pub used: i64,
    /// End of the current window; `None` for gauges.
    pub reset_at: Option<DateTime<Utc>>,
    /// Thresholds (75, 90, 95) this call crossed.
    pub crossed: Vec<u8>,
    /// Budget leased to this process on top of the amount (mode `Lease`).
    pub granted: i64,
    /// A repeat of an idempotency key: nothing was counted; `allowed` is the first decision.
    pub replayed: bool,
}

impl Decision {
    pub fn remaining(&self) -> i64 {
        (self.limit - self.used).max(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    /// The tenant is not active (suspended, deleted, …): everything is denied.
    NotActive(String),
    /// No such tenant.
    UnknownTenant,
    /// The tenant has no limit for this resource.
    NoLimit,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("Redis did not answer in time")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] crate::Error),
}

/// What the hot path needs of a tenant, mirrored from PostgreSQL.
#[derive(Debug, Clone)]
pub struct TenantQuotaState {
    pub status: TenantStatus,
    pub limits: Vec<MirroredLimit>,
    /// Requests per minute on the public API, from the plan.
    pub api_rate_limit: i64,
}

/// One `tenant_quotas` row, as the hot path needs it.
#[derive(Debug, Clone)]
pub struct MirroredLimit {
    pub resource: String,
    pub limit: i64,
    pub period: Period,
    /// The last rollup's count, and the window it belongs to.
    pub used: i64,
    pub window_start: Option<DateTime<Utc>>,
}

pub struct QuotaEngine {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    script: Script,
    prefix: String,
    timeout: Duration,
    grace: Duration,
    /// How long a deleted or failed tenant's state (a tombstone) stays in Redis.
    tombstone_ttl: Duration,
    /// Times the state of a tenant had to be read from PostgreSQL.
    pub state_loads: AtomicU64,
    leases: Leases,
    lease_resources: Vec<Resource>,
    lease_chunk: i64,
    /// Consumes answered from leased budget.
    pub leased_hits: AtomicU64,
}

impl QuotaEngine {
    pub fn new(config: &Config, conns: Vec<ConnectionManager>) -> Arc<Self> {
        Arc::new(Self {
            conns,
            next: AtomicUsize::new(0),
            script: Script::new(&script_source(config)),
            prefix: config.redis_key_prefix.clone(),
            timeout: config.quota.timeout,
            grace: config.quota.window_grace,
            tombstone_ttl: config.retention.tombstone,
            state_loads: AtomicU64::new(0),
            leases: Leases::new(config.quota.lease_ttl),
            lease_resources: config.quota.lease_resources.iter().filter_map(|r| Resource::parse(r)).collect(),
            lease_chunk: config.quota.lease_chunk,
            leased_hits: AtomicU64::new(0),
        })
    }

    /// `conns` connections to Redis, each connecting lazily.
    pub fn connect(config: &Config) -> Result<Arc<Self>> {
        let conns = (0..config.quota.connections.max(1)).map(|_| crate::kv::connect(config)).collect::<Result<_>>()?;
        Ok(Self::new(config, conns))
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    pub fn base_key(&self, tenant: TenantId) -> String {
        format!("{}t:{tenant}:", self.prefix)
    }

    pub fn state_key(&self, tenant: TenantId) -> String {
        format!("{}state", self.base_key(tenant))
    }

    /// The counter key of `resource` for the window containing `now`.
    pub fn counter_key(&self, tenant: TenantId, resource: &str, period: Period, now: DateTime<Utc>) -> String {
        match window(period, now) {
            Some(w) => format!("{}u:{resource}:{}", self.base_key(tenant), w.start.timestamp()),
            None => format!("{}u:{resource}", self.base_key(tenant)),
        }
    }

    /// One round trip: decide (and count) `amount` of `resource` at `now`. With an idempotency
    /// key (consume and record), a repeat within 24 h counts nothing.
    pub async fn evaluate(
        &self,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        mode: Mode,
        now: DateTime<Utc>,
        idempotency_key: Option<&str>,
    ) -> Result<RawOutcome, QuotaError> {
        let month = window(Period::Monthly, now).unwrap_or(super::Window { start: now, end: now });
        // One command built in place (a ScriptInvocation would copy every argument twice).
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(0)
            .arg(self.base_key(tenant))
            .arg(resource.as_str())
            .arg(amount)
            .arg(mode.as_str())
            .arg(now.timestamp())
            .arg(month.start.timestamp())
            .arg(month.end.timestamp());
        match (mode, idempotency_key) {
            (Mode::Lease { chunk, give_back }, key) => {
                cmd.arg(chunk).arg(give_back).arg(key.unwrap_or(""));
            }
            (_, Some(key)) => {
                cmd.arg(0).arg(0).arg(key);
            }
            (_, None) => {}
        }
        let mut conn = self.conn();
        let call = async {
            match cmd.query_async(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    // Redis lost its script cache (restart): load it once more.
                    self.script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                other => other,
            }
        };
        let reply: (i64, i64, i64, i64, String, String, i64, i64) =
            tokio::time::timeout(self.timeout, call).await.map_err(|_| QuotaError::Timeout)??;
        let (code, limit, used, reset_at, status, crossed, granted, replayed) = reply;
        Ok(match code {
            1 | 0 => RawOutcome::Decided(Decision {
                allowed: code == 1,
                limit,
                used,
                reset_at: (reset_at > 0).then(|| DateTime::from_timestamp(reset_at, 0)).flatten(),
                crossed: crossed.split(',').filter_map(|t| t.parse().ok()).collect(),
                granted,
                replayed: replayed == 1,
            }),
            -1 => RawOutcome::NoState,
            -2 if status == "unknown" => RawOutcome::Final(Outcome::UnknownTenant),
            -2 => RawOutcome::Final(Outcome::NotActive(status)),
            _ => RawOutcome::Final(Outcome::NoLimit),
        })
    }

    /// The hot path: [`Self::evaluate`], and if Redis has no state for the tenant, one read of
    /// PostgreSQL to put it there, then again.
    pub async fn check(
        &self,
        db: &PgPool,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        mode: Mode,
    ) -> Result<Outcome, QuotaError> {
        self.check_keyed(db, tenant, resource, amount, mode, None).await
    }

    /// [`Self::check`] with an optional idempotency key: a repeat within 24 h counts nothing.
    pub async fn check_keyed(
        &self,
        db: &PgPool,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        mode: Mode,
        key: Option<&str>,
    ) -> Result<Outcome, QuotaError> {
        let now = Utc::now();
        match self.evaluate(tenant, resource, amount, mode, now, key).await? {
            RawOutcome::Decided(d) => return Ok(Outcome::Decided(d)),
            RawOutcome::Final(o) => return Ok(o),
            RawOutcome::NoState => {}
        }
        self.load_into_redis(db, tenant).await?;
        match self.evaluate(tenant, resource, amount, mode, now, key).await? {
            RawOutcome::Decided(d) => Ok(Outcome::Decided(d)),
            RawOutcome::Final(o) => Ok(o),
            // Deleted between the two calls: treat as unknown rather than loop.
            RawOutcome::NoState => Ok(Outcome::UnknownTenant),
        }
    }

    /// A consuming check: served from leased budget when the resource is leased and a lease is
    /// live, else one round trip (which may take a new lease).
    /// With an idempotency key it always takes the exact path, so the key is honoured in Redis.
    pub async fn consume(
        &self,
        db: &PgPool,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        key: Option<&str>,
    ) -> Result<Outcome, QuotaError> {
        if key.is_some() || !self.lease_resources.contains(&resource) {
            return self.check_keyed(db, tenant, resource, amount, Mode::Consume, key).await;
        }
        let now = Utc::now();
        let give_back = match self.leases.take(tenant, resource, amount, now.timestamp()) {
            Ok(served) => {
                self.leased_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Outcome::Decided(Decision {
                    allowed: true,
                    limit: served.limit,
                    used: served.used,
                    reset_at: served.reset_at,
                    crossed: Vec::new(),
                    granted: 0,
                    replayed: false,
                }));
            }
            Err(left) => left,
        };
        let outcome =
            self.check(db, tenant, resource, amount, Mode::Lease { chunk: self.lease_chunk, give_back }).await?;
        if let Outcome::Decided(d) = &outcome
            && d.granted > 0
            && let Some(reset_at) = d.reset_at
        {
            self.leases.grant(tenant, resource, reset_at.timestamp(), d.limit, d.used, d.granted);
        }
        Ok(outcome)
    }

    /// Forgets this process's leases of the tenant (its status or limits changed).
    pub fn drop_leases(&self, tenant: TenantId) {
        self.leases.drop_tenant(tenant);
    }

    /// Reads the tenant's status and limits from PostgreSQL and mirrors them into Redis. Counters
    /// Redis lost are restored from the last rollup (`tenant_quotas.used_value`) when it belongs
    /// to the current window, so a Redis loss costs at most one rollup interval of counts.
    pub async fn load_into_redis(&self, db: &PgPool, tenant: TenantId) -> Result<(), QuotaError> {
        self.state_loads.fetch_add(1, Ordering::Relaxed);
        match load_state(db, tenant).await? {
            Some(state) => self.write_state(tenant, &state, true).await,
            None => {
                let mut conn = self.conn();
                redis::pipe()
                    .atomic()
                    .del(self.state_key(tenant))
                    .hset(self.state_key(tenant), "status", "unknown")
                    .expire(self.state_key(tenant), UNKNOWN_TTL_SECS as i64)
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok(())
            }
        }
    }

    /// Replaces the tenant's mirrored state (atomically); with `restore_counters`, sets counters
    /// that are missing from the last rollup.
    pub async fn write_state(
        &self,
        tenant: TenantId,
        state: &TenantQuotaState,
        restore_counters: bool,
    ) -> Result<(), QuotaError> {
        let key = self.state_key(tenant);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key).hset(&key, "status", state.status.as_str());
        pipe.hset(&key, "l:api_rate", state.api_rate_limit).hset(&key, "p:api_rate", Period::Minute.as_str());
        let now = Utc::now();
        let mut restored = 0;
        for m in &state.limits {
            pipe.hset(&key, format!("l:{}", m.resource), m.limit).hset(
                &key,
                format!("p:{}", m.resource),
                m.period.as_str(),
            );
            if !restore_counters || m.used == 0 {
                continue;
            }
            let current = window(m.period, now);
            let same_window = match current {
                None => true,
                Some(w) => m.window_start.is_some_and(|s| s == w.start),
            };
            if same_window {
                let counter = self.counter_key(tenant, &m.resource, m.period, now);
                pipe.cmd("SET").arg(&counter).arg(m.used).arg("NX");
                if let Some(w) = current {
                    pipe.cmd("EXPIRE").arg(&counter).arg((w.end - now).num_seconds() + self.grace.as_secs() as i64);
                }
                restored += 1;
            }
        }
        if matches!(state.status, TenantStatus::Deleted | TenantStatus::Failed) {
            // A tombstone: it answers the tenant's checks without PostgreSQL for a while, then
            // goes (a later check reads PostgreSQL once and puts it back).
            pipe.cmd("EXPIRE").arg(&key).arg(self.tombstone_ttl.as_secs().max(1));
        }
        let mut conn = self.conn();
        tokio::time::timeout(self.timeout * 4, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| QuotaError::Timeout)??;
        if restore_counters && restored > 0 {
            tracing::warn!(%tenant, restored, "quota state restored from PostgreSQL; counts since the last rollup are lost");
        }
        Ok(())
    }

    /// Mirrors the tenant's current PostgreSQL state into Redis (after a change committed).
    pub async fn sync(&self, db: &PgPool, tenant: TenantId) -> Result<(), QuotaError> {
        match load_state(db, tenant).await? {
            Some(state) => self.write_state(tenant, &state, false).await,
            None => Ok(()),
        }
    }

    /// Forgets the tenant's mirrored state; the next check reloads it from PostgreSQL.
    pub async fn forget(&self, tenant: TenantId) -> Result<(), QuotaError> {
        let mut conn = self.conn();
        tokio::time::timeout(self.timeout, redis::cmd("DEL").arg(self.state_key(tenant)).query_async::<()>(&mut conn))
            .await
            .map_err(|_| QuotaError::Timeout)??;
        Ok(())
    }

    /// Usage of each `(resource, period, at)`: the counter of the window containing `at` (one
    /// pipelined round trip).
    pub async fn usage(
        &self,
        tenant: TenantId,
        which: &[(String, Period, DateTime<Utc>)],
    ) -> Result<Vec<i64>, QuotaError> {
        if which.is_empty() {
            // Redis refuses an empty pipeline; a tenant without quota rows has no usage.
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (resource, period, at) in which {
            pipe.cmd("GET").arg(self.counter_key(tenant, resource, *period, *at));
        }
        let mut conn = self.conn();
        let values: Vec<Option<i64>> = tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| QuotaError::Timeout)??;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The current counts of many tenants' resources, `(tenant, resource, period)` each, in
    /// pipelines of 1,000 reads (for a metrics scrape; the hot path never calls this).
    pub async fn usage_many(&self, which: &[(TenantId, String, Period)]) -> Result<Vec<i64>, QuotaError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(which.len());
        for chunk in which.chunks(1000) {
            let mut pipe = redis::pipe();
            for (tenant, resource, period) in chunk {
                pipe.cmd("GET").arg(self.counter_key(*tenant, resource, *period, now));
            }
            let mut conn = self.conn();
            let values: Vec<Option<i64>> = tokio::time::timeout(self.timeout * 4, pipe.query_async(&mut conn))
                .await
                .map_err(|_| QuotaError::Timeout)??;
            out.extend(values.into_iter().map(Option::unwrap_or_default));
        }
        Ok(out)
    }

    pub fn window_grace(&self) -> Duration {
        self.grace
    }

    /// The tenant status the hot path currently decides with (`None`: Redis holds no state for
    /// the tenant; the next check loads it).
    pub async fn mirrored_status(&self, tenant: TenantId) -> Result<Option<String>, QuotaError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.state_key(tenant)).arg("status");
        Ok(tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await.map_err(|_| QuotaError::Timeout)??)
    }

    pub async fn has_state(&self, tenant: TenantId) -> Result<bool, QuotaError> {
        let mut conn = self.conn();
        Ok(redis::cmd("EXISTS").arg(self.state_key(tenant)).query_async(&mut conn).await?)
    }
}

/// The script, with this deployment's stream, its cap and the window grace period filled in.
pub fn script_source(config: &Config) -> String {
    let quoted = config.events_stream.replace('\\', "\\\\").replace('\'', "\\'");
    SCRIPT
        .replace("__STREAM__", &quoted)
        .replace("__MAXLEN__", &config.events_stream_maxlen.to_string())
        .replace("__GRACE__", &config.quota.window_grace.as_secs().to_string())
}

/// The outcome of one script call, before the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOutcome {
    Decided(Decision),
    Final(Outcome),
    NoState,
}

/// The tenant's status and limits, in one query.
pub async fn load_state(db: &PgPool, tenant: TenantId) -> Result<Option<TenantQuotaState>> {
    let row: Option<(TenantStatus, i32, serde_json::Value)> = sqlx::query_as(
        "select t.status, p.api_rate_limit, coalesce((select jsonb_agg(jsonb_build_object( \
                 'resource', q.resource_type, 'limit', q.limit_value, 'period', q.reset_period, \
                 'used', q.used_value, 'windowStart', q.last_reset_at)) \
             from tenant_quotas q where q.tenant_id = t.id), '[]') \
         from tenants t join subscription_plans p on p.id = t.plan_id where t.id = $1",
    )
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    let Some((status, api_rate_limit, rows)) = row else { return Ok(None) };
    let limits = rows
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| {
            Some(MirroredLimit {
                resource: q["resource"].as_str()?.to_owned(),
                limit: q["limit"].as_i64()?,
                period: Period::parse(q["period"].as_str()?)?,
                used: q["used"].as_i64().unwrap_or(0),
                window_start: q["windowStart"].as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()),
            })
        })
        .collect();
    Ok(Some(TenantQuotaState { status, limits, api_rate_limit: i64::from(api_rate_limit) }))
}
