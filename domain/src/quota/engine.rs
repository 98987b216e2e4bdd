//! The hot path: quota checks answered from Redis in one round trip.
//!
//! One Lua script (loaded once, then `EVALSHA`) reads the tenant's status, the resource's limit
//! and period and the current window's counter, decides, increments only when allowed, and
//! detects threshold crossings — all atomically, so no concurrency can overrun a limit or fire a
//! threshold twice. PostgreSQL is not touched, except when the tenant's state is missing from
//! Redis: then one read repopulates it ([`QuotaEngine::load_into_redis`]), never a silent allow.
//!
//! The counters live on `REDIS_URL`, on another Redis or on a Redis Cluster (`QUOTA_REDIS_URL`).
//! The script is handed every key it touches ([`super::keys`]), all in the tenant's slot on a
//! cluster; the same call works on both. Where the counters are not beside the events stream,
//! the script queues threshold events in the tenant's slot and the engine relays them
//! ([`super::events`]). State mirroring and usage reads are in [`super::mirror`].

use super::keys::{KeyLayout, Periods};
use super::lease::Leases;
use super::{Period, Resource, window};
use crate::config::Config;
use crate::kv::{self, QuotaConn};
use crate::{Result, TenantId};
use chrono::{DateTime, Utc};
use redis::Script;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

pub use super::mirror::{MirroredLimit, TenantQuotaState, load_state};

const SCRIPT: &str = include_str!("check.lua");
const GIVE_BACK: &str = include_str!("give_back.lua");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide only.
    Check,
    /// Decide and, if allowed, count the amount — atomically.
    Consume,
    /// Count usage that already happened (may exceed the limit; gauges may go down).
    Record,
    /// Give back `give_back` left unused by an earlier lease of the same counter, then consume,
    /// and take `chunk` more as leased budget if far from the limit.
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

    /// The same call once its give-back has been applied (the script applies it first).
    fn given_back(self) -> Self {
        match self {
            Mode::Lease { chunk, .. } => Mode::Lease { chunk, give_back: 0 },
            other => other,
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
    /// The counter key the decision was taken on (empty when served from a lease).
    pub counter: String,
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
    #[error("quota store: {0}")]
    Inconsistent(&'static str),
}

/// Every call to the quota store is bounded: past `deadline` it is [`QuotaError::Timeout`], so a
/// Redis that hangs turns into a quick 503 (or a fail-open answer) instead of a stuck request.
pub(super) async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, QuotaError> {
    Ok(tokio::time::timeout(deadline, call).await.map_err(|_| QuotaError::Timeout)??)
}

/// The outcome of one script call, before the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawOutcome {
    Decided(Decision),
    Final(Outcome),
    NoState,
}

/// One script call's answer, before the period is settled.
enum Answer {
    Raw(RawOutcome),
    OtherPeriod(Period),
}

/// The script's line of figures: code, limit, used, reset_at, status, crossed, granted, replayed
/// (see `check.lua`).
struct Reply<'a>(i64, i64, i64, i64, &'a str, &'a str, i64, i64);

impl<'a> Reply<'a> {
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split(' ');
        let mut text = || fields.next();
        let (code, limit, used, reset_at) = (text()?, text()?, text()?, text()?);
        let (status, crossed, granted, replayed) = (text()?, text()?, text()?, text()?);
        if text().is_some() {
            return None;
        }
        Some(Reply(
            code.parse().ok()?,
            limit.parse().ok()?,
            used.parse().ok()?,
            reset_at.parse().ok()?,
            status,
            crossed,
            granted.parse().ok()?,
            replayed.parse().ok()?,
        ))
    }
}

pub struct QuotaEngine {
    conns: Vec<QuotaConn>,
    next: AtomicUsize,
    script: Script,
    pub(super) give_back_script: Script,
    pub(super) keys: KeyLayout,
    pub(super) periods: Periods,
    /// The events stream, on `REDIS_URL`.
    pub(super) stream: String,
    pub(super) stream_maxlen: u64,
    /// A connection to `REDIS_URL` when the counters live elsewhere: threshold events are
    /// relayed to the stream through it.
    pub(super) relay: Option<ConnectionManager>,
    pub(super) timeout: Duration,
    pub(super) grace: Duration,
    /// How long a deleted or failed tenant's state (a tombstone) stays in Redis.
    pub(super) tombstone_ttl: Duration,
    /// Times the state of a tenant had to be read from PostgreSQL.
    pub state_loads: AtomicU64,
    pub(super) leases: Arc<Leases>,
    pub(super) lease_resources: Vec<Resource>,
    pub(super) lease_chunk: i64,
    /// Consumes answered from leased budget.
    pub leased_hits: AtomicU64,
    /// Chunks of budget Redis granted to this process.
    pub lease_grants: AtomicU64,
    /// Unused leased budget this process gave back to Redis.
    pub lease_given_back: Arc<AtomicU64>,
}

