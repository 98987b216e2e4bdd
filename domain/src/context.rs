//! The tenant context: everything another service needs about a tenant on each request —
//! status, plan, effective features, quota limits, and the tenant configuration with secrets
//! masked — built from PostgreSQL and cached in two levels (in-process in the API, then Redis).
//!
//! This module builds it and owns the Redis level: `t:<id>:ctx` (JSON, expiring after
//! `REDIS_TENANT_CONFIG_TTL`), `t:<id>:ctxver`, a version bumped by every invalidation of that
//! tenant, and `ctxepoch`, bumped by every invalidation of any tenant (in the same transaction).
//! A reader that loaded from PostgreSQL writes the Redis copy only if the version it saw before
//! loading is still current (compare-and-set in Lua), so a load racing a change can't put stale
//! data back. Every invalidation is also published on `cache-invalidate`, so each API replica
//! drops its in-process copy at once.
//!
//! An in-process copy remembers the epoch it was last checked under. While the epoch stands,
//! nothing changed anywhere and the copy is current; the one read of the epoch that answers every
//! request waiting at the time ([`ContextStore::epoch`]) is all a cached read costs. When the epoch
//! moved, the tenant's own version says whether the change was this tenant's.

use crate::tenant_config::secrets::ConfigCipher;
use crate::tenant_config::store as config_store;
use crate::{Config, Result, TenantId, TenantStatus, features, plans, quota, tenants};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantContext {
    pub tenant: ContextTenant,
    pub plan: ContextPlan,
    /// `{flag: enabled}` with overrides applied.
    #[schema(value_type = Object)]
    pub features: Map<String, Value>,
    /// `{resource: {limit, unit, resetPeriod}}`.
    #[schema(value_type = Object)]
    pub quotas: Map<String, Value>,
    /// The tenant configuration layer, secrets masked.
    #[schema(value_type = Object)]
    pub config: Value,
    pub generated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextTenant {
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub status: TenantStatus,
    /// True when the tenant is active.
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextPlan {
    pub id: crate::PlanId,
    pub slug: String,
    pub name: String,
    pub api_rate_limit: i32,
}

/// Builds the context from PostgreSQL; `None` for an unknown tenant.
/// One tenant-scoped transaction reads it all, so the parts are consistent.
pub async fn build(db: &PgPool, cipher: &ConfigCipher, id: TenantId) -> Result<Option<TenantContext>> {
    let mut tx = crate::db::begin_tenant(db, id).await?;
    let tenant = match tenants::get(&mut *tx, id).await {
        Ok(t) => t,
        Err(crate::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let plan = plans::find(&mut *tx, &tenant.plan_id.to_string()).await?;
    let limits = quota::store::limits(&mut tx).await?;
    let quotas = limits
        .iter()
        .map(|l| {
            (l.resource_type.clone(), json!({ "limit": l.limit_value, "unit": l.unit, "resetPeriod": l.reset_period }))
        })
        .collect();
    let config = config_store::read_layer(&mut tx, cipher).await?;
    tx.commit().await?;
    Ok(Some(TenantContext {
        features: features::effective(&plan.features, &tenant.features),
        tenant: ContextTenant {
            id,
            active: tenant.status == TenantStatus::Active,
            slug: tenant.slug,
            name: tenant.name,
            domain: tenant.domain,
            status: tenant.status,
        },
        plan: ContextPlan { id: plan.id, slug: plan.slug, name: plan.name, api_rate_limit: plan.api_rate_limit },
        quotas,
        config,
        generated_at: Utc::now(),
    }))
}

const CAS_SET: &str = r"
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0";

/// The Redis level of the context cache, and invalidation.
#[derive(Clone)]
pub struct ContextStore {
    conn: ConnectionManager,
    prefix: String,
    ttl_secs: u64,
    cas: redis::Script,
    /// The shared reads of the epoch, when a runtime was there to run their reader.
    rounds: Option<Arc<RoundsHandle>>,
}

/// Reads of the epoch in rounds: every request that waits while no read is under way is answered
/// by the next one, so the epoch costs one `GET` per round trip, not one per request, and no
/// allocation per request. A request waits for the round that was next when it arrived, which is
/// sent after it arrived: the very next read after a change sees the change, as with a `GET` of
/// its own.
struct Rounds {
    /// The round the reader sends next.
    next: AtomicU64,
    /// Rounds answered so far, and what the last one read.
    last: Mutex<(u64, std::result::Result<u64, Arc<str>>)>,
    /// Wakes the reader: somebody waits.
    wanted: Notify,
    /// Wakes the waiting requests: a round was answered (or the reader is gone).
    answered: Notify,
    /// The reader is gone (its runtime ended): requests read the epoch themselves.
    closed: AtomicBool,
}

/// Ends the reader with the last clone of the store.
struct RoundsHandle {
    rounds: Arc<Rounds>,
    reader: tokio::task::AbortHandle,
}

impl Drop for RoundsHandle {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Marks the rounds closed and wakes everyone waiting, however the reader ends.
struct CloseOnDrop(Arc<Rounds>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.answered.notify_waiters();
    }
}

async fn read_rounds(mut conn: ConnectionManager, key: String, rounds: Arc<Rounds>) {
    let _closed = CloseOnDrop(rounds.clone());
    loop {
        rounds.wanted.notified().await;
        // One turn of the scheduler first: the requests already ready to run get into this round.
        tokio::task::yield_now().await;
        let round = rounds.next.fetch_add(1, Ordering::SeqCst);
        let read: redis::RedisResult<Option<u64>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await;
        let result = read.map(Option::unwrap_or_default).map_err(|err| Arc::from(err.to_string()));
        *rounds.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (round + 1, result);
        rounds.answered.notify_waiters();
    }
}

impl ContextStore {
    /// A store for writers and invalidators; its epoch reads are single `GET`s.
    pub fn new(config: &Config, conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: config.redis_key_prefix.clone(),
            ttl_secs: config.tenant_config_ttl.as_secs().max(1),
            cas: redis::Script::new(CAS_SET),
            rounds: None,
        }
    }

    /// For the cache that reads on every request: epoch reads are shared in rounds by a reader
    /// task (spawned here, inside a Tokio runtime; it ends with the last clone of this store).
    pub fn reading_in_rounds(mut self) -> Self {
        self.rounds = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let rounds = Arc::new(Rounds {
                next: AtomicU64::new(0),
                last: Mutex::new((0, Ok(0))),
                wanted: Notify::new(),
                answered: Notify::new(),
                closed: AtomicBool::new(false),
            });
            let reader = runtime.spawn(read_rounds(self.conn.clone(), self.epoch_key(), rounds.clone()));
            Arc::new(RoundsHandle { rounds, reader: reader.abort_handle() })
        });
        self
    }

    fn keys(&self, id: TenantId) -> (String, String) {
        (format!("{}t:{id}:ctx", self.prefix), format!("{}t:{id}:ctxver", self.prefix))
    }

    fn epoch_key(&self) -> String {
        format!("{}ctxepoch", self.prefix)
    }

    /// The pub/sub channel every replica listens on.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}cache-invalidate")
    }

    /// The epoch, the cached context (if any) and the version to write a fresh one under. The
    /// epoch is read first: a change after it moves it, so a copy checked under it is rechecked.
    pub async fn get(&self, id: TenantId) -> redis::RedisResult<(u64, Option<TenantContext>, String)> {
        let (ctx_key, ver_key) = self.keys(id);
        let mut conn = self.conn.clone();
        let (epoch, raw, version): (Option<u64>, Option<String>, Option<String>) =
            redis::pipe().get(self.epoch_key()).get(&ctx_key).get(&ver_key).query_async(&mut conn).await?;
        let ctx = raw.and_then(|r| serde_json::from_str(&r).ok());
        Ok((epoch.unwrap_or_default(), ctx, version.unwrap_or_else(|| "0".into())))
    }

    /// The epoch (bumped by every invalidation of any tenant), read after this call began.
    pub async fn epoch(&self) -> redis::RedisResult<u64> {
        let Some(handle) = &self.rounds else { return self.read_epoch().await };
        let rounds = &handle.rounds;
        let round = rounds.next.load(Ordering::SeqCst);
        rounds.wanted.notify_one();
        let answered = rounds.answered.notified();
        tokio::pin!(answered);
        loop {
            // Registered before looking, so an answer between the look and the wait still wakes us.
            answered.as_mut().enable();
            {
                let last = rounds.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.0 > round {
                    return last.1.clone().map_err(|message| {
                        (redis::ErrorKind::Io, "context epoch read failed", message.to_string()).into()
                    });
                }
            }
            if rounds.closed.load(Ordering::SeqCst) {
                return self.read_epoch().await;
            }
            answered.as_mut().await;
            answered.set(rounds.answered.notified());
        }
    }

    async fn read_epoch(&self) -> redis::RedisResult<u64> {
        let mut conn = self.conn.clone();
        let epoch: Option<u64> = redis::cmd("GET").arg(self.epoch_key()).query_async(&mut conn).await?;
        Ok(epoch.unwrap_or_default())
    }

    /// The tenant's current context version (bumped by every invalidation of it).
    pub async fn version(&self, id: TenantId) -> redis::RedisResult<String> {
        let (_, ver_key) = self.keys(id);
        let mut conn = self.conn.clone();
        let version: Option<String> = redis::cmd("GET").arg(ver_key).query_async(&mut conn).await?;
        Ok(version.unwrap_or_else(|| "0".into()))
    }

    /// Stores `ctx` unless the context was invalidated since `version` was read.
    pub async fn put(&self, id: TenantId, ctx: &TenantContext, version: &str) -> redis::RedisResult<bool> {
        let (ctx_key, ver_key) = self.keys(id);
        let json = serde_json::to_string(ctx).unwrap_or_default();
        let mut conn = self.conn.clone();
        let stored: i64 = self
            .cas
            .key(ctx_key)
            .key(ver_key)
            .arg(version)
            .arg(json)
            .arg(self.ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        Ok(stored == 1)
    }

    /// Drops the tenant's cached context everywhere: bumps its version and the epoch, deletes the
    /// Redis copy, and tells every replica to drop its in-process copy.
    pub async fn invalidate(&self, id: TenantId) -> redis::RedisResult<()> {
        let (ctx_key, ver_key) = self.keys(id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .incr(&ver_key, 1)
            .ignore()
            .incr(self.epoch_key(), 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&ver_key)
            .arg(self.ttl_secs * 2)
            .ignore()
            .del(&ctx_key)
            .ignore()
            .publish(Self::channel(&self.prefix), id.to_string())
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }
}
