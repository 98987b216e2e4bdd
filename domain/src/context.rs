//! The tenant context: everything another service needs about a tenant on each request —
//! status, plan, effective features, quota limits, and the tenant configuration with secrets
//! masked — built from PostgreSQL and cached in two levels (in-process in the API, then Redis).
//!
//! This module builds it and owns the Redis level: `t:<id>:ctx` (JSON, expiring after
//! `REDIS_TENANT_CONFIG_TTL`) and `t:<id>:ctxver`, a version bumped by every invalidation. A
//! reader that loaded from PostgreSQL writes the Redis copy only if the version it saw before
//! loading is still current (compare-and-set in Lua), so a load racing a change can't put stale
//! data back. Every invalidation is also published on `cache-invalidate`, so each API replica
//! drops its in-process copy at once.

use crate::tenant_config::secrets::ConfigCipher;
use crate::tenant_config::store as config_store;
use crate::{Config, Result, TenantId, TenantStatus, features, plans, quota, tenants};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;

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
    /// The batcher of version reads, when a runtime was there to run it.
    versions: Option<tokio::sync::mpsc::UnboundedSender<VersionRead>>,
}

/// A version key to read and where its value goes.
type VersionRead = (String, tokio::sync::oneshot::Sender<std::result::Result<Option<String>, String>>);

/// Most keys one `MGET` asks for.
const VERSION_BATCH: usize = 256;

/// Serves the version reads of concurrent requests with one `MGET` per batch instead of one `GET`
/// each. Only requests queued *before* a batch is sent are in it, so every read still asks Redis
/// after it began: the very next read after a change sees the change, as with a `GET` of its own.
/// One batch is in flight at a time; reads arriving meanwhile form the next one.
async fn batch_versions(mut conn: ConnectionManager, mut queue: tokio::sync::mpsc::UnboundedReceiver<VersionRead>) {
    let mut batch: Vec<VersionRead> = Vec::with_capacity(64);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < VERSION_BATCH {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let mut mget = redis::cmd("MGET");
        for (key, _) in &batch {
            mget.arg(key);
        }
        match mget.query_async::<Vec<Option<String>>>(&mut conn).await {
            Ok(values) if values.len() == batch.len() => {
                for ((_, reply), value) in batch.drain(..).zip(values) {
                    let _ = reply.send(Ok(value));
                }
            }
            Ok(_) => batch.drain(..).for_each(|(_, reply)| drop(reply.send(Err("MGET answered a wrong count".into())))),
            Err(err) => {
                let message = err.to_string();
                batch.drain(..).for_each(|(_, reply)| drop(reply.send(Err(message.clone()))));
            }
        }
    }
}

impl ContextStore {
    /// A store for writers and invalidators; its version reads are single `GET`s.
    pub fn new(config: &Config, conn: ConnectionManager) -> Self {
        Self {
            conn,
            prefix: config.redis_key_prefix.clone(),
            ttl_secs: config.tenant_config_ttl.as_secs().max(1),
            cas: redis::Script::new(CAS_SET),
            versions: None,
        }
    }

    /// For the cache that reads on every request: version reads go through a batcher task
    /// (spawned here, inside a Tokio runtime; it ends with the last clone of this store).
    pub fn batching_versions(mut self) -> Self {
        self.versions = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            runtime.spawn(batch_versions(self.conn.clone(), rx));
            tx
        });
        self
    }

    fn keys(&self, id: TenantId) -> (String, String) {
        (format!("{}t:{id}:ctx", self.prefix), self.version_key(id))
    }

    /// `<prefix>t:<tenant>:ctxver`, read on every context request: written without `core::fmt`.
    fn version_key(&self, id: TenantId) -> String {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = id.0.hyphenated().encode_lower(&mut text);
        let mut key = String::with_capacity(self.prefix.len() + id.len() + 10);
        key.push_str(&self.prefix);
        key.push_str("t:");
        key.push_str(id);
        key.push_str(":ctxver");
        key
    }

    /// The pub/sub channel every replica listens on.
    pub fn channel(prefix: &str) -> String {
        format!("{prefix}cache-invalidate")
    }

    /// The cached context (if any) and the version to write a fresh one under.
    pub async fn get(&self, id: TenantId) -> redis::RedisResult<(Option<TenantContext>, String)> {
        let (ctx_key, ver_key) = self.keys(id);
        let mut conn = self.conn.clone();
        let (raw, version): (Option<String>, Option<String>) =
            redis::pipe().get(&ctx_key).get(&ver_key).query_async(&mut conn).await?;
        let ctx = raw.and_then(|r| serde_json::from_str(&r).ok());
        Ok((ctx, version.unwrap_or_else(|| "0".into())))
    }

    /// The tenant's current context version (bumped by every invalidation).
    pub async fn version(&self, id: TenantId) -> redis::RedisResult<String> {
        let mut ver_key = self.version_key(id);
        if let Some(versions) = &self.versions {
            let (reply, answer) = tokio::sync::oneshot::channel();
            match versions.send((ver_key, reply)) {
                Ok(()) => {
                    return match answer.await {
                        Ok(Ok(version)) => Ok(version.unwrap_or_else(|| "0".into())),
                        Ok(Err(message)) => Err((redis::ErrorKind::Io, "context version read failed", message).into()),
                        Err(_) => Err((redis::ErrorKind::Io, "context version batcher stopped").into()),
                    };
                }
                // The batcher is gone (its runtime ended): a `GET` of our own.
                Err(tokio::sync::mpsc::error::SendError((key, _))) => ver_key = key,
            }
        }
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

    /// Drops the tenant's cached context everywhere: bumps its version, deletes the Redis copy,
    /// and tells every replica to drop its in-process copy.
    pub async fn invalidate(&self, id: TenantId) -> redis::RedisResult<()> {
        let (ctx_key, ver_key) = self.keys(id);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .incr(&ver_key, 1)
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