impl QuotaEngine {
    pub fn new(config: &Config, conns: Vec<QuotaConn>, relay: Option<ConnectionManager>) -> Arc<Self> {
        let cluster = conns.first().is_some_and(QuotaConn::is_cluster);
        let engine = Arc::new(Self {
            conns,
            next: AtomicUsize::new(0),
            script: Script::new(&script_source(config)),
            give_back_script: Script::new(GIVE_BACK),
            keys: KeyLayout::new(config.redis_key_prefix.clone(), cluster),
            periods: Periods::default(),
            stream: config.events_stream.clone(),
            stream_maxlen: config.events_stream_maxlen,
            relay,
            timeout: config.quota.timeout,
            grace: config.quota.window_grace,
            tombstone_ttl: config.retention.tombstone,
            state_loads: AtomicU64::new(0),
            leases: Arc::new(Leases::new(config.quota.lease_ttl)),
            lease_resources: config.quota.lease_resources.iter().filter_map(|r| Resource::parse(r)).collect(),
            lease_chunk: config.quota.lease_chunk,
            leased_hits: AtomicU64::new(0),
            lease_grants: AtomicU64::new(0),
            lease_given_back: Arc::new(AtomicU64::new(0)),
        });
        if !engine.lease_resources.is_empty()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(super::leased::sweep_expired_leases(Arc::downgrade(&engine), config.quota.lease_ttl));
        }
        engine
    }

    /// `conns` connections to the quota Redis (and one to `REDIS_URL` to relay threshold events,
    /// when the counters live elsewhere), each connecting lazily.
    pub fn connect(config: &Config) -> Result<Arc<Self>> {
        let conns = (0..config.quota.connections.max(1)).map(|_| kv::connect_quota(config)).collect::<Result<_>>()?;
        let relay = if config.quota.redis.relays_events() { Some(kv::connect(config)?) } else { None };
        Ok(Self::new(config, conns, relay))
    }

    /// Whether the quota store (a Redis, or a node of the cluster) answers `PING` in time.
    pub async fn ping(&self, deadline: Duration) -> bool {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(deadline, ping).await, Ok(Ok(_)))
    }

    pub(super) fn conn(&self) -> QuotaConn {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// True when the counters live on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.conns.first().is_some_and(QuotaConn::is_cluster)
    }

    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }

    pub fn base_key(&self, tenant: TenantId) -> String {
        self.keys.base(tenant)
    }

    pub fn state_key(&self, tenant: TenantId) -> String {
        self.keys.state(tenant)
    }

    /// The counter key of `resource` for the window containing `now`.
    pub fn counter_key(&self, tenant: TenantId, resource: &str, period: Period, now: DateTime<Utc>) -> String {
        self.keys.counter(tenant, resource, period, now)
    }

    /// One round trip (two when the resource's period is not the one expected): decide (and
    /// count) `amount` of `resource` at `now`. With an idempotency key (consume and record), a
    /// repeat within 24 h counts nothing.
    pub async fn evaluate(
        &self,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        mode: Mode,
        now: DateTime<Utc>,
        idempotency_key: Option<&str>,
    ) -> Result<RawOutcome, QuotaError> {
        let mut period = self.periods.guess(tenant, resource);
        let mut mode = mode;
        for _ in 0..3 {
            match self.evaluate_as(tenant, resource, period, amount, mode, now, idempotency_key).await? {
                Answer::Raw(raw) => return Ok(raw),
                Answer::OtherPeriod(actual) => {
                    self.periods.learn(tenant, resource, actual);
                    period = actual;
                    mode = mode.given_back();
                }
            }
        }
        Err(QuotaError::Inconsistent("the reset period kept changing"))
    }

    /// Adds the key count, keys and values of one call to `cmd`; returns the counter key.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        cmd: &mut redis::Cmd,
        tenant: TenantId,
        resource: Resource,
        period: Period,
        amount: i64,
        mode: Mode,
        now: DateTime<Utc>,
        idempotency_key: Option<&str>,
    ) -> String {
        let base = self.keys.base(tenant);
        let window = window(period, now);
        let counter = KeyLayout::counter_in(base.clone(), resource.as_str(), window);
        let (start, end) = window.map_or((0, 0), |w| (w.start.timestamp(), w.end.timestamp()));
        let idem = idempotency_key.filter(|_| mode != Mode::Check);
        cmd.arg(if idem.is_some() { 5 } else { 4 })
            .arg(KeyLayout::state_in(base))
            .arg(&counter)
            .arg(KeyLayout::thresholds(&counter));
        match &self.relay {
            Some(_) => cmd.arg(self.keys.pending_events(tenant)),
            None => cmd.arg(&self.stream),
        };
        if let Some(key) = idem {
            cmd.arg(self.keys.idempotency(tenant, key));
        }
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        cmd.arg(&*tenant.0.hyphenated().encode_lower(&mut id))
            .arg(resource.as_str())
            .arg(amount)
            .arg(mode.as_str())
            .arg(now.timestamp())
            .arg(period.as_str())
            .arg(start)
            .arg(end);
        if let Mode::Lease { chunk, give_back } = mode {
            cmd.arg(chunk).arg(give_back);
        }
        counter
    }

    #[allow(clippy::too_many_arguments)]
    async fn evaluate_as(
        &self,
        tenant: TenantId,
        resource: Resource,
        period: Period,
        amount: i64,
        mode: Mode,
        now: DateTime<Utc>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, QuotaError> {
        // One command built in place (a ScriptInvocation would copy every argument twice).
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash());
        let counter = self.fill(&mut cmd, tenant, resource, period, amount, mode, now, idempotency_key);
        let mut conn = self.conn();
        let call = async {
            match cmd.query_async(&mut conn).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    // Redis lost its script cache (restart, or a new cluster node): load it once
                    // more (on every node of a cluster).
                    self.script.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                other => other,
            }
        };
        let (line, events): (String, Vec<String>) = within(self.timeout, call).await?;
        let Reply(code, limit, used, reset_at, status, crossed, granted, replayed) =
            Reply::parse(&line).ok_or(QuotaError::Inconsistent("malformed reply of the quota script"))?;
        if !events.is_empty() {
            self.relay(tenant, &events).await;
        }
        Ok(Answer::Raw(match code {
            1 | 0 => RawOutcome::Decided(Decision {
                allowed: code == 1,
                limit,
                used,
                reset_at: (reset_at > 0).then(|| DateTime::from_timestamp(reset_at, 0)).flatten(),
                crossed: crossed.split(',').filter_map(|t| t.parse().ok()).collect(),
                granted,
                replayed: replayed == 1,
                counter,
            }),
            -1 => RawOutcome::NoState,
            -2 if status == "unknown" => RawOutcome::Final(Outcome::UnknownTenant),
            -2 => RawOutcome::Final(Outcome::NotActive(status.to_owned())),
            -4 => {
                let actual = Period::parse(status).ok_or(QuotaError::Inconsistent("unknown reset period in Redis"))?;
                return Ok(Answer::OtherPeriod(actual));
            }
            _ => RawOutcome::Final(Outcome::NoLimit),
        }))
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
        match self.evaluate(tenant, resource, amount, mode.given_back(), now, key).await? {
            RawOutcome::Decided(d) => Ok(Outcome::Decided(d)),
            RawOutcome::Final(o) => Ok(o),
            // Deleted between the two calls: treat as unknown rather than loop.
            RawOutcome::NoState => Ok(Outcome::UnknownTenant),
        }
    }

    pub fn window_grace(&self) -> Duration {
        self.grace
    }
}

