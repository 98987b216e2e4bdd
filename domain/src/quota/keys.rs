//! The names of the quota engine's Redis keys. Every key the quota script touches is computed
//! here and handed to it in `KEYS`, so a Redis Cluster can route the call and check it.
//!
//! Under `REDIS_KEY_PREFIX`, a tenant's keys start with `t:<tenant>:` on a single Redis and
//! `t:{<tenant>}:` on a Redis Cluster: the braces are a hash tag, so all of one tenant's keys hash
//! to one slot and the script (and every multi-key command or pipeline of one tenant) runs on one
//! node. The single-node names are the ones this service always used, so an upgrade renames
//! nothing there; a move to a cluster starts from PostgreSQL (see the README).
//!
//! - `state` — hash: `status`, `l:<resource>` (limit), `p:<resource>` (reset period)
//! - `u:<resource>` — a gauge's amount; `u:<resource>:<window start>` — a counter's window
//! - `<counter key>:th` — hash of the thresholds already crossed in that window (or by the gauge)
//! - `idem:<key>` — the decision of a consume or record sent with an idempotency key (24 h)
//! - `events` — list of threshold events waiting to be relayed to the events stream, when the
//!   counters do not live on `REDIS_URL` (see `quota::events`)

use super::{Period, Resource, Window, window};
use crate::TenantId;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// Past this many exceptions the map is cleared (and relearned): a bound, not a working size.
const MAX_EXCEPTIONS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct KeyLayout {
    prefix: String,
    hash_tag: bool,
}

impl KeyLayout {
    pub fn new(prefix: impl Into<String>, hash_tag: bool) -> Self {
        Self { prefix: prefix.into(), hash_tag }
    }

    /// `<prefix>t:<tenant>:`, or `<prefix>t:{<tenant>}:` on a cluster. Written without `core::fmt`
    /// (a check names three or four keys from it).
    pub fn base(&self, tenant: TenantId) -> String {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = tenant.0.hyphenated().encode_lower(&mut id);
        let mut base = String::with_capacity(self.prefix.len() + id.len() + 40);
        base.push_str(&self.prefix);
        base.push_str(if self.hash_tag { "t:{" } else { "t:" });
        base.push_str(id);
        base.push_str(if self.hash_tag { "}:" } else { ":" });
        base
    }

    pub fn state(&self, tenant: TenantId) -> String {
        Self::state_in(self.base(tenant))
    }

    /// The state key, from the tenant's [`Self::base`].
    pub fn state_in(mut base: String) -> String {
        base.push_str("state");
        base
    }

    /// The counter of `resource` for the window of `period` containing `now` (a gauge: no window).
    pub fn counter(&self, tenant: TenantId, resource: &str, period: Period, now: DateTime<Utc>) -> String {
        Self::counter_in(self.base(tenant), resource, window(period, now))
    }

    /// [`Self::counter`] of the window `window`, from the tenant's [`Self::base`].
    pub fn counter_in(mut base: String, resource: &str, window: Option<Window>) -> String {
        base.push_str("u:");
        base.push_str(resource);
        if let Some(w) = window {
            base.push(':');
            base.push_str(itoa::Buffer::new().format(w.start.timestamp()));
        }
        base
    }

    /// The thresholds already crossed by the counter `counter`.
    pub fn thresholds(counter: &str) -> String {
        format!("{counter}:th")
    }

    pub fn idempotency(&self, tenant: TenantId, key: &str) -> String {
        format!("{}idem:{key}", self.base(tenant))
    }

    /// Threshold events waiting to be relayed to the events stream.
    pub fn pending_events(&self, tenant: TenantId) -> String {
        format!("{}events", self.base(tenant))
    }

    /// Every key a gauge of the tenant uses (amount and thresholds), for a tombstone to clear.
    pub fn gauge_keys(&self, tenant: TenantId) -> Vec<String> {
        Resource::ALL
            .into_iter()
            .filter(|r| r.is_gauge())
            .flat_map(|r| {
                let key = format!("{}u:{}", self.base(tenant), r.as_str());
                [Self::thresholds(&key), key]
            })
            .collect()
    }
}

