//! What the hot path reads, mirrored from PostgreSQL into the quota Redis, and the usage reads of
//! the views, the rollups and the metrics scrape. Every command or pipeline here touches one
//! tenant's keys only (one slot on a Redis Cluster); reads over many tenants go per tenant.

use super::engine::{QuotaEngine, QuotaError, within};
use super::{Period, window};
use crate::{Result, TenantId, TenantStatus};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::PgPool;
use std::sync::atomic::Ordering;

/// How long "no such tenant" is remembered in Redis, so unknown ids can't hammer PostgreSQL.
const UNKNOWN_TTL_SECS: u64 = 60;
/// Tenants read at once by [`QuotaEngine::usage_many`] on a cluster.
const CLUSTER_READS_IN_FLIGHT: usize = 32;

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

impl QuotaEngine {
    /// Reads the tenant's status and limits from PostgreSQL and mirrors them into Redis. Counters
    /// Redis lost are restored from the last rollup (`tenant_quotas.used_value`) when it belongs
    /// to the current window, so a Redis loss costs at most one rollup interval of counts.
    pub async fn load_into_redis(&self, db: &PgPool, tenant: TenantId) -> Result<(), QuotaError> {
        self.state_loads.fetch_add(1, Ordering::Relaxed);
        match load_state(db, tenant).await? {
            Some(state) => self.write_state(tenant, &state, true).await,
            None => {
                let key = self.keys.state(tenant);
                let mut conn = self.conn();
                let mut pipe = redis::pipe();
                pipe.atomic().del(&key).hset(&key, "status", "unknown").expire(&key, UNKNOWN_TTL_SECS as i64);
                within(self.timeout, pipe.query_async::<()>(&mut conn)).await?;
                Ok(())
            }
        }
    }

    /// Replaces the tenant's mirrored state (atomically); with `restore_counters`, sets counters
    /// that are missing from the last rollup. A deleted or failed tenant's state becomes a
    /// tombstone, and its gauges go (counters expire by themselves).
    pub async fn write_state(
        &self,
        tenant: TenantId,
        state: &TenantQuotaState,
        restore_counters: bool,
    ) -> Result<(), QuotaError> {
        let key = self.keys.state(tenant);
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
                let counter = self.keys.counter(tenant, &m.resource, m.period, now);
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
            pipe.cmd("DEL").arg(self.keys.gauge_keys(tenant));
        }
        let mut conn = self.conn();
        within(self.timeout * 4, pipe.query_async::<()>(&mut conn)).await?;
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

    /// Deletes every key of the tenant on a quota store of its own (`QUOTA_REDIS_URL`): state,
    /// counters, thresholds, idempotency decisions, events not yet relayed. On `REDIS_URL` the
    /// deletion saga's sweep of the tenant's keys takes them, so this does nothing there. On a
    /// cluster, a tenant's keys share one slot, so the scan runs on the primary that owns it.
    /// Returns how many keys went.
    pub async fn clear_tenant(&self, tenant: TenantId) -> Result<u64, QuotaError> {
        use redis::aio::ConnectionLike;
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
        if self.relay.is_none() {
            return Ok(0);
        }
        let pattern = format!("{}*", self.keys.base(tenant));
        let owner = Route::with_slot(Slot::for_key(self.keys.state(tenant)), SlotAddr::Master);
        let mut conn = self.conn();
        let (mut cursor, mut removed) = (0_u64, 0_u64);
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500);
            let reply = match &mut conn {
                crate::kv::QuotaConn::Single(c) => c.req_packed_command(&scan),
                crate::kv::QuotaConn::Cluster(c) => {
                    Box::pin(c.route_command(scan, RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(owner))))
                }
            };
            let reply = within(self.timeout * 4, reply).await?;
            let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                let unlinked = unlink.query_async::<u64>(&mut conn);
                removed += within(self.timeout * 4, unlinked).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Forgets the tenant's mirrored state; the next check reloads it from PostgreSQL.
    pub async fn forget(&self, tenant: TenantId) -> Result<(), QuotaError> {
        let mut conn = self.conn();
        let mut del = redis::cmd("DEL");
        del.arg(self.keys.state(tenant));
        within(self.timeout, del.query_async::<()>(&mut conn)).await?;
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
            pipe.cmd("GET").arg(self.keys.counter(tenant, resource, *period, *at));
        }
        let mut conn = self.conn();
        let values: Vec<Option<i64>> = within(self.timeout, pipe.query_async(&mut conn)).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The current counts of many tenants' resources, `(tenant, resource, period)` each (for a
    /// metrics scrape; the hot path never calls this): in pipelines of 1,000 reads on a single
    /// Redis, one `MGET` per tenant (its slot), 32 tenants at a time, on a cluster.
    pub async fn usage_many(&self, which: &[(TenantId, String, Period)]) -> Result<Vec<i64>, QuotaError> {
        let now = Utc::now();
        if self.is_cluster() {
            return self.usage_many_by_tenant(which, now).await;
        }
        let mut out = Vec::with_capacity(which.len());
        for chunk in which.chunks(1000) {
            let mut pipe = redis::pipe();
            for (tenant, resource, period) in chunk {
                pipe.cmd("GET").arg(self.keys.counter(*tenant, resource, *period, now));
            }
            let mut conn = self.conn();
            let values: Vec<Option<i64>> = within(self.timeout * 4, pipe.query_async(&mut conn)).await?;
            out.extend(values.into_iter().map(Option::unwrap_or_default));
        }
        Ok(out)
    }

    async fn usage_many_by_tenant(
        &self,
        which: &[(TenantId, String, Period)],
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, QuotaError> {
        // Positions of each tenant's reads, in the order asked.
        let mut by_tenant: Vec<(TenantId, Vec<usize>)> = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for (i, (tenant, _, _)) in which.iter().enumerate() {
            let slot = *seen.entry(*tenant).or_insert_with(|| {
                by_tenant.push((*tenant, Vec::new()));
                by_tenant.len() - 1
            });
            by_tenant[slot].1.push(i);
        }
        let reads = by_tenant.into_iter().map(|(tenant, positions)| {
            let keys: Vec<String> =
                positions.iter().map(|&i| self.keys.counter(tenant, &which[i].1, which[i].2, now)).collect();
            let mut conn = self.conn();
            async move {
                let mut mget = redis::cmd("MGET");
                mget.arg(keys);
                let values = within(self.timeout * 4, mget.query_async::<Vec<Option<i64>>>(&mut conn)).await?;
                Ok::<_, QuotaError>((positions, values))
            }
        });
        let mut out = vec![0; which.len()];
        let mut results = futures::stream::iter(reads).buffer_unordered(CLUSTER_READS_IN_FLIGHT);
        while let Some(result) = results.next().await {
            let (positions, values) = result?;
            for (i, v) in positions.into_iter().zip(values) {
                out[i] = v.unwrap_or_default();
            }
        }
        Ok(out)
    }

    /// The tenant status the hot path currently decides with (`None`: Redis holds no state for
    /// the tenant; the next check loads it).
    pub async fn mirrored_status(&self, tenant: TenantId) -> Result<Option<String>, QuotaError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.keys.state(tenant)).arg("status");
        within(self.timeout, cmd.query_async(&mut conn)).await
    }

    pub async fn has_state(&self, tenant: TenantId) -> Result<bool, QuotaError> {
        let mut conn = self.conn();
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.keys.state(tenant));
        within(self.timeout, exists.query_async(&mut conn)).await
    }
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
