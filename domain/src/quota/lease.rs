//! Leased budget: for resources listed in `QUOTA_LEASE_RESOURCES`, an API process takes a chunk of
//! budget from Redis along with a consuming check (counted there up front, so the limit still
//! can't be overrun by any number of replicas) and answers the following consumes from it
//! in-process, without a Redis round trip, until the chunk is spent or `QUOTA_LEASE_MS` passes.
//!
//! Exact in both directions: budget a process no longer holds goes back to the counter it was
//! taken from, by exactly what is left unused — when a lease is spent or expires (with the next
//! call, or by the engine's sweep once idle), when the tenant's status or limits change (the
//! leases are dropped here at once and in every other replica on the invalidation message), and
//! when a grant arrives after such a drop. Each remainder leaves this map exactly once, so
//! nothing is given back twice and a counter never goes below what was served.
//!
//! At most one refill per tenant and resource is in flight in a process; callers that miss a
//! lease meanwhile take the exact path (one round trip of their own) rather than wait for it. A
//! caller the exact path denies looks once more at what this process holds — after the refill in
//! flight, if any, has landed — so a process never denies while holding budget.

use super::Resource;
use crate::TenantId;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const SHARDS: usize = 16;
/// A refill still marked in flight after this long is taken to be lost (it runs in a task of
/// its own, so this is only a safety net).
const REFILL_ABANDONED: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Lease {
    /// The counter (window) the budget was taken from.
    counter: String,
    reset_at: i64,
    limit: i64,
    used: i64,
    budget: i64,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Entry {
    lease: Option<Lease>,
    refilling: Option<Instant>,
}

#[derive(Default)]
struct ShardState {
    entries: HashMap<(TenantId, Resource), Entry>,
    /// Bumped whenever leases of this shard are dropped: a refill that began before gives its
    /// grant back instead of keeping it.
    generation: u64,
}

#[derive(Default)]
struct Shard {
    state: Mutex<ShardState>,
    /// Woken whenever a refill of this shard ends.
    settled: Notify,
}

/// What an in-process lease answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub limit: i64,
    pub used: i64,
    pub reset_at: Option<DateTime<Utc>>,
}

/// Unused budget to return to the counter it was taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveBack {
    pub counter: String,
    pub amount: i64,
}

/// Budget Redis granted, to add to the process's lease.
#[derive(Debug, Clone)]
pub struct Grant {
    pub counter: String,
    pub reset_at: i64,
    pub limit: i64,
    pub used: i64,
    pub budget: i64,
}

/// The answer of [`Leases::take`].
#[derive(Debug)]
pub enum Take {
    Served(Served),
    Miss {
        /// What was left of a lease that could not serve (spent for this amount, expired, or of
        /// an ended window): no longer held here, it must go back to Redis.
        give_back: Option<GiveBack>,
        /// This caller's turn to refill, unless another refill is in flight.
        refill: Option<Refill>,
    },
}

/// The one refill in flight for a tenant and resource. Finish it with [`Leases::finish`]; dropped
/// unfinished (its caller gave up), it just ends, with no grant.
pub struct Refill {
    leases: Arc<Leases>,
    tenant: TenantId,
    resource: Resource,
    generation: u64,
    done: bool,
}

pub struct Leases {
    shards: Vec<Shard>,
    ttl: Duration,
}

impl Leases {
    pub fn new(ttl: Duration) -> Self {
        Self { shards: (0..SHARDS).map(|_| Shard::default()).collect(), ttl }
    }

    fn shard(&self, tenant: TenantId) -> &Shard {
        &self.shards[(tenant.0.as_u128() % SHARDS as u128) as usize]
    }

    fn lock(shard: &Shard) -> MutexGuard<'_, ShardState> {
        shard.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `amount` from a live lease; otherwise takes out what is left of a lease that can't
    /// serve (to give back) and, unless a refill is already in flight, hands this caller the
    /// refill.
    pub fn take(self: &Arc<Self>, tenant: TenantId, resource: Resource, amount: i64, now: i64) -> Take {
        let mut state = Self::lock(self.shard(tenant));
        let entry = state.entries.entry((tenant, resource)).or_default();
        let mut give_back = None;
        if let Some(lease) = &mut entry.lease {
            if now < lease.reset_at && lease.expires > Instant::now() && lease.budget >= amount {
                lease.budget -= amount;
                lease.used += amount;
                return Take::Served(Served {
                    limit: lease.limit,
                    used: lease.used,
                    reset_at: DateTime::from_timestamp(lease.reset_at, 0),
                });
            }
            give_back = entry.lease.take().and_then(remainder);
        }
        let in_flight = entry.refilling.is_some_and(|since| since.elapsed() < REFILL_ABANDONED);
        if in_flight {
            return Take::Miss { give_back, refill: None };
        }
        entry.refilling = Some(Instant::now());
        let generation = state.generation;
        drop(state);
        let refill = Refill { leases: self.clone(), tenant, resource, generation, done: false };
        Take::Miss { give_back, refill: Some(refill) }
    }