/// The reset period a check names its counter for. A counter's key depends on its window, so on
/// its period, which only the state in Redis knows for sure: a check names it for the resource's
/// usual period, and the script refuses (counting nothing) when the state says another. The
/// engine then learns the exception here, so the tenants of a plan with other periods also pay
/// one round trip per check once it is known (a second one the first time, and after a change).
#[derive(Default)]
pub struct Periods {
    exceptions: Mutex<HashMap<(TenantId, Resource), Period>>,
    /// False while there are no exceptions: the common case reads no lock.
    any: AtomicBool,
}

impl Periods {
    pub fn guess(&self, tenant: TenantId, resource: Resource) -> Period {
        if !self.any.load(Ordering::Relaxed) {
            return resource.usual_period();
        }
        let map = self.exceptions.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(tenant, resource)).copied().unwrap_or_else(|| resource.usual_period())
    }

    pub fn learn(&self, tenant: TenantId, resource: Resource, period: Period) {
        let mut map = self.exceptions.lock().unwrap_or_else(PoisonError::into_inner);
        if period == resource.usual_period() {
            map.remove(&(tenant, resource));
        } else {
            if map.len() >= MAX_EXCEPTIONS {
                map.clear();
            }
            map.insert((tenant, resource), period);
        }
        self.any.store(!map.is_empty(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key Redis Cluster hashes: the first `{…}` with something inside, else all.
    fn hashed(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn periods_are_guessed_then_learned_per_tenant() {
        let periods = Periods::default();
        let (a, b) = (TenantId(uuid::Uuid::new_v4()), TenantId(uuid::Uuid::new_v4()));
        assert_eq!(periods.guess(a, Resource::ApiCalls), Period::Daily);
        periods.learn(a, Resource::ApiCalls, Period::Hourly);
        assert_eq!(periods.guess(a, Resource::ApiCalls), Period::Hourly);
        assert_eq!(periods.guess(b, Resource::ApiCalls), Period::Daily, "another tenant");
        periods.learn(a, Resource::ApiCalls, Period::Daily);
        assert_eq!(periods.guess(a, Resource::ApiCalls), Period::Daily);
        assert!(!periods.any.load(Ordering::Relaxed), "no exception left");
    }

    #[test]
    fn a_tenants_keys_share_one_hash_tag_on_a_cluster_and_keep_their_names_otherwise() {
        let tenant = TenantId(uuid::Uuid::new_v4());
        let now: DateTime<Utc> = "2026-11-27T10:30:00Z".parse().expect("ts");
        for (hash_tag, prefix) in [(true, "tenant:"), (false, "tenant:")] {
            let keys = KeyLayout::new(prefix, hash_tag);
            let counter = keys.counter(tenant, "api_calls", Period::Daily, now);
            let mut all = vec![
                keys.state(tenant),
                KeyLayout::thresholds(&counter),
                counter,
                keys.counter(tenant, "users", Period::None, now),
                keys.idempotency(tenant, "some-key"),
                keys.pending_events(tenant),
            ];
            all.extend(keys.gauge_keys(tenant));
            if hash_tag {
                assert!(all.iter().all(|k| hashed(k) == tenant.to_string()), "{all:?}");
                assert_eq!(all[0], format!("tenant:t:{{{tenant}}}:state"));
                assert_eq!(all[2], format!("tenant:t:{{{tenant}}}:u:api_calls:1795737600"));
            } else {
                assert_eq!(all[0], format!("tenant:t:{tenant}:state"), "the single-node names are unchanged");
                assert_eq!(all[2], format!("tenant:t:{tenant}:u:api_calls:1795737600"));
                assert!(all.iter().all(|k| !k.contains('{')), "{all:?}");
            }
        }
    }
}
