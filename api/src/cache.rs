//! The two-level tenant context cache: in-process in front of Redis (see
//! `tenant_domain::context`) in front of PostgreSQL.
//!
//! A change drops the context everywhere: the replica that made it drops its own copy, bumps the
//! version and deletes the Redis copy, and publishes the tenant id on `cache-invalidate`; every
//! replica's listener drops its copy on receipt. A listener that lost its connection may have
//! missed messages, so on every (re)connect it clears its whole in-process cache.
//!
//! Pub/sub alone is "at once" only up to the moment a replica gets round to the message, so a
//! request arriving right behind it could still read the old copy. Each in-process copy therefore
//! remembers the epoch it was last checked under and the tenant's version it was read under, and
//! is served only while Redis still has that epoch — or, once the epoch moved (some tenant
//! changed), still has that version of this tenant. The epoch read is shared by all requests
//! waiting at the time (one `GET` per round trip, see `tenant_domain::context`), and the very
//! next read after a change sees it, on every replica. If Redis can't answer, the in-process copy
//! is served as is. A load racing an invalidation is not cached (the version check in Redis, and a
//! generation counter for the process).

use futures::StreamExt;
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;
use std::time::Instant;
use tenant_domain::context::{self, ContextStore, TenantContext};
use tenant_domain::quota::engine::QuotaEngine;
use tenant_domain::tenant_config::secrets::ConfigCipher;
use tenant_domain::{Config, TenantId, kv};
use tokio::sync::watch;

/// A cached context and its success envelope, serialized once (the context answer is a few KB).
pub struct CachedContext {
    pub ctx: TenantContext,
    pub envelope: axum::body::Bytes,
}

impl CachedContext {
    fn new(ctx: TenantContext) -> Arc<Self> {
        let envelope = serde_json::to_vec(&serde_json::json!({ "success": true, "data": &ctx })).unwrap_or_default();
        Arc::new(Self { ctx, envelope: envelope.into() })
    }
}

/// A cached context, the tenant's Redis version it was read under, the epoch it was last checked
/// under, and when it was cached.
struct Entry {
    cached: Arc<CachedContext>,
    version: String,
    epoch: AtomicU64,
    at: Instant,
}

/// The in-process level: a map read under a shared lock, entries expiring after a TTL, cleared
/// wholesale if it ever outgrows its capacity (tenants number in the hundreds to thousands).
struct Local {
    map: RwLock<HashMap<TenantId, Arc<Entry>>>,
    ttl: Duration,
    capacity: usize,
}

impl Local {
    fn get(&self, id: &TenantId) -> Option<Arc<Entry>> {
        let map = self.map.read().ok()?;
        let entry = map.get(id)?;
        (entry.at.elapsed() < self.ttl).then(|| entry.clone())
    }

    fn insert(&self, id: TenantId, entry: Entry) {
        if let Ok(mut map) = self.map.write() {
            if map.len() >= self.capacity {
                let ttl = self.ttl;
                map.retain(|_, entry| entry.at.elapsed() < ttl);
                if map.len() >= self.capacity {
                    map.clear();
                }
            }
            map.insert(id, Arc::new(entry));
        }
    }

    /// Drops the tenant's copy — only `entry` when given (a newer one stays).
    fn invalidate(&self, id: &TenantId, entry: Option<&Arc<Entry>>) {
        if let Ok(mut map) = self.map.write()
            && map.get(id).is_some_and(|current| entry.is_none_or(|seen| Arc::ptr_eq(current, seen)))
        {
            map.remove(id);
        }
    }

    fn invalidate_all(&self) {
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}

pub struct ContextCache {
    local: Local,
    store: ContextStore,
    generation: AtomicU64,
    /// One gate per tenant being loaded (see [`ContextCache::get`]).
    loading: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    pub local_hits: AtomicU64,
    pub redis_hits: AtomicU64,
    pub misses: AtomicU64,
}

impl ContextCache {
    pub fn new(config: &Config, conn: ConnectionManager) -> Self {
        Self {
            local: Local {
                map: RwLock::new(HashMap::new()),
                ttl: config.cache.local_ttl.min(config.tenant_config_ttl),
                capacity: usize::try_from(config.cache.local_capacity).unwrap_or(usize::MAX),
            },
            store: ContextStore::new(config, conn).reading_in_rounds(),
            generation: AtomicU64::new(0),
            loading: Mutex::new(HashMap::new()),
            local_hits: AtomicU64::new(0),
            redis_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The tenant's context: from memory, else Redis, else built from PostgreSQL. `None` for an
    /// unknown tenant. Redis trouble degrades to PostgreSQL, never to an error of its own.
    ///
    /// One load per tenant at a time in this process: requests that miss while a load is in
    /// flight wait for it and are answered from memory, so a cold start or an invalidated hot
    /// tenant costs one Redis read or PostgreSQL build, not one per concurrent request. If that
    /// load could not be cached (Redis trouble, or invalidated meanwhile), they load in parallel.
    pub async fn get(
        &self,
        db: &PgPool,
        cipher: &ConfigCipher,
        id: TenantId,
    ) -> tenant_domain::Result<Option<Arc<CachedContext>>> {
        if let Some(found) = self.in_memory(id).await {
            return Ok(Some(found));
        }
        let _release = GateRelease { cache: self, id };
        let gate = self.gate(id);
        let turn = match gate.clone().try_lock_owned() {
            Ok(turn) => Some(turn),
            Err(_) => {
                drop(gate.lock().await);
                if let Some(found) = self.in_memory(id).await {
                    return Ok(Some(found));
                }
                None
            }
        };
        let loaded = self.load(db, cipher, id).await;
        drop(turn);
        loaded
    }

    /// The in-process copy, while Redis still holds the epoch it was checked under, or else the
    /// version of the tenant it was read under.
    async fn in_memory(&self, id: TenantId) -> Option<Arc<CachedContext>> {
        let entry = self.local.get(&id)?;
        let current = match self.store.epoch().await {
            Ok(epoch) if epoch == entry.epoch.load(Ordering::Relaxed) => Ok(true),
            // Some tenant changed since: this one, if its version moved. The epoch was read
            // before the version, so a change after the version read moves the epoch again.
            Ok(epoch) => self.store.version(id).await.map(|version| {
                let same = version == entry.version;
                if same {
                    entry.epoch.store(epoch, Ordering::Relaxed);
                }
                same
            }),
            Err(err) => Err(err),
        };
        match current {
            Ok(true) => {
                self.local_hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.cached.clone())
            }
            Ok(false) => {
                self.local.invalidate(&id, Some(&entry));
                None
            }
            Err(err) => {
                tracing::warn!(tenant = %id, error = %err, "context cache: Redis unavailable, serving the in-process copy");
                self.local_hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.cached.clone())
            }
        }
    }