    /// Ends a refill with what Redis granted (if anything). A grant that arrives after the
    /// tenant's leases were dropped is not kept: it comes back as budget to give back, as does a
    /// lease of an older window it replaces.
    pub fn finish(mut refill: Refill, grant: Option<Grant>) -> Vec<GiveBack> {
        refill.done = true;
        refill.leases.end_refill(&refill, grant)
    }

    fn end_refill(&self, refill: &Refill, grant: Option<Grant>) -> Vec<GiveBack> {
        let shard = self.shard(refill.tenant);
        let mut back = Vec::new();
        {
            let mut state = Self::lock(shard);
            let current = state.generation == refill.generation;
            let key = (refill.tenant, refill.resource);
            if let Some(entry) = state.entries.get_mut(&key) {
                entry.refilling = None;
            }
            match grant {
                Some(g) if !current => back.push(GiveBack { counter: g.counter, amount: g.budget }),
                Some(g) => {
                    let expires = Instant::now() + self.ttl;
                    let entry = state.entries.entry(key).or_default();
                    match &mut entry.lease {
                        Some(l) if l.counter == g.counter => {
                            l.budget += g.budget;
                            l.used = l.used.max(g.used);
                            l.limit = g.limit;
                            l.expires = expires;
                        }
                        other => {
                            back.extend(other.take().and_then(remainder));
                            *other = Some(Lease {
                                counter: g.counter,
                                reset_at: g.reset_at,
                                limit: g.limit,
                                used: g.used,
                                budget: g.budget,
                                expires,
                            });
                        }
                    }
                }
                None => {}
            }
            if state.entries.get(&key).is_some_and(|e| e.lease.is_none() && e.refilling.is_none()) {
                state.entries.remove(&key);
            }
        }
        shard.settled.notify_waiters();
        back
    }

    /// Waits (at most `deadline`) until no refill of the tenant's resource is in flight here.
    pub async fn settled(&self, tenant: TenantId, resource: Resource, deadline: Duration) {
        let shard = self.shard(tenant);
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = shard.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let in_flight = Self::lock(shard).entries.get(&(tenant, resource)).is_some_and(|e| e.refilling.is_some());
            if !in_flight || tokio::time::timeout_at(until, notified).await.is_err() {
                return;
            }
        }
    }

    /// Drops every lease of the tenant (its status or limits changed); returns their unused
    /// budget, to give back. Refills in flight will give theirs back when they land.
    pub fn drop_tenant(&self, tenant: TenantId) -> Vec<GiveBack> {
        let mut state = Self::lock(self.shard(tenant));
        state.generation += 1;
        let mut back = Vec::new();
        state.entries.retain(|(t, _), entry| {
            if *t != tenant {
                return true;
            }
            back.extend(entry.lease.take().and_then(remainder));
            entry.refilling.is_some()
        });
        back
    }

    /// Drops every lease (invalidations may have been missed); returns their unused budget.
    pub fn drop_all(&self) -> Vec<GiveBack> {
        let mut back = Vec::new();
        for shard in &self.shards {
            let mut state = Self::lock(shard);
            state.generation += 1;
            state.entries.retain(|_, entry| {
                back.extend(entry.lease.take().and_then(remainder));
                entry.refilling.is_some()
            });
        }
        back
    }

    /// Takes out the leases that expired (or whose window ended) by `now`; returns their unused
    /// budget, to give back.
    pub fn take_expired(&self, now: i64) -> Vec<GiveBack> {
        let instant = Instant::now();
        let mut back = Vec::new();
        for shard in &self.shards {
            let mut state = Self::lock(shard);
            state.entries.retain(|_, entry| {
                if entry.lease.as_ref().is_some_and(|l| l.expires <= instant || now >= l.reset_at) {
                    back.extend(entry.lease.take().and_then(remainder));
                }
                entry.lease.is_some() || entry.refilling.is_some()
            });
        }
        back
    }

    /// Unused budget held in this process, over every lease (for tests and the sweep's log).
    pub fn held(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| Self::lock(s).entries.values().filter_map(|e| e.lease.as_ref()).map(|l| l.budget).sum::<i64>())
            .sum()
    }
}

impl Drop for Refill {
    fn drop(&mut self) {
        if !self.done {
            self.leases.end_refill(self, None);
        }
    }
}

impl std::fmt::Debug for Refill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refill").field("tenant", &self.tenant).field("resource", &self.resource).finish()
    }
}

