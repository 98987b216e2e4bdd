//! Leased budget: for resources listed in `QUOTA_LEASE_RESOURCES`, an API process takes a chunk of
//! budget from Redis along with a consuming check (counted there up front, so the limit still
//! can't be overrun by any number of replicas) and answers the following consumes from it
//! in-process, without a Redis round trip, until the chunk is spent or `QUOTA_LEASE_MS` passes.
//!
//! The price, and why it is opt-in: counts in Redis (and so in rollups) run ahead of real use by
//! at most one chunk per replica and resource while a lease is out — an unused remainder is given
//! back on the next lease in the same window, and lost (counted) if the window ends first. Leases
//! are granted only while usage stays below 70 % of the limit, so every threshold is crossed by
//! an exact call. A status or limit change drops the tenant's leases in this process at once and
//! in every other replica on the invalidation message; otherwise a lease lives `QUOTA_LEASE_MS`.

use super::Resource;
use crate::TenantId;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

#[derive(Debug, Clone)]
struct Lease {
    reset_at: i64,
    limit: i64,
    used: i64,
    budget: i64,
    expires: Instant,
}

/// What an in-process lease answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub limit: i64,
    pub used: i64,
    pub reset_at: Option<DateTime<Utc>>,
}

pub struct Leases {
    shards: Vec<Mutex<HashMap<(TenantId, Resource), Lease>>>,
    ttl: Duration,
}

impl Leases {
    pub fn new(ttl: Duration) -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), ttl }
    }

    fn shard(&self, tenant: TenantId) -> &Mutex<HashMap<(TenantId, Resource), Lease>> {
        let i = (tenant.0.as_u128() % SHARDS as u128) as usize;
        &self.shards[i]
    }

    /// Serves `amount` from a live lease; otherwise returns what is left of an expired or spent
    /// lease of the current window (to give back with the next Redis call) as `Err`.
    pub fn take(&self, tenant: TenantId, resource: Resource, amount: i64, now: i64) -> Result<Served, i64> {
        let Ok(mut map) = self.shard(tenant).lock() else { return Err(0) };
        let key = (tenant, resource);
        let Some(lease) = map.get_mut(&key) else { return Err(0) };
        if now < lease.reset_at && lease.expires > Instant::now() && lease.budget >= amount {
            lease.budget -= amount;
            lease.used += amount;
            return Ok(Served {
                limit: lease.limit,
                used: lease.used,
                reset_at: DateTime::from_timestamp(lease.reset_at, 0),
            });
        }
        let left = if now < lease.reset_at { lease.budget } else { 0 };
        map.remove(&key);
        Err(left)
    }

    /// Adds a granted chunk (merging with a lease another request took meanwhile).
    pub fn grant(&self, tenant: TenantId, resource: Resource, reset_at: i64, limit: i64, used: i64, budget: i64) {
        let Ok(mut map) = self.shard(tenant).lock() else { return };
        let expires = Instant::now() + self.ttl;
        map.entry((tenant, resource))
            .and_modify(|l| {
                if l.reset_at == reset_at {
                    l.budget += budget;
                    l.used = l.used.max(used);
                    l.expires = expires;
                } else {
                    *l = Lease { reset_at, limit, used, budget, expires };
                }
            })
            .or_insert(Lease { reset_at, limit, used, budget, expires });
    }

    /// Drops every lease of the tenant (its status or limits changed).
    pub fn drop_tenant(&self, tenant: TenantId) {
        if let Ok(mut map) = self.shard(tenant).lock() {
            map.retain(|(t, _), _| *t != tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_serves_its_budget_then_hands_back_the_rest() {
        let leases = Leases::new(Duration::from_secs(60));
        let t = TenantId(uuid::Uuid::new_v4());
        assert_eq!(leases.take(t, Resource::ApiCalls, 1, 100), Err(0), "no lease yet");
        leases.grant(t, Resource::ApiCalls, 200, 1000, 10, 5);
        for used in 11..=15 {
            assert_eq!(leases.take(t, Resource::ApiCalls, 1, 100).map(|s| s.used), Ok(used));
        }
        assert_eq!(leases.take(t, Resource::ApiCalls, 1, 100), Err(0), "spent");
        leases.grant(t, Resource::ApiCalls, 200, 1000, 20, 5);
        assert_eq!(leases.take(t, Resource::ApiCalls, 3, 100).map(|s| s.used), Ok(23));
        assert_eq!(leases.take(t, Resource::ApiCalls, 3, 100), Err(2), "2 left to give back");
        leases.grant(t, Resource::ApiCalls, 200, 1000, 30, 5);
        assert_eq!(leases.take(t, Resource::ApiCalls, 1, 250), Err(0), "a new window: nothing to give back");
        leases.grant(t, Resource::ApiCalls, 200, 1000, 30, 5);
        leases.drop_tenant(t);
        assert_eq!(leases.take(t, Resource::ApiCalls, 1, 100), Err(0), "dropped");
    }
}