/// The script, with this deployment's stream cap, window grace period and event route filled in.
pub fn script_source(config: &Config) -> String {
    SCRIPT
        .replace("__MAXLEN__", &config.events_stream_maxlen.to_string())
        .replace("__GRACE__", &config.quota.window_grace.as_secs().to_string())
        .replace("__RELAY__", if config.quota.redis.relays_events() { "true" } else { "false" })
}

#[cfg(test)]
mod tests {
    use super::Reply;

    #[test]
    fn the_scripts_line_of_figures_parses_with_empty_texts_and_refuses_anything_else() {
        let r = Reply::parse("1 1000000000000000 42 1796083200 active 75,90 100 0").expect("allowed");
        assert_eq!(
            (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7),
            (1, 1_000_000_000_000_000, 42, 1796083200, "active", "75,90", 100, 0)
        );
        let r = Reply::parse("-1 0 0 0   0 0").expect("no state: empty status and crossed");
        assert_eq!((r.0, r.4, r.5), (-1, "", ""));
        let r = Reply::parse("-4 0 0 0 hourly  0 0").expect("other period");
        assert_eq!((r.0, r.4), (-4, "hourly"));
        for bad in ["", "1 2 3", "1 2 3 4 active  0 0 extra", "1 2 3 x active  0 0", "1 2 3 4 active  0 1.5"] {
            assert!(Reply::parse(bad).is_none(), "{bad:?}");
        }
    }
}
