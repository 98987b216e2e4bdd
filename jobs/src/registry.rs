//! The one place that lists the sagas: which saga runs each job kind, and its steps. The engine
//! knows sagas only through the [`Saga`] trait (it imports none of them), and adding a job kind
//! is one line here (plus its `JobKind`).

use crate::context::JobContext;
use crate::engine::{self, EngineError, Outcome, Saga, Step};
use crate::kinds::JobKind;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use tenant_domain::JobId;

type Delivery<'a> = Pin<Box<dyn Future<Output = Result<Outcome, EngineError>> + Send + 'a>>;
type Runner = for<'a> fn(&'a JobContext, JobId) -> Delivery<'a>;

struct Entry {
    run: Runner,
    steps: &'static [&'static str],
}

/// Every job kind with its saga.
pub struct Registry(HashMap<JobKind, Entry>);

impl Registry {
    fn with<S: Saga + 'static>(mut self) -> Self {
        let run: Runner = |ctx, id| Box::pin(engine::run_saga::<S>(ctx, id));
        self.0.insert(S::KIND, Entry { run, steps: <S::Step as Step>::NAMES });
        self
    }
}

static SAGAS: LazyLock<Registry> = LazyLock::new(|| {
    Registry(HashMap::new())
        .with::<crate::provision::Provision>()
        .with::<crate::delete::Delete>()
        .with::<crate::restore::Restore>()
        .with::<crate::rollup::Rollup>()
        .with::<crate::deliver::Deliver>()
        .with::<crate::change_plan::ChangePlan>()
        .with::<crate::billing_cycle::BillingCycle>()
        .with::<crate::retention::Retention>()
});

/// Runs one delivery of job `id` of `kind`.
pub async fn run(ctx: &JobContext, kind: JobKind, id: JobId) -> Result<Outcome, EngineError> {
    match SAGAS.0.get(&kind) {
        Some(entry) => (entry.run)(ctx, id).await,
        None => unreachable_kind(kind),
    }
}

/// The steps of `kind`, as a new job row records them.
pub fn steps(kind: JobKind) -> &'static [&'static str] {
    SAGAS.0.get(&kind).map_or(&[], |entry| entry.steps)
}

fn unreachable_kind(kind: JobKind) -> Result<Outcome, EngineError> {
    tracing::error!(kind = kind.name(), "no saga registered for this job kind");
    Ok(Outcome::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_kind_has_a_saga_with_steps() {
        for kind in JobKind::ALL {
            assert!(SAGAS.0.contains_key(&kind), "{} has no saga", kind.name());
            assert!(!steps(kind).is_empty(), "{} has no steps", kind.name());
        }
    }
}