fn remainder(lease: Lease) -> Option<GiveBack> {
    (lease.budget > 0).then_some(GiveBack { counter: lease.counter, amount: lease.budget })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(counter: &str, used: i64, budget: i64) -> Option<Grant> {
        Some(Grant { counter: counter.into(), reset_at: 200, limit: 1000, used, budget })
    }

    fn miss(take: Take) -> (Option<GiveBack>, Option<Refill>) {
        match take {
            Take::Miss { give_back, refill } => (give_back, refill),
            Take::Served(s) => panic!("served: {s:?}"),
        }
    }

    fn back(counter: &str, amount: i64) -> Option<GiveBack> {
        Some(GiveBack { counter: counter.into(), amount })
    }

    #[test]
    fn a_lease_serves_its_budget_then_hands_back_exactly_the_rest() {
        let leases = Arc::new(Leases::new(Duration::from_secs(60)));
        let t = TenantId(uuid::Uuid::new_v4());
        let (gone, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        assert!(gone.is_none());
        assert!(Leases::finish(refill.expect("first miss refills"), grant("w1", 10, 5)).is_empty());
        for used in 11..=15 {
            match leases.take(t, Resource::ApiCalls, 1, 100) {
                Take::Served(s) => assert_eq!(s.used, used),
                other => panic!("{other:?}"),
            }
        }
        let (gone, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        assert_eq!(gone, None, "spent: nothing left to give back");
        Leases::finish(refill.expect("refill"), grant("w1", 20, 5));
        assert!(matches!(leases.take(t, Resource::ApiCalls, 3, 100), Take::Served(_)));
        let (gone, refill) = miss(leases.take(t, Resource::ApiCalls, 3, 100));
        assert_eq!(gone, back("w1", 2), "2 left that can't serve 3");
        drop(refill);
        let (_, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        Leases::finish(refill.expect("the dropped refill ended"), grant("w1", 30, 5));
        let (gone, _) = miss(leases.take(t, Resource::ApiCalls, 1, 250));
        assert_eq!(gone, back("w1", 5), "its window ended: all of it goes back (to its own counter)");
        assert_eq!(leases.held(), 0);
    }

    #[test]
    fn one_refill_at_a_time_and_misses_meanwhile_take_the_exact_path() {
        let leases = Arc::new(Leases::new(Duration::from_secs(60)));
        let t = TenantId(uuid::Uuid::new_v4());
        let (_, first) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        let first = first.expect("refill");
        for _ in 0..3 {
            let (_, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
            assert!(refill.is_none(), "a refill is in flight");
        }
        let other = TenantId(uuid::Uuid::new_v4());
        assert!(miss(leases.take(other, Resource::ApiCalls, 1, 100)).1.is_some(), "another tenant refills on its own");
        Leases::finish(first, grant("w1", 1, 5));
        assert!(matches!(leases.take(t, Resource::ApiCalls, 1, 100), Take::Served(_)));
    }

    #[test]
    fn dropped_leases_and_late_grants_give_back_their_unused_budget() {
        let leases = Arc::new(Leases::new(Duration::from_secs(60)));
        let t = TenantId(uuid::Uuid::new_v4());
        let (_, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        Leases::finish(refill.expect("refill"), grant("w1", 1, 10));
        assert!(matches!(leases.take(t, Resource::ApiCalls, 4, 100), Take::Served(_)));
        assert_eq!(leases.drop_tenant(t), vec![GiveBack { counter: "w1".into(), amount: 6 }]);
        assert!(leases.drop_tenant(t).is_empty(), "given back once");

        // a grant that lands after a drop is not kept
        let (_, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        assert!(leases.drop_tenant(t).is_empty());
        assert_eq!(
            Leases::finish(refill.expect("refill"), grant("w1", 2, 10)),
            vec![GiveBack { counter: "w1".into(), amount: 10 }]
        );
        assert_eq!(leases.held(), 0);

        // expired leases are swept
        let short = Arc::new(Leases::new(Duration::ZERO));
        let (_, refill) = miss(short.take(t, Resource::ApiCalls, 1, 100));
        Leases::finish(refill.expect("refill"), grant("w1", 1, 7));
        assert_eq!(short.take_expired(100), vec![GiveBack { counter: "w1".into(), amount: 7 }]);
        assert!(short.take_expired(100).is_empty());
    }

    #[tokio::test]
    async fn a_denied_caller_waits_for_the_refill_in_flight_and_no_longer() {
        let leases = Arc::new(Leases::new(Duration::from_secs(60)));
        let t = TenantId(uuid::Uuid::new_v4());
        let started = std::time::Instant::now();
        leases.settled(t, Resource::ApiCalls, Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1), "nothing in flight: no wait");
        let (_, refill) = miss(leases.take(t, Resource::ApiCalls, 1, 100));
        let refill = refill.expect("refill");
        let waiter = {
            let leases = leases.clone();
            tokio::spawn(async move { leases.settled(t, Resource::ApiCalls, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        Leases::finish(refill, grant("w1", 1, 5));
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("task");
        assert!(matches!(leases.take(t, Resource::ApiCalls, 1, 100), Take::Served(_)));
    }
}