    fn gate(&self, id: TenantId) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.entry(id).or_default().clone()
    }

    /// From Redis, else built from PostgreSQL (and stored in Redis); kept in memory when no
    /// invalidation raced it.
    async fn load(
        &self,
        db: &PgPool,
        cipher: &ConfigCipher,
        id: TenantId,
    ) -> tenant_domain::Result<Option<Arc<CachedContext>>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let (epoch, cached, version) = match self.store.get(id).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(tenant = %id, error = %err, "context cache: Redis unavailable, reading PostgreSQL");
                (0, None, String::new())
            }
        };
        let ctx = match cached {
            Some(ctx) => {
                self.redis_hits.fetch_add(1, Ordering::Relaxed);
                CachedContext::new(ctx)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let Some(built) = context::build(db, cipher, id).await? else { return Ok(None) };
                if !version.is_empty()
                    && let Err(err) = self.store.put(id, &built, &version).await
                {
                    tracing::warn!(tenant = %id, error = %err, "context cache: could not store in Redis");
                }
                CachedContext::new(built)
            }
        };
        if !version.is_empty() && self.generation.load(Ordering::SeqCst) == generation {
            let entry = Entry { cached: ctx.clone(), version, epoch: AtomicU64::new(epoch), at: Instant::now() };
            self.local.insert(id, entry);
        }
        Ok(Some(ctx))
    }

    /// After a change to the tenant: drop its context here, in Redis, and on every replica.
    pub async fn invalidate(&self, id: TenantId) {
        self.drop_local(id);
        if let Err(err) = self.store.invalidate(id).await {
            // The change's outbox event makes the worker's relay invalidate again once Redis is back.
            tracing::warn!(tenant = %id, error = %err, "context cache: invalidation deferred to the relay");
        }
    }

    pub fn drop_local(&self, id: TenantId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.local.invalidate(&id, None);
    }

    pub fn clear_local(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.local.invalidate_all();
    }

    /// Hits (memory or Redis) over all lookups so far.
    pub fn hit_rate(&self) -> f64 {
        let hits = self.local_hits.load(Ordering::Relaxed) + self.redis_hits.load(Ordering::Relaxed);
        let total = hits + self.misses.load(Ordering::Relaxed);
        if total == 0 { 1.0 } else { hits as f64 / total as f64 }
    }
}

/// Drops a tenant's load gate once nobody holds it (declared before the gate's own handle, so it
/// runs after that handle is gone).
struct GateRelease<'a> {
    cache: &'a ContextCache,
    id: TenantId,
}

impl Drop for GateRelease<'_> {
    fn drop(&mut self) {
        let mut gates = self.cache.loading.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if gates.get(&self.id).is_some_and(|gate| Arc::strong_count(gate) == 1) {
            gates.remove(&self.id);
        }
    }
}

/// Listens for invalidations until `stop` turns true, reconnecting (and clearing the
/// in-process cache, since messages may have been missed) whenever the connection drops.
pub async fn listen(
    cache: Arc<ContextCache>,
    quota: Arc<QuotaEngine>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    let channel = ContextStore::channel(&config.redis_key_prefix);
    let client = match kv::client(config.redis_url.expose(), &config) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cache invalidation listener cannot build its Redis client");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match subscribed.await {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(error = %err, "cache invalidation listener cannot subscribe; retrying");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = stop.changed() => return }
            }
        };
        // Whatever was published while we were not listening is lost: start afresh (leased
        // quota budget included: a limit may have changed; its unused rest goes back to Redis).
        cache.clear_local();
        quota.release_all_leases().await;
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => {
                        if let Ok(id) = message.get_payload::<String>().map(|p| p.parse::<TenantId>()) {
                            match id {
                                Ok(id) => {
                                    cache.drop_local(id);
                                    // A status or limit change: leased quota budget goes
                                    // too, its unused rest back to Redis (in the background).
                                    quota.drop_leases(id);
                                }
                                Err(_) => cache.clear_local(),
                            }
                        }
                    }
                    None => {
                        tracing::warn!("cache invalidation listener lost its connection; resubscribing");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}
