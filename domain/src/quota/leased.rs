//! The leased path of [`QuotaEngine::consume`] (see [`super::lease`] for the rules): serve from
//! this process's budget, else one round trip — which takes a new chunk when no refill is in
//! flight — and a denial only once this process holds nothing that could serve; plus giving
//! unused budget back when leases are dropped, expire, or land too late.

use super::Resource;
use super::engine::{Decision, Mode, Outcome, QuotaEngine, QuotaError};
use super::lease::{GiveBack, Grant, Leases, Refill, Served, Take};
use crate::TenantId;
use chrono::Utc;
use sqlx::PgPool;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

impl QuotaEngine {
    /// A consuming check: served from leased budget when the resource is leased and a lease is
    /// live, else one round trip (which, if no other refill is in flight, may take a new lease).
    /// With an idempotency key it always takes the exact path, so the key is honoured in Redis.
    pub async fn consume(
        self: &Arc<Self>,
        db: &PgPool,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        key: Option<&str>,
    ) -> Result<Outcome, QuotaError> {
        if key.is_some() || !self.lease_resources.contains(&resource) {
            return self.check_keyed(db, tenant, resource, amount, Mode::Consume, key).await;
        }
        let outcome = match self.leases.take(tenant, resource, amount, Utc::now().timestamp()) {
            Take::Served(served) => return Ok(self.served(served)),
            Take::Miss { give_back, refill } => {
                self.after_miss(db, tenant, resource, amount, give_back, refill).await?
            }
        };
        if !matches!(&outcome, Outcome::Decided(d) if !d.allowed) {
            return Ok(outcome);
        }
        // Denied. Not while this process holds budget, though: once the refill in flight (if any)
        // has landed, look again.
        self.leases.settled(tenant, resource, self.timeout).await;
        match self.leases.take(tenant, resource, amount, Utc::now().timestamp()) {
            Take::Served(served) => Ok(self.served(served)),
            Take::Miss { give_back: Some(back), refill } => {
                self.after_miss(db, tenant, resource, amount, Some(back), refill).await
            }
            Take::Miss { give_back: None, .. } => Ok(outcome),
        }
    }

    fn served(&self, served: Served) -> Outcome {
        self.leased_hits.fetch_add(1, Ordering::Relaxed);
        Outcome::Decided(Decision {
            allowed: true,
            limit: served.limit,
            used: served.used,
            reset_at: served.reset_at,
            crossed: Vec::new(),
            granted: 0,
            replayed: false,
            counter: String::new(),
        })
    }

    /// A consume no lease could serve: the exact path, or — this caller's turn to refill — the
    /// exact path taking a new chunk. What an old lease left goes back on the same call when it
    /// is of the same counter, else on a call of its own.
    async fn after_miss(
        self: &Arc<Self>,
        db: &PgPool,
        tenant: TenantId,
        resource: Resource,
        amount: i64,
        give_back: Option<GiveBack>,
        refill: Option<Refill>,
    ) -> Result<Outcome, QuotaError> {
        let now = Utc::now();
        let counter = self.keys.counter(tenant, resource.as_str(), self.periods.guess(tenant, resource), now);
        let back = match give_back {
            Some(g) if g.counter == counter => g.amount,
            Some(g) => {
                self.spawn_give_back(vec![g]);
                0
            }
            None => 0,
        };
        let Some(refill) = refill else {
            let mode = if back > 0 { Mode::Lease { chunk: 0, give_back: back } } else { Mode::Consume };
            return self.check(db, tenant, resource, amount, mode).await;
        };
        // The refill runs to its end in a task of its own, so a grant always lands in the lease
        // map (or goes back) even if this request is abandoned meanwhile.
        let (engine, db) = (self.clone(), db.clone());
        let task = tokio::spawn(async move {
            let mode = Mode::Lease { chunk: engine.lease_chunk, give_back: back };
            let result = engine.check(&db, tenant, resource, amount, mode).await;
            let grant = match &result {
                Ok(Outcome::Decided(d)) if d.granted > 0 => d.reset_at.map(|reset_at| Grant {
                    counter: d.counter.clone(),
                    reset_at: reset_at.timestamp(),
                    limit: d.limit,
                    used: d.used,
                    budget: d.granted,
                }),
                _ => None,
            };
            if grant.is_some() {
                engine.lease_grants.fetch_add(1, Ordering::Relaxed);
            }
            let returned = Leases::finish(refill, grant);
            engine.give_back_all(returned).await;
            result
        });
        task.await.map_err(|_| QuotaError::Inconsistent("a lease refill failed"))?
    }

    /// Forgets this process's leases of the tenant (its status or limits changed) and gives their
    /// unused budget back to Redis in the background.
    pub fn drop_leases(&self, tenant: TenantId) {
        let back = self.leases.drop_tenant(tenant);
        self.spawn_give_back(back);
    }

    /// [`Self::drop_leases`], returning once the budget is back in Redis.
    pub async fn release_leases(&self, tenant: TenantId) {
        let back = self.leases.drop_tenant(tenant);
        self.give_back_all(back).await;
    }

    /// Drops every lease of this process (invalidations may have been missed, or it stops) and
    /// gives their unused budget back.
    pub async fn release_all_leases(&self) {
        let back = self.leases.drop_all();
        self.give_back_all(back).await;
    }

    /// Unused leased budget this process holds.
    pub fn leased_budget_held(&self) -> i64 {
        self.leases.held()
    }

    async fn give_back_all(&self, back: Vec<GiveBack>) {
        let calls = back.into_iter().map(|g| self.give_back_call(g));
        futures::future::join_all(calls).await;
    }

    /// One give-back, as a future that owns what it needs.
    fn give_back_call(&self, g: GiveBack) -> impl Future<Output = ()> + Send + 'static {
        let (mut conn, script, timeout, count) =
            (self.conn(), self.give_back_script.clone(), self.timeout, self.lease_given_back.clone());
        async move {
            let mut call = script.key(&g.counter);
            call.arg(g.amount);
            // A failure leaves the budget counted until its window ends; it is logged.
            match tokio::time::timeout(timeout, call.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(_)) => {
                    count.fetch_add(g.amount.unsigned_abs(), Ordering::Relaxed);
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, amount = g.amount, "unused leased quota budget not given back")
                }
                Err(_) => {
                    tracing::warn!(amount = g.amount, "unused leased quota budget not given back: Redis timed out")
                }
            }
        }
    }

    fn spawn_give_back(&self, back: Vec<GiveBack>) {
        if back.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("leased quota budget could not be given back: no runtime");
            return;
        };
        for g in back {
            runtime.spawn(self.give_back_call(g));
        }
    }
}

/// Gives back the budget of leases that expired unused, so an idle process's counts come back
/// to exact within about two `QUOTA_LEASE_MS`. Ends with the engine.
pub(super) async fn sweep_expired_leases(engine: Weak<QuotaEngine>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(live) = engine.upgrade() else { return };
        let back = live.leases.take_expired(Utc::now().timestamp());
        live.give_back_all(back).await;
    }
}
